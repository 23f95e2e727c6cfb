"""The hooks a yoc plugin may implement (pluggy project name "yoc").

A plugin is a module (or object) exposed through an entry point in the group
`yoc`; it marks its functions with `hookimpl`:

    from yoc_assistant.plugin import Modality, hookimpl

    @hookimpl
    def yoc_modalities():
        return [MyModality(name="audio", group="audio", group_size=4)]

The public contract is `yoc_assistant.plugin` (docs/plugins.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from yoc_assistant.assistant.modality import Modality

PROJECT = "yoc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def yoc_modalities() -> list[Modality]:  # type: ignore[empty-body]
    """The modalities this plugin adds (each owns one concept token group)."""


@hookspec
def yoc_commands() -> list[Any]:  # type: ignore[empty-body]
    """`click.Command` objects this plugin adds to `yoc` (`yoc NAME ...`); a name that a built-in
    command or an earlier plugin already uses is skipped, with a note in `yoc plugins`."""
