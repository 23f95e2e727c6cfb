"""Errors a user can act on. The CLI and the app show their message, never a traceback."""

from __future__ import annotations


class YocError(Exception):
    """Base class: `str(err)` is the whole message shown to the user."""

    exit_code = 1


class UserInputError(YocError):
    """Bad input from the user: a file, a name, a value. Names the offending thing."""

    exit_code = 2


class NotFoundError(YocError):
    """Something named does not exist (a concept, a model, a file)."""

    exit_code = 3


class BackboneError(YocError):
    """A checkpoint that cannot be loaded or used as asked."""

    exit_code = 4


class IncompatibleError(YocError):
    """A file made for another backbone or a newer yoc."""

    exit_code = 5


def short(text: object, limit: int = 200) -> str:
    """`text` cut to `limit` characters: an error message quoting a file stays one readable line."""
    value = str(text)
    return value if len(value) <= limit else value[:limit] + f"… ({len(value)} characters)"
