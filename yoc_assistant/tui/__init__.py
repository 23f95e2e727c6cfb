"""The `yoc` chat app (Textual). `yoc` with no command calls `run_app()`."""

from __future__ import annotations

import logging


def quiet_image_log() -> None:
    """textual-image asks the terminal what graphics it can draw when it is first
    imported; a terminal that does not answer is normal (half blocks then): keep its
    log quiet."""
    quiet = logging.getLogger("textual_image")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False


def run_app() -> None:
    """Open the app in this terminal; returns when the user quits."""
    # The terminal query must happen before Textual takes over the terminal.
    quiet_image_log()
    import textual_image.widget  # noqa: F401

    from yoc_assistant.tui.app import YocApp

    YocApp().run()


__all__ = ["quiet_image_log", "run_app"]
