"""Records the library hands out, and the rules for concept names."""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoc_assistant.errors import UserInputError

STATUSES = ("new", "training", "ready", "failed")
BROKEN = "broken"  # shown, never stored: the row points at a vector file that cannot be used
ROLES = ("positive", "negative", "pool", "test")
RUN_STATUSES = ("running", "done", "failed", "interrupted")

NAME_MAX = 40
# One set of limits for every way a concept's text fields enter the library (add-concept,
# the app, an imported bundle), so that every concept that exists can be exported and
# imported back.
DISPLAY_NAME_MAX = 200
ABOUT_MAX = 20_000
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
# Names that some file systems treat as devices; a name must never become a path.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}


def check_name(name: str) -> str:
    """Return `name` if it is a valid concept name, else raise UserInputError saying why."""
    if not isinstance(name, str) or not name:
        raise UserInputError("a concept name is needed (letters, digits, '-' and '_')")
    if len(name) > NAME_MAX:
        raise UserInputError(f"concept name {name!r} is too long ({len(name)} characters; at most {NAME_MAX})")
    # fullmatch: `match` with `$` lets a trailing newline through ("bo\n" next to "bo").
    if not _NAME_RE.fullmatch(name):
        raise UserInputError(
            f"concept name {name!r} is not allowed: use ASCII letters, digits, '-' and '_', "
            "starting with a letter or digit (put anything else in --display-name)"
        )
    if name.lower() in _RESERVED:
        raise UserInputError(f"concept name {name!r} is reserved by some systems; choose another")
    return name


def check_text_fields(display_name: str | None = None, about: str | None = None) -> None:
    """Raise UserInputError unless the optional text fields are within the library's limits."""
    for option, value, most in (("display name", display_name, DISPLAY_NAME_MAX), ("about", about, ABOUT_MAX)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserInputError(f"the {option} must be text, not {type(value).__name__}")
        if len(value) > most:
            raise UserInputError(f"the {option} is too long ({len(value)} characters; at most {most})")


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Concept:
    id: int
    uid: str
    name: str
    display_name: str | None
    about: str | None
    backbone: str | None
    backbone_fingerprint: str | None
    status: str
    vectors_path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    photos: int = 0  # positive photos linked
    last_trained: str | None = None  # when its vectors were trained (or the latest done run)
    quality: dict[str, Any] = field(default_factory=dict)  # measured after training (app/quality.py)
    # Why its vector file cannot be used (missing, truncated, invalid); status is then "broken".
    # Set only by Library.list_concepts(check_files=True) / Library.checked().
    problem: str | None = None

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "about": self.about,
            "backbone": self.backbone,
            "backbone_fingerprint": self.backbone_fingerprint,
            "status": self.status,
            "vectors_path": str(self.vectors_path) if self.vectors_path else None,
            "metrics": self.metrics,
            "created": self.created,
            "updated": self.updated,
            "photos": self.photos,
            "last_trained": self.last_trained,
            "quality": self.quality,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class ImageRecord:
    sha256: str
    path: Path
    width: int
    height: int
    role: str | None = None
    note: str | None = None
    original_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "path": str(self.path),
            "width": self.width,
            "height": self.height,
            "role": self.role,
            "note": self.note,
            "original_name": self.original_name,
        }


@dataclass(frozen=True)
class TrainingRun:
    id: int
    concept_id: int
    config: dict[str, Any]
    status: str
    step: int
    total_steps: int | None
    loss: float | None
    metrics: dict[str, Any]
    checkpoint_path: Path | None
    started: str
    finished: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config,
            "status": self.status,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.loss,
            "metrics": self.metrics,
            "checkpoint_path": str(self.checkpoint_path) if self.checkpoint_path else None,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
        }
