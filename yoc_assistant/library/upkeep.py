"""Keeping a library recoverable: each concept's record on disk, rebuilding library.db
from the files, and collecting what killed processes left behind.

`concepts/<uid>/concept.json` mirrors a concept's row and photo links; the library
rewrites it (atomically, under the write lock) whenever they change. So the database
can be lost (deleted, emptied, damaged) without losing a concept: `Library.open`
notices concept records next to a database it had to create and says so, and
`rebuild` (`yoc doctor --rebuild`) makes a new database from the records, the vector
files and the image store. Photos in the store that no record links were pool photos
(every other unlinked photo is deleted with its last link).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.atomic import atomic_write_text
from yoc_assistant.errors import YocError, short
from yoc_assistant.library import paths, vectorfile
from yoc_assistant.library.models import ROLES, check_name, now
from yoc_assistant.library.store import is_sha256

if TYPE_CHECKING:
    from yoc_assistant.library.core import Library

RECORD = "concept.json"
RECORD_FORMAT = "yoc-concept-record"
# A temp file or unreferenced folder younger than this may be another process's write in progress.
LEFTOVER_AGE_S = 15 * 60
REBUILD_HINT = "rebuild it from the files with `yoc doctor --rebuild`"


class LibraryLostError(YocError):
    """library.db holds no concepts while concept records lie next to it."""


# -- records ---------------------------------------------------------------------------------
def record_path(home: Path, uid: str) -> Path:
    return paths.concepts_dir(home) / uid / RECORD


def write_record(lib: Library, concept_id: int) -> None:
    """Mirror one concept's row and links into its record (call under the write lock)."""
    row = lib.db.execute(
        "SELECT uid, name, display_name, about, backbone, backbone_fingerprint, vectors_path, metrics, "
        "created, quality, trained FROM concepts WHERE id = ?", [concept_id]).fetchone()
    if row is None:
        return
    uid, name, display_name, about, backbone, fingerprint, vectors, metrics, created, quality, trained = row
    images = [{"sha256": sha, "role": role, "note": note, "original_name": original, "added": added}
              for sha, role, note, original, added in lib.db.execute(
                  "SELECT ci.sha256, ci.role, ci.note, i.original_name, ci.added FROM concept_images ci "
                  "JOIN images i USING (sha256) WHERE ci.concept_id = ? ORDER BY ci.added, ci.sha256",
                  [concept_id]).fetchall()]
    record = {"format": RECORD_FORMAT, "uid": uid, "name": name, "display_name": display_name,
              "about": about, "backbone": backbone, "backbone_fingerprint": fingerprint,
              "vectors": Path(vectors).name if vectors else None,
              "metrics": json.loads(metrics) if metrics else None, "created": created, "images": images,
              "quality": json.loads(quality) if quality else None, "trained": trained}
    atomic_write_text(record_path(lib.home, uid), json.dumps(record, indent=1, sort_keys=True))


def drop_record(home: Path, uid: str) -> None:
    record_path(home, uid).unlink(missing_ok=True)


def recorded_folders(home: Path) -> list[Path]:
    root = paths.concepts_dir(home)
    return sorted(p.parent for p in root.glob(f"*/{RECORD}"))


def check_not_lost(home: Path) -> None:
    """Refuse a missing or empty library.db next to concept records: it was deleted or
    emptied, and would silently become a new, empty library."""
    folders = recorded_folders(home)
    if folders:
        raise LibraryLostError(
            f"the library database {paths.db_path(home)} is missing or empty, but {len(folders)} "
            f"concept folder{'s' if len(folders) != 1 else ''} lie in {paths.concepts_dir(home)} "
            f"(was library.db deleted or emptied?). Nothing was changed: {REBUILD_HINT}, or move "
            f"{home} away to start a new library."
        )


def sync_records(lib: Library) -> int:
    """Write the records concepts lack (libraries made before records existed). Returns how many."""
    uids = {r[0]: r[1] for r in lib.db.execute("SELECT uid, id FROM concepts").fetchall()}
    missing = [cid for uid, cid in uids.items() if not record_path(lib.home, uid).is_file()]
    if missing:
        with lib.transaction():
            for concept_id in missing:
                write_record(lib, concept_id)
    return len(missing)


# -- rebuild ---------------------------------------------------------------------------------
@dataclass
class RebuildReport:
    concepts: list[str] = field(default_factory=list)
    photos: int = 0
    pool: int = 0
    kept_database: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"concepts": self.concepts, "photos": self.photos, "pool": self.pool,
                "kept_database": str(self.kept_database) if self.kept_database else None,
                "notes": self.notes}


def _read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None


