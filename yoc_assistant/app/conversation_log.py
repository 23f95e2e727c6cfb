"""The conversation log: every request and its answer, in the library's database.

What is kept for each (table `log`, library/db.py): when, from where (`ask`, `draw`,
`chat`, `demo`), the request's words and attached photos (pixel hashes), the forced
mode, the answer's text and picture paths, the modality and the router's
probabilities, the concepts mentioned, the seed (always one: a request without a seed
gets a random one here, so every answer can be asked for again), the backbone, the
time it took, and the error if it failed. `yoc logs` reads it; `yoc logs off` stops
the writing (a marker file in the library folder, as `paths.logs_off_marker`).

The front ends call `log_request` around `Assistant.respond`; nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from yoc_assistant.assistant.modality import Request, Response
from yoc_assistant.library import paths
from yoc_assistant.library.core import Library
from yoc_assistant.library.db import transaction
from yoc_assistant.library.ingest import pixel_hash
from yoc_assistant.library.models import loads, now

SOURCES = ("ask", "draw", "chat", "demo")


@dataclass(frozen=True)
class LogEntry:
    id: int
    time: str
    source: str
    request: str
    attached: list[str]  # pixel hashes of the photos sent with it
    mode: str | None
    answer: str | None
    modality: str | None
    forced: bool
    route: dict[str, float]
    concepts: list[str]
    pictures: list[str]
    seed: int | None
    backbone: str | None
    backbone_fingerprint: str | None
    seconds: float | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _entry(row: dict[str, Any]) -> LogEntry:
    return LogEntry(id=row["id"], time=row["time"], source=row["source"], request=row["request"],
                    attached=loads(row["attached"]) or [], mode=row["mode"], answer=row["answer"],
                    modality=row["modality"], forced=bool(row["forced"]),
                    route=loads(row["route"]) or {}, concepts=loads(row["concepts"]) or [],
                    pictures=loads(row["pictures"]) or [], seed=row["seed"], backbone=row["backbone"],
                    backbone_fingerprint=row["backbone_fingerprint"], seconds=row["seconds"],
                    error=row["error"])


class ConversationLog:
    """The log of one library."""

    def __init__(self, library: Library) -> None:
        self.library = library

    # -- on / off --------------------------------------------------------------------
    def enabled(self) -> bool:
        return not paths.logs_off_marker(self.library.home).exists()

    def set_enabled(self, on: bool) -> None:
        marker = paths.logs_off_marker(self.library.home)
        if on:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text("The conversation log is off: `yoc logs on` turns it on.\n")

    # -- writing ---------------------------------------------------------------------
    def record(self, request: Request, *, source: str, backbone: Any = None,
               response: Response | None = None, error: str | None = None,
               seconds: float | None = None) -> int | None:
        """Add one entry (None when the log is off)."""
        if not self.enabled():
            return None
        pictures = [str(p) for p in (response.image_paths + response.files)] if response else []
        row = {
            "time": now(), "source": source, "request": request.text,
            "attached": json.dumps([pixel_hash(img.convert("RGB")) for img in request.images]),
            "mode": request.mode,
            "answer": response.text if response is not None else None,
            "modality": response.modality if response is not None else None,
            "forced": int(bool(response.forced)) if response is not None else None,
            "route": json.dumps(response.probabilities) if response is not None else None,
            "concepts": json.dumps(request.mentions().names),
            "pictures": json.dumps(pictures), "seed": request.seed,
            "backbone": getattr(backbone, "name", None),
            "backbone_fingerprint": getattr(backbone, "fingerprint", None),
            "seconds": None if seconds is None else round(float(seconds), 3), "error": error,
        }
        with transaction(self.library.db):
            cursor = self.library.db.execute(
                f"INSERT INTO log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()))
        return int(cursor.lastrowid)

    # -- reading ---------------------------------------------------------------------
    def entries(self, *, limit: int | None = 3, query: str | None = None,
                concept: str | None = None) -> list[LogEntry]:
        """The newest `limit` entries (None: all), oldest first; `query` is searched in
        the request and the answer, `concept` among the mentioned concepts (both ignoring
        case)."""
        where, args = [], []
        if query:
            pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(request LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        if concept:
            where.append("EXISTS (SELECT 1 FROM json_each(log.concepts) WHERE lower(value) = lower(?))")
            args.append(concept.strip("<>"))
        sql = "SELECT * FROM log" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY id DESC" + (" LIMIT ?" if limit is not None else "")
        if limit is not None:
            args.append(int(limit))
        rows = list(self.library.db.query(sql, args))
        return [_entry(r) for r in reversed(rows)]

    def count(self) -> int:
        return int(self.library.db.execute("SELECT COUNT(*) FROM log").fetchone()[0])


def with_seed(request: Request) -> Request:
    """`request` with a seed: its own, else a random one (recorded, so it can be repeated)."""
    if request.seed is not None:
        return request
    return dataclasses.replace(request, seed=secrets.randbits(31))


@dataclass
class PendingEntry:
    """What `log_request` writes when its block ends: set `response` inside it."""

    response: Response | None = None


@contextlib.contextmanager
def log_request(library: Library | None, request: Request, *, source: str,
                backbone: Any = None) -> Iterator[PendingEntry]:
    """Time the block that answers `request` and log it, with its error if it fails
    (an interruption included). No library: nothing is logged."""
    pending = PendingEntry()
    started = time.monotonic()
    try:
        yield pending
    except BaseException as err:
        if library is not None:
            reason = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err) or type(err).__name__
            with contextlib.suppress(Exception):  # a log that cannot be written never hides the error
                ConversationLog(library).record(request, source=source, backbone=backbone,
                                                error=reason, seconds=time.monotonic() - started)
        raise
    if library is not None:
        ConversationLog(library).record(request, source=source, backbone=backbone,
                                        response=pending.response,
                                        seconds=time.monotonic() - started)
