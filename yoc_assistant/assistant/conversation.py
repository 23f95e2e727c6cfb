"""Conversation state for the chat app: the turns so far and how each was answered.

Each request is answered on its own (Yo'Chameleon is single-turn); the turns are
kept for display, for `/retry`, and for saving a transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.assistant.mentions import mentioned_names
from yoc_assistant.assistant.modality import Request, Response

if TYPE_CHECKING:
    from yoc_assistant.assistant.assistant import Assistant


@dataclass
class Turn:
    request: Request
    response: Response | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        resp = self.response
        return {
            "text": self.request.text,
            "images": len(self.request.images),
            "mode": self.request.mode,
            "modality": resp.modality if resp else None,
            "answer": resp.text if resp else None,
            "image_paths": [str(p) for p in resp.image_paths] if resp else [],
            "probabilities": resp.probabilities if resp else {},
            "error": self.error,
        }


@dataclass
class Conversation:
    assistant: Assistant
    turns: list[Turn] = field(default_factory=list)

    def ask(self, request: Request | str, **callbacks: Any) -> Turn:
        """Answer one request; errors the user can act on are kept on the turn and re-raised."""
        from yoc_assistant.errors import YocError

        req = Request(text=request) if isinstance(request, str) else request
        turn = Turn(req)
        self.turns.append(turn)
        try:
            turn.response = self.assistant.respond(req, **callbacks)
        except YocError as err:
            turn.error = str(err)
            raise
        return turn

    def retry(self, **callbacks: Any) -> Turn:
        """Ask the last request again (a new sample)."""
        if not self.turns:
            from yoc_assistant.errors import UserInputError

            raise UserInputError("nothing to retry yet")
        last = self.turns[-1].request
        return self.ask(replace(last, seed=None), **callbacks)

    @property
    def concepts(self) -> list[str]:
        """Concepts mentioned so far, in order of first mention."""
        return mentioned_names(" ".join(t.request.text for t in self.turns))

    def clear(self) -> None:
        self.turns.clear()

    def images(self) -> list[Path]:
        return [p for t in self.turns if t.response for p in t.response.image_paths]

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.turns]
