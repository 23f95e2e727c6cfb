"""`yoc add-concept` with a newcomer's own folders and phone photos, through the real command."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pexpect
from cli_run import run_yoc
from library_images import photo, photos
from PIL import Image

from yoc_assistant.library import Library


def test_a_folder_gives_its_top_photos_and_names_the_subfolders_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "tri"
    photos(folder, 5)
    photos(folder / "held-out", 3, start=10)
    photos(folder / "pool", 30, start=20)
    done = run_yoc("add-concept", folder, "--name", "tri", "--no-train")
    assert done.returncode == 0, done.stderr
    assert "Added 'tri': 5 photos" in done.stdout
    warning = [line for line in done.stderr.splitlines() if "subfolders not read" in line]
    assert warning and "held-out/" in warning[0] and "pool/" in warning[0] and "--recursive" in warning[0]

    done = run_yoc("add-concept", folder, "--name", "many", "--no-train", "--recursive", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["concept"]["photos"] == 38 and report["report"]["skipped_folders"] == []
    assert "38 photos of 'many'" in done.stderr and "3-5 different photos" in done.stderr
    assert Library.open().require_concept("tri").photos == 5


def test_help_says_what_works_best_and_that_subfolders_need_recursive() -> None:
    done = run_yoc("add-concept", "-h")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "3-5 different photos" in text and "--recursive" in text and "HEIC" in text


def _phone_photo(path: Path, fmt: str) -> Image.Image:
    """A photo as a phone stores it: sideways pixels, EXIF orientation 6, GPS in the metadata."""
    import pillow_avif  # noqa: F401 - registers the AVIF encoder
    from pillow_heif import register_heif_opener

    register_heif_opener()
    upright = Image.new("RGB", (48, 64), (200, 30, 30))
    upright.paste((20, 20, 230), (0, 0, 24, 24))  # blue corner at the top left
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor saw
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS
    sideways.save(path, format=fmt, exif=exif.tobytes(), quality=95)
    return upright


def test_heic_and_avif_photos_are_read_upright_without_their_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    _phone_photo(folder / "IMG_0001.HEIC", "HEIF")
    _phone_photo(folder / "IMG_0002.avif", "AVIF")
    photo(folder / "IMG_0003.jpg", seed=3)
    done = run_yoc("add-concept", folder, "--name", "bo", "--no-train", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["report"]
    assert report["rejected"] == [] and len(report["accepted"]) == 3
    for entry in report["accepted"][:2]:
        assert (entry["width"], entry["height"]) == (48, 64), entry
    lib = Library.open()
    for record in lib.concept_images("bo"):
        if record.original_name == "IMG_0003.jpg":
            continue
        stored = Image.open(record.path)
        assert stored.format == "PNG" and stored.size == (48, 64)
        red, green, blue = stored.getpixel((4, 4))
        assert blue > 150 and red < 100, (record.original_name, stored.getpixel((4, 4)))
        assert not stored.getexif() and "exif" not in stored.info


def _ctrl_c_as_in_a_terminal() -> None:
    """The child's SIGINT as a terminal session has it. A suite started as a background job
    of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt: these tests would fail for how CI was launched, not for yoc."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_checking_photos_says_nothing_was_added(tmp_path: Path) -> None:
    photos(tmp_path / "bo", 5)
    # slowed_yoc.py: yoc with a 2 s pause after each stored photo (see test_kill.py).
    slowed = str(Path(__file__).parent / "slowed_yoc.py")
    child = pexpect.spawn(sys.executable, [slowed, "2", "add-concept", str(tmp_path / "bo"),
                                           "--name", "bo", "--no-train"],
                          env=dict(os.environ), encoding="utf-8", timeout=60, preexec_fn=_ctrl_c_as_in_a_terminal)
    child.expect("Checking photos")  # the bar is up: 5 photos at 2 s each
    child.kill(signal.SIGINT)
    child.expect(pexpect.EOF)
    child.close()
    assert "nothing was added" in child.before and "Traceback" not in child.before
    assert child.exitstatus == 130
    assert Library.open().get_concept("bo") is None


def test_ctrl_c_while_add_concept_trains_says_how_to_resume(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "sunny"
    folder.mkdir()
    for picture in sorted((Path(__file__).resolve().parent.parent / "concepts" / "sunny").glob("*.png")):
        shutil.copy(picture, folder / picture.name)
    child = pexpect.spawn(sys.executable, ["-m", "yoc_assistant", "add-concept", str(folder),
                                           "--name", "sunny"], encoding="utf-8", timeout=240,
                          dimensions=(40, 120), preexec_fn=_ctrl_c_as_in_a_terminal)
    child.expect("training sunny")  # the bar is up: steps are running
    child.kill(signal.SIGINT)
    child.expect("Stopping after this step")
    child.expect(pexpect.EOF)
    child.close()
    assert "continue with: yoc train sunny --resume" in child.before
    assert "Traceback" not in child.before
    assert Library.open().require_concept("sunny").status != "ready"
