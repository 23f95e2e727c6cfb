"""Training's CPU thread count on a small backbone, chosen by timing: the faster count
wins (the first unless another is clearly faster), a run at the chosen count is that
fixed-count run, a run that slows down falls back, and the user's count is never
overridden."""

from __future__ import annotations

import time

import pytest
import torch

from yoc_assistant.personalize.threadpick import (
    FASTER,
    SLOWDOWN,
    WINDOW,
    ThreadChoice,
    choose_threads,
)
from yoc_assistant.personalize.trainer import TrainConfig, train_concept


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(deterministic)


def timed_work(seconds_at: dict[int, float]):
    """Work that takes the given seconds at each thread count (a machine whose speed by
    count is known), really spent, so the choice is made on measured wall clock."""
    def work() -> None:
        time.sleep(seconds_at[torch.get_num_threads()])
    return work


def idle() -> float:
    return 4.0  # a quiet machine: four cores free


def test_the_faster_count_is_chosen_and_set() -> None:
    choice = choose_threads((1, 2), 100, timed_work({1: 0.03, 2: 0.01}), spare=idle)
    assert choice.count == 2 and torch.get_num_threads() == 2 and choice.base == 1
    assert choice.seconds_per_token[2] < choice.seconds_per_token[1]
    assert "2 CPU thread(s)" in choice.note()
    slower = choose_threads((1, 2), 100, timed_work({1: 0.01, 2: 0.03}), spare=idle)
    assert slower.count == 1 and torch.get_num_threads() == 1


def test_a_count_only_slightly_faster_does_not_replace_the_first() -> None:
    slight = choose_threads((1, 2), 100, timed_work({1: 0.030, 2: 0.030 * (FASTER + 0.1)}), spare=idle)
    assert slight.count == 1


def test_without_idle_cores_a_second_thread_is_not_timed() -> None:
    counts: list[int] = []

    def work() -> None:
        counts.append(torch.get_num_threads())
        time.sleep(0.05 if torch.get_num_threads() == 2 else 0.001)

    # One idle core (another job on the second of two): two threads are never tried.
    busy = choose_threads((1, 2), 100, work, spare=lambda: 1.0)
    assert busy.count == 1 and set(counts) == {1} and "too few idle cores" in busy.note()
    counts.clear()  # a second thread far slower than the first is timed once, not TRIES times
    assert choose_threads((1, 2), 100, work, spare=idle).count == 1
    assert counts.count(2) == 1


def test_spare_cores_reads_the_machine() -> None:
    from yoc_assistant.personalize.threadpick import spare_cores, usable_cores

    assert 0.0 <= spare_cores(0.05) <= usable_cores() + 1e-6


def test_steps_that_slow_down_fall_back_to_the_first_count() -> None:
    torch.set_num_threads(2)
    choice = ThreadChoice(2, 1, {1: 2e-4, 2: 1e-4})
    for step in range(WINDOW):  # at the measured rate: nothing happens
        assert choice.after_step(step, 1000, 0.1) is None
    assert torch.get_num_threads() == 2
    notes = [choice.after_step(WINDOW + k, 1000, 0.1 * SLOWDOWN * 1.5) for k in range(WINDOW)]
    fell = [n for n in notes if n]
    assert len(fell) == 1 and "1 CPU thread(s)" in fell[0]
    assert choice.count == 1 and torch.get_num_threads() == 1 and choice.fell_back_at is not None
    assert choice.after_step(99, 1000, 10.0) is None  # once only


