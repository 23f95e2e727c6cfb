"""Trainer: only the concept rows learn, the backbone stays bit-identical, the loss
falls, per-task averaging, checkpoints, cancel and bit-identical resume."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from yoc_assistant import Backbone
from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize.batches import (
    Schedule,
    collate,
    lr_at,
    per_task_loss,
    task_balanced_loss,
)
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
from yoc_assistant.personalize.data import Example
from yoc_assistant.personalize.trainer import (
    TrainConfig,
    TrainEvent,
    checkpoint_paths,
    total_steps,
    train_concept,
)

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"
GROUPS = {"generation": 4, "understanding": 4}


def make_examples(bb: Backbone, n_images: int = 4, img_len: int = 12) -> list[Example]:
    """Hand-built recognition and generation examples in the self-prompting layout."""
    cs = ConceptSet(bb, [ConceptVectors.initialize(bb, "bo", GROUPS)])
    sp, img_ids = bb.special, bb.image_vocab.bpe_ids.tolist()
    gen = torch.Generator().manual_seed(11)
    out: list[Example] = []
    for k in range(n_images):
        image = [img_ids[int(i)] for i in torch.randint(len(img_ids), (img_len,), generator=gen)]
        prompt = [sp.bos, *cs.prompt_ids("bo"), sp.boi, *image, sp.eoi,
                  *bb.tokenize("is"), cs.identifier_id("bo"), *bb.tokenize("in the photo ?"), sp.sep]
        answer = [*cs.group_ids("bo", "understanding"), *bb.tokenize("yes" if k % 2 == 0 else "no"), sp.eos]
        out.append(Example(prompt + answer, [-100] * len(prompt) + answer, "recognition"))
        prompt = [sp.bos, *cs.prompt_ids("bo"), *bb.tokenize("a photo of"), cs.identifier_id("bo"), sp.sep]
        target = [*cs.group_ids("bo", "generation"), sp.boi, *image, sp.eoi, sp.eos]
        out.append(Example(prompt + target, [-100] * len(prompt) + target, "generation"))
    return out


def backbone_state(bb: Backbone) -> dict[str, torch.Tensor]:
    """Every parameter and buffer as raw bytes (bit-level comparison, any dtype)."""
    tensors = dict(bb.model.named_parameters())
    tensors.update(dict(bb.model.named_buffers()))
    return {k: v.detach().contiguous().view(-1).view(torch.uint8).clone() for k, v in tensors.items()}


def assert_same_state(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"backbone tensors changed: {changed[:5]}"


# -- pure parts -------------------------------------------------------------------------------
def test_per_task_loss_averages_each_task_then_across_tasks() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 5)
    labels = torch.full((2, 6), -100)
    labels[0, 3] = 1  # task 0: one supervised token
    labels[1, 1:] = torch.tensor([0, 2, 4, 3, 1])  # task 1: five
    task = torch.tensor([0, 1])
    loss, means, counts = per_task_loss(hidden, labels, task, 2, lambda h: h)
    tok0 = F.cross_entropy(hidden[0, 2:3], labels[0, 3:4])
    tok1 = F.cross_entropy(hidden[1, :5], labels[1, 1:], reduction="none")
    assert torch.allclose(means, torch.stack([tok0, tok1.mean()]))
    assert counts.tolist() == [1.0, 5.0]
    assert torch.allclose(loss, (tok0 + tok1.mean()) / 2)
    pooled = torch.cat([tok0.view(1), tok1]).mean()
    assert not torch.allclose(loss, pooled)  # not one average over all tokens


def test_the_shared_loss_per_example_is_the_toy_trainers() -> None:
    """toyworld/train_backbone.py averages per example, then per task, then across tasks."""
    from yoc_assistant.toyworld.train_backbone import example_balanced_loss

    torch.manual_seed(1)
    ce = torch.rand(4, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [1, 0, 0, 0, 1]])
    weight = mask.float() * torch.tensor([1.0, 3.0, 1.0, 1.0, 2.0])
    task = torch.tensor([0, 0, 1, 2])
    loss, per_task = example_balanced_loss(ce * mask, mask, task, 3, weight)
    per_example = (ce * mask * weight).sum(1) / weight.sum(1)
    expected = {0: per_example[:2].mean(), 1: per_example[2], 2: per_example[3]}
    assert per_task == pytest.approx({t: float(v) for t, v in expected.items()})
    assert torch.allclose(loss, torch.stack(list(expected.values())).mean())
    # Per token (the concept trainer), a task's tokens pool: example 1's five tokens weigh more.
    tok_loss, means, _ = task_balanced_loss(ce[mask.bool()], task.unsqueeze(1).expand_as(mask)[mask.bool()], 3)
    assert torch.allclose(means[0], ce[:2][mask[:2].bool()].mean())
    assert not torch.allclose(means[0], expected[0])


def test_lr_schedule_and_clipping_reach_the_optimizer(bb: Backbone) -> None:
    """Adam's first step moves each row entry by about lr (sign of the gradient), so the
    largest change shows the lr that step used; clipping the gradient to ~0 leaves only
    eps-sized moves."""
    assert [round(lr_at(s, 100, 1.0, warmup=10), 3) for s in (0, 9, 10, 99)] == [0.1, 1.0, 1.0, 0.05]
    examples = make_examples(bb, n_images=2, img_len=6)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=3)

    def first_move(**options: object) -> float:
        config = TrainConfig(max_steps=1, batch_size=4, lr=1e-2, **options)  # type: ignore[arg-type]
        rows = train_concept(bb, vec, examples, config).vectors.input_rows
        return float((rows - vec.input_rows).abs().max())

    assert first_move() == pytest.approx(1e-2, rel=0.01)
    assert first_move(lr_schedule="cosine", warmup_steps=10) == pytest.approx(1e-3, rel=0.01)
    assert first_move(clip_grad_norm=1e-12) < 1e-4
    with pytest.raises(UserInputError, match="lr schedule"):
        TrainConfig(lr_schedule="linear").validate()
    with pytest.raises(UserInputError, match="clip-grad-norm"):
        TrainConfig(clip_grad_norm=0.0).validate()


def test_collate_pads_to_the_longest_in_the_batch() -> None:
    exs = [Example([1, 2, 3], [-100, 2, 3], "a"), Example([4, 5], [-100, 5], "b")]
    out = collate(exs, pad_id=9, tasks=["a", "b"], device=torch.device("cpu"))
    assert out["ids"].tolist() == [[1, 2, 3], [4, 5, 9]]
    assert out["labels"].tolist() == [[-100, 2, 3], [-100, 5, -100]]
    assert out["mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["task"].tolist() == [0, 1]


def test_schedule_covers_each_example_once_and_buckets_by_length() -> None:
    lengths = [((i * 37) % 50) + 3 for i in range(70)]
    sched = Schedule(70, batch_size=4, grad_accum=2, world=1, seed=3)
    batches = sched.epoch_batches(0, lengths)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(70)) and len(batches) == sched.micro_per_epoch == 18
    assert sched.steps_per_epoch == 9
    assert total_steps(TrainConfig(epochs=3), sched) == 27
    assert total_steps(TrainConfig(epochs=1, max_steps=40), sched) == 40  # --steps overrides epochs
    assert batches == sched.epoch_batches(0, lengths)  # a pure function of (seed, epoch)
    assert batches != sched.epoch_batches(1, lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = torch.randperm(70, generator=torch.Generator().manual_seed(0)).tolist()
    naive = sum(4 * max(lengths[i] for i in shuffled[j:j + 4]) for j in range(0, 68, 4)) + 2 * 50
    assert padded < naive
    # Two processes split each step's micro-batches without overlap.
    two = Schedule(70, batch_size=4, grad_accum=2, world=2, seed=3)
    step0 = two.step_batches(batches, 0, 0) + two.step_batches(batches, 0, 1)
    assert sorted(map(tuple, step0)) == sorted(map(tuple, batches[:4]))


def test_bad_config_and_examples_are_refused(bb: Backbone) -> None:
    vec = ConceptVectors.initialize(bb, "bo", GROUPS)
    with pytest.raises(UserInputError, match="batch-size"):
        train_concept(bb, vec, make_examples(bb, 1), TrainConfig(batch_size=0))
    with pytest.raises(UserInputError, match="no training examples"):
        train_concept(bb, vec, [], TrainConfig())
    bad = Example([1, bb.vocab_size + 40], [-100, bb.vocab_size + 40], "qa")
    with pytest.raises(UserInputError, match="outside"):
        train_concept(bb, vec, [bad], TrainConfig())


# -- training ---------------------------------------------------------------------------------
def test_only_concept_rows_learn_and_the_loss_falls(bb: Backbone) -> None:
    examples = make_examples(bb)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=0)
    before = backbone_state(bb)
    events: list[TrainEvent] = []
    config = TrainConfig(epochs=20, batch_size=4, lr=3e-3, seed=0)
    result = train_concept(bb, vec, examples, config, on_event=events.append)
    assert_same_state(before, backbone_state(bb))
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())
    assert result.step == result.total_steps == 40 and not result.cancelled
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 0.5, result.losses
    assert set(result.task_losses) <= {"recognition", "generation"}
    assert not torch.equal(result.vectors.input_rows, vec.input_rows)
    assert not torch.equal(result.vectors.output_rows, vec.output_rows)
    # The starting vectors are not modified in place.
    assert torch.equal(vec.input_rows, ConceptVectors.initialize(bb, "bo", GROUPS, seed=0).input_rows)
    phases = [e.phase for e in events]
    assert phases[0] == "start" and phases[-1] == "done"
    steps = [e.step for e in events if e.phase == "train"]
    assert steps == list(range(1, 41))
    assert all(e.total_steps == 40 and e.eta_s is not None and e.loss is not None
               for e in events if e.phase == "train")


@pytest.mark.parametrize("precision", ["bf16", "int8", "nf4"])
def test_backbone_bit_identical_in_other_precisions(precision: str) -> None:
    bb = Backbone.load(str(CHECKPOINT), precision=precision, device="cpu")
    examples = make_examples(bb, n_images=2, img_len=6)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=0)
    before = backbone_state(bb)
    config = TrainConfig(epochs=1, batch_size=2, lr=1e-2, gradient_checkpointing=precision == "bf16")
    result = train_concept(bb, vec, examples, config)
    assert_same_state(before, backbone_state(bb))
    assert not bb.model.training  # restored to eval mode after checkpointed training
    assert result.step == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert not torch.equal(result.vectors.input_rows, vec.input_rows)  # gradients got through


def test_resume_after_cancel_is_bit_identical(bb: Backbone, tmp_path: Path) -> None:
    examples = make_examples(bb, n_images=3)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=4)
    config = TrainConfig(epochs=4, batch_size=2, lr=5e-3, seed=9, checkpoint_every=2, grad_accum=2)
    full = train_concept(bb, vec, examples, config, run_dir=tmp_path / "full")
    assert full.step == 8

    cancel = threading.Event()

    def stop_at_5(event: TrainEvent) -> None:
        if event.phase == "train" and event.step == 5:
            cancel.set()

    part = train_concept(bb, vec, examples, config, run_dir=tmp_path / "part", on_event=stop_at_5,
                         cancel=cancel)
    assert part.cancelled and part.step == 5
    saved = checkpoint_paths(tmp_path / "part")
    assert [p.name for p in saved] == ["step-00000004.safetensors", "step-00000005.safetensors"]
    with safe_open(str(saved[-1]), framework="pt") as fh:
        keys = set(fh.keys())  # noqa: SIM118
        assert fh.metadata()["step"] == "5"
    assert {"input_rows", "output_rows", "adam.exp_avg.0", "adam.exp_avg_sq.1", "adam.step.0",
            "rng.torch"} <= keys

    # A kill after step 5's checkpoint was written but before step 6's: resume from 4.
    shutil.copytree(tmp_path / "part", tmp_path / "killed")
    (tmp_path / "killed" / "step-00000005.safetensors").unlink()

    for folder in ("part", "killed"):
        torch.manual_seed(1234)  # resuming restores the run's own RNG state
        done = train_concept(bb, vec, examples, config, run_dir=tmp_path / folder, resume=True)
        assert done.resumed_from == (5 if folder == "part" else 4)
        assert done.step == 8 and not done.cancelled
        assert torch.equal(done.vectors.input_rows, full.vectors.input_rows)
        assert torch.equal(done.vectors.output_rows, full.vectors.output_rows)
        assert done.losses == full.losses


def test_resume_refuses_other_training_data(bb: Backbone, tmp_path: Path) -> None:
    examples = make_examples(bb, n_images=2, img_len=4)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS)
    config = TrainConfig(epochs=1, batch_size=2, checkpoint_every=1)
    train_concept(bb, vec, examples, config, run_dir=tmp_path)
    with pytest.raises(UserInputError, match="training data"):
        train_concept(bb, vec, examples[:-1], config, run_dir=tmp_path, resume=True)


def test_best_checkpoint_is_picked_by_the_evaluator(bb: Backbone, tmp_path: Path) -> None:
    examples = make_examples(bb, n_images=2, img_len=6)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=2)
    config = TrainConfig(epochs=3, batch_size=2, lr=1e-2, seed=5, eval_every=1)
    probe = examples[0]
    seen: list[int] = []

    def evaluator(v: ConceptVectors) -> dict[str, float]:
        # A held-out style score on the vectors it is given: peaks when the rows
        # are at step 3's values (closest to a target recorded below).
        seen.append(int(v.metadata["trained_steps"]))
        return {"score": -float((v.input_rows - target.input_rows).abs().sum()), "probe": len(probe.ids)}

    target = train_concept(bb, vec, examples, TrainConfig(epochs=3, batch_size=2, lr=1e-2, seed=5,
                                                          max_steps=3)).vectors
    result = train_concept(bb, vec, examples, config, run_dir=tmp_path, evaluator=evaluator)
    assert seen == list(range(1, 7))
    assert result.best_step == 3 and result.best_score == 0.0
    assert torch.equal(result.vectors.input_rows, target.input_rows)
    assert not torch.equal(result.last.input_rows, target.input_rows)
    assert (tmp_path / "best.safetensors").exists()


def test_gradient_checkpointing_gives_the_same_rows(bb: Backbone) -> None:
    examples = make_examples(bb, n_images=2, img_len=6)
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=1)
    plain = train_concept(bb, vec, examples, TrainConfig(max_steps=2, batch_size=2, lr=1e-2))
    engaged: list[bool] = []

    def watch(event: TrainEvent) -> None:
        layer = bb.model.model.layers[0]
        if event.phase == "train":
            engaged.append(bool(getattr(layer, "gradient_checkpointing", False)) and layer.training)

    ckpt = train_concept(bb, vec, examples, TrainConfig(max_steps=2, batch_size=2, lr=1e-2,
                                                        gradient_checkpointing=True), on_event=watch)
    assert engaged and all(engaged)
    assert torch.allclose(plain.vectors.input_rows, ckpt.vectors.input_rows, atol=1e-6)
    assert not bb.model.training and not bb.model.model.gradient_checkpointing


def test_bench_train_on_cpu(bb: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.backbone.bench import train_rows
    from yoc_assistant.personalize.bench import bench_train, matrix_params
    from yoc_assistant.personalize.threadpick import usable_cores

    monkeypatch.setattr("yoc_assistant.personalize.bench.spare_cores", lambda: 1.0)  # another job on a core
    before = backbone_state(bb)
    out = bench_train(bb, batch_size=2, seq_len=48, steps=2, warmup=1)
    assert_same_state(before, backbone_state(bb))
    assert out["steps"] == 2 and out["ms_per_step"] > 0
    # ms_per_step is rounded to 0.01 ms: on a fast step that alone is a few tenths of a percent
    assert out["tokens_per_s"] == pytest.approx(2 * 48 / out["ms_per_step"] * 1000, rel=1e-2)
    n = matrix_params(bb)
    assert out["flops_per_step"] == 4 * n * 2 * 48
    # Every matrix of the 2 decoder layers plus the head, nothing of the embedding or VQ model.
    cfg = bb.model.config
    h, i = cfg.hidden_size, cfg.intermediate_size
    assert n == cfg.num_hidden_layers * (4 * h * h + 3 * h * i) + h * bb.vocab_size
    assert out["pct_of_bf16_peak"] is None and out["device"] == "cpu"
    # the same batches trained by hand with transformers' modules, timed in the same run
    assert out["plain_transformers_ms_per_step"] > 0
    assert out["vs_plain_transformers"] == pytest.approx(out["ms_per_step"] / out["plain_transformers_ms_per_step"],
                                                         rel=1e-2)
    # a step's parts, timed with the trainer's own functions on the same batches
    assert set(out["phases_ms"]) == {"forward_and_loss", "backward", "optimizer"}
    assert all(v > 0 for v in out["phases_ms"].values())
    # batches whose rows share their first half, timed with the shared part run once and whole
    shared = out["shared_prefix"]
    assert (shared["shared_positions"], shared["of"]) == (24, 48)
    assert set(shared["ms_per_batch"]) == {"shared_prefix", "whole_rows"} and all(
        v > 0 for v in shared["ms_per_batch"].values())
    assert "forward + backward, rows sharing 24 of 48 positions" in dict(train_rows(out))
    if usable_cores() >= 2:  # two threads beside a busy job are not timed (they would take minutes)
        assert out["threads"].startswith("not timed")
        assert dict(train_rows(out))["training step, by CPU threads"] == out["threads"]


def test_bench_compares_thread_counts_and_says_whether_the_gradients_change(bb: Backbone) -> None:
    from yoc_assistant.backbone.bench import train_rows
    from yoc_assistant.personalize.bench import compare_threads, synthetic_examples

    vectors = ConceptVectors.initialize(bb, "bench", GROUPS, seed=0)
    examples = synthetic_examples(bb, 6, 40, vectors.n_rows)
    before = torch.get_num_threads()
    out = compare_threads(bb, vectors, examples, batch_size=2, steps=2, warmup=1, counts=(1, 1, 2))
    assert torch.get_num_threads() == before
    assert set(out["ms_per_step"]) == {"1", "2"} and all(v > 0 for v in out["ms_per_step"].values())
    assert out["same_gradients_as_1"]["1"] is True  # one thread twice: the same numbers
    assert isinstance(out["same_gradients_as_1"]["2"], bool)
    train = {"ms_per_step": 1.0, "batch_size": 2, "seq_len": 40, "plain_transformers_ms_per_step": 1.0,
             "vs_plain_transformers": 1.0, "phases_ms": {"backward": 0.5}, "threads": out}
    rows = dict(train_rows(train))
    assert "backward 0.5 ms" in rows["training step, by part"]
    by_count = dict(part.split(": ", 1) for part in rows["training step, by CPU threads"].split(", "))
    assert by_count["1"].endswith("(same gradients)")
    assert by_count["2"].endswith("(same gradients)" if out["same_gradients_as_1"]["2"] else "(other gradients)")
