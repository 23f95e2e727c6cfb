"""Snapshot tests of the main screens at 80x24 (pytest-textual-snapshot).

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs. Nothing in these views depends on the clock or on temp paths.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_folder
from yoc_assistant.tui.app import YocApp
from yoc_assistant.tui.services import Services
from yoc_assistant.tui.widgets import PromptInput

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"


@pytest.fixture(autouse=True)
def _renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_IMAGE_RENDERER", "halfcell")


def app() -> YocApp:
    return YocApp(Services(str(CHECKPOINT), seed=0))


async def settled(pilot) -> None:  # noqa: ANN001
    await pilot.app.workers.wait_for_complete()
    for prompt in pilot.app.query(PromptInput):
        prompt.cursor_blink = False  # a blinking cursor is a coin toss in a screenshot
    await pilot.pause()


def add(tmp_path: Path, name: str, n: int) -> None:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(n):
        img = Image.new("RGB", (40, 40), (20 * i, 100, 200))
        img.putpixel((i, 0), (255, 0, 0))
        img.save(folder / f"{i}.png")
    with Library.open() as lib:
        add_concept_from_folder(lib, folder, name)


def test_chat_screen(snap_compare) -> None:  # noqa: ANN001
    assert snap_compare(app(), terminal_size=(80, 24), run_before=settled)


def test_chat_with_an_answer_and_routing(snap_compare) -> None:  # noqa: ANN001
    async def ask(pilot) -> None:  # noqa: ANN001
        await settled(pilot)
        pilot.app.screen.query_one(PromptInput).value = "a red boat"
        await pilot.press("enter")
        await settled(pilot)
        await pilot.press("ctrl+r")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app(), terminal_size=(80, 24), run_before=ask)


def test_chat_screen_light_theme(snap_compare) -> None:  # noqa: ANN001
    assert snap_compare(app(), press=["ctrl+t"], terminal_size=(80, 24), run_before=settled)


def test_concepts_screen(snap_compare, tmp_path: Path) -> None:  # noqa: ANN001
    add(tmp_path, "bo", 3)
    add(tmp_path, "mug", 2)

    async def open_concepts(pilot) -> None:  # noqa: ANN001
        await settled(pilot)
        await pilot.press("f3")
        await settled(pilot)

    assert snap_compare(app(), terminal_size=(80, 24), run_before=open_concepts)


def test_help_screen(snap_compare) -> None:  # noqa: ANN001
    assert snap_compare(app(), press=["f1"], terminal_size=(80, 24), run_before=settled)
