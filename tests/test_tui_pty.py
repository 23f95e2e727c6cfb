"""The real `yoc` in a pseudo-terminal (80x24, xterm-256color): type a question and
read the answer off the screen, as a person would."""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pytest

from yoc_assistant.tui.services import Services
from yoc_assistant.tui.widgets.messages import ASSISTANT_MARK

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"
# CSI sequences (colours, cursor moves, modes), OSC strings, and other ESC pairs
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def screen_text(raw: str) -> str:
    return ANSI.sub("", raw)


@pytest.fixture
def env(yoc_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOC_")}
    env.update(TERM="xterm-256color", COLUMNS="80", LINES="24", YOC_HOME=str(yoc_home),
               YOC_PICTURES=str(yoc_home / "pictures"), YOC_BACKBONE=str(CHECKPOINT),
               YOC_SEED="0", HF_HUB_OFFLINE="1")
    return env


def test_type_a_question_and_read_the_answer_off_the_screen(env: dict[str, str]) -> None:
    # Words the tiny checkpoint's tokenizer has (others are refused before any pass), and
    # the chat app's /text command, so that the answer is words to read off the screen.
    words = "is a red tree on a river ?"
    question = f"/text {words}"
    # What the assistant answers with this seed (words of the tiny random model).
    expected = Services(str(CHECKPOINT), seed=0).ask(words, mode="text").text
    first_words = " ".join(expected.split()[:4])
    assert first_words

    started = time.monotonic()
    child = pexpect.spawn(sys.executable, ["-m", "yoc_assistant"], env=env, dimensions=(24, 80),
                          encoding="utf-8", codec_errors="replace", timeout=90)
    everything = io.StringIO()
    child.logfile_read = everything
    try:
        # The app is on screen while the backbone still loads.
        child.expect("loading backbone")
        up_s = time.monotonic() - started
        child.expect("ready: tiny-anole-a")
        child.send(question)
        child.send("\r")
        seen = ""
        deadline = time.monotonic() + 90
        while ASSISTANT_MARK + first_words not in screen_text(seen):
            assert time.monotonic() < deadline, f"no answer on screen: {screen_text(seen)[-800:]!r}"
            try:
                seen += child.read_nonblocking(65536, timeout=1)
            except pexpect.TIMEOUT:
                continue
        child.sendcontrol("q")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert "Traceback" not in everything.getvalue()
    # The issue asks for < 2 s; measured ~1.1 s on a busy 2-core machine. The bound
    # here leaves room for slow CI, and still catches work moved before the first frame.
    assert up_s < 4.0, f"the app took {up_s:.1f} s to show its first screen"
