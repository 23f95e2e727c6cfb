"""Finding the installed modality plugins, the same way for every entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yoc_assistant.assistant.plugins import PluginManager


def load_plugins() -> PluginManager:
    """Every selected plugin of the `yoc` entry-point group (`YOC_LOAD_PLUGINS` selects;
    failures are recorded in `.failures`, never raised)."""
    from yoc_assistant.assistant.plugins import PluginManager

    return PluginManager()