def test_training_times_the_counts_and_matches_a_fixed_count_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy backbone (the demo's), micro-batches large enough that MKL splits them;
    the machine taken as idle, so both counts are timed on the real first batch."""
    from tests.test_trainer import GROUPS, make_examples
    from yoc_assistant import Backbone
    from yoc_assistant.personalize.concept import ConceptVectors
    from yoc_assistant.toyworld.common import BACKBONE_DIR

    bb = Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")
    examples = make_examples(bb, n_images=8, img_len=64)
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-2, seed=3)
    monkeypatch.setattr("yoc_assistant.personalize.threadpick.spare_cores", idle)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as app/training runs it
    try:
        def train(choices: tuple[int, ...], threads: int):
            bb.caches.cpu_threads = choices
            torch.set_num_threads(threads)
            vectors = ConceptVectors.initialize(bb, "bo", GROUPS, seed=5)
            result = train_concept(bb, vectors, examples, config)
            assert torch.get_num_threads() == threads  # the caller's count is back
            return result

        chosen = train((1, 2), 1)
        assert chosen.cpu_threads in (1, 2) and any("(measured 1: " in n for n in chosen.notes)
        fixed = train((), chosen.cpu_threads)
        assert fixed.cpu_threads is None and fixed.notes == []
        # The timing passes leave no trace: the run is the fixed-count run at the chosen count.
        assert torch.equal(chosen.last.input_rows, fixed.last.input_rows)
        assert torch.equal(chosen.last.output_rows, fixed.last.output_rows)
        assert chosen.losses == fixed.losses
        # One thread and two agree to float rounding (not bit for bit: MKL splits reductions).
        other = train((), 3 - chosen.cpu_threads)
        for a, b in ((chosen.last.input_rows, other.last.input_rows),
                     (chosen.last.output_rows, other.last.output_rows)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        assert chosen.losses == pytest.approx(other.losses, rel=1e-5)
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_resumed_run_keeps_the_count_it_started_at(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import threading

    from tests.test_trainer import GROUPS, make_examples
    from yoc_assistant import Backbone
    from yoc_assistant.personalize.concept import ConceptVectors
    from yoc_assistant.toyworld.common import BACKBONE_DIR

    bb = Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")
    bb.caches.cpu_threads = (1, 2)
    examples = make_examples(bb, n_images=4, img_len=32)
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-2, seed=3, checkpoint_every=1)
    vectors = ConceptVectors.initialize(bb, "bo", GROUPS, seed=5)

    def two_threads(choices, tokens, work, spare=None):  # the machine is idle: two threads won
        torch.set_num_threads(2)
        return ThreadChoice(2, choices[0], {1: 2e-4, 2: 1e-4})

    monkeypatch.setattr("yoc_assistant.personalize.trainer.choose_threads", two_threads)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)  # as app/training runs it
    full = train_concept(bb, vectors, examples, config, run_dir=tmp_path / "full")
    assert full.cpu_threads == 2
    cancel = threading.Event()
    part = train_concept(bb, vectors, examples, config, run_dir=tmp_path / "part", cancel=cancel,
                         on_event=lambda e: cancel.set() if e.phase == "train" and e.step == 2 else None)
    assert part.cancelled and part.step == 2

    def must_not_time(*args, **kwargs):  # the machine got busy: timing now would pick one thread
        raise AssertionError("a resumed run keeps its count: nothing to time")

    monkeypatch.setattr("yoc_assistant.personalize.trainer.choose_threads", must_not_time)
    done = train_concept(bb, vectors, examples, config, run_dir=tmp_path / "part", resume=True)
    assert done.resumed_from == 2 and done.cpu_threads == 2
    assert any("as the run it resumes" in n for n in done.notes)
    assert torch.equal(done.last.input_rows, full.last.input_rows)
    assert torch.equal(done.last.output_rows, full.last.output_rows)
    assert done.losses == full.losses


def test_a_run_that_slows_down_falls_back_and_its_checkpoints_say_so(bb, monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path) -> None:
    from safetensors import safe_open

    from tests.test_trainer import GROUPS, make_examples
    from yoc_assistant.personalize.checkpoints import checkpoint_paths
    from yoc_assistant.personalize.concept import ConceptVectors

    def fast_two_threads(choices, tokens, work, spare=None):  # measured far faster than any real step
        torch.set_num_threads(2)
        return ThreadChoice(2, choices[0], {1: 2e-12, 2: 1e-12})

    monkeypatch.setattr("yoc_assistant.personalize.trainer.choose_threads", fast_two_threads)
    monkeypatch.setattr(bb.caches, "cpu_threads", (1, 2))
    torch.set_num_threads(1)
    steps = WINDOW + 3
    config = TrainConfig(max_steps=steps, batch_size=2, lr=1e-2, seed=3, checkpoint_every=1, keep_checkpoints=steps)
    result = train_concept(bb, ConceptVectors.initialize(bb, "bo", GROUPS, seed=5), make_examples(bb, n_images=3),
                           config, run_dir=tmp_path)
    assert result.cpu_threads == 1
    assert any(f"from step {WINDOW - 1}" in n for n in result.notes)
    counts = []
    for path in checkpoint_paths(tmp_path):
        with safe_open(str(path), framework="pt") as fh:
            counts.append(fh.metadata()["cpu_threads"])
    assert counts == ["2"] * (WINDOW - 1) + ["1"] * (steps - WINDOW + 1)  # a resume goes on at the count in use
    assert torch.get_num_threads() == 1
