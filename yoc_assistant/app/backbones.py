"""Which backbone, on which device, at which precision, with how many CPU threads.

Every entry point (ask, draw, eval, train, add-concept, demo, bench, the chat app)
opens its backbone through `open_backbone(purpose)` / `plan_backbone(purpose)`, so
they all make the same choices:

* source: the one named, else `YOC_BACKBONE`, else the toy model shipped with yoc,
  else a tiny random checkpoint written once under the library folder (its output is
  noise: the plan carries `NOISE_WARNING` for the front end to show);
* device: the one named, else `YOC_DEVICE` (auto = CUDA when there is one); under
  `accelerate launch` each process takes its own GPU;
* precision `auto` (`auto_precision`): fp32 on a CPU (bf16 matmuls are slow on most
  CPUs); on a GPU bf16 when the free memory holds the bf16 weights times
  `MEMORY_FACTOR[purpose]` (training keeps activations for the backward pass), else int8;
* threads (`tune_cpu_threads`): the number asked for, else `YOC_THREADS`, else one
  thread for a small CPU backbone unless OMP_NUM_THREADS was set; such a backbone's
  training then times one and two threads on its first batch and runs on the faster
  (`Backbone.caches.cpu_threads`, personalize/threadpick.py).

The chat app both answers and trains with one loaded backbone, so it opens it for
`"training"`: `yoc train` and training from the chat app pick the same precision.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from yoc_assistant import settings
from yoc_assistant.errors import UserInputError
from yoc_assistant.library.paths import backbones_dir

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

Purpose = Literal["inference", "training"]
# `auto` and what `Backbone.load` accepts (backbone.loading.PRECISIONS; a test keeps them
# equal). Written out so that the command line's options need no torch import.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "int8", "nf4", "int8wo")
# Free GPU memory needed for bf16, as a multiple of the bf16 weights: training ~1.6x
# (activations kept for the backward pass; the H200 anchors), answering ~1.1x (KV caches).
MEMORY_FACTOR: dict[str, float] = {"training": 1.6, "inference": 1.1}
ANOLE_BF16_BYTES = 14_100_000_000  # assumed when a checkpoint's size cannot be read
NOISE_WARNING = ("no backbone is configured, so yoc uses a tiny random backbone: "
                 "its answers and pictures are noise. Set YOC_BACKBONE to a checkpoint "
                 "(`yoc pull` downloads the real one).")
TINY_NAME = "tiny-random"
TOY_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights" / "backbone"


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def tiny_random_backbone() -> Path:
    """The tiny random checkpoint under the library folder, written on first use.

    Written into a temp folder and renamed, so a kill never leaves half a checkpoint.
    """
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    parent = backbones_dir()
    target = parent / TINY_NAME
    if _complete(target):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_NAME}.", dir=parent))
    try:
        write_tiny_checkpoint(tmp, seed=0)
        if target.exists():  # an incomplete leftover
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # another process did not win the race either
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_backbone() -> tuple[str, bool]:
    """(source, is_noise): what to load when no backbone was named."""
    chosen = settings.backbone_source()
    if chosen:
        return chosen, False
    if _complete(TOY_WEIGHTS):
        return str(TOY_WEIGHTS), False
    return str(tiny_random_backbone()), True


def configured_fingerprint() -> str | None:
    """Fingerprint of the backbone `default_backbone()` names, without loading its weights.

    None when that is the tiny random checkpoint not yet written (nothing to compare with).
    """
    from yoc_assistant.backbone.loading import fingerprint_of

    if (not settings.backbone_source() and not _complete(TOY_WEIGHTS)
            and not _complete(backbones_dir() / TINY_NAME)):
        return None
    source, _noise = default_backbone()
    return fingerprint_of(source)


# -- the policy ----------------------------------------------------------------------------
def process_device(requested: str) -> str:
    """Under `accelerate launch`, each process takes its own GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and requested in ("auto", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


def checked_device() -> str:
    """YOC_DEVICE, refusing cuda on a machine without a CUDA GPU (naming the variable)."""
    value = settings.device()
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserInputError(f"YOC_DEVICE={value} but this machine has no usable CUDA GPU: "
                                 "set YOC_DEVICE=cpu (or auto), or unset it")
    return value


def bf16_bytes(source: str) -> int | None:
    """Parameter count x 2 from the checkpoint's safetensors headers (no weights read)."""
    from yoc_assistant.backbone.loading import resolve_source, tensor_shapes

    try:
        folder, _ = resolve_source(source)
        total = 0
        for shape, _file in tensor_shapes(folder).values():
            n = 1
            for d in shape:
                n *= int(d)
            total += n
        return 2 * total
    except Exception:  # noqa: BLE001 - unknown size: auto_precision assumes a 7B
        return None


def auto_precision(requested: str, device: str, *, purpose: Purpose,
                   weight_bytes_bf16: int | None = None, free_bytes: int | None = None) -> str:
    """The one rule for `auto` (see the module doc); other precisions are checked and kept.

    `free_bytes` is the GPU's free memory (asked of the driver when None)."""
    if requested not in PRECISION_CHOICES:
        raise UserInputError(f"unknown precision {requested!r}: use one of {', '.join(PRECISION_CHOICES)}")
    if requested != "auto":
        return requested
    import torch

    from yoc_assistant.backbone.loading import pick_device

    dev = pick_device(device)
    if dev.type == "cuda" and free_bytes is None:
        try:
            free_bytes, _total = torch.cuda.mem_get_info(dev)
        except Exception:  # noqa: BLE001 - no driver answer: the safe choice
            return "int8"
    return precision_rule(dev.type, purpose=purpose, weight_bytes_bf16=weight_bytes_bf16,
                          free_bytes=free_bytes)


def precision_rule(device_type: str, *, purpose: Purpose, weight_bytes_bf16: int | None,
                   free_bytes: int | None) -> str:
    """`auto` for a device type: fp32 off the GPU; bf16 when it fits for `purpose`, else int8."""
    if device_type != "cuda":
        return "fp32"
    weights = weight_bytes_bf16 if weight_bytes_bf16 is not None else ANOLE_BF16_BYTES
    if free_bytes is None:
        return "int8"
    return "bf16" if free_bytes >= MEMORY_FACTOR[purpose] * weights else "int8"


# Below this many parameters a CPU backbone runs on one thread unless the user says
# otherwise (OMP_NUM_THREADS or YOC_THREADS). Its matrices are too small to split: with
# a second thread on a 2-core machine whose other core was busy, `yoc demo`'s training
# on the toy backbone took 1.3 s a step instead of 0.055 s, the threads waiting for
# each other. On a quiet machine two threads can be faster: training times both on its
# first batch (`cpu_threads`); answering and drawing stay on one.
SMALL_MODEL_PARAMS = 50_000_000
TRAINING_THREAD_CHOICES = (1, 2)


def tune_cpu_threads(backbone: Backbone, threads: int | None = None) -> int | None:
    """Set torch's thread count (see the module doc); returns the count set, if any."""
    import torch

    wanted = threads if threads is not None else settings.threads()
    backbone.caches.cpu_threads = ()  # a count the user chose, or torch's, stands
    if wanted is not None:
        torch.set_num_threads(wanted)
        return torch.get_num_threads()
    if settings.omp_threads_set() or backbone.device.type != "cpu":
        return None
    if sum(p.numel() for p in backbone.model.parameters()) >= SMALL_MODEL_PARAMS:
        return None
    torch.set_num_threads(1)
    from yoc_assistant.personalize.threadpick import usable_cores

    backbone.caches.cpu_threads = tuple(c for c in TRAINING_THREAD_CHOICES if c <= usable_cores())
    return 1


@dataclass(frozen=True)
class BackbonePlan:
    """What `open_backbone` will load, decided before any weight is read."""

    source: str
    is_noise: bool
    device: str
    precision: str
    purpose: Purpose
    threads: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """A short name: the folder's or hub id's last part."""
        return Path(self.source.rstrip("/")).name or self.source

    def load(self) -> Backbone:
        """Load the backbone and set the CPU threads."""
        from yoc_assistant.backbone import Backbone

        bb = Backbone.load(self.source, precision=self.precision, device=self.device)
        tune_cpu_threads(bb, self.threads)
        return bb


def plan_backbone(purpose: Purpose, *, source: str | None = None, precision: str = "auto",
                  device: str | None = None, threads: int | None = None) -> BackbonePlan:
    """Decide source, device, precision and threads (may write the tiny fallback checkpoint)."""
    if threads is not None and threads < 1:
        raise UserInputError(f"threads must be >= 1, not {threads}")
    is_noise = False
    if source is None:
        source, is_noise = default_backbone()
    requested = device or checked_device()  # a bad YOC_BACKBONE / YOC_DEVICE is said first
    from yoc_assistant.backbone.loading import pick_device

    chosen_device = str(pick_device(process_device(requested)))
    weights = bf16_bytes(source) if precision == "auto" and chosen_device.startswith("cuda") else None
    chosen = auto_precision(precision, chosen_device, purpose=purpose, weight_bytes_bf16=weights)
    notes = (NOISE_WARNING,) if is_noise else ()
    return BackbonePlan(str(source), is_noise, chosen_device, chosen, purpose, threads, notes)


def open_backbone(purpose: Purpose, *, source: str | None = None, precision: str = "auto",
                  device: str | None = None, threads: int | None = None,
                  on_note: Callable[[str], None] | None = None) -> Backbone:
    """Plan and load the backbone for `purpose`; notes (the noise warning) go to `on_note`."""
    plan = plan_backbone(purpose, source=source, precision=precision, device=device, threads=threads)
    for note in plan.notes:
        if on_note is not None:
            on_note(note)
    return plan.load()
