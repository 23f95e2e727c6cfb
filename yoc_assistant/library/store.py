"""Content-addressed image store: images/<aa>/<sha256>.png.

A picture's id is the sha256 of its normalized RGB pixels (see ingest), so the
same photo added twice, from any file, is stored once. Files are written
atomically; a file present under its name is always complete.
"""

from __future__ import annotations

import re
from pathlib import Path

from yoc_assistant.atomic import atomic_write_bytes

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str) -> bool:
    return bool(_SHA_RE.match(value))


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.png"

    def relative(self, sha256: str) -> str:
        """The path stored in the database (relative to the store root, portable)."""
        return f"{sha256[:2]}/{sha256}.png"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put(self, sha256: str, png: bytes) -> Path:
        """Write the PNG unless an identical file is already there."""
        path = self.path_for(sha256)
        if not path.is_file():
            atomic_write_bytes(path, png)
        return path

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def all_hashes(self) -> set[str]:
        return {p.stem for p in self.root.glob("??/*.png") if is_sha256(p.stem)}
