"""Train a concept's rows on a frozen backbone.

Only the concept's input and output rows are parameters; the backbone never gets a
gradient and never changes (its tensors are bit-identical after training, in every
precision). The loss is token cross-entropy over the head's V+E logits at the
supervised positions, averaged per task, then across the tasks in the batch (a
single average over all tokens leaves the short yes/no task at chance).

Examples: any objects with `ids: list[int]`, `labels: list[int]` (same length as ids;
-100 = no loss; `labels[t]` is the target for position t, so the logits at t-1
predict it, the usual causal shift) and `task: str`. Ids >= `bb.vocab_size` address
the concept's rows (id - vocab_size = row), as `ConceptSet(bb, [vectors])` lays them out.

Determinism and resume: the data order of epoch e is a pure function of (seed, e),
so optimizer step s always sees the same batches; a checkpoint (`checkpoints.py`)
holds the rows, the AdamW state, the RNG states and the step counter as safetensors
(never pickle). A run resumed from a checkpoint ends bit-identical to an
uninterrupted one in the same process setup (thread count, device).

The loop (`train_concept`) reads top to bottom: setup; then for each step: batches,
loss, backward, sum across processes, clip, optimizer step, learning rate; eval when
due; checkpoint when due. `lr_schedule="cosine"` (warmup, then cosine decay) and
`clip_grad_norm` are options; the defaults (constant lr, no clipping) are the paper's.

Distribution: built on accelerate. Micro-batches of a step are dealt round-robin to
the processes and the rows' gradients are summed across them, so `accelerate launch`
on several GPUs needs no code change; a single CPU process is the degenerate case.
Gradient accumulation is done here (not by `Accelerator.accumulate`) so that every
checkpoint falls on an optimizer-step boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yoc_assistant.backbone.loading import PRECISIONS
from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize.batches import (
    ExampleLike,
    Schedule,
    check_examples,
    collate,
    data_digest,
    lr_at,
    per_task_loss,
)
from yoc_assistant.personalize.checkpoints import (
    BEST_FILE,
    CHECKPOINT_PREFIX,
    RunHistory,
    checkpoint_paths,
    load_checkpoint,
    rng_preserved,
    save_checkpoint,
)
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
from yoc_assistant.personalize.threadpick import ThreadChoice, choose_threads

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

__all__ = ["BEST_FILE", "CHECKPOINT_PREFIX", "TrainConfig", "TrainEvent", "TrainResult",
           "checkpoint_paths", "check_examples", "train_concept"]
LR_SCHEDULES = ("constant", "cosine")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: the application layer decides


@dataclass
class TrainConfig:
    epochs: int = 15
    max_steps: int | None = None  # optimizer steps; overrides epochs (None: epochs decide)
    lr: float = 1e-4
    # No decay by default: the rows are few and sit at the embedding's scale; decay would
    # only pull them toward zero, away from what the frozen layers expect.
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 4
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    precision: str = "auto"
    seed: int = 0
    # Optimizer steps between checkpoints: a kill loses at most this many steps (seconds of
    # work on the toy backbone, about a minute on a 7B), while writing a checkpoint per
    # step was a quarter of a small backbone's step time. A checkpoint's own recipe may say otherwise.
    checkpoint_every: int = 25
    eval_every: int | None = None  # optimizer steps; None: at the end of each epoch
    keep_checkpoints: int = 2
    # Start each group's last rows at the words the backbone's own descriptions of the
    # photos share (personalize/describe.py); False: every row starts blank (the paper).
    init_from_photos: bool = True
    # Train on each photo and its mirror image (more views of the concept from the same
    # photos); off for things whose left and right differ (text, logos).
    mirror_photos: bool = True
    # Show one of the photos (the first) in the concept's prompt after its rows:
    # `<name> is <rows> <photo> .`, the shape of the toy backbone's photo definitions.
    # The rows still carry what the photo does not (its name's facts, self-prompting);
    # the photo carries detail the rows learn slowly (an unnamed accent). Costs the
    # photo's tokens in every request's prompt (64 on the toy backbone, 1024 on Anole-7b);
    # off by default (the paper's rows only), on in the toy backbone's recipe, where it
    # was measured (docs/toyworld.md).
    reference_photo: bool = False
    # Where the pool's hard negatives come from in the CLIP ranking (retrieval.py):
    # "after-soft" (ranked just below the soft positives; the default elsewhere),
    # "top" (the most similar, the paper's literal reading) or "shared-top" (the most
    # similar, kept among the soft positives too). Measured on the toy backbone only.
    hard_negatives: str = "after-soft"
    # "constant" (the paper), or "cosine": linear warmup over `warmup_steps`, then cosine
    # decay to 5% of `lr` at the last step.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    clip_grad_norm: float | None = None  # max L2 norm of the rows' gradient; None: no clipping

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name.replace('_', '-')} must be a whole number >= 1, not {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise UserInputError(f"seed must be a whole number from 0 to 2**63-1, not {self.seed!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserInputError(f"steps must be >= 1, not {self.max_steps!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise UserInputError(f"eval-every must be >= 1, not {self.eval_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserInputError(f"learning rate must be a positive number, not {self.lr!r}")
        from yoc_assistant.personalize.retrieval import HARD_NEGATIVES

        if self.hard_negatives not in HARD_NEGATIVES:
            raise UserInputError(f"hard negatives must be one of {', '.join(HARD_NEGATIVES)}, "
                                 f"not {self.hard_negatives!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserInputError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, "
                                 f"not {self.lr_schedule!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserInputError(f"warmup-steps must be a whole number >= 0, not {self.warmup_steps!r}")
        if self.clip_grad_norm is not None and not (self.clip_grad_norm > 0 and math.isfinite(self.clip_grad_norm)):
            raise UserInputError(f"clip-grad-norm must be a positive number, not {self.clip_grad_norm!r}")
        if self.precision not in PRECISION_CHOICES:
            raise UserInputError(
                f"unknown precision {self.precision!r}: use one of {', '.join(PRECISION_CHOICES)}"
            )


@dataclass
class TrainEvent:
    """Progress for the CLI and the chat app. `phase`: start | train | eval | checkpoint |
    note | done | cancelled. `step`: optimizer steps done; `epoch`: epochs completed;
    `loss`: the last step's loss (None before the first); `eta_s`: seconds left (train
    events); `note`: a remark (phase note) or the checkpoint's path (phase checkpoint)."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None
    task_losses: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    phase: str = "train"
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.total_steps

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0


