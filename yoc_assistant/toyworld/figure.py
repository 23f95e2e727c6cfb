"""The README's picture: a concept's real photos above pictures yoc drew of it.

    yoc draw "A photo of <sunny>." --n 4 --seed 0 --out /tmp/drawn
    python -m yoc_assistant.toyworld.figure concepts/sunny /tmp/drawn docs/img/sunny-real-and-drawn.png

Both rows are scaled up with nearest-neighbour (the toy world's photos are 32 x 32),
so what is shown is exactly what was generated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from yoc_assistant.atomic import atomic_path

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _images(folder: Path, limit: int) -> list[Image.Image]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
    if not files:
        raise SystemExit(f"no images in {folder}")
    return [Image.open(p).convert("RGB") for p in files]


def compose(top: list[Image.Image], bottom: list[Image.Image], cell: int = 128, gap: int = 8) -> Image.Image:
    """Two rows of `cell`-pixel squares on white, `gap` pixels apart."""
    cols = max(len(top), len(bottom))
    sheet = Image.new("RGB", (cols * cell + (cols + 1) * gap, 2 * cell + 3 * gap), "white")
    for r, row in enumerate((top, bottom)):
        for c, img in enumerate(row):
            sheet.paste(img.resize((cell, cell), Image.NEAREST), (gap + c * (cell + gap), gap + r * (cell + gap)))
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("real", type=Path, help="folder with the concept's photos")
    ap.add_argument("drawn", type=Path, help="folder with the generated pictures")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--n", type=int, default=5, help="pictures per row, at most")
    args = ap.parse_args(argv)
    sheet = compose(_images(args.real, args.n), _images(args.drawn, args.n))
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(args.out)


if __name__ == "__main__":
    main()
