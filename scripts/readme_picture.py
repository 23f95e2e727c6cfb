"""The README's picture: the example concept's five photos over five pictures yoc drew.

Run after `yoc demo` has trained `<sunny>` in the library that YOC_HOME points at:

    YOC_HOME=DIR yoc demo && YOC_HOME=DIR python scripts/readme_picture.py

It asks `yoc draw` (the same command a user runs, the backbone's defaults) for one
picture per photo of "A photo of <sunny>." (seeds 0, 1, ...), and lays them under the
example concept's photos (the demo's `load_example`), enlarged 4x without smoothing so the
32x32 pixels stay visible.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from yoc_assistant.cli.demo import load_example

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "sunny-real-and-drawn.png"
SCALE, GAP = 4, 4


def main() -> None:
    example = load_example()
    photos = example.photos
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-m", "yoc_assistant", "draw", f"A photo of <{example.name}>.",
                              "--n", str(len(photos)), "--seed", "0", "--out", tmp, "--json", "-q"],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"yoc draw failed (is <{example.name}> trained? run `yoc demo` first):\n{run.stderr[-2000:]}")
        drawn = [Image.open(p).convert("RGB") for p in json.loads(run.stdout)["image_paths"]]
        real = [Image.open(p).convert("RGB") for p in photos]
        side = real[0].width * SCALE
        sheet = Image.new("RGB", (len(real) * (side + GAP) - GAP, 2 * side + GAP), "white")
        for row, images in enumerate((real, drawn)):
            for k, image in enumerate(images):
                big = image.resize((side, side), Image.NEAREST)
                sheet.paste(big, (k * (side + GAP), row * (side + GAP)))
        sheet.save(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
