"""SIGKILL `yoc add-concept` at many moments: the library must open, list, and re-add the concept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from library_images import photos
from PIL import Image

from yoc_assistant.cli import cli
from yoc_assistant.library import Library

N_PHOTOS = 6
SLOW_S = "0.05"  # per photo: widens the window in which a kill lands mid-ingest


SLOWED_YOC = Path(__file__).parent / "slowed_yoc.py"


def _start(home: Path, folder: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "YOC_HOME": str(home)}
    return subprocess.Popen([sys.executable, str(SLOWED_YOC), SLOW_S, "add-concept", str(folder), "--name", "x",
                             "--no-train", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _check_library(home: Path) -> None:
    """Opens, lists, every row points to a complete file, and re-adding completes the concept."""
    runner = CliRunner()
    env = {"YOC_HOME": str(home)}
    listed = runner.invoke(cli, ["concepts", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    with Library.open(home) as lib:
        for (sha,) in lib.db.execute("SELECT sha256 FROM images").fetchall():
            with Image.open(lib.image_path(sha)) as img:  # complete: decodes fully
                img.load()
        concept = lib.get_concept("x")
        assert concept is None or concept.status == "new"
    again = runner.invoke(cli, ["add-concept", str(home.parent / "photos"), "--name", "x", "--no-train",
                                "--quiet"], env=env)
    assert again.exit_code == 0, again.output
    with Library.open(home) as lib:
        assert lib.get_concept("x").photos == N_PHOTOS
        assert len(lib.concept_images("x")) == N_PHOTOS
        lib.collect_garbage()
        assert len(lib.store.all_hashes()) == N_PHOTOS  # leftovers of the killed run are collectable


def test_kill_at_many_moments(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(folder, N_PHOTOS)
    # How long a whole run takes on this machine, so the kills spread across it.
    start = time.monotonic()
    full = _start(tmp_path / "reference", folder)
    assert full.wait(timeout=120) == 0, full.stderr.read().decode()
    duration = time.monotonic() - start
    outcomes = []
    for i, fraction in enumerate([0.0, 0.2, 0.45, 0.7, 0.85, 0.97]):
        home = tmp_path / f"run{i}" / "home"
        home.parent.mkdir()
        (home.parent / "photos").symlink_to(folder)
        proc = _start(home, folder)
        time.sleep(fraction * duration)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        outcomes.append(code)
        _check_library(home)
    assert -signal.SIGKILL in outcomes  # the kills did land before the end
