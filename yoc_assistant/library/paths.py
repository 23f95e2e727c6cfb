"""Where yoc keeps its files.

Everything lives under `home()`: `YOC_HOME` when set (tests, portable installs),
else platformdirs' per-user data folder. Folders are created on first use.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

from yoc_assistant import settings
from yoc_assistant.errors import UserInputError

APP_NAME = "yoc"


def _ensure(path: Path, what: str = "") -> Path:
    """`path` as a folder, created if missing; a file in its place, or a folder that
    cannot be made, is a one-line error naming it (`what`: where the path came from)."""
    where = f"{what}: " if what else ""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserInputError(f"{where}{path} is a file; yoc needs a folder there") from None
    except OSError as err:
        raise UserInputError(f"{where}cannot create the folder {path}: {err.strerror or err}") from None
    return path


def home() -> Path:
    """The library's root folder (created if missing)."""
    override = settings.home_override()
    if override is not None:
        return _ensure(override, "YOC_HOME")
    return _ensure(Path(platformdirs.user_data_dir(APP_NAME)))


def db_path(root: Path | None = None) -> Path:
    return (root or home()) / "library.db"


def images_dir(root: Path | None = None) -> Path:
    """The content-addressed image store: images/<aa>/<sha256>.png."""
    return _ensure((root or home()) / "images")


def concepts_dir(root: Path | None = None) -> Path:
    """One folder per concept (by its stable uid) holding its vector files."""
    return _ensure((root or home()) / "concepts")


def cache_dir(root: Path | None = None) -> Path:
    """CLIP embeddings, image tokens: derived data that can be rebuilt."""
    return _ensure((root or home()) / "cache")


def runs_dir(root: Path | None = None) -> Path:
    """Training checkpoints, one folder per concept uid."""
    return _ensure((root or home()) / "runs")


def backbones_dir(root: Path | None = None) -> Path:
    """Backbones yoc writes itself (the tiny fallback checkpoint)."""
    return _ensure((root or home()) / "backbones")


def logs_dir(root: Path | None = None) -> Path:
    """Diagnostic logs (the router's); the conversation log is in the database."""
    return _ensure((root or home()) / "logs")


def logs_off_marker(root: Path | None = None) -> Path:
    """Present while the conversation log is off (`yoc logs off`)."""
    return (root or home()) / "logs-off"


def pictures_dir() -> Path:
    """Where `yoc draw` puts pictures by default (not created here)."""
    override = settings.pictures_override()
    if override is not None:
        return override
    return Path(platformdirs.user_pictures_dir()) / APP_NAME
