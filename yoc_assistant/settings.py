"""Run-time choices read from the environment: which backbone, which device.

`YOC_BACKBONE` names a local HF directory or a hub id in the local HF cache;
`YOC_DEVICE` is cpu | cuda | auto. `YOC_HOME` (the library's folder) is read by
`yoc_assistant.library.paths`.
"""

from __future__ import annotations

import os

# The real model yoc is built for. Never downloaded except by `yoc pull`.
ANOLE_ID = "leloy/Anole-7b-v0.1-hf"


def backbone_source() -> str | None:
    """The backbone the user asked for, or None for the embedded default."""
    return os.environ.get("YOC_BACKBONE") or None


def device() -> str:
    return os.environ.get("YOC_DEVICE", "auto")
