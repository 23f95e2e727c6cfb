"""The training job (library -> examples -> trainer -> concept file -> row) and `yoc train`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import TINY_ANOLE_A, small_random_backbone
from library_images import photos

from yoc_assistant import Backbone
from yoc_assistant.errors import UserInputError
from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_paths
from yoc_assistant.personalize.concept import ConceptVectors, load_concepts
from yoc_assistant.personalize.trainer import TrainConfig, TrainEvent


@pytest.fixture(scope="module")
def byte_bb(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """A tiny random backbone whose tokenizer spells any text (so Yes and No differ)."""
    return small_random_backbone(tmp_path_factory.mktemp("bytes") / "ckpt", 1)


@pytest.fixture
def lib(yoc_home: Path):
    library = Library.open()
    yield library
    library.close()


def add(lib: Library, tmp: Path, name: str, n: int, start: int = 0, about: str | None = None) -> None:
    add_concept_from_paths(lib, photos(tmp / name, n, start=start), name, about=about)


def test_job_trains_saves_and_reloads(lib: Library, bb: Backbone, tmp_path: Path) -> None:
    from yoc_assistant.app.training import train_concept_job

    add(lib, tmp_path, "bo", 3)
    events: list[TrainEvent] = []
    outcome = train_concept_job(lib, "bo", backbone=bb, config=TrainConfig(max_steps=3, batch_size=4),
                                on_event=events.append)
    assert not outcome.cancelled and outcome.steps == 3
    assert any("no pool" in n for n in outcome.notes)  # trained from the photos alone, and said so
    assert any(e.phase == "note" and "no pool" in e.note for e in events)
    concept = lib.require_concept("bo")
    assert concept.status == "ready" and concept.vectors_path == outcome.vectors_path
    assert concept.backbone_fingerprint == bb.fingerprint
    assert concept.metrics["steps"] == 3 and concept.metrics["examples"] > 0
    run = lib.latest_run("bo")
    assert run.status == "done" and run.total_steps == 3
    vec = ConceptVectors.load(outcome.vectors_path, bb)
    assert vec.groups == {"generation": 16, "understanding": 16}  # from the two modality plugins
    cs = load_concepts(bb, [outcome.vectors_path])
    assert cs.prompt_ids("bo")[0] == bb.vocab_size
    # The photos' own examples: both tasks of both default modalities.
    assert set(concept.metrics["examples_by_task"]) >= {"recognition", "generation"}
    # each photo and its mirror image: 3 x 2 generation examples (no pool, no soft positives),
    # repeated as a small task next to the modalities' routing examples (balance_tasks)
    by_task = concept.metrics["examples_by_task"]
    assert by_task["generation"] % 6 == 0 and by_task["generation"] >= 6
    assert by_task["understanding-requests"] and by_task["generation-requests"]


def test_pool_held_out_photo_and_best_checkpoint(lib: Library, byte_bb: Backbone, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.app.training import train_concept_job

    # No CLIP on this machine (not even the shipped toy one): recognition alone must pick.
    monkeypatch.setenv("YOC_CLIP_MODEL", "ViT-B-32")
    monkeypatch.setenv("YOC_CLIP_WEIGHTS", str(tmp_path / "no-such-weights.safetensors"))

    add(lib, tmp_path, "mug", 4, about="mug is red.")
    lib.add_pool_images(photos(tmp_path / "pool", 8, start=100))
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-2, eval_every=2)
    outcome = train_concept_job(lib, "mug", backbone=byte_bb, config=config)
    metrics = outcome.metrics
    assert metrics["best_step"] is not None and 0.0 <= metrics["recognition"] <= 1.0
    assert any("recognition accuracy alone" in n or "CLIP" in n for n in outcome.notes)
    assert metrics["examples_by_task"]["recognition"] >= 2 * 3  # negatives from the pool + balanced yes


def test_cancel_then_resume(lib: Library, bb: Backbone, tmp_path: Path) -> None:
    from yoc_assistant.app.training import train_concept_job

    add(lib, tmp_path, "bo", 3)
    cancel = threading.Event()

    def stop(event: TrainEvent) -> None:
        if event.phase == "train" and event.step == 2:
            cancel.set()

    config = TrainConfig(max_steps=4, batch_size=2, checkpoint_every=10)
    first = train_concept_job(lib, "bo", backbone=bb, config=config, on_event=stop, cancel=cancel)
    assert first.cancelled and first.steps == 2 and first.vectors_path is None
    assert lib.latest_run("bo").status == "interrupted"
    assert lib.latest_run("bo").checkpoint_path is not None
    assert lib.require_concept("bo").status == "new"
    second = train_concept_job(lib, "bo", backbone=bb, config=config, resume=True)
    assert not second.cancelled and second.steps == 4 and len(second.losses) == 4
    assert second.losses[:2] == first.losses
    assert lib.require_concept("bo").status == "ready"


def test_no_photos_fails_clearly_and_marks_the_concept(lib: Library, bb: Backbone) -> None:
    from yoc_assistant.app.training import train_concept_job

    lib.create_concept("empty")
    with pytest.raises(UserInputError, match="no photos"):
        train_concept_job(lib, "empty", backbone=bb, config=TrainConfig(max_steps=1))
    assert lib.require_concept("empty").status == "failed"
    assert "no photos" in lib.latest_run("empty").error


def test_yoc_train_command(lib: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("YOC_BACKBONE", str(TINY_ANOLE_A / "checkpoint"))
    monkeypatch.setenv("YOC_DEVICE", "cpu")
    add(lib, tmp_path, "bo", 3)
    assert run_cli(["train", "bo", "--steps", "2", "--batch-size", "2", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "bo" and out["steps"] == 2 and out["precision"] == "fp32"
    assert Path(out["vectors_path"]).exists() and lib.require_concept("bo").status == "ready"

    run = lib.latest_run("bo")
    assert run.config["init_from_photos"] and run.config["mirror_photos"]  # the defaults
    assert run_cli(["train", "bo", "--steps", "1", "--blank-init", "--no-mirror", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    run = lib.latest_run("bo")
    assert run.config["init_from_photos"] is False and run.config["mirror_photos"] is False

    assert run_cli(["train", "nosuch"]) == 3
    assert "Error: no concept named 'nosuch'" in capsys.readouterr().err
    assert run_cli(["train", "bo", "--batch-size", "0"]) == 2
    assert "batch-size" in capsys.readouterr().err


def run_cli(args: list[str]) -> int:
    from yoc_assistant.cli import main

    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_one_clip_per_job(lib: Library, byte_bb: Backbone, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool ranking and checkpoint choice share one loaded CLIP (the shipped toy one)."""
    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.personalize import retrieval

    bb = byte_bb
    assert bb.has_decoder
    loads: list[str] = []
    real = retrieval.load_clip

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loads.append("clip")
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "load_clip", counting)
    add(lib, tmp_path, "mug", 4)
    lib.add_pool_images(photos(tmp_path / "pool", 8, start=100))
    outcome = train_concept_job(lib, "mug", backbone=bb,
                                config=TrainConfig(max_steps=2, batch_size=4, eval_every=1,
                                                   init_from_photos=False, mirror_photos=False))
    assert "clip_i" in outcome.metrics, outcome.notes  # CLIP was used for checkpoint choice too
    assert loads == ["clip"]


