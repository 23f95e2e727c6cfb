"""Helpers shared by the toy-world training scripts: paths, pixels, progress, saving."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoc_assistant import settings
from yoc_assistant.atomic import atomic_path
from yoc_assistant.personalize.batches import lr_at

__all__ = ["lr_at"]  # the learning-rate schedule the toy trainers share with the concept trainer

RESCALE = 0.0078  # the checkpoint processor's rescale factor (x * 0.0078 - 1), spec §5.1
PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
BACKBONE_DIR = WEIGHTS_DIR / "backbone"
CLIP_DIR = WEIGHTS_DIR / "clip"
JUDGE_DIR = WEIGHTS_DIR / "judge"
REPO_DIR = PACKAGE_DIR.parent.parent
CONCEPTS_DIR = REPO_DIR / "concepts"


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether bf16 autocast pays on this CPU. With AVX512-BF16 or AMX a bf16 matmul runs
    about as fast as fp32; on an AVX2-only CPU torch emulates it, and a 512x512 matmul
    took 70x as long as in fp32 (AMD EPYC, 2026-12-03), which turned a 3.5 s pretraining
    step into a minute. Timed once per process (~0.1 s), not guessed from CPU flags."""
    a = torch.randn(192, 192)
    b = a.bfloat16()

    def seconds(x: torch.Tensor) -> float:
        start = time.perf_counter()
        for _ in range(4):
            x @ x
        return time.perf_counter() - start

    seconds(a), seconds(b)  # warm up both kernels
    return seconds(b) < 2 * seconds(a)


def work_dir() -> Path:
    """Where intermediate training files go (`YOC_TOY_WORK`, default ./build/toyworld)."""
    return settings.toy_work_dir() or REPO_DIR / "build" / "toyworld"


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in the encoder's range."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2)
    return x * RESCALE - 1.0


def from_pixels(x: torch.Tensor) -> np.ndarray:
    """Decoder output -> uint8 [N, H, W, 3], as the checkpoint's post-processing does."""
    y = ((x.float() + 1.0) / RESCALE).clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def set_threads() -> None:
    """One thread unless YOC_TOY_THREADS says more: on a small shared CPU, OpenMP
    threads that wait for each other burned 4x the CPU time of a single thread."""
    torch.set_num_threads(settings.toy_threads())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta or {"format": "pt"})
        tmp.chmod(0o644)  # shipped files: readable by everyone (mkstemp makes them 0600)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o644)


class Progress:
    """One line every `every` steps: step/total, smoothed loss, rate, ETA."""

    def __init__(self, total: int, name: str, every: int = 25, start: int = 0) -> None:
        self.total, self.name, self.every = total, name, every
        self.t0, self.start, self.avg = time.time(), start, None

    def update(self, step: int, loss: float, extra: str = "") -> None:
        self.avg = loss if self.avg is None else 0.95 * self.avg + 0.05 * loss
        if step % self.every and step != self.total:
            return
        done = step - self.start
        rate = done / max(time.time() - self.t0, 1e-6)
        eta = (self.total - step) / max(rate, 1e-6)
        print(f"[{self.name}] step {step}/{self.total} loss {self.avg:.4f} {extra} "
              f"{rate:.2f} it/s eta {eta / 60:.1f} min", file=sys.stderr, flush=True)
