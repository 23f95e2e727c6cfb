"""The concept trainer's checkpoints: one safetensors file per optimizer step kept.

A checkpoint holds the concept's rows, the AdamW state (exp_avg, exp_avg_sq, step per
parameter), the RNG states (torch, Python, CUDA) and, as metadata, the step, the run's
identity (data digest, seed, batch layout, world size, backbone, concept) and its
history (losses, last per-task losses, best checkpoint so far, config). Never pickle.
A resume refuses a checkpoint whose identity differs from the run's, naming the field.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yoc_assistant.atomic import atomic_path
from yoc_assistant.errors import UserInputError

CHECKPOINT_FORMAT = "yoc-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_PREFIX = "step-"
BEST_FILE = "best.safetensors"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


@dataclass
class RunHistory:
    """What a run has done so far; a checkpoint carries it across a resume."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # one per optimizer step, from step 1
    last_tasks: dict[str, float] = field(default_factory=dict)  # of the last step
    best_step: int | None = None
    best_score: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    cpu_threads: int | None = None  # the thread count the trainer chose (threadpick.py); a resume keeps it


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest step first."""
    if not run_dir.exists():
        return []
    found = [p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*.safetensors")
             if p.stem[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[len(CHECKPOINT_PREFIX):]))


def clear_run_dir(run_dir: Path) -> None:
    """Drop a previous run's checkpoints and best file (a fresh, not resumed, run)."""
    for path in [*checkpoint_paths(run_dir), run_dir / BEST_FILE]:
        path.unlink(missing_ok=True)


# -- random streams -----------------------------------------------------------------------------
def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state().clone()}
    state = random.getstate()
    out["rng.python"] = torch.tensor(list(state[1]), dtype=torch.int64)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = st.clone()
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if "rng.python" in tensors:
        random.setstate((3, tuple(int(x) for x in tensors["rng.python"].tolist()), None))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda[: torch.cuda.device_count()]])


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
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


# -- writing and reading ------------------------------------------------------------------------
def save_checkpoint(run_dir: Path, rows: Sequence[torch.Tensor], optimizer: Any, history: RunHistory,
                    identity: dict[str, str], extra_meta: dict[str, str], keep: int) -> Path:
    """Write step `history.step`'s checkpoint atomically; keep the newest `keep` files."""
    from safetensors.torch import save_file

    input_rows, output_rows = rows
    tensors: dict[str, torch.Tensor] = {
        "input_rows": input_rows.detach().cpu().contiguous(),
        "output_rows": output_rows.detach().cpu().contiguous(),
    }
    for idx, st in optimizer.state_dict()["state"].items():
        for key in ADAM_KEYS:
            tensors[f"adam.{key}.{idx}"] = torch.as_tensor(st[key]).detach().cpu().clone().contiguous()
    tensors.update(rng_tensors())
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_VERSION),
        "step": str(history.step),
        **identity,
        **extra_meta,
        "losses": json.dumps(history.losses),
        "last_tasks": json.dumps(history.last_tasks),
        "best": json.dumps({"step": history.best_step, "score": history.best_score,
                            "metrics": history.best_metrics}),
    }
    path = run_dir / f"{CHECKPOINT_PREFIX}{history.step:08d}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, identity: dict[str, str], rows: Sequence[torch.Tensor],
                    optimizer: Any) -> RunHistory:
    """Restore rows, optimizer state and RNG streams from `path`; returns the run's history.

    Refuses a file that is not a checkpoint, or one of another run (`identity` differs)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as err:
        raise UserInputError(f"{path} is not a readable training checkpoint ({err})") from err
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"{path} is not a yoc training checkpoint")
    for key, value in identity.items():
        if meta.get(key) != value:
            what = "the training data" if key == "data_digest" else key.replace("_", " ")
            raise UserInputError(f"{path} was made with a different {what} ({meta.get(key)!r} vs "
                                 f"{value!r}); train again without --resume")
    input_rows, output_rows = rows
    with torch.no_grad():
        input_rows.copy_(tensors["input_rows"].to(input_rows.device))
        output_rows.copy_(tensors["output_rows"].to(output_rows.device))
    state = optimizer.state_dict()
    state["state"] = {idx: {key: tensors[f"adam.{key}.{idx}"].clone() for key in ADAM_KEYS}
                      for idx in state["param_groups"][0]["params"] if f"adam.step.{idx}" in tensors}
    optimizer.load_state_dict(state)
    restore_rng(tensors)
    best = json.loads(meta.get("best", "{}"))
    step = int(meta["step"])
    return RunHistory(step=step, losses=[float(x) for x in json.loads(meta.get("losses", "[]"))],
                      last_tasks={k: float(v) for k, v in json.loads(meta.get("last_tasks", "{}")).items()},
                      best_step=best.get("step"), best_score=best.get("score"),
                      best_metrics=dict(best.get("metrics") or {}), resumed_from=step,
                      cpu_threads=int(meta["cpu_threads"]) if meta.get("cpu_threads", "").isdigit() else None)
