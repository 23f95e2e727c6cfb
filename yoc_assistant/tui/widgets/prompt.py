"""The chat input: completes concept names after `<` (Tab or → accepts)."""

from __future__ import annotations

import re
from collections.abc import Callable

from textual.binding import Binding
from textual.suggester import Suggester
from textual.widgets import Input

# A mention being typed at the end of the input: "<" then a partial name.
_PARTIAL = re.compile(r"<([\w.-]*)$")


def complete_mention(value: str, names: list[str]) -> str | None:
    """The input completed with the first concept whose name starts with the
    partial mention at its end ("draw <b" -> "draw <bo>"), else None."""
    match = _PARTIAL.search(value)
    if match is None:
        return None
    partial = match.group(1)
    for name in sorted(names, key=str.casefold):
        if name.casefold().startswith(partial.casefold()) and name != partial + ">":
            return value + name[len(partial):] + ">"
    return None


class MentionSuggester(Suggester):
    """Suggests concept names; `names` is called each time (the library changes)."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self._names = names

    async def get_suggestion(self, value: str) -> str | None:
        return complete_mention(value, self._names())


class PromptInput(Input):
    """Input with concept completion and Tab to accept it."""

    BINDINGS = [
        Binding("tab", "accept_suggestion", "Complete", show=False),
    ]

    def __init__(self, names: Callable[[], list[str]], **kwargs: object) -> None:
        super().__init__(suggester=MentionSuggester(names), **kwargs)  # type: ignore[arg-type]

    def action_accept_suggestion(self) -> None:
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()
