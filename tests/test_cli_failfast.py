"""Names, concepts, options and settings are checked before torch or the backbone loads:
the real command in a subprocess, which reports at exit whether torch was imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_yoc
from library_images import photos

PROBE = ("import atexit, sys\n"
         "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
         "from yoc_assistant.cli import main\n"
         "main(sys.argv[1:])\n")


def yoc_probe(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A library with one untrained concept <bo>, and an exported bundle of it."""
    photos(tmp_path / "bo", 3)
    assert run_yoc("add-concept", tmp_path / "bo", "--name", "bo", "--no-train").returncode == 0
    bundle = tmp_path / "bo.yoc.zip"
    assert run_yoc("concepts", "export", "bo", "--out", bundle).returncode == 0
    return tmp_path


CASES = [
    (["ask", "is <rex> in this photo?"], 3, "unknown concept <rex>"),
    (["ask", "what colour is <bo>'s collar?"], 2, "not trained yet"),
    (["ask", "hello", "--mode", "smell"], 2, "unknown mode 'smell'"),
    (["draw", "<rex> on a skateboard"], 3, "unknown concept <rex>"),
    (["eval", "rex"], 3, "rex"),
    (["eval", "bo"], 2, "not trained yet"),
    (["train", "rex"], 3, "no concept named 'rex'"),
    (["train", "bo", "--steps", "0"], 2, "--steps"),
    (["train", "bo", "--lr", "-1"], 2, "--lr"),
    (["train", "bo", "--batch-size", "0"], 2, "--batch-size"),
    (["concepts", "import", "{bundle}"], 2, "already exists"),
]


@pytest.mark.parametrize(("args", "code", "needle"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_refused_before_torch_loads(library: Path, args: list[str], code: int, needle: str) -> None:
    done = yoc_probe(*[a.format(bundle=library / "bo.yoc.zip") for a in args])
    assert done.returncode == code, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert "torch imported: False" in done.stderr


def test_a_bad_yoc_backbone_is_refused_before_torch_loads() -> None:
    done = yoc_probe("ask", "hello", env={"YOC_BACKBONE": "not a model"})
    assert done.returncode == 2 and "YOC_BACKBONE" in done.stderr
    assert "torch imported: False" in done.stderr


@pytest.mark.parametrize("args", [["concepts"], ["ask", "is <bo> here?"], ["add-concept", "x", "--name", "bo"]],
                         ids=" ".join)
def test_a_file_as_yoc_home_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "not-a-folder"
    home.write_text("x")
    for where, needle in ((home, "is a file; yoc needs a folder there"), (home / "sub", "cannot create the folder")):
        done = run_yoc(*args, env={"YOC_HOME": str(where)})
        assert done.returncode == 2, done.stderr
        assert needle in done.stderr and "YOC_HOME" in done.stderr and str(where) in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["-h"], ["concepts"], ["logs"], ["logs", "status"], ["path"],
                                  ["concepts", "show", "bo"], ["ask", "-h"]],
                         ids=" ".join)
def test_library_commands_never_import_torch(library: Path, args: list[str]) -> None:
    done = yoc_probe(*args)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stderr
