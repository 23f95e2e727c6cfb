"""Campaign, category "photos": bad photos held, and the odd ones the campaign found
(issue 14, "Also seen": FIFO, corrupt EXIF, orientation 9)."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import pytest
from library_images import photo
from PIL import Image

from yoc_assistant.library import Library
from yoc_assistant.library.ingest import normalize_file


def _jpeg_with_exif(path: Path, exif: bytes) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (40, 32), "red").save(buf, "JPEG", exif=exif)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_named_as_one_and_never_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(Library.open().ingest([fifo])), daemon=True)
    worker.start()
    worker.join(10)
    if not done:  # blocked reading the pipe: unblock it so the test can end
        with open(fifo, "wb"):
            pass
        worker.join(5)
        pytest.fail("ingest blocked reading a FIFO")
    ((path, reason),) = done[0].rejected
    assert path == fifo and "FIFO" in reason and "empty" not in reason


def test_corrupt_exif_is_a_note_not_a_raw_warning(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "x" * 300
    bad = _jpeg_with_exif(tmp_path / "bad-exif.jpg", exif.tobytes()[:30])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        norm = normalize_file(bad)
    assert any("EXIF" in n for n in norm.notes)


def test_orientation_9_claims_no_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 9
    odd = _jpeg_with_exif(tmp_path / "o9.jpg", exif.tobytes())
    norm = normalize_file(odd)
    assert norm.image.size == (40, 32)
    assert not any("rotated" in n for n in norm.notes)
    assert any("orientation 9" in n and "ignored" in n for n in norm.notes)


def test_orientation_6_still_rotates(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    norm = normalize_file(_jpeg_with_exif(tmp_path / "o6.jpg", exif.tobytes()))
    assert norm.image.size == (32, 40) and any("rotated upright" in n for n in norm.notes)


def test_plain_photo_has_no_notes(tmp_path: Path) -> None:
    assert normalize_file(photo(tmp_path / "p.png")).notes == []
