"""The one place that reads the `YOC_*` environment (stdlib only: every part may import it).

Each variable has one reader here, which checks its value and says what is wrong with
a bad one. What to do with the values (which backbone, precision, threads) is the
application layer's policy (`yoc_assistant.app`), not this module's.

| variable | meaning |
|---|---|
| `YOC_HOME` | the library folder (default: the platform's user data folder) |
| `YOC_PICTURES` | where pictures go by default (default: the user's pictures folder + `/yoc`) |
| `YOC_BACKBONE` | a local HF directory or a hub id in the local HF cache |
| `YOC_DEVICE` | cpu, cuda, cuda:N or auto |
| `YOC_THREADS` | torch CPU threads (default: 1 for a small CPU backbone, else torch's choice) |
| `YOC_LOAD_PLUGINS` | comma-separated plugin entry-point names to load (empty: none; unset: all) |
| `YOC_CLIP_MODEL`, `YOC_CLIP_WEIGHTS` | the open_clip model (and weights tag or file) for retrieval |
| `YOC_DINO_MODEL` | the DINOv2 model (a folder or a hub id in the HF cache) `yoc eval` scores real backbones with |
| `YOC_FUSED` | 1/0: the fused decode step on/off (default: on CUDA) |
| `YOC_COMPILE`, `YOC_COMPILE_MODE` | 0 turns torch.compile of the image step off; its mode |
| `YOC_SEED` | the chat app's sampling seed (repeatable answers) |
| `YOC_IMAGE_RENDERER` | the chat app's picture renderer: auto, tgp, kitty, sixel, halfcell, unicode |
| `YOC_TOY_WORK`, `YOC_TOY_THREADS` | the toy-world training scripts' work folder and threads |
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from yoc_assistant.errors import UserInputError

# The real model yoc is built for. Never downloaded except by `yoc pull`.
ANOLE_ID = "leloy/Anole-7b-v0.1-hf"
PLUGINS_VARIABLE = "YOC_LOAD_PLUGINS"


def _text(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    return os.environ.get(name) or None


def _whole_number(name: str, minimum: int) -> int | None:
    raw = _text(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.lstrip("-").isdigit() or int(raw) < minimum:
        raise UserInputError(f"{name} must be a whole number >= {minimum}, not {raw!r}")
    return int(raw)


# -- library -------------------------------------------------------------------------------
def home_override() -> Path | None:
    value = _text("YOC_HOME")
    return Path(value).expanduser() if value else None


def pictures_override() -> Path | None:
    value = _text("YOC_PICTURES")
    return Path(value).expanduser() if value else None


# -- backbone ------------------------------------------------------------------------------
# A Hugging Face model id: owner/name (the loader looks it up in the local cache).
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# How image tokens are drawn: "sjd" (speculative Jacobi decoding: several tokens per
# forward pass, the same distribution; backbone/sjd.py) or "sequential" (one pass per
# token). The one default of every entry point (draw, ask, the chat app, eval, demo);
# the measurement that chose it is in docs/performance.md.
IMAGE_DECODINGS = ("sjd", "sequential")
IMAGE_DECODING = "sjd"
# The most samples a picture may be drawn from for a concept's self-check
# (`personalize/selfcheck.py`; `yoc draw --candidates`, config.json `yoc_draw_candidates`).
MAX_DRAW_CANDIDATES = 64


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


def dino_model() -> str | None:
    """YOC_DINO_MODEL: a DINOv2 folder or hub id (None: yoc's default)."""
    return _text("YOC_DINO_MODEL")


def threads() -> int | None:
    """YOC_THREADS, checked: None when unset."""
    return _whole_number("YOC_THREADS", 1)


def omp_threads_set() -> bool:
    """The user fixed OpenMP's thread count themselves (their choice stands)."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def fused_step() -> bool | None:
    """YOC_FUSED: True (1), False (0), or None (unset: the default for the device)."""
    value = (os.environ.get("YOC_FUSED") or "").strip()
    return {"1": True, "0": False}.get(value)


def compile_image_step() -> bool:
    return os.environ.get("YOC_COMPILE", "1") != "0"


def compile_mode() -> str:
    return _text("YOC_COMPILE_MODE") or "reduce-overhead"


# -- plugins, retrieval --------------------------------------------------------------------
def selected_plugins() -> set[str] | None:
    """Entry-point names chosen by YOC_LOAD_PLUGINS; None means all."""
    raw = os.environ.get(PLUGINS_VARIABLE)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def plugin_selection_text() -> str | None:
    """YOC_LOAD_PLUGINS as written (for `yoc plugins`), None when unset."""
    return os.environ.get(PLUGINS_VARIABLE)


def clip_model() -> str | None:
    return _text("YOC_CLIP_MODEL")


def clip_weights() -> str | None:
    return _text("YOC_CLIP_WEIGHTS")


# -- chat app ------------------------------------------------------------------------------
def chat_seed() -> int | None:
    return _whole_number("YOC_SEED", 0)


def image_renderer() -> str:
    return (_text("YOC_IMAGE_RENDERER") or "auto").lower()


# -- toy world -----------------------------------------------------------------------------
def toy_work_dir() -> Path | None:
    value = _text("YOC_TOY_WORK")
    return Path(value) if value else None


def toy_threads() -> int:
    return _whole_number("YOC_TOY_THREADS", 1) or 1
