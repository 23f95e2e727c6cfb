"""Which backbone to load when the user named none.

Order: `YOC_BACKBONE`; the toy model shipped with yoc; else a tiny random
checkpoint written once under the library folder (its output is noise, and
callers say so).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_NAME = "tiny-random"
TOY_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights" / "backbone"


def _backbones_dir() -> Path:
    try:
        from yoc_assistant.library.paths import backbones_dir
    except ImportError:
        import platformdirs

        root = os.environ.get("YOC_HOME") or platformdirs.user_data_dir("yoc")
        folder = Path(root).expanduser() / "backbones"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return backbones_dir()


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def tiny_random_backbone() -> Path:
    """The tiny random checkpoint under the library folder, written on first use.

    Written into a temp folder and renamed, so a kill never leaves half a checkpoint.
    """
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    parent = _backbones_dir()
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
    from yoc_assistant.settings import backbone_source

    chosen = backbone_source()
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
    from yoc_assistant.settings import backbone_source

    if not backbone_source() and not _complete(TOY_WEIGHTS) and not _complete(_backbones_dir() / TINY_NAME):
        return None
    source, _noise = default_backbone()
    return fingerprint_of(source)
