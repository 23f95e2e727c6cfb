"""The habits of the command line, met as a user meets them: the real `yoc` in a subprocess."""

from __future__ import annotations

import stat
import sys
import time
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


def test_top_level_help_has_short_flag_examples_and_a_docs_pointer() -> None:
    done = run_yoc("-h")
    assert done.returncode == 0, done.stderr
    assert "Examples:" in done.stdout and "docs/usage.md" in done.stdout
    assert "yoc add-concept" in done.stdout and "yoc logs" in done.stdout


PROGRESS_COMMANDS = [["add-concept"], ["train"], ["ask"], ["draw"], ["demo"], ["eval"],
                     ["pool", "add"], ["pull"], ["concepts", "import"]]


@pytest.mark.parametrize("command", PROGRESS_COMMANDS, ids=" ".join)
def test_every_command_that_prints_progress_takes_q(command: list[str]) -> None:
    done = run_yoc(*command, "-h")
    assert done.returncode == 0, done.stderr
    assert "-q, --quiet" in done.stdout


def test_concepts_alone_lists_the_concepts(tmp_path: Path) -> None:
    done = run_yoc("concepts")
    assert done.returncode == 0 and "No concepts yet" in done.stderr
    photos(tmp_path / "bo", 3)
    run_yoc("add-concept", tmp_path / "bo", "--name", "bo", "--no-train", "--about",
            "breed: dachshund\ncollar: red\x1b[31m")
    done = run_yoc("concepts")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:3] == ["NAME", "DISPLAY", "NAME"]
    assert done.stdout.splitlines()[1].startswith("bo ")

    show = run_yoc("concepts", "show", "bo").stdout.splitlines()
    at = next(i for i, line in enumerate(show) if line.startswith("  about:"))
    assert show[at] == "  about:    breed: dachshund"
    assert show[at + 1] == "            collar: red\\x1b[31m"  # indented, the escape shown not run


def test_export_asks_before_overwriting(tmp_path: Path) -> None:
    import pexpect

    photos(tmp_path / "bo", 3)
    run_yoc("add-concept", tmp_path / "bo", "--name", "bo", "--no-train")
    bundle = tmp_path / "bo.yoc.zip"
    bundle.write_bytes(b"precious")
    done = run_yoc("concepts", "export", "bo", "--out", bundle)  # no terminal to ask on
    assert done.returncode == 2 and str(bundle) in done.stderr and "--force" in done.stderr
    assert bundle.read_bytes() == b"precious"

    child = pexpect.spawn(sys.executable, ["-m", "yoc_assistant", "concepts", "export", "bo",
                                           "--out", str(bundle)], encoding="utf-8", timeout=60)
    child.expect("Overwrite it")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0 and bundle.read_bytes() == b"precious"

    child = pexpect.spawn(sys.executable, ["-m", "yoc_assistant", "concepts", "export", "bo",
                                           "--out", str(bundle)], encoding="utf-8", timeout=60)
    child.expect("Overwrite it")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and bundle.read_bytes()[:2] == b"PK"

    bundle.write_bytes(b"precious")
    assert run_yoc("concepts", "export", "bo", "--out", bundle, "--force").returncode == 0
    assert bundle.read_bytes()[:2] == b"PK"


@pytest.mark.parametrize(("env", "needle"), [
    ({"YOC_BACKBONE": "not a model"}, "YOC_BACKBONE='not a model' is neither a checkpoint folder"),
    ({"YOC_DEVICE": "gpu"}, "YOC_DEVICE='gpu' is not a device: set it to cpu, cuda or auto"),
])
def test_environment_errors_name_the_variable_and_the_fix(env: dict[str, str], needle: str) -> None:
    started = time.monotonic()
    done = run_yoc("ask", "what is in this photo?", env=env)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 20  # before any backbone load


def test_cuda_asked_on_a_machine_without_it_says_to_set_yoc_device() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for machines without it")
    done = run_yoc("ask", "what is in this photo?", env={"YOC_DEVICE": "cuda"})
    assert done.returncode == 2, done.stderr
    assert "YOC_DEVICE=cuda" in done.stderr and "set YOC_DEVICE=cpu" in done.stderr
    assert "--device" not in done.stderr
