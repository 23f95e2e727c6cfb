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
so optimizer step s always sees the same batches; a checkpoint holds the rows, the
AdamW state (exp_avg, exp_avg_sq, step), the RNG states and the step counter as
safetensors (never pickle). A run resumed from a checkpoint ends bit-identical to an
uninterrupted one.

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
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yoc_assistant.atomic import atomic_path
from yoc_assistant.backbone.loading import PRECISIONS
from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize.batches import (
    ExampleLike,
    Schedule,
    check_examples,
    collate,
    data_digest,
    per_task_loss,
)
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

CHECKPOINT_FORMAT = "yoc-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_PREFIX = "step-"
BEST_FILE = "best.safetensors"
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
    # Optimizer steps between checkpoints. 1 honours "a kill loses at most the current step";
    # a checkpoint is ~4 x rows x hidden x 4 bytes (2 MB for a 7B concept), cheap next to a step.
    checkpoint_every: int = 1
    eval_every: int | None = None  # optimizer steps; None: at the end of each epoch
    keep_checkpoints: int = 2
    # Start each group's last rows at the words the backbone's own descriptions of the
    # photos share (personalize/describe.py); False: every row starts blank (the paper).
    init_from_photos: bool = True
    # Train on each photo and its mirror image (more views of the concept from the same
    # photos); off for things whose left and right differ (text, logos).
    mirror_photos: bool = True

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name.replace('_', '-')} must be a whole number >= 1, not {value!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserInputError(f"steps must be >= 1, not {self.max_steps!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise UserInputError(f"eval-every must be >= 1, not {self.eval_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserInputError(f"learning rate must be a positive number, not {self.lr!r}")
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


def total_steps(config: TrainConfig, schedule: Schedule) -> int:
    """`max_steps` when given (epochs then run on as needed), else epochs x steps per epoch."""
    if config.max_steps is not None:
        return config.max_steps
    return config.epochs * schedule.steps_per_epoch


# -- checkpoints ------------------------------------------------------------------------------
def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest step first."""
    if not run_dir.exists():
        return []
    found = [p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*.safetensors")
             if p.stem[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[len(CHECKPOINT_PREFIX):]))


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state().clone()}
    state = random.getstate()
    out["rng.python"] = torch.tensor(list(state[1]), dtype=torch.int64)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = st.clone()
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if "rng.python" in tensors:
        random.setstate((3, tuple(int(x) for x in tensors["rng.python"].tolist()), None))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda[: torch.cuda.device_count()]])


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Evaluation may sample; it must not change the training run's random streams."""
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(py_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


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


# -- the trainer ------------------------------------------------------------------------------
class _Run:
    """State of one training run (kept together so that checkpointing sees all of it)."""

    def __init__(self, bb: Backbone, vectors: ConceptVectors, examples: Sequence[ExampleLike],
                 config: TrainConfig, run_dir: Path | None, on_event: EventFn | None,
                 cancel: threading.Event | None, evaluator: Evaluator | None) -> None:
        from accelerate import Accelerator

        config.validate()
        self.bb, self.config, self.run_dir = bb, config, run_dir
        self.on_event, self.cancel, self.evaluator = on_event, cancel, evaluator
        self.examples = list(examples)
        self.tasks = check_examples(self.examples, bb, vectors.n_rows)
        self.lengths = [len(e.ids) for e in self.examples]
        self.accel = Accelerator(cpu=bb.device.type == "cpu")
        self.schedule = Schedule(len(self.examples), config.batch_size, config.grad_accum,
                                 self.accel.num_processes, config.seed)
        self.total = total_steps(config, self.schedule)
        device = bb.device
        self.input_rows = vectors.input_rows.detach().to(device, torch.float32).clone().requires_grad_(True)
        self.output_rows = vectors.output_rows.detach().to(device, torch.float32).clone().requires_grad_(True)
        self.template = vectors
        self.trainable = ConceptVectors(vectors.name, vectors.groups, self.input_rows, self.output_rows,
                                        dict(vectors.metadata))
        self.concepts = ConceptSet(bb, [self.trainable])
        optimizer = torch.optim.AdamW([self.input_rows, self.output_rows], lr=config.lr,
                                      betas=config.betas, weight_decay=config.weight_decay)
        self.optimizer = self.accel.prepare(optimizer)
        self.step = 0
        self.losses: list[float] = []
        self.last_tasks: dict[str, float] = {}
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.resumed_from: int | None = None
        self.digest = data_digest(self.examples)
        self.pad_id = int(getattr(bb.special, "pad", 0))
        self.autocast = bb.device.type == "cuda" and bb.dtype == torch.bfloat16
        self._epoch_cache: tuple[int, list[list[int]]] = (-1, [])

    # -- events
    def emit(self, phase: str, *, eta: float | None = None, note: str = "",
             metrics: dict[str, float] | None = None) -> None:
        if self.on_event is None or not self.accel.is_main_process:
            return
        epoch = self.step // max(self.schedule.steps_per_epoch, 1)
        self.on_event(TrainEvent(self.step, self.total, epoch, self.losses[-1] if self.losses else None,
                                 dict(self.last_tasks), eta, phase, note, dict(metrics or {})))

    # -- one optimizer step
    def train_step(self) -> None:
        sched = self.schedule
        epoch, within = divmod(self.step, sched.steps_per_epoch)
        if self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, sched.epoch_batches(epoch, self.lengths))
        batches = self._epoch_cache[1]
        mine = sched.step_batches(batches, within, self.accel.process_index)
        n_micro = sched.count_in_step(batches, within)
        task_sum = torch.zeros(len(self.tasks), device=self.bb.device)
        task_n = torch.zeros(len(self.tasks), device=self.bb.device)
        loss_sum = torch.zeros((), device=self.bb.device)
        for batch in mine:
            loss, means, counts = self.micro_loss([self.examples[i] for i in batch])
            self.accel.backward(loss / n_micro)
            loss_sum += loss.detach()
            task_sum += means * (counts > 0)
            task_n += (counts > 0).float()
        if self.accel.num_processes > 1:
            for row in (self.input_rows, self.output_rows):
                if row.grad is None:
                    row.grad = torch.zeros_like(row)
                row.grad = self.accel.reduce(row.grad, reduction="sum")
            loss_sum = self.accel.reduce(loss_sum, reduction="sum")
            task_sum = self.accel.reduce(task_sum, reduction="sum")
            task_n = self.accel.reduce(task_n, reduction="sum")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(float(loss_sum) / n_micro)
        self.last_tasks = {t: float(task_sum[k] / task_n[k]) for k, t in enumerate(self.tasks) if task_n[k] > 0}

    def micro_loss(self, batch: Sequence[ExampleLike]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from yoc_assistant.backbone.network import base_forward

        data = collate(batch, self.pad_id, self.tasks, self.bb.device)
        extra = self.concepts.extra
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            embeds = self.bb.embed(data["ids"], extra)
            hidden, _ = base_forward(self.bb, embeds, attention_mask=data["mask"])
            return per_task_loss(hidden, data["labels"], data["task"], len(self.tasks),
                                 lambda h: self.bb.logits(h, extra))

    # -- evaluation
    def evaluate(self) -> None:
        if self.evaluator is None:
            return
        model = self.bb.model
        was_training = model.training
        model.eval()
        try:
            with _rng_preserved(), torch.no_grad():
                metrics = dict(self.evaluator(self.snapshot()))
        finally:
            model.train(was_training)
        score = float(metrics.get("score", float("nan")))
        # Ties go to the later checkpoint: held-out scores are coarse (a few photos).
        if math.isfinite(score) and (self.best_score is None or score >= self.best_score):
            self.best_score, self.best_step, self.best_metrics = score, self.step, metrics
            if self.run_dir is not None and self.accel.is_main_process:
                best = self.snapshot()
                best.metadata.update({"trained_steps": str(self.step), "score": repr(score)})
                best.save(self.run_dir / BEST_FILE, self.bb)
        self.emit("eval", metrics=metrics)

    def snapshot(self) -> ConceptVectors:
        meta = dict(self.template.metadata)
        meta["trained_steps"] = str(self.step)
        return ConceptVectors(self.template.name, dict(self.template.groups),
                              self.input_rows.detach().cpu().clone(),
                              self.output_rows.detach().cpu().clone(), meta)

    # -- checkpoints
    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None or not self.accel.is_main_process:
            return None
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {
            "input_rows": self.input_rows.detach().cpu().contiguous(),
            "output_rows": self.output_rows.detach().cpu().contiguous(),
        }
        state = self.optimizer.state_dict()["state"]
        for idx, st in state.items():
            for key in ("exp_avg", "exp_avg_sq", "step"):
                tensors[f"adam.{key}.{idx}"] = torch.as_tensor(st[key]).detach().cpu().clone().contiguous()
        tensors.update(_rng_tensors())
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": str(CHECKPOINT_VERSION),
            "step": str(self.step),
            "total_steps": str(self.total),
            "seed": str(self.config.seed),
            "data_digest": self.digest,
            "n_examples": str(len(self.examples)),
            "batch_size": str(self.config.batch_size),
            "grad_accum": str(self.config.grad_accum),
            "world": str(self.accel.num_processes),
            "concept": self.template.name,
            "groups": json.dumps(list(self.template.groups.items())),
            "backbone_fingerprint": str(self.bb.fingerprint),
            "losses": json.dumps(self.losses),
            "last_tasks": json.dumps(self.last_tasks),
            "best": json.dumps({"step": self.best_step, "score": self.best_score, "metrics": self.best_metrics}),
            "config": json.dumps(asdict(self.config)),
        }
        path = self.run_dir / f"{CHECKPOINT_PREFIX}{self.step:08d}.safetensors"
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        for old in checkpoint_paths(self.run_dir)[:-self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self.emit("checkpoint", note=str(path))
        return path

    def load_checkpoint(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as err:
            raise UserInputError(f"{path} is not a readable training checkpoint ({err})") from err
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise UserInputError(f"{path} is not a yoc training checkpoint")
        self._check_matches(path, meta)
        with torch.no_grad():
            self.input_rows.copy_(tensors["input_rows"].to(self.input_rows.device))
            self.output_rows.copy_(tensors["output_rows"].to(self.output_rows.device))
        optim_state = self.optimizer.state_dict()
        params = optim_state["param_groups"][0]["params"]
        optim_state["state"] = {
            idx: {key: tensors[f"adam.{key}.{idx}"].clone() for key in ("exp_avg", "exp_avg_sq", "step")}
            for idx in params if f"adam.step.{idx}" in tensors
        }
        self.optimizer.load_state_dict(optim_state)
        _restore_rng(tensors)
        self.step = int(meta["step"])
        self.losses = [float(x) for x in json.loads(meta.get("losses", "[]"))]
        self.last_tasks = {k: float(v) for k, v in json.loads(meta.get("last_tasks", "{}")).items()}
        best = json.loads(meta.get("best", "{}"))
        self.best_step, self.best_score = best.get("step"), best.get("score")
        self.best_metrics = dict(best.get("metrics") or {})
        self.resumed_from = self.step

    def _check_matches(self, path: Path, meta: dict[str, str]) -> None:
        wanted = {"data_digest": self.digest, "seed": str(self.config.seed),
                  "batch_size": str(self.config.batch_size), "grad_accum": str(self.config.grad_accum),
                  "world": str(self.accel.num_processes), "backbone_fingerprint": str(self.bb.fingerprint),
                  "concept": self.template.name}
        for key, value in wanted.items():
            if meta.get(key) != value:
                what = "the training data" if key == "data_digest" else key.replace("_", " ")
                raise UserInputError(
                    f"{path} was made with a different {what} ({meta.get(key)!r} vs {value!r}); "
                    "train again without --resume"
                )

    # -- the loop
    def run(self, resume: bool) -> TrainResult:
        if resume and self.run_dir is not None:
            found = checkpoint_paths(self.run_dir)
            if found:
                self.load_checkpoint(found[-1])
        cancelled = False
        self.emit("start", note=f"resumed at step {self.step}" if self.resumed_from is not None else "")
        gc_on = self.config.gradient_checkpointing
        model = self.bb.model
        was_training = model.training
        self.bb.model.requires_grad_(False)
        if gc_on:
            set_checkpointing(model.model, True)
            model.train()  # HF checkpoints only in training mode; Chameleon has no active dropout
        try:
            cancelled = self._loop()
        finally:
            if gc_on:
                set_checkpointing(model.model, False)
            model.train(was_training)
        return self._result(cancelled)

    def _loop(self) -> bool:
        started, start_step = time.monotonic(), self.step
        every = self.config.eval_every or self.schedule.steps_per_epoch
        while self.step < self.total:
            if self.cancel is not None and self.cancel.is_set():
                self.save_checkpoint()
                self.emit("cancelled", note="training cancelled; resume continues from here")
                return True
            self.train_step()
            done = self.step - start_step
            eta = (time.monotonic() - started) / done * (self.total - self.step)
            self.emit("train", eta=eta)
            if self.step % every == 0 or self.step == self.total:
                self.evaluate()
            if self.step % self.config.checkpoint_every == 0 or self.step == self.total:
                self.save_checkpoint()
        self.emit("done", eta=0.0)
        return False

    def _result(self, cancelled: bool) -> TrainResult:
        self.accel.wait_for_everyone()  # the main process wrote best.safetensors
        last = self.snapshot()
        chosen = last
        if self.best_step is not None and self.best_step != self.step and self.run_dir is not None:
            chosen = ConceptVectors.load(self.run_dir / BEST_FILE, self.bb)
        return TrainResult(chosen, last, self.step, self.total, cancelled, self.best_step, self.best_score,
                           dict(self.best_metrics), list(self.losses), dict(self.last_tasks),
                           self.resumed_from, self.run_dir)


def train_concept(bb: Backbone, vectors: ConceptVectors, examples: Sequence[ExampleLike],
                  config: TrainConfig | None = None, *, run_dir: str | os.PathLike[str] | None = None,
                  on_event: EventFn | None = None, cancel: threading.Event | None = None,
                  resume: bool = False, evaluator: Evaluator | None = None) -> TrainResult:
    """Train `vectors`' rows on `examples` with the backbone frozen; see the module doc.

    `run_dir` holds checkpoints (and best.safetensors); without it nothing is written
    and `resume` has nothing to resume from. `cancel` is checked before every step:
    when set, a checkpoint is written and the result says `cancelled`.
    """
    folder = Path(run_dir) if run_dir is not None else None
    run = _Run(bb, vectors, examples, config or TrainConfig(), folder, on_event, cancel, evaluator)
    return run.run(resume)
