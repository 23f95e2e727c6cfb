"""Where modalities put files: unique names, atomic PNG writes with text chunks.

Public helpers for plugins (first- and third-party alike).
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from yoc_assistant.atomic import atomic_path
from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from PIL import Image


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe stem from a prompt: `<bo> on a skateboard` -> `bo-on-a-skateboard`."""
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    stem = "-".join(words)[:limit].strip("-")
    return stem or "yoc"


def output_paths(out: Path, n: int, *, prompt: str, suffix: str) -> list[Path]:
    """`n` fresh paths for a request's outputs; the folder they go in exists afterwards.

    `out` is a folder (existing, or without the expected suffix): new unique names
    inside it; or a file with `suffix`: that file for n=1, `stem-1`, `stem-2`, ... for more.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir() and out.suffix.lower() != suffix:
        raise UserInputError(f"{out} is a file, not a folder or a {suffix} file")
    if out.suffix and not out.is_dir():
        if out.suffix.lower() != suffix:
            raise UserInputError(f"{out}: output must be a folder or a {suffix} file")
        _make_folder(out.parent)
        if n == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(n)]
    _make_folder(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A random tag keeps two processes drawing the same prompt in the same second apart.
    base = f"{slug(prompt)}-{stamp}-{secrets.token_hex(2)}"
    paths = [out / (f"{base}{suffix}" if n == 1 else f"{base}-{i + 1}{suffix}") for i in range(n)]
    return [_free(p) for p in paths]


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create the output folder {folder}: {err.strerror or err}") from err


def _free(path: Path) -> Path:
    candidate, i = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{i}{path.suffix}")
        i += 1
    return candidate


def write_png(image: Image.Image, path: Path, text_chunks: dict[str, str]) -> Path:
    """Write `image` as PNG atomically, with `text_chunks` as tEXt/iTXt entries."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_itxt(key, str(value))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path
