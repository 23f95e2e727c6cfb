"""Text from files (a bundle's display name, a photo's file name, a PIL message quoting a
file) on its way to a terminal or the chat app: control characters become visible escapes.

Escape sequences can set a window title, clear the screen, plant a hyperlink (OSC 8), or
(with bidi overrides) make text read backwards. `printable` turns every C0/C1 control
character, DEL and the bidi/zero-width format characters into `\\xNN` / `\\uNNNN`, so
what is shown is exactly what the file holds, and nothing more happens.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_UNSAFE_LINE = re.compile(f"{_UNSAFE.pattern}|[\t\n]")
# In JSON, C0 controls are escaped already; the rest of _UNSAFE is not.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0A:
        return "\\n"
    if code == 0x09:
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """`str(text)` safe to print; `newlines` keeps line breaks and tabs (multi-line text)."""
    return (_UNSAFE if newlines else _UNSAFE_LINE).sub(_escape, str(text))


def json_safe(encoded: str) -> str:
    """JSON text (from json.dumps(ensure_ascii=False)) with the remaining unsafe characters
    written as \\u escapes: still valid JSON, same data."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)
