"""The training progress panel: concept, phase, bar, step, loss, ETA, cancel."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Label, ProgressBar


@dataclass(frozen=True)
class TrainingState:
    """What the panel shows; the app replaces it on every trainer event."""

    name: str
    phase: str = "starting"
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    cancelling: bool = False
    note: str = ""  # the trainer's latest remark (shown until steps start)


# trainer phase -> what the panel says
PHASES = {"start": "starting", "train": "training", "checkpoint": "training", "eval": "evaluating",
          "done": "done", "cancelled": "cancelled"}


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0, int(round(seconds)))
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes:02d}:{sec:02d}"


def describe(state: TrainingState) -> str:
    """'step 3/20 loss 4.213 ETA 00:12' (or the trainer's note while preparing)."""
    if state.total == 0:
        return state.note or "preparing…"
    loss = "-" if state.loss is None else f"{state.loss:.3f}"
    total = state.total or "?"
    return f"step {state.step}/{total} loss {loss} ETA {format_eta(state.eta_s)}"


class TrainingPanel(Horizontal):
    """Hidden while nothing trains; mirrors the app's `training` state."""

    def compose(self) -> ComposeResult:
        yield Label("", classes="train-title")
        yield ProgressBar(total=None, show_eta=False, classes="train-bar")
        yield Label("", classes="train-info")
        yield Button("Cancel", variant="error", compact=True, classes="train-cancel")

    def on_mount(self) -> None:
        self.watch(self.app, "training", self._show)

    def _show(self, state: TrainingState | None) -> None:
        self.display = state is not None
        if state is None:
            return
        phase = "stopping" if state.cancelling else PHASES.get(state.phase, state.phase)
        self.query_one(".train-title", Label).update(f"<{state.name}> {phase}")
        bar = self.query_one(ProgressBar)
        bar.update(total=state.total or None, progress=state.step)
        self.query_one(".train-info", Label).update(describe(state))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.app.action_cancel_training()  # type: ignore[attr-defined]
