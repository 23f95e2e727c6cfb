"""The form for a new concept: a folder of 3-5 photos, a name, a description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


@dataclass(frozen=True)
class NewConcept:
    folder: Path
    name: str
    description: str


class AddConceptScreen(ModalScreen[NewConcept | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a concept", classes="dialog-title")
            yield Label("Folder with 3-5 photos of it")
            yield Input(placeholder="~/Pictures/bo", id="folder", compact=True)
            yield Label("Name (letters, digits, - and _)")
            yield Input(placeholder="bo", id="name", compact=True)
            yield Label("Description (optional): facts about it")
            yield Input(placeholder="my dog, a brown dachshund", id="description", compact=True)
            yield Label("", id="form-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", variant="primary", id="add")
                yield Button("Cancel", id="cancel")

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def _submit(self) -> None:
        folder, name = self._value("folder"), self._value("name").strip("<>")
        problem = ""
        if not folder:
            problem = "give the folder of photos"
        elif not Path(folder).expanduser().is_dir():
            problem = f"not a folder: {folder}"
        elif not name:
            problem = "give the concept a name"
        if problem:
            self.query_one("#form-error", Label).update(problem)
            return
        self.dismiss(NewConcept(Path(folder).expanduser(), name, self._value("description")))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "description":
            self._submit()
        else:
            self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "add":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
