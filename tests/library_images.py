"""Test photos made with PIL (tests of the library, ingest, bundles and the concept CLI)."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw


def picture(seed: int = 0, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A distinct little picture per seed (random rectangles on a coloured ground)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(1, size[0] + 4), y0 + rng.randrange(1, size[1] + 4)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    return img if mode == "RGB" else img.convert(mode)


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str | None = None,
          mode: str = "RGB", **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed, size, mode).save(path, format=fmt, **save)
    return path


def photos(folder: Path, n: int = 3, start: int = 0) -> list[Path]:
    return [photo(folder / f"photo{i}.png", seed=start + i) for i in range(n)]


def noise_jpeg(path: Path, size: tuple[int, int] = (256, 256)) -> Path:
    """A JPEG with lots of entropy (so that cutting it really truncates image data)."""
    rng = random.Random(1)
    img = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    img.save(path, format="JPEG", quality=95)
    return path


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims a huge size (a decompression bomb, harmless to write)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
