"""The conversation: one bubble per turn, scrolled to the newest."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from yoc_assistant.safetext import printable
from yoc_assistant.tui.widgets.image_view import ImageView

USER_MARK = "you ▸ "
ASSISTANT_MARK = "yoc ▸ "


class UserBubble(Static):
    """A question as typed (never parsed as markup: it may hold `[` or `<bo>`)."""

    def __init__(self, text: str, attachment: Path | None = None) -> None:
        content = Text(USER_MARK, style="bold") + Text(text)
        if attachment is not None:
            content.append(f"\n  (image: {attachment.name})", style="italic")
        super().__init__(content, classes="bubble user")


class AssistantBubble(Vertical):
    """An answer: text streamed in piece by piece, then any images and the routing."""

    def __init__(self) -> None:
        super().__init__(classes="bubble assistant")
        self._text = ""

    def compose(self) -> ComposeResult:
        yield Static(self._render_text(pending=True), classes="answer-text")
        yield Static("", classes="route-info")

    @property
    def text(self) -> str:
        return self._text

    def _render_text(self, *, pending: bool = False) -> Text:
        body = self._text if self._text else ("…" if pending else "")
        # A model's answer is text from a file too (its tokenizer): never raw control characters.
        return Text(ASSISTANT_MARK, style="bold") + Text(printable(body, newlines=True))

    def append(self, piece: str) -> None:
        self._text += piece
        self.query_one(".answer-text", Static).update(self._render_text(pending=True))

    def progress(self, done: int, total: int) -> None:
        """Drawing progress (image tokens so far) until the picture is ready."""
        if not self._text:
            self.query_one(".answer-text", Static).update(
                Text(ASSISTANT_MARK, style="bold") + Text(f"drawing… {done}/{total}"))

    def finish(self, text: str, image_paths: list[Path], modality: str,
               probabilities: dict[str, float], *, files: list[Path] | None = None) -> None:
        """Show the final answer (replaces the streamed text, which may be partial): its
        text, its pictures, and the paths of any other files a modality wrote."""
        self._text = text or self._text
        label = self.query_one(".answer-text", Static)
        if not self._text and image_paths:
            self._text = f"here is the picture ({len(image_paths)})"
        files = list(files or [])
        if files:
            listed = "\n".join(f"file: {path}" for path in files)
            self._text = f"{self._text}\n{listed}" if self._text else listed
        label.update(self._render_text())
        for path in image_paths:
            self.mount(ImageView(path), before=self.query_one(".route-info"))
        self.query_one(".route-info", Static).update(route_text(modality, probabilities))

    def fail(self, message: str) -> None:
        self.query_one(".answer-text", Static).update(
            Text(ASSISTANT_MARK, style="bold") + Text(f"(no answer: {printable(message)})", style="italic"))


def route_text(modality: str, probabilities: dict[str, float]) -> str:
    """'answered by text · router: text 0.71  image 0.29'."""
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    probs = "  ".join(f"{name} {p:.2f}" for name, p in ranked)
    return f"answered by {modality}" + (f" · router: {probs}" if probs else "")


class MessageList(VerticalScroll):
    """All turns of this chat. From the first question on it stays scrolled to the
    newest turn (anchored) until the user scrolls up, also while a picture is still
    being laid out."""

    def add_user(self, text: str, attachment: Path | None = None) -> UserBubble:
        bubble = UserBubble(text, attachment)
        self.mount(bubble)
        self.anchor()  # a new question: back to the newest turn
        return bubble

    def add_assistant(self) -> AssistantBubble:
        bubble = AssistantBubble()
        self.mount(bubble)
        return bubble