EventFn = Callable[[TrainEvent], None]
# vectors -> metrics; must contain "score" (higher is better) to pick the best checkpoint.
Evaluator = Callable[[ConceptVectors], dict[str, float]]


@dataclass
class TrainResult:
    vectors: ConceptVectors  # the chosen rows: the best checkpoint, or the last
    last: ConceptVectors
    step: int
    total_steps: int
    cancelled: bool
    best_step: int | None
    best_score: float | None
    best_metrics: dict[str, float]
    losses: list[float]  # one per optimizer step, from step 1
    task_losses: dict[str, float]  # of the last step
    resumed_from: int | None
    run_dir: Path | None
    cpu_threads: int | None = None  # the count chosen by measuring (threadpick.py); None: not chosen
    notes: list[str] = field(default_factory=list)  # the thread choice, a fallback


def total_steps(config: TrainConfig, schedule: Schedule) -> int:
    """`max_steps` when given (epochs then run on as needed), else epochs x steps per epoch."""
    if config.max_steps is not None:
        return config.max_steps
    return config.epochs * schedule.steps_per_epoch



def lr_for_step(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of optimizer step `step` (0-based)."""
    if config.lr_schedule == "constant":
        return config.lr
    return lr_at(step, total, config.lr, warmup=config.warmup_steps)


def set_checkpointing(module: torch.nn.Module, on: bool) -> None:
    """Gradient (activation) checkpointing of the decoder layers, non-reentrant
    (transformers 5 renamed the call; the old name still works with a warning)."""
    if on:
        enable = getattr(module, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(module, "activation_checkpointing_disable", None) or module.gradient_checkpointing_disable
        disable()


@contextlib.contextmanager
def frozen_backbone(bb: Backbone, gradient_checkpointing: bool) -> Iterator[None]:
    """No gradient for the backbone; with checkpointing, its layers recompute in backward
    (HF checkpoints only in training mode; Chameleon has no active dropout)."""
    model = bb.model
    was_training = model.training
    model.requires_grad_(False)
    if gradient_checkpointing:
        set_checkpointing(model.model, True)
        model.train()
    try:
        yield
    finally:
        if gradient_checkpointing:
            set_checkpointing(model.model, False)
        model.train(was_training)


def batch_loss(bb: Backbone, concepts: ConceptSet, batch: Sequence[ExampleLike], tasks: Sequence[str],
               *, share_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-task means, per-task counts) of one micro-batch (`per_task_loss`).
    `share_prefix=False` runs every row whole (`yoc bench --train` compares the two)."""
    data = collate(batch, int(getattr(bb.special, "pad", 0)), tasks, bb.device)
    extra = concepts.extra
    autocast = bb.device.type == "cuda" and bb.dtype == torch.bfloat16
    with torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        embeds = bb.embed(data["ids"], extra)
        # Every example starts with the concept's prompt: run that part once per batch.
        hidden = bb.hidden_states(embeds, attention_mask=data["mask"],
                                  share_prefix_of=data["ids"] if share_prefix else None)
        return per_task_loss(hidden, data["labels"], data["task"], len(tasks),
                             lambda h: bb.logits(h, extra), data["weight"])


def padded_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Positions the network runs over for these micro-batches (each padded to its longest)."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches if b)


def training_threads(bb: Backbone, concepts: ConceptSet, rows: Sequence[torch.Tensor],
                     examples: Sequence[ExampleLike], tasks: Sequence[str], schedule: Schedule,
                     step: int, lengths: Sequence[int], resumed: int | None = None) -> ThreadChoice | None:
    """The run's CPU thread count, timed on step `step`'s first micro-batch among the
    counts the backbone allows (`bb.caches.cpu_threads`, app/backbones.py; threadpick.py);
    None (torch's count stands) when it allows fewer than two. A resumed run keeps the
    count it was started at (`resumed`), so it ends as the uninterrupted run would.
    Nothing is accumulated into the rows' `.grad`."""
    choices = tuple(getattr(bb.caches, "cpu_threads", ()) or ())
    if bb.device.type != "cpu" or len(choices) < 2:
        return None
    if resumed is not None and resumed in choices:
        torch.set_num_threads(resumed)
        return ThreadChoice(resumed, choices[0])
    epoch, within = divmod(step, schedule.steps_per_epoch)
    batch = schedule.step_batches(schedule.epoch_batches(epoch, lengths), within, 0)[0]

    def work() -> object:
        loss, _, _ = batch_loss(bb, concepts, [examples[i] for i in batch], tasks)
        return torch.autograd.grad(loss, list(rows))

    return choose_threads(choices, padded_tokens([batch], lengths), work)


@contextlib.contextmanager
def _threads_restored() -> Iterator[None]:
    count = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)


