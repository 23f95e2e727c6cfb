"""Photo validation and normalization.

Phone formats (HEIC/HEIF, AVIF) are read through pillow-heif and pillow-avif-plugin.
Every file is checked on its own; a bad one is named with its reason and the
rest of the batch goes on. What gets stored is always an RGB PNG: EXIF
orientation applied, alpha composited on white, CMYK/16-bit/palette converted,
the first frame of an animation, metadata (GPS included) dropped. Its id is the
sha256 of its pixels, so duplicates are found whatever the file format or name.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from yoc_assistant.errors import UserInputError, short
from yoc_assistant.library.store import ImageStore

MAX_PIXELS = 64_000_000  # decompression-bomb guard, checked before decoding
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_SIDE = 2048  # stored pictures are downscaled to this; training uses 512
MIN_SIDE = 16
# Formats PIL decodes itself or through the phone-format plugins; others (EPS runs
# Ghostscript, ...) are refused.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "HEIF", "AVIF")  # JPEG covers MPO
_ANIMATED_FORMATS = {"GIF", "PNG", "WEBP", "AVIF"}
_FORMAT_NAMES = ("JPEG", "PNG", "HEIC", "AVIF", "WEBP", "GIF", "BMP", "TIFF", "PPM")

ProgressFn = Callable[[int, int, Path], None]


class ImageRejected(UserInputError):
    """One file that cannot be used; `reason` says why (without the file name)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class NormalizedImage:
    image: Image.Image  # RGB
    sha256: str
    source_format: str
    notes: list[str] = field(default_factory=list)

    def png_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", compress_level=6)
        return buf.getvalue()


@dataclass(frozen=True)
class StoredImage:
    """An accepted photo, already in the store (no database row yet)."""

    source: Path
    sha256: str
    path: Path
    width: int
    height: int
    format: str

    @property
    def original_name(self) -> str:
        return self.source.name


@dataclass
class IngestReport:
    accepted: list[StoredImage] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped_folders: list[Path] = field(default_factory=list)  # subfolders not read (not recursive)
    concept: Any = None  # the Concept the photos went to, when there is one
    already: list[StoredImage] = field(default_factory=list)  # linked before, in the same role

    @property
    def added(self) -> list[StoredImage]:
        return self.accepted

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self.rejected + self.duplicates

    def to_json(self) -> dict:
        return {
            "concept": self.concept.name if self.concept is not None else None,
            "warnings": list(self.warnings),
            "accepted": [
                {"file": str(s.source), "sha256": s.sha256, "width": s.width, "height": s.height}
                for s in self.accepted
            ],
            "rejected": [{"file": str(p), "reason": r} for p, r in self.rejected],
            "duplicates": [{"file": str(p), "reason": r} for p, r in self.duplicates],
            "notes": [{"file": str(p), "note": n} for p, n in self.notes],
            "already": [{"file": str(s.source), "sha256": s.sha256} for s in self.already],
            "skipped_folders": [str(p) for p in self.skipped_folders],
        }


def pixel_hash(image: Image.Image) -> str:
    """sha256 of an RGB image's size and pixels: the picture's id."""
    h = hashlib.sha256(b"yoc-rgb8\0")
    h.update(f"{image.width}x{image.height}\0".encode())
    h.update(image.tobytes())
    return h.hexdigest()


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe), not a file"), (stat.S_ISSOCK, "a socket, not a file"),
                (stat.S_ISCHR, "a device, not a file"), (stat.S_ISBLK, "a device, not a file"))


