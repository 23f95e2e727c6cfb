"""Batches for the trainer: the data order (a pure function of seed and epoch),
length bucketing, padding, the per-task loss and the learning-rate schedule.

Examples: any objects with `ids`, `labels` (same length; -100 = no loss; `labels[t]`
is the target at position t, so the logits at t-1 predict it) and `task`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

IGNORE = -100
# Micro-batches whose examples are sorted together by length: batches of similar
# lengths pad little, and the window keeps the order random at larger scale.
BUCKET_BATCHES = 16


class ExampleLike(Protocol):
    ids: Sequence[int]
    labels: Sequence[int]
    task: str


# -- schedule -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    n_examples: int
    batch_size: int
    grad_accum: int
    world: int
    seed: int

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_per_epoch / (self.grad_accum * self.world))

    def epoch_batches(self, epoch: int, lengths: Sequence[int]) -> list[list[int]]:
        """Micro-batches of `epoch` (example indices): shuffled, bucketed by length."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_examples, generator=gen).tolist()
        window = self.batch_size * BUCKET_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def step_batches(self, batches: list[list[int]], step_in_epoch: int, rank: int) -> list[list[int]]:
        """This process's micro-batches for one optimizer step."""
        per_step = self.grad_accum * self.world
        group = batches[step_in_epoch * per_step:(step_in_epoch + 1) * per_step]
        return [b for k, b in enumerate(group) if k % self.world == rank]

    def count_in_step(self, batches: list[list[int]], step_in_epoch: int) -> int:
        per_step = self.grad_accum * self.world
        return len(batches[step_in_epoch * per_step:(step_in_epoch + 1) * per_step])


# -- batches and loss -----------------------------------------------------------------------
def collate(examples: Sequence[ExampleLike], pad_id: int, tasks: Sequence[str],
            device: torch.device) -> dict[str, torch.Tensor]:
    """Pad to the batch's longest example (right padding, labels -100 on pads); `weight`
    is each label's loss weight (an example's `weights`, or 1)."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), int(pad_id), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weight = torch.ones((len(examples), width), dtype=torch.float32)
    for row, ex in enumerate(examples):
        n = len(ex.ids)
        ids[row, :n] = torch.as_tensor(list(ex.ids), dtype=torch.long)
        labels[row, :n] = torch.as_tensor(list(ex.labels), dtype=torch.long)
        mask[row, :n] = 1
        if getattr(ex, "weights", None) is not None:
            weight[row, :n] = torch.as_tensor(list(ex.weights), dtype=torch.float32)
    task = torch.tensor([tasks.index(e.task) for e in examples], dtype=torch.long)
    return {"ids": ids.to(device), "labels": labels.to(device), "mask": mask.to(device),
            "task": task.to(device), "weight": weight.to(device)}


def task_balanced_loss(token_loss: torch.Tensor, token_task: torch.Tensor, n_tasks: int, *,
                       token_weight: torch.Tensor | None = None,
                       token_example: torch.Tensor | None = None,
                       example_task: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-task mean losses [n_tasks], per-task counts [n_tasks]) of the supervised
    tokens' losses [N]: the mean over the tasks present of each task's mean, so a short
    task (a yes/no answer) weighs as much as a long one (a picture's tokens).

    A task's mean is over its tokens (weighted by `token_weight`, default 1), or, given
    `token_example` [N] (each token's example) and `example_task` [B], over its examples
    of each example's weighted token mean (the toy backbone's trainer). Counts are token
    weights, or examples. Used by the concept trainer and `toyworld/train_backbone.py`."""
    device = token_loss.device
    weight = torch.ones_like(token_loss) if token_weight is None else token_weight.float()
    if token_example is None:
        values, counted, groups = token_loss * weight, weight, token_task
    else:
        if example_task is None:
            raise ValueError("token_example needs example_task")
        n_examples = int(example_task.shape[0])
        ex_sum = torch.zeros(n_examples, device=device).index_add(0, token_example, token_loss * weight)
        ex_weight = torch.zeros(n_examples, device=device).index_add(0, token_example, weight)
        values = ex_sum / ex_weight.clamp(min=1e-6)
        counted, groups = torch.ones_like(values), example_task
    sums = torch.zeros(n_tasks, device=device, dtype=torch.float32).index_add(0, groups, values)
    counts = torch.zeros(n_tasks, device=device, dtype=torch.float32).index_add(0, groups, counted)
    present = counts > 0
    means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    return means[present].mean(), means.detach(), counts.detach()


def per_task_loss(hidden: torch.Tensor, labels: torch.Tensor, task: torch.Tensor, n_tasks: int,
                  logits_fn: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`task_balanced_loss` of a batch's token cross-entropy, each token counted once, or
    `weight[b, t]` times (collate's `weight`: decisive tokens weigh more).

    Logits are computed only at supervised positions (position t-1 predicts labels[t]):
    the head is the largest matrix, and most positions carry no loss."""
    target = labels[:, 1:]
    picked = target != IGNORE
    states = hidden[:, :-1][picked]
    if states.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero, torch.zeros(n_tasks, device=hidden.device), torch.zeros(n_tasks, device=hidden.device)
    token_loss = F.cross_entropy(logits_fn(states).float(), target[picked], reduction="none")
    token_task = task.unsqueeze(1).expand_as(target)[picked]
    token_weight = None if weight is None else weight[:, 1:][picked]
    return task_balanced_loss(token_loss, token_task, n_tasks, token_weight=token_weight)


# -- learning rate ----------------------------------------------------------------------------
def lr_at(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.05) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `floor * peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def check_examples(examples: Sequence[ExampleLike], bb: Backbone, n_rows: int) -> list[str]:
    """Refuse malformed examples with a message naming the first bad one; return task names."""
    if not examples:
        raise UserInputError("no training examples: the concept needs photos to train on")
    limit = int(bb.vocab_size) + n_rows
    tasks: list[str] = []
    for k, ex in enumerate(examples):
        if len(ex.ids) != len(ex.labels) or len(ex.ids) < 2:
            raise UserInputError(f"training example {k} ({ex.task}): ids and labels must have the same length >= 2")
        if min(ex.ids) < 0 or max(ex.ids) >= limit:
            raise UserInputError(f"training example {k} ({ex.task}): token ids outside 0..{limit - 1}")
        if not any(lab != IGNORE for lab in list(ex.labels)[1:]):
            raise UserInputError(f"training example {k} ({ex.task}) has no supervised token")
        if ex.task not in tasks:
            tasks.append(ex.task)
    return sorted(tasks)


def data_digest(examples: Sequence[ExampleLike]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(ex.task.encode())
        digest.update(torch.as_tensor(list(ex.ids), dtype=torch.int64).numpy().tobytes())
        digest.update(torch.as_tensor(list(ex.labels), dtype=torch.int64).numpy().tobytes())
        if getattr(ex, "weights", None) is not None:
            digest.update(torch.as_tensor(list(ex.weights), dtype=torch.float32).numpy().tobytes())
    return digest.hexdigest()
