"""`Library`: the user's concepts, their photos, training runs and caches.

Crash-safety rules followed by every method:
* files first, database row after: a row only ever points to a complete file;
* deletions go the other way (row first, then file), so a kill leaves at most
  unreferenced files behind;
* every write is one `transaction()` that holds SQLite's write lock, and a
  linked image's file is checked (and rewritten if needed) under that lock.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from yoc_assistant.errors import NotFoundError, UserInputError
from yoc_assistant.library import db as dbmod
from yoc_assistant.library import paths, upkeep, vectorfile
from yoc_assistant.library.ingest import (
    IngestReport,
    ProgressFn,
    StoredImage,
    ingest_files,
    normalize_file,
)
from yoc_assistant.library.models import (
    BROKEN,
    ROLES,
    RUN_STATUSES,
    STATUSES,
    Concept,
    ImageRecord,
    TrainingRun,
    check_name,
    check_text_fields,
    dumps,
    loads,
    now,
)
from yoc_assistant.library.runs import RunsAndCachesMixin
from yoc_assistant.library.store import ImageStore

_CONCEPT_SQL = """SELECT c.*, (SELECT COUNT(*) FROM concept_images ci
                   WHERE ci.concept_id = c.id AND ci.role = 'positive') AS photos,
                  COALESCE(c.trained, (SELECT MAX(r.finished) FROM training_runs r
                   WHERE r.concept_id = c.id AND r.status = 'done')) AS last_trained
                  FROM concepts c"""


class Library(RunsAndCachesMixin):
    """One user's library under `home` (default: `paths.home()`)."""

    def __init__(self, home: Path, db: sqlite_utils.Database) -> None:
        self.home = home
        self.db = db
        self.store = ImageStore(paths.images_dir(home))

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, *, allow_lost: bool = False) -> Library:
        """Open (or create) the library. Refuses a database that has no concepts while concept
        records lie next to it (deleted or emptied: `yoc doctor --rebuild`), unless `allow_lost`."""
        root = Path(home) if home is not None else paths.home()
        root.mkdir(parents=True, exist_ok=True)
        db_file = paths.db_path(root)
        fresh = not db_file.exists() or db_file.stat().st_size == 0  # new, deleted or emptied
        if fresh and not allow_lost:
            upkeep.check_not_lost(root)  # before connecting: nothing is created then
        lib = cls(root, dbmod.connect(db_file))
        try:
            upkeep.sync_records(lib)
            lib.recover_stale_runs()
        except BaseException as err:
            lib.close()
            if dbmod.is_damage(err):
                raise dbmod.damaged(err, f"the library database {paths.db_path(root)}") from err
            raise
        return lib

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> Any:
        return dbmod.transaction(self.db)

    # --- paths ---------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        """Paths inside the library are stored relative to it, so the folder can move."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.home.absolute()).as_posix()
        except ValueError:
            return str(path)

    def _abs(self, stored: str | None) -> Path | None:
        if not stored:
            return None
        path = Path(stored)
        return path if path.is_absolute() else self.home / path

    def concept_dir(self, concept: str | Concept) -> Path:
        """Folder for a concept's vector files (stable across renames; created)."""
        folder = paths.concepts_dir(self.home) / self.concept_row(concept).uid
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def concept_runs_dir(self, concept: str | Concept) -> Path:
        """Folder for a concept's training checkpoints (created)."""
        folder = paths.runs_dir(self.home) / self.concept_row(concept).uid
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image_path(self, sha256: str) -> Path:
        return self.store.path_for(sha256)

    # --- concepts ------------------------------------------------------------

    def _concept(self, row: dict[str, Any]) -> Concept:
        return Concept(
            id=row["id"],
            uid=row["uid"],
            name=row["name"],
            display_name=row["display_name"],
            about=row["about"],
            backbone=row["backbone"],
            backbone_fingerprint=row["backbone_fingerprint"],
            status=row["status"],
            vectors_path=self._abs(row["vectors_path"]),
            metrics=loads(row["metrics"]) or {},
            created=row["created"],
            updated=row["updated"],
            photos=row.get("photos", 0) or 0,
            last_trained=row.get("last_trained"),
            quality=loads(row.get("quality")) or {},
        )

    def get_concept(self, name: str) -> Concept | None:
        rows = list(self.db.query(f"{_CONCEPT_SQL} WHERE c.name = ? COLLATE NOCASE", [name]))
        return self._concept(rows[0]) if rows else None

    def require_concept(self, name: str) -> Concept:
        concept = self.get_concept(name)
        if concept is not None:
            return concept
        names = [c.name for c in self.list_concepts()]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else (
            " No concepts yet: add one with `yoc add-concept PHOTOS --name NAME`." if not names else ""
        )
        raise NotFoundError(f"no concept named {name!r}.{hint}")

    def concept_row(self, concept: str | Concept) -> Concept:
        """The row of a concept named, or the row itself when a caller that already fetched
        it passes it down (what the readers that take either use of it, id and uid, never
        changes: a rename keeps them)."""
        return concept if isinstance(concept, Concept) else self.require_concept(concept)

    def list_concepts(self, *, check_files: bool = False) -> list[Concept]:
        """All concepts by name; `check_files`: each vector file is validated, and a concept
        whose file is missing, truncated or invalid comes back with status "broken"."""
        items = [self._concept(r) for r in self.db.query(f"{_CONCEPT_SQL} ORDER BY c.name COLLATE NOCASE")]
        return [self.checked(c) for c in items] if check_files else items

    def checked(self, concept: Concept) -> Concept:
        """`concept`, with status "broken" and the reason when its vector file cannot be used."""
        problem = vectorfile.problem_of(concept.vectors_path)
        if problem is None:
            return concept
        return dataclasses.replace(concept, status=BROKEN, problem=problem)

    def _insert_concept(self, name: str, **fields: Any) -> None:
        stamp = now()
        row = {"uid": fields.pop("uid", None) or uuid.uuid4().hex, "name": name, "status": "new",
               "created": stamp, "updated": stamp, **fields}
        self.db["concepts"].insert(row)
        upkeep.write_record(self, int(self.db.execute("SELECT id FROM concepts WHERE uid = ?",
                                                      [row["uid"]]).fetchone()[0]))

    def create_concept(
        self,
        name: str,
        display_name: str | None = None,
        about: str | None = None,
        backbone: str | None = None,
    ) -> Concept:
        check_name(name)
        check_text_fields(display_name, about)
        with self.transaction():
            self._refuse_existing(name)
            self._insert_concept(name, display_name=display_name, about=about, backbone=backbone)
        return self.require_concept(name)

    def _refuse_existing(self, name: str) -> None:
        existing = self.get_concept(name)
        if existing is not None:
            raise UserInputError(
                f"a concept named {existing.name!r} already exists (names ignore case); "
                "choose another name or remove it with `yoc concepts rm`"
            )

    def can_resume(self, concept: Concept) -> bool:
        """A concept never trained to the end (add-concept killed before or during training,
        or its training failed) has no vectors: adding it again continues it."""
        return concept.vectors_path is None

    def add_concept(
        self,
        name: str,
        images: list[StoredImage],
        display_name: str | None = None,
        about: str | None = None,
        backbone: str | None = None,
    ) -> tuple[Concept, IngestReport]:
        """Create the concept and link its photos in ONE transaction.

        Re-adding a concept still 'new' with no vectors (an earlier run killed)
        continues it: new photos are linked, known ones reported as duplicates.
        """
        check_name(name)
        check_text_fields(display_name, about)
        report = IngestReport()
        with self.transaction():
            existing = self.get_concept(name)
            if existing is not None and not self.can_resume(existing):
                self._refuse_existing(name)
            if existing is None:
                self._insert_concept(name, display_name=display_name, about=about, backbone=backbone)
            else:
                self._update_fields(existing.id, display_name=display_name, about=about, backbone=backbone)
            concept = self.require_concept(name)
            self._link(concept, images, "positive", report)
        return self.require_concept(name), report

    def _update_fields(self, concept_id: int, **fields: Any) -> None:
        values = {k: v for k, v in fields.items() if v is not None}
        values["updated"] = now()
        self.db["concepts"].update(concept_id, values)
        upkeep.write_record(self, concept_id)  # under the caller's write lock, like the row

    def update_concept(self, name: str, *, display_name: str | None = None, about: str | None = None,
                       backbone: str | None = None, backbone_fingerprint: str | None = None) -> Concept:
        check_text_fields(display_name, about)
        with self.transaction():
            concept = self.require_concept(name)
            self._update_fields(concept.id, display_name=display_name, about=about, backbone=backbone,
                                backbone_fingerprint=backbone_fingerprint)
        return self.require_concept(name)

    def rename(self, old: str, new: str) -> Concept:
        check_name(new)
        with self.transaction():
            concept = self.require_concept(old)
            # A run writes its result under the concept's name at the end: never rename under it.
            self.refuse_while_training(concept, "rename")
            clash = self.get_concept(new)
            if clash is not None and clash.id != concept.id:
                self._refuse_existing(new)
            self._update_fields(concept.id, name=new)
        return self.require_concept(new)

    rename_concept = rename

    def set_status(self, name: str, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        with self.transaction():
            self._update_fields(self.require_concept(name).id, status=status)

    def set_vectors(self, name: str, path: str | os.PathLike[str], metrics: dict[str, Any] | None = None,
                    *, status: str = "ready", backbone: str | None = None,
                    backbone_fingerprint: str | None = None,
                    quality: dict[str, Any] | None = None) -> Concept:
        """Point the concept at its (already completely written) vector file; `quality`
        is what was measured of it (app/quality.py), stored with it."""
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"vector file {path} does not exist; write it before set_vectors")
        with self.transaction():
            concept = self.require_concept(name)
            self._update_fields(concept.id, vectors_path=self._rel(path), status=status,
                                metrics=dumps(metrics) if metrics is not None else None,
                                backbone=backbone, backbone_fingerprint=backbone_fingerprint,
                                quality=dumps(quality or {}), trained=now())
        return self.require_concept(name)

    def remove(self, name: str) -> None:
        """Delete the concept, its vectors and runs, and photos no other concept or the pool uses."""
        with self.transaction():
            concept = self.require_concept(name)
            self.refuse_while_training(concept, "remove")
            shas = [r["sha256"] for r in self.db.query(
                "SELECT DISTINCT sha256 FROM concept_images WHERE concept_id = ?", [concept.id])]
            checkpoints = [self._abs(r["checkpoint_path"]) for r in self.db.query(
                "SELECT checkpoint_path FROM training_runs WHERE concept_id = ?", [concept.id])]
            self.db.execute("DELETE FROM concepts WHERE id = ?", [concept.id])
            upkeep.drop_record(self.home, concept.uid)  # with the row: a leftover folder is garbage
        # Row gone first: a kill from here on leaves only unreferenced files.
        for folder in (paths.concepts_dir(self.home) / concept.uid, paths.runs_dir(self.home) / concept.uid):
            shutil.rmtree(folder, ignore_errors=True)
        for path in [concept.vectors_path, *checkpoints]:
            if path is not None and self._inside_home(path):
                _remove_path(path)
        self.drop_unlinked_images(shas)

    remove_concept = remove

    def _inside_home(self, path: Path) -> bool:
        return not Path(self._rel(path)).is_absolute()

    # --- images --------------------------------------------------------------

    def ingest(self, paths_: Iterable[str | os.PathLike[str]], on_progress: ProgressFn | None = None,
               *, recursive: bool = True) -> IngestReport:
        """Validate files and write the good ones to the store (no database rows yet)."""
        return ingest_files(paths_, self.store, on_progress, recursive=recursive)

    def _ensure_file(self, image: StoredImage) -> None:
        # Called under the write lock: a concurrent remove may have deleted the
        # unreferenced file after our ingest wrote it.
        if not self.store.has(image.sha256):
            norm = normalize_file(image.source)
            if norm.sha256 != image.sha256:
                raise UserInputError(f"{image.source} changed while it was being added; try again")
            self.store.put(image.sha256, norm.png_bytes())

    def _insert_image(self, image: StoredImage) -> None:
        self._ensure_file(image)
        self._insert_image_row(image.sha256, image.width, image.height, image.format, image.original_name)

    def _insert_image_row(self, sha256: str, width: int, height: int, fmt: str | None,
                          original_name: str | None) -> None:
        """The image's file must be in the store (checked under the write lock)."""
        self.db.execute(
            "INSERT OR IGNORE INTO images (sha256, path, width, height, format, original_name, added) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [sha256, self.store.relative(sha256), width, height, fmt, original_name, now()],
        )

    def _link(self, concept: Concept, images: list[StoredImage], role: str, report: IngestReport,
              note: str | None = None) -> None:
        if role not in ROLES:
            raise UserInputError(f"image role must be one of {', '.join(ROLES)}, not {role!r}")
        for image in images:
            row = self.db.execute(
                "SELECT role FROM concept_images WHERE concept_id = ? AND sha256 = ?",
                [concept.id, image.sha256]).fetchone()
            if row is not None:
                if row[0] == role:  # re-adding the same photos (continuing a concept): not news
                    report.already.append(image)
                else:
                    report.duplicates.append((image.source, f"already a {row[0]} photo of {concept.name!r}"))
                continue
            self._insert_image(image)
            self.db.execute(
                "INSERT INTO concept_images (concept_id, sha256, role, note, added) VALUES (?, ?, ?, ?, ?)",
                [concept.id, image.sha256, role, note, now()])
            report.accepted.append(image)
        self._update_fields(concept.id)

    def add_images(self, concept: str, paths_: Iterable[str | os.PathLike[str]], role: str = "positive",
                   on_progress: ProgressFn | None = None, note: str | None = None) -> IngestReport:
        """Validate, store and link photos to an existing concept.

        `accepted` of the result holds the newly linked photos only.
        """
        if role not in ROLES:
            raise UserInputError(f"image role must be one of {', '.join(ROLES)}, not {role!r}")
        self.require_concept(concept)
        staged = self.ingest(paths_, on_progress)
        report = IngestReport(rejected=staged.rejected, notes=staged.notes, duplicates=staged.duplicates)
        with self.transaction():
            self._link(self.require_concept(concept), staged.accepted, role, report, note)
        return report

    def link_images(self, concept: str, sha256s: Iterable[str], role: str, note: str | None = None) -> int:
        """Link photos already in the library (e.g. pool images chosen as negatives). Returns how many were new."""
        if role not in ROLES:
            raise UserInputError(f"image role must be one of {', '.join(ROLES)}, not {role!r}")
        added = 0
        with self.transaction():
            c = self.require_concept(concept)
            for sha in sha256s:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO concept_images (concept_id, sha256, role, note, added) "
                    "SELECT ?, sha256, ?, ?, ? FROM images WHERE sha256 = ?",
                    [c.id, role, note, now(), sha])
                added += cur.rowcount
            upkeep.write_record(self, c.id)
        return added

    def unlink_images(self, concept: str, sha256s: Iterable[str], role: str | None = None) -> None:
        shas = list(sha256s)
        with self.transaction():
            c = self.require_concept(concept)
            for sha in shas:
                if role is None:
                    self.db.execute("DELETE FROM concept_images WHERE concept_id = ? AND sha256 = ?", [c.id, sha])
                else:
                    self.db.execute("DELETE FROM concept_images WHERE concept_id = ? AND sha256 = ? AND role = ?",
                                    [c.id, sha, role])
            upkeep.write_record(self, c.id)
        self.drop_unlinked_images(shas)

    def _record(self, row: dict[str, Any], role: str | None) -> ImageRecord:
        return ImageRecord(sha256=row["sha256"], path=self.store.root / row["path"], width=row["width"],
                           height=row["height"], role=role, note=row.get("note"),
                           original_name=row.get("original_name"))

    def concept_images(self, concept: str | Concept, role: str | None = None) -> list[ImageRecord]:
        concept = self.concept_row(concept)
        sql = ("SELECT i.*, ci.role, ci.note FROM concept_images ci JOIN images i USING (sha256) "
               "WHERE ci.concept_id = ?")
        args: list[Any] = [concept.id]
        if role is not None:
            sql += " AND ci.role = ?"
            args.append(role)
        rows = self.db.query(sql + " ORDER BY ci.added, i.sha256", args)
        return [self._record(r, r["role"]) for r in rows]

    def get_image(self, sha256: str) -> ImageRecord | None:
        rows = list(self.db.query("SELECT * FROM images WHERE sha256 = ?", [sha256]))
        return self._record(rows[0], None) if rows else None

    def drop_unlinked_images(self, sha256s: Iterable[str] | None = None) -> int:
        """Delete image rows and files nothing refers to (all of them when sha256s is None)."""
        unlinked = ("SELECT sha256 FROM images WHERE sha256 NOT IN (SELECT sha256 FROM concept_images) "
                    "AND sha256 NOT IN (SELECT sha256 FROM pool)")
        wanted = None if sha256s is None else set(sha256s)
        with self.transaction():
            victims = [r["sha256"] for r in self.db.query(unlinked)
                       if wanted is None or r["sha256"] in wanted]
            for sha in victims:
                self.db.execute("DELETE FROM images WHERE sha256 = ?", [sha])
                # Unlinked under the write lock: nobody can link it meanwhile, and a
                # kill before COMMIT leaves an unlinked row whose file the next
                # link rewrites (see _ensure_file).
                self.store.remove(sha)
        return len(victims)

    def collect_garbage(self, *, leftovers: bool = False) -> int:
        """Remove store files with no row (left by a killed ingest); with `leftovers`, also old
        temp files and folders of removed concepts (`upkeep.collect_leftovers`). Returns how many."""
        removed = self.drop_unlinked_images()
        with self.transaction():
            known = {r["sha256"] for r in self.db.query("SELECT sha256 FROM images")}
            for sha in self.store.all_hashes() - known:
                self.store.remove(sha)
                removed += 1
        if leftovers:
            removed += upkeep.collect_leftovers(self)
        return removed

    # --- pool ------------------------------------------------------------------

    def add_pool_images(self, paths_: Iterable[str | os.PathLike[str]], on_progress: ProgressFn | None = None,
                        source: str | None = None, chunk: int = 64) -> IngestReport:
        """Add generic photos to the retrieval pool (committed in chunks: big folders)."""
        staged = self.ingest(paths_, on_progress)
        report = IngestReport(rejected=staged.rejected, notes=staged.notes, duplicates=staged.duplicates)
        for start in range(0, len(staged.accepted), chunk):
            with self.transaction():
                for image in staged.accepted[start:start + chunk]:
                    self._insert_image(image)
                    cur = self.db.execute("INSERT OR IGNORE INTO pool (sha256, source, added) VALUES (?, ?, ?)",
                                          [image.sha256, source or str(image.source), now()])
                    if cur.rowcount:
                        report.accepted.append(image)
                    else:
                        report.duplicates.append((image.source, "already in the pool"))
        return report

    def pool_images(self) -> list[ImageRecord]:
        rows = self.db.query("SELECT i.* FROM pool p JOIN images i USING (sha256) ORDER BY p.added, i.sha256")
        return [self._record(r, "pool") for r in rows]

    def pool_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM pool").fetchone()[0])

    def remove_pool_images(self, sha256s: Iterable[str]) -> None:
        shas = list(sha256s)
        with self.transaction():
            for sha in shas:
                self.db.execute("DELETE FROM pool WHERE sha256 = ?", [sha])
        self.drop_unlinked_images(shas)

    # --- runs (used by the mixin) -------------------------------------------------

    def _run(self, row: dict[str, Any]) -> TrainingRun:
        return TrainingRun(
            id=row["id"], concept_id=row["concept_id"], config=loads(row["config"]) or {},
            status=row["status"], step=row["step"], total_steps=row["total_steps"], loss=row["loss"],
            metrics=loads(row["metrics"]) or {}, checkpoint_path=self._abs(row["checkpoint_path"]),
            started=row["started"], finished=row["finished"], error=row["error"])

    def iter_runs(self, name: str) -> Iterator[TrainingRun]:
        concept = self.require_concept(name)
        for row in self.db.query("SELECT * FROM training_runs WHERE concept_id = ? ORDER BY id", [concept.id]):
            yield self._run(row)


def _remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


__all__ = ["Library", "RUN_STATUSES"]
