"""YocApp: the chat and the concept library, with training in the background.

The app is on screen before any torch import: the backbone loads in a thread
worker while the status line says so. Every call into the other parts runs in
a thread worker and any error it raises becomes a notification.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from yoc_assistant.errors import YocError, short
from yoc_assistant.safetext import printable
from yoc_assistant.tui.screens.chat import ChatScreen
from yoc_assistant.tui.screens.concepts import ConceptsScreen
from yoc_assistant.tui.screens.help import HelpScreen
from yoc_assistant.tui.services import Services
from yoc_assistant.tui.widgets.training import TrainingState

if TYPE_CHECKING:
    from yoc_assistant.app.training import TrainEvent, TrainOutcome


class TrainProgress(Message):
    """A trainer event, posted from the training thread."""

    def __init__(self, concept: str, event: TrainEvent) -> None:
        super().__init__()
        self.concept = concept
        self.event = event


class TrainFinished(Message):
    """The training thread ended: with an outcome (done or cancelled) or an error."""

    def __init__(self, concept: str, outcome: TrainOutcome | None,
                 error: BaseException | None) -> None:
        super().__init__()
        self.concept = concept
        self.outcome = outcome
        self.error = error


def describe_error(err: BaseException) -> str:
    """The user-facing line for an error: YocErrors are written for users already (escaped:
    a message may quote a file's name or contents)."""
    if isinstance(err, YocError):
        return printable(short(err, 2000))
    return printable(short(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__, 2000))


class YocApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "yoc"
    MODES = {"chat": ChatScreen, "concepts": ConceptsScreen}
    DEFAULT_MODE = "chat"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "switch_mode('chat')", "Chat"),
        Binding("f3", "switch_mode('concepts')", "Concepts"),
        Binding("ctrl+t", "toggle_dark", "Theme"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    # (text, level) for the status line; level is info | warning | error
    status: reactive[tuple[str, str]] = reactive(("loading backbone…", "info"))
    # the running training job, None when idle
    training: reactive[TrainingState | None] = reactive(None)

    def __init__(self, services: Services | None = None, *, load_backbone: bool = True) -> None:
        super().__init__()
        self.services = services or Services()
        self._load_on_start = load_backbone
        self._concept_names: list[str] = []
        self._cancel_training: threading.Event | None = None

    def on_unmount(self) -> None:
        # A run stopped here keeps its checkpoint; `yoc train --resume` continues it.
        if self._cancel_training is not None:
            self._cancel_training.set()

    def on_mount(self) -> None:
        # Start the workers after the first paint: their imports (torch, numpy) hold
        # the GIL for seconds and would keep the first frame from being drawn.
        self.call_after_refresh(self._start_workers)

    def _start_workers(self) -> None:
        if self._load_on_start:
            self.load_backbone()
        else:
            self.status = ("no backbone loaded", "info")
        self.refresh_concept_names()

    # -- errors --------------------------------------------------------------------------
    describe_error = staticmethod(describe_error)

    def show_error(self, err: BaseException, title: str = "Error") -> None:
        self.notify(describe_error(err), title=title, severity="error", timeout=8,
                    markup=False)

    # -- backbone ------------------------------------------------------------------------
    @work(thread=True, group="backbone", exit_on_error=False)
    def load_backbone(self) -> None:
        try:
            choice = self.services.backbone_choice()
            self.call_from_thread(setattr, self, "status",
                                  (f"loading backbone {choice.label}…", "info"))
            backbone = self.services.load_backbone()
        except Exception as err:
            self.call_from_thread(setattr, self, "status", ("no backbone (see F1)", "error"))
            self.call_from_thread(self.show_error, err, "Backbone")
            return
        if choice.is_noise:
            status = (f"ready: {backbone.name} (untrained stand-in: answers are noise)",
                      "warning")
        else:
            status = (f"ready: {backbone.name}", "info")
        self.call_from_thread(setattr, self, "status", status)

    # -- concept names (for completion) --------------------------------------------------
    def concept_names_now(self) -> list[str]:
        return list(self._concept_names)

    def set_concept_names(self, names: list[str]) -> None:
        self._concept_names = list(names)

    @work(thread=True, group="names", exclusive=True, exit_on_error=False)
    def refresh_concept_names(self) -> None:
        try:
            names = self.services.concept_names()
        except Exception as err:
            self.call_from_thread(self.show_error, err, "Library")
            return
        self.call_from_thread(self.set_concept_names, names)

    # -- training ------------------------------------------------------------------------
    def start_training(self, name: str) -> None:
        if self.training is not None:
            self.notify(f"already training <{self.training.name}>", severity="warning")
            return
        self._cancel_training = threading.Event()
        self.training = TrainingState(name)
        self._train(name, self._cancel_training)
        if isinstance(self.screen, ConceptsScreen):
            self.screen.reload()

    def action_cancel_training(self) -> None:
        if self.training is None or self._cancel_training is None:
            self.notify("nothing is training", severity="warning", timeout=3)
            return
        self._cancel_training.set()
        self.training = replace(self.training, cancelling=True)

    # The trainer's thread reports by message (post_message is thread-safe and does
    # not wait): it never blocks on the UI, and never hangs when the app is closing.
    @work(thread=True, group="train", exit_on_error=False)
    def _train(self, name: str, cancel: threading.Event) -> None:
        def on_event(event: TrainEvent) -> None:
            self.post_message(TrainProgress(name, event))

        try:
            outcome = self.services.train(name, on_event=on_event, cancel=cancel)
        except Exception as err:
            self.post_message(TrainFinished(name, None, err))
            return
        self.post_message(TrainFinished(name, outcome, None))

    def on_train_progress(self, message: TrainProgress) -> None:
        event = message.event
        if self.training is None or self.training.name != message.concept:
            return
        if event.phase == "note":  # a remark while preparing: keep the numbers
            self.training = replace(self.training, note=event.note)
            return
        self.training = replace(
            self.training, phase=event.phase, step=event.step, total=event.total_steps,
            loss=event.loss, eta_s=event.eta_s if event.phase == "train" else self.training.eta_s)

    def on_train_finished(self, message: TrainFinished) -> None:
        name, outcome, err = message.concept, message.outcome, message.error
        self.training = None
        self._cancel_training = None
        if err is not None:
            self.notify(f"training <{name}> failed: {describe_error(err)}",
                        title="Training failed", severity="error", timeout=12,
                        markup=False)
        elif outcome is not None and outcome.cancelled:
            self.notify(f"training of <{name}> cancelled at step {outcome.steps}"
                        f"/{outcome.total_steps}", severity="warning")
        else:
            self.notify(f"<{name}> is trained and ready")
        if isinstance(self.screen, ConceptsScreen):
            self.screen.reload()
        self.refresh_concept_names()

    # -- screens -------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Hide the key for the screen already shown: the footer must fit 80 columns.
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return False
        return True

    def watch_training(self) -> None:
        self.refresh_bindings()  # "Cancel" shows only while training

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
