"""The line at the top of each screen: which backbone, and whether it is ready."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    """Mirrors the app's `status` (text, level); level is info | warning | error."""

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._show)

    def _show(self, status: tuple[str, str]) -> None:
        text, level = status
        self.set_class(level == "warning", "-warning")
        self.set_class(level == "error", "-error")
        self.update(Text("yoc · ") + Text(text))
