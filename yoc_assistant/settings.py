"""Run-time choices read from the environment: which backbone, which device.

`YOC_BACKBONE` names a local HF directory or a hub id in the local HF cache;
`YOC_DEVICE` is cpu | cuda | auto. `YOC_HOME` (the library's folder) is read by
`yoc_assistant.library.paths`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

# The real model yoc is built for. Never downloaded except by `yoc pull`.
ANOLE_ID = "leloy/Anole-7b-v0.1-hf"


def backbone_source() -> str | None:
    """The backbone the user asked for, or None for the embedded default."""
    return os.environ.get("YOC_BACKBONE") or None


def device() -> str:
    return os.environ.get("YOC_DEVICE", "auto")


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