def _from_vectors(folder: Path) -> dict[str, Any] | None:
    """A record for a folder without one: the newest valid vector file's metadata."""
    files = sorted(folder.glob("vectors*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            meta = vectorfile.check_concept_file(path)
        except vectorfile.VectorFileError:
            continue
        return {"uid": folder.name, "name": meta.get("concept"), "backbone": meta.get("backbone"),
                "backbone_fingerprint": meta.get("backbone_fingerprint"), "vectors": path.name, "images": []}
    return None


def _move_aside(db: Path) -> Path | None:
    """Keep the old database (and its WAL) next to the new one, never delete it."""
    if not db.exists() or db.stat().st_size == 0:
        for extra in (Path(f"{db}-wal"), Path(f"{db}-shm"), db):
            extra.unlink(missing_ok=True)
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = db.with_name(f"{db.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{kept}{suffix}"))
    return kept


def rebuild(home: Path) -> RebuildReport:
    """A new library.db made from the concept records, vector files and image store."""
    from PIL import Image

    from yoc_assistant.library import db as dbmod
    from yoc_assistant.library.core import Library

    report = RebuildReport(kept_database=_move_aside(paths.db_path(home)))
    lib = Library(home, dbmod.connect(paths.db_path(home)))
    try:
        stored = lib.store.all_hashes()
        linked: set[str] = set()
        folders = sorted(p for p in paths.concepts_dir(home).iterdir() if p.is_dir() and not p.name.startswith("."))
        with lib.transaction():
            for folder in folders:
                record = _read_record(folder) or _from_vectors(folder)
                if record is None:
                    continue
                name = _restore_concept(lib, folder, record, report)
                if name is None:
                    continue
                concept_id = lib.require_concept(name).id
                for item in record.get("images") or []:
                    sha = item.get("sha256") if isinstance(item, dict) else None
                    if not (isinstance(sha, str) and is_sha256(sha) and sha in stored
                            and item.get("role") in ROLES):
                        continue
                    _image_row(lib, sha, Image, item.get("original_name"))
                    lib.db.execute(
                        "INSERT OR IGNORE INTO concept_images (concept_id, sha256, role, note, added) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [concept_id, sha, item["role"], item.get("note"), item.get("added") or now()])
                    linked.add(sha)
                    report.photos += 1
                write_record(lib, concept_id)
            for sha in sorted(stored - linked):
                _image_row(lib, sha, Image, None)
                lib.db.execute("INSERT OR IGNORE INTO pool (sha256, source, added) VALUES (?, ?, ?)",
                               [sha, "rebuilt", now()])
                report.pool += 1
    finally:
        lib.close()
    return report


def _restore_concept(lib: Library, folder: Path, record: dict[str, Any], report: RebuildReport) -> str | None:
    name = record.get("name")
    try:
        check_name(name)
    except YocError:
        report.notes.append(f"{folder}: no usable concept name in its record; skipped")
        return None
    base, n = name, 1
    while lib.get_concept(name) is not None:
        n += 1
        name = f"{base[:36]}-{n}"
    if name != base:
        report.notes.append(f"{folder}: {base!r} was taken, restored as {name!r}")
    vectors = folder / record["vectors"] if isinstance(record.get("vectors"), str) else None
    if vectors is not None and (vectors.name != Path(record["vectors"]).name
                                or vectorfile.problem_of(vectors) is not None):
        report.notes.append(f"{name}: vector file {short(record['vectors'], 80)} is missing or damaged: "
                            f"retrain it (`yoc train {name}`)")
        vectors = None
    metrics, quality = record.get("metrics"), record.get("quality")
    stamp = now()
    lib.db["concepts"].insert({
        "uid": folder.name, "name": name, "display_name": _text(record.get("display_name")),
        "about": _text(record.get("about")), "backbone": _text(record.get("backbone")),
        "backbone_fingerprint": _text(record.get("backbone_fingerprint")),
        "status": "ready" if vectors is not None else "new",
        "vectors_path": lib._rel(vectors) if vectors is not None else None,
        "metrics": json.dumps(metrics, sort_keys=True) if isinstance(metrics, dict) else None,
        "quality": json.dumps(quality, sort_keys=True) if isinstance(quality, dict) else None,
        "trained": _text(record.get("trained")),
        "created": _text(record.get("created")) or stamp, "updated": stamp,
    })
    report.concepts.append(name)
    return name


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _image_row(lib: Library, sha: str, image_module: Any, original_name: Any) -> None:
    if lib.db.execute("SELECT 1 FROM images WHERE sha256 = ?", [sha]).fetchone() is not None:
        return
    try:
        with image_module.open(lib.store.path_for(sha)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - a damaged store file: recorded with unknown size
        width = height = 0
    lib._insert_image_row(sha, width, height, "PNG", _text(original_name))


# -- leftovers -------------------------------------------------------------------------------
def _old(path: Path, min_age_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= min_age_s
    except OSError:
        return False


def collect_leftovers(lib: Library, min_age_s: float = LEFTOVER_AGE_S) -> int:
    """Delete temp files of interrupted writes, and concept/run folders of concepts that no
    longer exist (a kill during removal). Returns how many files and folders went."""
    removed = 0
    for tmp in lib.home.rglob(".*.tmp"):
        if tmp.is_file() and _old(tmp, min_age_s):
            tmp.unlink(missing_ok=True)
            removed += 1
    uids = {r[0] for r in lib.db.execute("SELECT uid FROM concepts").fetchall()}
    for root in (paths.concepts_dir(lib.home), paths.runs_dir(lib.home)):
        for folder in root.iterdir():
            # A record without a row: a creation rolled back (killed before COMMIT).
            if folder.is_dir() and folder.name not in uids and not folder.name.startswith(".") \
                    and _old(folder, min_age_s):
                removed += sum(1 for p in folder.rglob("*") if p.is_file()) or 1
                shutil.rmtree(folder, ignore_errors=True)
    return removed
