"""The app's small pure helpers: mention completion, chat commands, table text."""

from __future__ import annotations

from yoc_assistant.tui.screens.chat import split_command
from yoc_assistant.tui.services import format_metrics
from yoc_assistant.tui.widgets.messages import route_text
from yoc_assistant.tui.widgets.prompt import complete_mention
from yoc_assistant.tui.widgets.training import TrainingState, describe, format_eta

NAMES = ["bo", "Bobby", "mug"]


def test_completion_finishes_the_mention_being_typed() -> None:
    assert complete_mention("draw <m", NAMES) == "draw <mug>"
    assert complete_mention("is <BOB", NAMES) == "is <BOBby>"  # keeps what was typed
    assert complete_mention("<", NAMES) == "<bo>"  # first by name
    assert complete_mention("draw <x", NAMES) is None
    assert complete_mention("draw <bo> and", NAMES) is None  # not inside a mention
    assert complete_mention("draw bo", NAMES) is None


def test_chat_commands_come_from_the_installed_modalities() -> None:
    from yoc_assistant.tui.services import Services

    commands = Services().chat_commands()
    assert {"/text", "/ask", "/image", "/draw"} <= set(commands)
    assert split_command("/draw <bo> on a boat", commands) == ("image", "<bo> on a boat")
    assert split_command("/text what is it", commands) == ("text", "what is it")
    assert split_command("what is /draw", commands) == (None, "what is /draw")
    assert split_command("/draw", commands) == ("image", "")
    assert split_command("/audio hello", commands) == (None, "/audio hello")
    assert split_command("/audio hello", {**commands, "/audio": "audio"}) == ("audio", "hello")


def test_metrics_column_prefers_evaluation_then_loss() -> None:
    assert format_metrics({"recognition": 0.845, "clip_i": 0.7834, "score": 0.8}) == \
        "recog 0.84 clip-i 0.78"
    assert format_metrics({"final_loss": 6.0213, "steps": 3}) == "loss 6.02"
    assert format_metrics('{"recognition": 0.5}') == "recog 0.50"
    assert format_metrics({}) == "" and format_metrics(None) == ""


def test_progress_and_routing_text() -> None:
    assert format_eta(None) == "--:--" and format_eta(75.4) == "01:15"
    assert format_eta(3725) == "1:02:05"
    state = TrainingState("bo", phase="train", step=3, total=20, loss=4.21349, eta_s=12)
    assert describe(state) == "step 3/20 loss 4.213 ETA 00:12"
    assert describe(TrainingState("bo", note="no pool")) == "no pool"
    assert route_text("image", {"text": 0.25, "image": 0.75}) == \
        "answered by image · router: image 0.75  text 0.25"
    assert route_text("text", {}) == "answered by text"
