"""`yoc demo`, the README's main command, runs end to end (here on the tiny random
backbone, or the shipped toy model when it exists) and leaves a trained concept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from yoc_assistant.cli.demo import load_example


def test_example_concept_is_complete() -> None:
    example = load_example()
    assert 3 <= len(example.photos) <= 5
    assert example.held_out and example.others
    assert example.about
    assert f"<{example.name}>" in example.question


def test_demo_runs_and_can_run_again(yoc_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "YOC_HOME": str(yoc_home), "HF_HUB_OFFLINE": "1"}
    env.pop("YOC_BACKBONE", None)
    cmd = [sys.executable, "-m", "yoc_assistant", "demo", "--steps", "4", "--json",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    training = summary["training"]
    assert not training["cancelled"] and training["steps"] == 4
    assert Path(training["vectors_path"]).is_file()
    assert len(summary["answers"]) == 3
    [picture] = summary["pictures"]
    with Image.open(picture) as img:
        assert img.mode == "RGB" and img.size[0] == img.size[1]

    listed = subprocess.run([sys.executable, "-m", "yoc_assistant", "concepts", "list", "--json"],
                            env=env, capture_output=True, text=True, timeout=120)
    [row] = [c for c in json.loads(listed.stdout) if c["name"] == summary["concept"]]
    assert row["status"] == "ready"

    # A second run finds the trained concept and does not train again.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "training" not in json.loads(again.stdout)


def test_demo_draws_its_picture_on_a_terminal(tmp_path: Path) -> None:
    import os
    import sys

    import pexpect
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(picture)
    code = ("import pathlib; from yoc_assistant.cli.demo import show_picture; "
            f"print('drawn', show_picture(pathlib.Path({str(picture)!r})))")
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    child = pexpect.spawn(sys.executable, ["-c", code], env=env, timeout=60, dimensions=(40, 100))
    child.expect(pexpect.EOF)
    out = child.before.decode("utf-8", "replace")
    assert "drawn True" in out
    assert "255;0;0" in out  # the picture's red, as a true-colour escape (half blocks here)
    # not on a terminal: nothing drawn, nothing printed
    from yoc_assistant.cli.demo import show_picture

    assert show_picture(picture) is False
