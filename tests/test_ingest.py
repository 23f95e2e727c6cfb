"""Photo validation: every bad input the issue lists is rejected or converted, with a reason."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from library_images import noise_jpeg, photo, picture, png_claiming_size
from PIL import Image

from yoc_assistant.library.ingest import (
    MAX_SIDE,
    ImageRejected,
    ingest_files,
    normalize_file,
    pixel_hash,
)
from yoc_assistant.library.store import ImageStore


def reject_reason(path: Path) -> str:
    with pytest.raises(ImageRejected) as info:
        normalize_file(path)
    assert str(path) in str(info.value)  # the message names the file
    return info.value.reason


def stored_image(tmp_path: Path, *paths: Path) -> tuple[Image.Image, list[str]]:
    store = ImageStore(tmp_path / "store")
    report = ingest_files(list(paths), store)
    assert len(report.accepted) == 1, report
    with Image.open(report.accepted[0].path) as img:
        img.load()
        return img.copy(), [n for _, n in report.notes]


def test_zero_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "0 bytes" in reject_reason(empty)


def test_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 20)
    assert "not an image" in reject_reason(text)


def test_format_outside_allow_list(tmp_path: Path) -> None:
    ico = photo(tmp_path / "icon.ico", fmt="ICO", size=(32, 32))
    assert "not an image yoc can read" in reject_reason(ico)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    full = noise_jpeg(tmp_path / "full.jpg")
    if fmt == "PNG":
        full = photo(tmp_path / "full.png", size=(256, 256))
        with Image.open(tmp_path / "full.jpg") as img:
            img.save(full)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in reject_reason(cut)
    normalize_file(full)  # the whole file is fine


def test_decompression_bomb_over_our_limit(tmp_path: Path) -> None:
    bomb = png_claiming_size(tmp_path / "bomb.png", 9000, 8000)  # 72 MP: PIL only warns
    assert "too large" in reject_reason(bomb)


def test_decompression_bomb_over_pil_limit(tmp_path: Path) -> None:
    bomb = png_claiming_size(tmp_path / "bomb.png", 100_000, 100_000)
    assert "too large" in reject_reason(bomb)


def test_too_small(tmp_path: Path) -> None:
    assert "too small" in reject_reason(photo(tmp_path / "dot.png", size=(4, 4)))


def test_animated_gif_takes_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    img, notes = stored_image(tmp_path, gif)
    assert any("animated (3 frames)" in n for n in notes)
    r, g, b = img.getpixel((20, 20))
    assert r > 200 and g < 50 and b < 50


def test_cmyk_converted(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, format="JPEG", quality=100)
    img, notes = stored_image(tmp_path, path)
    assert img.mode == "RGB" and any("CMYK" in n for n in notes)
    r, g, b = img.getpixel((20, 20))
    assert r > 200 and g < 60 and b < 60  # C=0 M=Y=255 is red


def test_16bit_keeps_contrast(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = Image.new("I;16", (64, 32))
    ramp.putdata([(x * 65535) // 63 for _ in range(32) for x in range(64)])
    ramp.save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    img, notes = stored_image(tmp_path, path)
    assert img.mode == "RGB" and any("8-bit" in n for n in notes)
    left, middle, right = (img.getpixel((x, 10))[0] for x in (0, 32, 63))
    assert left < 10 and 100 < middle < 160 and right > 245  # scaled, not clipped to white


def test_palette_with_transparency_on_white(tmp_path: Path) -> None:
    path = tmp_path / "pal.png"
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 20, 40))
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    out, notes = stored_image(tmp_path, path)
    assert out.getpixel((30, 20)) == (255, 255, 255)  # transparent -> white
    assert out.getpixel((5, 20)) == (255, 0, 0)
    assert any("palette" in n for n in notes)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (20, 0, 40, 40))
    path = tmp_path / f"alpha-{mode}.png"
    rgba.convert(mode).save(path)
    out, notes = stored_image(tmp_path, path)
    assert out.mode == "RGB"
    assert out.getpixel((30, 20)) == (255, 255, 255)
    assert out.getpixel((5, 20)) == (0, 0, 0)
    assert any("white" in n for n in notes)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = picture(3, size=(80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)
    out, notes = stored_image(tmp_path, path)
    assert out.size == (40, 80)
    assert any("EXIF orientation 6" in n for n in notes)


def test_large_photo_downscaled(tmp_path: Path) -> None:
    out, notes = stored_image(tmp_path, photo(tmp_path / "wide.png", size=(MAX_SIDE + 500, 100)))
    assert max(out.size) == MAX_SIDE and any("downscaled" in n for n in notes)


def test_duplicates_by_content_not_name(tmp_path: Path) -> None:
    a = photo(tmp_path / "a.png", seed=5)
    b = photo(tmp_path / "same picture.bmp", seed=5, fmt="BMP")  # same pixels, other format
    c = photo(tmp_path / "c.png", seed=6)
    report = ingest_files([a, b, c], ImageStore(tmp_path / "store"))
    assert [s.source for s in report.accepted] == [a, c]
    assert report.duplicates == [(b, f"same picture as {a}")]


def test_same_hash_for_same_pixels() -> None:
    assert pixel_hash(picture(1)) == pixel_hash(picture(1))
    assert pixel_hash(picture(1)) != pixel_hash(picture(2))


def _drop_file_access_override() -> None:
    # Runs in the child before exec: without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH
    # even root obeys file permissions.
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _unreadable_reason(path: Path) -> str:
    if os.geteuid() != 0:
        return reject_reason(path)
    code = ("import json, sys; from pathlib import Path; from yoc_assistant.library.ingest import "
            "normalize_file, ImageRejected\ntry:\n normalize_file(Path(sys.argv[1])); print(json.dumps('ok'))\n"
            "except ImageRejected as e:\n print(json.dumps(e.reason))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], preexec_fn=_drop_file_access_override,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_unreadable_file(tmp_path: Path) -> None:
    locked = photo(tmp_path / "locked.png")
    locked.chmod(0o000)
    try:
        reason = _unreadable_reason(locked)
    finally:
        locked.chmod(0o644)
    assert "cannot read" in reason and "Permission denied" in reason


def test_dangling_link_and_missing_file(tmp_path: Path) -> None:
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    report = ingest_files([link, tmp_path / "missing.png"], ImageStore(tmp_path / "store"))
    assert [p for p, _ in report.rejected] == [tmp_path / "missing.png", link]
    assert all("no such file" in r for _, r in report.rejected)


@pytest.mark.parametrize("name", ["my photo.png", "ünïcødé 写真.png", "-leading-dash.png", "--x.jpg",
                                  "new\nline.png", "semi;colon $HOME.png"])
def test_odd_file_names(tmp_path: Path, name: str) -> None:
    path = photo(tmp_path / name, seed=len(name))
    report = ingest_files([path], ImageStore(tmp_path / "store"))
    assert [s.source for s in report.accepted] == [path] and report.accepted[0].original_name == name


def test_bad_files_do_not_stop_the_batch(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    good = [photo(tmp_path / "in" / f"good{i}.png", seed=i) for i in range(2)]
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    (tmp_path / "in" / "text.jpg").write_text("nope")
    (tmp_path / "in" / ".hidden.png").write_bytes(b"")  # hidden files are not photos
    photo(tmp_path / "in" / "sub" / "deeper.png", seed=9)
    report = ingest_files([tmp_path / "in"], ImageStore(tmp_path / "store"))
    assert sorted(p.name for p, _ in report.rejected) == ["empty.png", "text.jpg"]
    assert {s.source for s in report.accepted} == {*good, tmp_path / "in" / "sub" / "deeper.png"}
    for stored in report.accepted:  # normalized RGB PNGs named by their hash
        assert stored.path.name == f"{stored.sha256}.png" and stored.path.parent.name == stored.sha256[:2]
        with Image.open(stored.path) as img:
            assert img.format == "PNG" and img.mode == "RGB"