def rows_snapshot(template: ConceptVectors, rows: Sequence[torch.Tensor], step: int) -> ConceptVectors:
    """The concept's rows as they are now, on the CPU, marked with the step."""
    meta = {**template.metadata, "trained_steps": str(step)}
    return ConceptVectors(template.name, dict(template.groups), rows[0].detach().cpu().clone(),
                          rows[1].detach().cpu().clone(), meta, list(template.reference),
                          [list(p) for p in template.photos])


# -- the trainer ------------------------------------------------------------------------------
def train_concept(bb: Backbone, vectors: ConceptVectors, examples: Sequence[ExampleLike],
                  config: TrainConfig | None = None, *, run_dir: str | os.PathLike[str] | None = None,
                  on_event: EventFn | None = None, cancel: threading.Event | None = None,
                  resume: bool = False, evaluator: Evaluator | None = None,
                  frozen: Sequence[ConceptVectors] = ()) -> TrainResult:
    """Train `vectors`' rows on `examples` with the backbone frozen; see the module doc.

    `frozen`: other concepts laid after `vectors` in the examples' ConceptSet (their ids
    follow its rows), read but never trained: the stand-ins of two-concept questions.

    `run_dir` holds checkpoints (and best.safetensors); without it nothing is written
    and `resume` has nothing to resume from. `cancel` is checked before every step:
    when set, a checkpoint is written and the result says `cancelled`.
    """
    from accelerate import Accelerator

    # -- setup
    config = config or TrainConfig()
    config.validate()
    folder = Path(run_dir) if run_dir is not None else None
    examples = list(examples)
    frozen = list(frozen)  # read only: with_rows below shares their rows, never writes them
    tasks = check_examples(examples, bb, vectors.n_rows + sum(f.n_rows for f in frozen))
    lengths = [len(e.ids) for e in examples]
    accel = Accelerator(cpu=bb.device.type == "cpu")
    main = accel.is_main_process
    schedule = Schedule(len(examples), config.batch_size, config.grad_accum, accel.num_processes, config.seed)
    total = total_steps(config, schedule)
    rows = [r.detach().to(bb.device, torch.float32).clone().requires_grad_(True)
            for r in (vectors.input_rows, vectors.output_rows)]
    concepts = ConceptSet(bb, [vectors.with_rows(rows[0], rows[1]),
                               *(f.with_rows(f.input_rows.to(bb.device, torch.float32),
                                             f.output_rows.to(bb.device, torch.float32)) for f in frozen)])
    optimizer = accel.prepare(torch.optim.AdamW(rows, lr=config.lr, betas=config.betas,
                                                weight_decay=config.weight_decay))
    identity = {"data_digest": data_digest(examples), "seed": str(config.seed),
                "batch_size": str(config.batch_size), "grad_accum": str(config.grad_accum),
                "world": str(accel.num_processes), "backbone_fingerprint": str(bb.fingerprint)}
    # Not the concept's name: the run folder is the concept's (by its stable id), and a
    # concept renamed after an interrupted run must still resume it.
    about = {"total_steps": str(total), "n_examples": str(len(examples)),
             "groups": json.dumps(list(vectors.groups.items())), "config": json.dumps(asdict(config))}
    run = RunHistory()
    found = checkpoint_paths(folder) if resume and folder is not None else []
    if found:
        run = load_checkpoint(found[-1], identity, rows, optimizer)

    def emit(phase: str, *, eta: float | None = None, note: str = "",
             metrics: dict[str, float] | None = None) -> None:
        if on_event is not None and main:
            on_event(TrainEvent(run.step, total, run.step // max(schedule.steps_per_epoch, 1),
                                run.losses[-1] if run.losses else None, dict(run.last_tasks), eta,
                                phase, note, dict(metrics or {})))

    def checkpoint() -> None:
        if folder is not None and main:
            path = save_checkpoint(folder, rows, optimizer, run, identity, about, config.keep_checkpoints)
            emit("checkpoint", note=str(path))

    def evaluate() -> None:
        if evaluator is None:
            return
        was_training = bb.model.training
        bb.model.eval()
        threads = torch.get_num_threads()
        if threads_chosen is not None and threads != threads_chosen.base:
            torch.set_num_threads(threads_chosen.base)  # evaluation at the count a fixed run would use
        try:
            with rng_preserved(), torch.no_grad():
                metrics = dict(evaluator(rows_snapshot(vectors, rows, run.step)))
        finally:
            bb.model.train(was_training)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        score = float(metrics.get("score", float("nan")))
        # Ties go to the later checkpoint: held-out scores are coarse (a few photos).
        if math.isfinite(score) and (run.best_score is None or score >= run.best_score):
            run.best_score, run.best_step, run.best_metrics = score, run.step, metrics
            if folder is not None and main:
                best = rows_snapshot(vectors, rows, run.step)
                best.metadata["score"] = repr(score)
                best.save(folder / BEST_FILE, bb)
        emit("eval", metrics=metrics)

    # -- the loop
    emit("start", note=f"resumed at step {run.step}" if run.resumed_from is not None else "")
    eval_every = config.eval_every or schedule.steps_per_epoch
    started, start_step, cancelled = time.monotonic(), run.step, False
    epoch_batches: tuple[int, list[list[int]]] = (-1, [])
    threads_chosen: ThreadChoice | None = None
    notes: list[str] = []

    def say(text: str | None) -> None:
        if text:
            notes.append(text)
            emit("note", note=text)

    with frozen_backbone(bb, config.gradient_checkpointing), _threads_restored():
        if run.step < total and accel.num_processes == 1:
            threads_chosen = training_threads(bb, concepts, rows, examples, tasks, schedule, run.step, lengths,
                                              resumed=run.cpu_threads)
            if threads_chosen is not None:
                about["cpu_threads"] = str(threads_chosen.count)  # for a resume (checkpoints carry `about`)
            say(threads_chosen.note() if threads_chosen is not None else None)
        while run.step < total:
            if cancel is not None and cancel.is_set():
                checkpoint()
                emit("cancelled", note="training cancelled; resume continues from here")
                cancelled = True
                break
            epoch, within = divmod(run.step, schedule.steps_per_epoch)
            if epoch_batches[0] != epoch:
                epoch_batches = (epoch, schedule.epoch_batches(epoch, lengths))
            n_micro = schedule.count_in_step(epoch_batches[1], within)
            step_batches = schedule.step_batches(epoch_batches[1], within, accel.process_index)
            step_started = time.perf_counter()
            loss_sum = torch.zeros((), device=bb.device)
            task_sum = torch.zeros(len(tasks), device=bb.device)
            task_n = torch.zeros(len(tasks), device=bb.device)
            for batch in step_batches:
                loss, means, counts = batch_loss(bb, concepts, [examples[i] for i in batch], tasks)
                accel.backward(loss / n_micro)
                loss_sum += loss.detach()
                task_sum += means * (counts > 0)
                task_n += (counts > 0).float()
            if accel.num_processes > 1:  # the step's micro-batches were dealt to all processes
                for row in rows:
                    row.grad = accel.reduce(row.grad if row.grad is not None else torch.zeros_like(row),
                                            reduction="sum")
                loss_sum, task_sum, task_n = (accel.reduce(t, reduction="sum") for t in (loss_sum, task_sum, task_n))
            if config.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(rows, config.clip_grad_norm)
            for group in optimizer.param_groups:
                group["lr"] = lr_for_step(config, run.step, total)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if threads_chosen is not None:
                say(threads_chosen.after_step(run.step, padded_tokens(step_batches, lengths),
                                              time.perf_counter() - step_started))
                about["cpu_threads"] = str(threads_chosen.count)  # after a fallback, a resume goes on at it
            run.step += 1
            run.losses.append(float(loss_sum) / n_micro)
            run.last_tasks = {t: float(task_sum[k] / task_n[k]) for k, t in enumerate(tasks) if task_n[k] > 0}
            emit("train", eta=(time.monotonic() - started) / (run.step - start_step) * (total - run.step))
            if run.step % eval_every == 0 or run.step == total:
                evaluate()
            if run.step % config.checkpoint_every == 0 or run.step == total:
                checkpoint()
        else:
            emit("done", eta=0.0)

    # -- the result: the best checkpoint's rows, or the last
    accel.wait_for_everyone()  # the main process wrote best.safetensors
    last = rows_snapshot(vectors, rows, run.step)
    chosen = last
    if run.best_step is not None and run.best_step != run.step and folder is not None:
        chosen = ConceptVectors.load(folder / BEST_FILE, bb)
    return TrainResult(chosen, last, run.step, total, cancelled, run.best_step, run.best_score,
                       dict(run.best_metrics), list(run.losses), dict(run.last_tasks), run.resumed_from,
                       folder, threads_chosen.count if threads_chosen is not None else None, notes)