def _read(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageRejected(path, "no such file") from None
    except OSError as err:
        raise ImageRejected(path, f"cannot read the file ({err.strerror or err})") from None
    size = info.st_size
    if stat.S_ISDIR(info.st_mode):
        raise ImageRejected(path, "is a folder, not a file")
    for test, what in _NOT_REGULAR:  # reading one could block forever or never end
        if test(info.st_mode):
            raise ImageRejected(path, f"is {what}")
    if size == 0:
        raise ImageRejected(path, "empty file (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageRejected(path, f"file too large ({size // 2**20} MiB; limit {MAX_FILE_BYTES // 2**20} MiB)")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise ImageRejected(path, f"cannot read the file ({err.strerror or err})") from None


_phone_formats_registered = False


def register_phone_formats() -> None:
    """Teach PIL to read HEIC/HEIF (iPhones' default) and AVIF; once per process."""
    global _phone_formats_registered
    if _phone_formats_registered:
        return
    import pillow_avif  # noqa: F401 - importing registers the AVIF plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()
    _phone_formats_registered = True


def _open(path: Path, data: bytes) -> Image.Image:
    register_phone_formats()
    Image.init()  # registers every plugin, so that `formats=` below knows them all
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked right after; PIL's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageRejected(path, "image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageRejected(
            path, f"not an image yoc can read (it reads {', '.join(_FORMAT_NAMES)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(path, f"damaged image ({err})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageRejected(
            path,
            f"image too large ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"limit {MAX_PIXELS / 1e6:.0f})",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(path, f"image too small ({width}x{height}; at least {MIN_SIDE} px a side)")
    return img


def _first_frame(path: Path, img: Image.Image, notes: list[str]) -> None:
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception as err:  # noqa: BLE001 - any decoder error means a damaged file
        raise ImageRejected(path, f"damaged image ({err})") from None
    if frames > 1:
        img.seek(0)
        if img.format in _ANIMATED_FORMATS:
            notes.append(f"animated ({frames} frames): used the first frame")
        else:
            notes.append(f"{frames} pictures in one file: used the first")


def _load(path: Path, img: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected(path, f"truncated or damaged image ({err})") from None


def _orient(path: Path, img: Image.Image, notes: list[str]) -> Image.Image:
    """Apply EXIF orientation 2-8; any other value, or damaged EXIF, is a note (never a
    warning printed by PIL, never a rotation claimed that did not happen)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
        if orientation in range(2, 9):
            out = ImageOps.exif_transpose(img)
            notes.append(f"rotated upright (EXIF orientation {orientation})")
            return out
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {str(orientation)[:20]} is not a valid value: ignored")
    except Exception:  # noqa: BLE001 - broken EXIF must not lose the photo
        notes.append("unreadable EXIF data ignored")
    return img


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit L, keeping contrast (no clipping)."""
    img = img.convert("F") if img.mode == "F" else img.convert("I")
    lo, hi = img.getextrema()
    if img.mode == "I" and hi <= 255 and lo >= 0:
        return img.convert("L")
    if img.mode == "I" and hi <= 65535 and lo >= 0:
        return img.point(lambda v: v / 257).convert("L")
    span = (hi - lo) or 1
    return img.point(lambda v: (v - lo) * 255.0 / span).convert("L")


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        notes.append("palette image converted to RGB")
        if not has_alpha:
            return img
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent areas composited on white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        notes.append(f"{'16-bit' if mode.startswith('I;16') else mode} image converted to 8-bit RGB")
        return _scale_to_8bit(img).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return img.convert("RGB")


def _downscale(img: Image.Image, notes: list[str]) -> Image.Image:
    if max(img.size) <= MAX_SIDE:
        return img
    before = f"{img.width}x{img.height}"
    img = img.copy()
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    notes.append(f"downscaled from {before} to {img.width}x{img.height}")
    return img


def normalize_file(path: Path) -> NormalizedImage:
    """Validate one file and return its normalized RGB picture; raises ImageRejected."""
    path = Path(path)
    return normalize_bytes(_read(path), path)


def normalize_bytes(data: bytes, path: Path) -> NormalizedImage:
    """Like normalize_file for bytes already read; `path` names them in messages."""
    if not data:
        raise ImageRejected(path, "empty file (0 bytes)")
    # PIL warns (on stderr) about damaged EXIF and the like: those become notes on the photo.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        norm = _normalize(data, path)
    for text in dict.fromkeys(_warning_note(w) for w in caught):
        if text is not None and text not in norm.notes:
            norm.notes.append(text)
    return norm


def _warning_note(caught: warnings.WarningMessage) -> str | None:
    if issubclass(caught.category, Image.DecompressionBombWarning | ResourceWarning):
        return None
    text = str(caught.message)
    if "EXIF" in text or "Tag data" in text or "tag" in text.lower():
        return "damaged EXIF data ignored"
    return f"decoder warning: {short(text, 120)}"


def _normalize(data: bytes, path: Path) -> NormalizedImage:
    img = _open(path, data)
    notes: list[str] = []
    fmt = img.format or "?"
    _first_frame(path, img, notes)
    _load(path, img)
    img = _orient(path, img, notes)
    try:
        img = _to_rgb(img, notes)
    except (OSError, ValueError) as err:
        raise ImageRejected(path, f"cannot convert {img.mode} image to RGB ({err})") from None
    img = _downscale(img, notes)
    return NormalizedImage(image=img, sha256=pixel_hash(img), source_format=fmt, notes=notes)


def expand_paths(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True,
                 skipped_folders: list[Path] | None = None,
                 ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files named directly, plus the files inside named folders (hidden ones skipped):
    all the way down when `recursive`, else the folder's top only, its subfolders
    appended to `skipped_folders`."""
    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(Path(folder) / n for n in sorted(names) if not n.startswith("."))
                if not recursive:
                    if skipped_folders is not None:
                        skipped_folders.extend(Path(folder) / d for d in dirs)
                    dirs[:] = []
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def ingest_files(
    paths: Iterable[str | os.PathLike[str]],
    store: ImageStore,
    on_progress: ProgressFn | None = None,
    *,
    recursive: bool = True,
) -> IngestReport:
    """Validate files, write the accepted ones to the store, and report on each.

    Only files are written: the caller links them in the database afterwards,
    so a kill here leaves at most unreferenced (complete) files in the store.
    """
    skipped: list[Path] = []
    files, missing = expand_paths(paths, recursive=recursive, skipped_folders=skipped)
    report = IngestReport(rejected=list(missing), skipped_folders=skipped)
    seen: dict[str, Path] = {}
    for index, path in enumerate(files):
        try:
            norm = normalize_file(path)
        except ImageRejected as err:
            report.rejected.append((path, err.reason))
        else:
            report.notes.extend((path, note) for note in norm.notes)
            if norm.sha256 in seen:
                report.duplicates.append((path, f"same picture as {seen[norm.sha256]}"))
            else:
                seen[norm.sha256] = path
                stored = store.path_for(norm.sha256)
                if not stored.is_file():
                    store.put(norm.sha256, norm.png_bytes())
                report.accepted.append(
                    StoredImage(path, norm.sha256, stored, norm.image.width, norm.image.height, norm.source_format)
                )
        if on_progress is not None:
            on_progress(index + 1, len(files), path)
    return report
