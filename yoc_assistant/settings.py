"""Run-time choices read from the environment: which backbone, which device.

`YOC_BACKBONE` names a local HF directory or a hub id in the local HF cache;
`YOC_DEVICE` is cpu | cuda | auto. `YOC_HOME` (the library's folder) is read by
`yoc_assistant.library.paths`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

# The real model yoc is built for. Never downloaded except by `yoc pull`.
ANOLE_ID = "leloy/Anole-7b-v0.1-hf"


# A Hugging Face model id: owner/name (the loader looks it up in the local cache).
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def backbone_source() -> str | None:
    """The backbone the user asked for, or None for the embedded default.

    A value that is neither an existing folder nor shaped like a hub id is refused
    here, naming the variable (no torch needed, so before any slow load)."""
    value = os.environ.get("YOC_BACKBONE") or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UserInputError(f"YOC_BACKBONE={value!r} is a file; set it to a checkpoint folder "
                             "(config.json, model.safetensors, tokenizer), or unset it to use "
                             "the embedded toy backbone")
    if not path.exists() and not HUB_ID.match(value):
        raise UserInputError(f"YOC_BACKBONE={value!r} is neither a checkpoint folder nor a "
                             "Hugging Face model id (owner/name); set it to one (`yoc pull` "
                             f"downloads {ANOLE_ID}), or unset it to use the embedded toy backbone")
    return value


def device() -> str:
    """YOC_DEVICE (cpu, cuda, cuda:N or auto; default auto), checked for its form."""
    value = os.environ.get("YOC_DEVICE", "auto").strip() or "auto"
    if not _DEVICE.match(value):
        raise UserInputError(f"YOC_DEVICE={value!r} is not a device: set it to cpu, cuda or "
                             "auto (or unset it)")
    return value


def checked_device() -> str:
    """`device()`, refusing cuda on a machine without a CUDA GPU (this imports torch)."""
    value = device()
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserInputError(f"YOC_DEVICE={value} but this machine has no usable CUDA GPU: "
                                 "set YOC_DEVICE=cpu (or auto), or unset it")
    return value


# Below this many parameters a CPU backbone runs on one thread unless the user says
# otherwise (OMP_NUM_THREADS or YOC_THREADS). Its matrices are too small to split: with
# a second thread on a 2-core machine whose other core was busy, `yoc demo`'s training
# on the toy backbone took 1.3 s a step instead of 0.055 s, the threads waiting for
# each other.
SMALL_MODEL_PARAMS = 50_000_000


def tune_cpu_threads(backbone: Backbone) -> int | None:
    """Set torch's thread count for a small CPU backbone; returns the count set, if any."""
    import torch

    wanted = os.environ.get("YOC_THREADS")
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise UserInputError(f"YOC_THREADS must be a whole number >= 1, not {wanted!r}")
        torch.set_num_threads(int(wanted))
        return torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or backbone.device.type != "cpu":
        return None
    if sum(p.numel() for p in backbone.model.parameters()) >= SMALL_MODEL_PARAMS:
        return None
    torch.set_num_threads(1)
    return 1
