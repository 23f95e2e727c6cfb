"""The habits of the command line, met as a user meets them: the real `yoc` in a subprocess."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_run import run_yoc
from library_images import photos


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_bundles_are_written_with_the_users_umask(tmp_path: Path, umask: int) -> None:
    photos(tmp_path / "bo", 3)
    assert run_yoc("add-concept", tmp_path / "bo", "--name", "bo", "--no-train").returncode == 0
    done = run_yoc("concepts", "export", "bo", "--out", tmp_path / "bo.yoc.zip", umask=umask)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "bo.yoc.zip").stat().st_mode) == 0o666 & ~umask
