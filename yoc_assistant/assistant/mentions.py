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


@dataclass(frozen=True)
class Mentions:
    """One parse of a text's mentions. A request is parsed once (`Request.mentions()`) and
    every step that needs its mentions (checking them, loading the concepts, routing, the
    prompt, the log) reads that parse instead of scanning the text again."""

    text: str
    found: tuple[Mention, ...]

    @classmethod
    def of(cls, text: str) -> Mentions:
        return cls(text, tuple(find_mentions(text)))

    @property
    def names(self) -> list[str]:
        """Distinct mentioned names in order of first mention (case as first written;
        two spellings that differ only in case count once, as names are unique ignoring case)."""
        seen: dict[str, str] = {}
        for mention in self.found:
            seen.setdefault(mention.name.lower(), mention.name)
        return list(seen.values())

    def pieces(self) -> list[str | Mention]:
        """Text pieces and mentions in order; empty pieces are dropped."""
        parts: list[str | Mention] = []
        pos = 0
        for mention in self.found:
            if mention.start > pos:
                parts.append(self.text[pos:mention.start])
            parts.append(mention)
            pos = mention.end
        if pos < len(self.text):
            parts.append(self.text[pos:])
        return parts


def parsed(text: str | Mentions) -> Mentions:
    """`text`'s mentions: parsed now, or the parse itself when given one."""
    return text if isinstance(text, Mentions) else Mentions.of(text)


def mentioned_names(text: str | Mentions) -> list[str]:
    """Distinct mentioned names in order of first mention (see `Mentions.names`)."""
    return parsed(text).names


def split_mentions(text: str | Mentions) -> list[str | Mention]:
    """Text pieces and mentions in order; empty pieces are dropped."""
    return parsed(text).pieces()
