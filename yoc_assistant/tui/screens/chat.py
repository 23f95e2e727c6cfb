"""The chat: questions in, streamed text and pictures out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from yoc_assistant.tui.screens.text_prompt import TextPromptScreen
from yoc_assistant.tui.services import Answer
from yoc_assistant.tui.widgets import (
    AssistantBubble,
    MessageList,
    PromptInput,
    StatusLine,
    TrainingPanel,
)

WELCOME = ("Ask anything, or ask for a picture. Mention a concept as <name> "
           "(Tab completes it). F1 for help.")

def split_command(text: str, commands: Mapping[str, str]) -> tuple[str | None, str]:
    """With `commands` {"/draw": "image", ...} (`Services.chat_commands()`, from the installed
    modalities): '/draw <bo> on a boat' -> ('image', '<bo> on a boat'); else (None, text)."""
    head, _, rest = text.partition(" ")
    if head in commands:
        return commands[head], rest.strip()
    return None, text


class AnswerPiece(Message):
    def __init__(self, bubble: AssistantBubble, text: str) -> None:
        super().__init__()
        self.bubble = bubble
        self.text = text


class AnswerProgress(Message):
    def __init__(self, bubble: AssistantBubble, done: int, total: int) -> None:
        super().__init__()
        self.bubble = bubble
        self.done = done
        self.total = total


class AnswerDone(Message):
    def __init__(self, bubble: AssistantBubble, result: Answer | None,
                 error: BaseException | None) -> None:
        super().__init__()
        self.bubble = bubble
        self.result = result
        self.error = error


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+o", "attach", "Attach"),
        Binding("ctrl+r", "toggle_routing", "Routing"),
    ]

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.attachment: Path | None = None
        self.answering = False

    def compose(self) -> ComposeResult:
        yield StatusLine(classes="status-line")
        with MessageList(id="messages", classes="hide-routing"):
            yield Static(Text(WELCOME, style="italic"), classes="note")
        yield TrainingPanel(classes="training-panel")
        yield Static("", id="attachment")
        yield PromptInput(self.app.concept_names_now, id="prompt",
                          placeholder="Ask yoc…  (<name> mentions a concept)")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#attachment").display = False
        self.query_one(PromptInput).focus()

    # -- actions -------------------------------------------------------------------------
    def action_attach(self) -> None:
        def attached(value: str | None) -> None:
            if value is None:
                return
            path = Path(value).expanduser()
            if not path.is_file():
                self.notify(f"no such image: {path}", severity="error", markup=False)
                return
            self._set_attachment(path)

        self.app.push_screen(TextPromptScreen("Attach an image (path):",
                                              placeholder="~/photos/bo.jpg"), attached)

    def _set_attachment(self, path: Path | None) -> None:
        self.attachment = path
        label = self.query_one("#attachment", Static)
        label.display = path is not None
        label.update(Text(f"image attached to the next question: {path.name}") if path else "")

    def action_toggle_routing(self) -> None:
        messages = self.query_one(MessageList)
        messages.toggle_class("hide-routing")
        shown = not messages.has_class("hide-routing")
        self.notify("showing the router's choice" if shown else "router details hidden",
                    timeout=2)

    # -- asking --------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        if self.answering:
            self.notify("still answering the last question", severity="warning")
            return
        event.input.value = ""
        if text == "/clear":
            self.query_one(MessageList).remove_children(".bubble")
            return
        mode, text = split_command(text, self.app.services.chat_commands())
        if not text:
            self.notify("say what to draw or ask after the command", severity="warning")
            return
        messages = self.query_one(MessageList)
        messages.add_user(event.value.strip(), self.attachment)
        bubble = messages.add_assistant()
        attachment = self.attachment
        self._set_attachment(None)
        self.answering = True
        self.answer(text, attachment, mode, bubble)

    # The answering thread reports by message (thread-safe, never waits on the UI).
    @work(thread=True, group="ask", exit_on_error=False)
    def answer(self, text: str, attachment: Path | None, mode: str | None,
               bubble: AssistantBubble) -> None:
        try:
            result = self.app.services.ask(
                text, image=attachment, mode=mode,
                on_text=lambda piece: self.post_message(AnswerPiece(bubble, piece)),
                on_progress=lambda done, total: self.post_message(
                    AnswerProgress(bubble, done, total)))
        except Exception as err:  # a worker must never take the app down
            self.post_message(AnswerDone(bubble, None, err))
            return
        self.post_message(AnswerDone(bubble, result, None))

    def on_answer_piece(self, message: AnswerPiece) -> None:
        message.bubble.append(message.text)

    def on_answer_progress(self, message: AnswerProgress) -> None:
        message.bubble.progress(message.done, message.total)

    def on_answer_done(self, message: AnswerDone) -> None:
        self.answering = False
        bubble = message.bubble
        if message.result is None:
            error = self.app.describe_error(message.error)
            bubble.fail(error)
            self.notify(error, title="Could not answer", severity="error", timeout=8,
                        markup=False)
            return
        result = message.result
        bubble.finish(result.text, result.image_paths, result.modality, result.probabilities,
                      files=result.files)
