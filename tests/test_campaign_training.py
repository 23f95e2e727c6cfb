"""Campaign, category "training": runs follow the concept, not its name; one run per concept;
re-running add-concept continues; training is deterministic (issue 14, items 1, 2, 17;
"Also seen": one run per concept, removal mid-training)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from conftest import TINY_ANOLE_A
from library_images import photos
from test_cli_concepts import yoc

from yoc_assistant.errors import UserInputError
from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_paths


def _job():
    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.personalize.trainer import TrainConfig, TrainEvent

    return train_concept_job, TrainConfig, TrainEvent


@pytest.fixture
def lib(yoc_home: Path):
    library = Library.open()
    yield library
    library.close()


def _cancel_at(step: int, also=None):
    cancel = threading.Event()

    def on_event(event) -> None:
        if event.phase == "train" and event.step >= step:
            if also is not None:
                also(event)
            cancel.set()
    return cancel, on_event


# -- item 1 and "removed mid-training": rename/remove wait for no one, they are refused -------------
@pytest.mark.parametrize("action", ["rename", "remove"])
def test_rename_or_remove_while_training_is_refused_and_the_run_finishes(lib: Library, bb, tmp_path: Path,
                                                                        action: str) -> None:
    train_concept_job, TrainConfig, _ = _job()
    add_concept_from_paths(lib, photos(tmp_path / "bo", 2), "bo")
    refusals: list[str] = []

    def meddle(event) -> None:
        if event.phase == "train" and event.step == 1:
            with Library.open() as other:  # another command, another connection
                try:
                    other.rename("bo", "sunny") if action == "rename" else other.remove("bo")
                except UserInputError as err:
                    refusals.append(str(err))

    outcome = train_concept_job(lib, "bo", backbone=bb, on_event=meddle,
                                config=TrainConfig(max_steps=3, batch_size=2))
    assert refusals and "is training" in refusals[0]
    assert not outcome.cancelled
    concept = lib.require_concept("bo")
    assert concept.status == "ready" and concept.vectors_path.is_file()
    assert lib.latest_run("bo").status == "done"


def test_rename_while_training_cli_message(lib: Library, tmp_path: Path) -> None:
    add_concept_from_paths(lib, photos(tmp_path / "bo", 1), "bo")
    lib.start_run("bo")  # this process is alive: the run is live
    for args in (["concepts", "rename", "bo", "sunny"], ["concepts", "rm", "bo", "--yes"]):
        result = yoc(*args)
        assert result.exit_code == 2 and "is training" in result.stderr, result.output
    assert lib.get_concept("bo") is not None


def test_resume_after_a_rename_continues_the_interrupted_run(lib: Library, bb, tmp_path: Path) -> None:
    train_concept_job, TrainConfig, _ = _job()
    add_concept_from_paths(lib, photos(tmp_path / "bo", 2), "bo")
    config = TrainConfig(max_steps=4, batch_size=2)
    cancel, stop = _cancel_at(2)
    first = train_concept_job(lib, "bo", backbone=bb, config=config, on_event=stop, cancel=cancel)
    assert first.cancelled
    lib.rename("bo", "sunny")
    starts: list = []
    second = train_concept_job(lib, "sunny", backbone=bb, config=config, resume=True,
                               on_event=lambda e: starts.append(e) if e.phase == "start" else None)
    assert not second.cancelled and second.steps == 4
    assert "resumed at step 2" in starts[0].note
    assert lib.require_concept("sunny").status == "ready"


# -- also seen: one run per concept at a time -------------------------------------------------------
def test_a_second_training_of_the_same_concept_is_refused(lib: Library, bb, tmp_path: Path) -> None:
    train_concept_job, TrainConfig, _ = _job()
    add_concept_from_paths(lib, photos(tmp_path / "bo", 2), "bo")
    add_concept_from_paths(lib, photos(tmp_path / "mug", 2, start=10), "mug")
    seen: list[str] = []

    def second(event) -> None:
        if event.phase == "train" and event.step == 1:
            with Library.open() as other:
                try:
                    train_concept_job(other, "bo", backbone=bb, config=TrainConfig(max_steps=1, batch_size=2))
                except UserInputError as err:
                    seen.append(str(err))

    train_concept_job(lib, "bo", backbone=bb, on_event=second, config=TrainConfig(max_steps=2, batch_size=2))
    assert seen and "already training" in seen[0] and "bo" in seen[0]
    # another concept may train meanwhile, and a dead run never blocks
    lib.start_run("mug")
    lib.db.execute("UPDATE training_runs SET pid = 999999999 WHERE status = 'running'")
    train_concept_job(lib, "mug", backbone=bb, config=TrainConfig(max_steps=1, batch_size=2))
    assert lib.require_concept("mug").status == "ready"


# -- item 2: re-running add-concept continues the interrupted training ------------------------------
def test_rerunning_add_concept_resumes_and_lists_no_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant import Backbone

    train_concept_job, TrainConfig, _ = _job()
    checkpoint = str(TINY_ANOLE_A / "checkpoint")
    monkeypatch.setenv("YOC_BACKBONE", checkpoint)
    folder = tmp_path / "bo"
    photos(folder, 2)
    assert yoc("add-concept", folder, "--name", "bo", "--no-train").exit_code == 0
    tiny = Backbone.load(checkpoint, precision="fp32", device="cpu")
    cancel, stop = _cancel_at(2)
    with Library.open() as lib:  # the first add-concept's training, interrupted at step 2
        assert train_concept_job(lib, "bo", backbone=tiny, config=TrainConfig(epochs=2), on_event=stop,
                                 cancel=cancel).cancelled
    again = yoc("add-concept", folder, "--name", "bo")
    assert again.exit_code == 0, again.output
    assert "Duplicate" not in again.stderr and "already" in again.stderr
    with Library.open() as lib:
        run = lib.latest_run("bo")
        assert lib.require_concept("bo").status == "ready"
        assert run.metrics.get("resumed_from") == 2


# -- item 17: deterministic training -------------------------------------------------------------
def test_two_runs_of_the_same_job_are_bit_identical(tmp_path: Path, bb) -> None:
    train_concept_job, TrainConfig, _ = _job()
    results = []
    for n in range(2):  # the first run fills the caches, the second reads them
        with Library.open(tmp_path / f"home{n}") as lib:
            add_concept_from_paths(lib, photos(tmp_path / "bo", 3), "bo")
            lib.add_pool_images(photos(tmp_path / "pool", 6, start=100))
            outcome = train_concept_job(lib, "bo", backbone=bb, config=TrainConfig(max_steps=4, batch_size=2))
            from safetensors.torch import load_file
            results.append(load_file(str(outcome.vectors_path)))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_training_runs_with_deterministic_algorithms_and_restores_the_setting(lib: Library, bb,
                                                                             tmp_path: Path) -> None:
    train_concept_job, TrainConfig, _ = _job()
    add_concept_from_paths(lib, photos(tmp_path / "bo", 2), "bo")
    during: list[tuple[bool, int]] = []

    def spy(event) -> None:
        if event.phase == "train":
            during.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))

    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    train_concept_job(lib, "bo", backbone=bb, on_event=spy, config=TrainConfig(max_steps=3, batch_size=2))
    assert during and all(d[0] for d in during) and len({d[1] for d in during}) == 1
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before
