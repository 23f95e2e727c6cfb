"""Concept mentions in user text: `<name>` where name is letters, digits, `-`, `_`.

The router replaces each mention by the concept's identifier token, so the text
around a mention is kept as separate pieces (never re-tokenized across it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MENTION_RE = re.compile(r"<([A-Za-z0-9_-]+)>")


@dataclass(frozen=True)
class Mention:
    name: str
    start: int
    end: int


def find_mentions(text: str) -> list[Mention]:
    """Every `<name>` in `text`, in order (repeats included)."""
    return [Mention(m.group(1), m.start(), m.end()) for m in MENTION_RE.finditer(text)]


def mentioned_names(text: str) -> list[str]:
    """Distinct mentioned names in order of first mention (case as first written;
    two spellings that differ only in case count once, as names are unique ignoring case)."""
    seen: dict[str, str] = {}
    for mention in find_mentions(text):
        seen.setdefault(mention.name.lower(), mention.name)
    return list(seen.values())


def split_mentions(text: str) -> list[str | Mention]:
    """Text pieces and mentions in order; empty pieces are dropped."""
    parts: list[str | Mention] = []
    pos = 0
    for mention in find_mentions(text):
        if mention.start > pos:
            parts.append(text[pos:mention.start])
        parts.append(mention)
        pos = mention.end
    if pos < len(text):
        parts.append(text[pos:])
    return parts
