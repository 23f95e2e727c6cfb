"""The hooks a yoc plugin may implement (pluggy project name "yoc").

A plugin is a module (or object) exposed through an entry point in the group
`yoc`; it marks its functions with `hookimpl`:

    from yoc_assistant.assistant import Modality, hookimpl

    @hookimpl
    def yoc_modalities():
        return [MyModality(name="audio", group="audio", group_size=4)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from yoc_assistant.assistant.modality import Modality

PROJECT = "yoc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def yoc_modalities() -> list[Modality]:  # type: ignore[empty-body]
    """The modalities this plugin adds (each owns one concept token group)."""