def test_a_job_fetches_the_concept_row_once(lib: Library, bb: Backbone, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The row is fetched once and passed down (photos, runs folder, concept file); only the
    writes read it again, inside their transactions (start_run; set_vectors and its result)."""
    from yoc_assistant.app.training import train_concept_job

    add(lib, tmp_path, "bo", 2)
    fetched: list[str] = []
    real = lib.get_concept

    def counting(name: str):  # noqa: ANN202
        fetched.append(name)
        return real(name)

    monkeypatch.setattr(lib, "get_concept", counting)
    outcome = train_concept_job(lib, "bo", backbone=bb, config=TrainConfig(max_steps=1, batch_size=2))
    assert not outcome.cancelled and outcome.vectors_path is not None
    assert len(fetched) == 4, fetched


def test_the_configs_hard_negatives_reach_the_pool_ranking(lib: Library, tmp_path: Path) -> None:
    """`TrainConfig.hard_negatives` is how the training job ranks the pool (toy CLIP)."""
    from yoc_assistant.personalize.prepare import select_images

    add(lib, tmp_path, "mug", 4)
    lib.add_pool_images(photos(tmp_path / "pool", 8, start=100))
    after = select_images(lib, "mug", seed=0)
    shared = select_images(lib, "mug", seed=0, hard_negatives="shared-top")
    assert after.hard and not set(after.hard) & set(after.soft)
    assert shared.hard and set(shared.hard) <= set(shared.soft)
    assert shared.hard == after.soft[: len(shared.hard)]  # the most similar pool photos


def test_a_bad_hard_negatives_choice_is_refused_before_any_load() -> None:
    from yoc_assistant.app.training import config_from_options

    with pytest.raises(UserInputError, match="hard negatives must be one of"):
        config_from_options({"hard_negatives": "bottom"})
