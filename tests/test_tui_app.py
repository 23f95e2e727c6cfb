"""Pilot tests of the yoc app on the tiny checkpoint: each flow end to end through
the real library, backbone, assistant and trainer (no stand-ins)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.widgets import DataTable

from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_folder
from yoc_assistant.tui.app import YocApp
from yoc_assistant.tui.screens.concepts import ConceptsScreen
from yoc_assistant.tui.services import Services
from yoc_assistant.tui.widgets import AssistantBubble, ImageView, PromptInput, StatusLine

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"
SIZE = (80, 24)
# textual-image 0.12 still calls Image.getdata (deprecated in Pillow 13); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")


@pytest.fixture(autouse=True)
def _renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_IMAGE_RENDERER", "halfcell")


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no async pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def make_app(**kwargs: object) -> YocApp:
    return YocApp(Services(str(CHECKPOINT), seed=0, **kwargs))  # type: ignore[arg-type]


def photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("RGB", (64, 48), (40 * i + 30, 200 - 50 * i, 90))
        img.putpixel((i, i), (255, 255, 255))  # distinct pixels: not duplicates
        img.save(folder / f"photo{i}.png")
    return folder


def add_concept(tmp_path: Path, name: str) -> None:
    with Library.open() as lib:
        add_concept_from_folder(lib, photos(tmp_path / name), name)


async def settle(pilot, timeout: float = 120) -> None:  # noqa: ANN001
    """Wait until no worker runs (a worker may start another one as it ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(w.is_running for w in pilot.app.workers):
        assert loop.time() < deadline, "workers still running"
        await pilot.pause(0.05)
    await pilot.pause()


def messages(app: YocApp, severity: str | None = None) -> list[str]:
    return [n.message for n in app._notifications if severity in (None, n.severity)]


async def ask(pilot, text: str) -> AssistantBubble:  # noqa: ANN001
    await settle(pilot)
    prompt = pilot.app.screen.query_one(PromptInput)
    prompt.value = text
    await pilot.press("enter")
    await settle(pilot)
    return pilot.app.screen.query(AssistantBubble).last()


@sync
async def test_text_answer_is_streamed_and_matches_the_assistant() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        bubble = await ask(pilot, "a red boat")
        assert str(app.screen.query_one(StatusLine).render()) == "yoc · ready: tiny-anole-a"
        expected = app.services.ask("a red boat").text  # same seed, the real assistant
        assert expected and bubble.text == expected
        assert not app.screen.answering
        route = str(bubble.query_one(".route-info").render())
        assert route.startswith("answered by text · router: text")
        # the router line is shown only on request
        assert not bubble.query_one(".route-info").display or "hide-routing" in \
            app.screen.query_one("#messages").classes
        await pilot.press("ctrl+r")
        assert "hide-routing" not in app.screen.query_one("#messages").classes


@sync
async def test_image_answer_is_shown_inline_and_saved(yoc_home: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        bubble = await ask(pilot, "/draw a red boat")
        views = bubble.query(ImageView)
        assert len(views) == 1
        path = views.first().path
        assert path.is_file() and path.suffix == ".png"
        assert path.parent == yoc_home / "pictures"
        assert Image.open(path).size == (96, 96)
        assert f"saved: {path}" in str(views.first().query_one(".image-path").render())


@sync
async def test_unknown_concept_is_an_error_notification_not_a_crash() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        bubble = await ask(pilot, "is <nobody> here?")
        errors = messages(app, "error")
        assert len(errors) == 1 and "unknown concept <nobody>" in errors[0]
        assert "no answer" in str(bubble.query_one(".answer-text").render())
        assert app.is_running and not app.screen.answering


@sync
async def test_the_noise_backbone_is_named_plainly_in_the_status_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.app import backbones as resolve

    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    # as in an install without the shipped toy model: the tiny random fallback
    monkeypatch.setattr(resolve, "TOY_WEIGHTS", Path("/nonexistent/toy-backbone"))
    app = YocApp(Services())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = pilot.app.screen.query_one(StatusLine)
        assert app.status[1] == "warning" and status.has_class("-warning")
        assert "answers are noise" in str(status.render())


@sync
async def test_concept_names_complete_after_angle_bracket(tmp_path: Path) -> None:
    add_concept(tmp_path, "bobby")
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(*"draw <bo")
        await pilot.pause()
        await pilot.press("tab")
        assert app.screen.query_one(PromptInput).value == "draw <bobby>"


@sync
async def test_delete_a_concept_after_confirming(tmp_path: Path) -> None:
    add_concept(tmp_path, "mug")
    add_concept(tmp_path, "bo")
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ConceptsScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == 2
        table.move_cursor(row=table.get_row_index("mug"))
        await pilot.press("d")
        await pilot.press("n")  # declined: nothing happens
        await settle(pilot)
        assert table.row_count == 2
        await pilot.press("d", "y")
        await settle(pilot)
        assert [table.get_row_at(i)[0] for i in range(table.row_count)] == ["bo"]
        with Library.open() as lib:
            assert lib.get_concept("mug") is None
        assert "deleted <mug>" in messages(app)


@sync
async def test_rename_a_concept(tmp_path: Path) -> None:
    add_concept(tmp_path, "mug")
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one("#answer").value = "cup"
        await pilot.press("enter")
        await settle(pilot)
        with Library.open() as lib:
            assert lib.get_concept("mug") is None and lib.get_concept("cup") is not None
        assert app.concept_names_now() == ["cup"]


@sync
async def test_theme_toggles_between_light_and_dark() -> None:
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        first = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != first
        await pilot.press("f1")
        assert app.screen.id == "help"
        await pilot.press("escape")
        assert app.screen.id == "chat"


def trainer_config(**kwargs: Any) -> Any:
    from yoc_assistant.app.training import TrainConfig

    return TrainConfig(**{"epochs": 1, "max_steps": 3, "batch_size": 2, **kwargs})


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 60) -> None:  # noqa: ANN001
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the app")


@sync
async def test_add_a_concept_from_a_folder_then_it_trains(tmp_path: Path) -> None:
    folder = photos(tmp_path / "bo-photos")
    app = make_app(train_config=trainer_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#folder").value = str(folder)
        dialog.query_one("#name").value = "bo"
        dialog.query_one("#description").value = "a small brown dog"
        await pilot.click("#add")
        await settle(pilot)
        assert app.training is None
        assert any(m.startswith("added <bo> with 3 photos") for m in messages(app))
        assert "<bo> is trained and ready" in messages(app)
        table = app.screen.query_one(DataTable)
        name, photo_count, status, last, metrics = table.get_row("bo")
        assert (name, photo_count, status) == ("bo", "3", "ready")
        assert last != "never" and "routing" in metrics  # its measured quality, as `yoc concepts`
        with Library.open() as lib:
            concept = lib.require_concept("bo")
            assert concept.status == "ready" and concept.about == "a small brown dog"
        # the chat now completes the new name
        assert app.concept_names_now() == ["bo"]


@sync
async def test_add_dialog_refuses_a_missing_folder(tmp_path: Path) -> None:
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#folder").value = str(tmp_path / "nope")
        app.screen.query_one("#name").value = "bo"
        await pilot.click("#add")
        await pilot.pause()
        assert "not a folder" in str(app.screen.query_one("#form-error").render())


@sync
async def test_chat_goes_on_while_training_and_training_can_be_cancelled(tmp_path: Path) -> None:
    add_concept(tmp_path, "bo")
    app = make_app(train_config=trainer_config(epochs=100_000, max_steps=None,
                                                  checkpoint_every=100_000))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.start_training("bo")
        await wait_for(pilot, lambda: app.training is not None and app.training.step >= 1)
        panel = app.screen.query_one(".training-panel")
        assert panel.display and "step " in str(panel.query_one(".train-info").render())
        # chatting while the trainer runs
        app.screen.query_one(PromptInput).value = "a red boat"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.screen.answering)
        assert app.screen.query(AssistantBubble).last().text
        assert app.training is not None  # still training
        await pilot.click(".train-cancel")
        await settle(pilot)
        assert app.training is None and not panel.display
        assert any("training of <bo> cancelled" in m for m in messages(app, "warning"))
        with Library.open() as lib:
            assert lib.require_concept("bo").status != "ready"
            assert lib.latest_run("bo").status == "interrupted"


@sync
async def test_a_failed_training_run_says_why(tmp_path: Path) -> None:
    add_concept(tmp_path, "bo")
    app = make_app(train_config=trainer_config(lr=-1.0))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        errors = messages(app, "error")
        assert len(errors) == 1
        assert "training <bo> failed" in errors[0] and "learning rate" in errors[0]
        assert app.is_running and app.training is None


@sync
async def test_export_a_concept(tmp_path: Path) -> None:
    add_concept(tmp_path, "mug")
    out = tmp_path / "out"
    out.mkdir()
    app = YocApp(Services(str(CHECKPOINT)), load_backbone=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#answer").value = str(out)
        await pilot.press("enter")
        await settle(pilot)
        bundles = list(out.iterdir())
        assert len(bundles) == 1 and bundles[0].name.startswith("mug")
        assert any(str(bundles[0]) in m for m in messages(app))


@sync
async def test_attach_an_image_to_a_question(tmp_path: Path) -> None:
    picture = photos(tmp_path / "pics", 1) / "photo0.png"
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#answer").value = str(tmp_path / "missing.png")
        await pilot.press("enter")
        await pilot.pause()
        assert any("no such image" in m for m in messages(app, "error"))
        assert app.screen.attachment is None
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#answer").value = str(picture)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.attachment == picture
        assert app.screen.query_one("#attachment").display
        bubble = await ask(pilot, "is the cat in the photo ?")
        assert bubble.text
        assert "photo0.png" in str(app.screen.query(".bubble.user").last().render())
        assert app.screen.attachment is None  # used once


@sync
async def test_the_chat_app_writes_the_conversation_log() -> None:
    from yoc_assistant.app.conversation_log import ConversationLog

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        bubble = await ask(pilot, "a red boat")
    with Library.open() as lib:
        (entry,) = ConversationLog(lib).entries()
    assert (entry.source, entry.request, entry.seed) == ("chat", "a red boat", 0)
    assert entry.answer == bubble.text and entry.backbone and entry.error is None
