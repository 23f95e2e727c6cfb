"""The library's SQLite database: connections, write transactions, migrations.

Several yoc processes may write at once (a training run and `yoc add-concept`,
say). WAL lets readers go on during a write; every write goes through
`transaction()`, which takes the write lock up front (BEGIN IMMEDIATE) and
waits for it, so no process ever sees "database is locked".

The schema version is SQLite's `user_version`. Each migration runs in its own
transaction together with the version bump, so a kill leaves the old schema or
the new one. A database from a newer yoc is refused, never touched.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlite_utils

from yoc_assistant.errors import IncompatibleError, YocError

BUSY_TIMEOUT_S = 30.0
# BEGIN IMMEDIATE waits busy_timeout itself; this outer retry covers the cases
# where SQLite returns BUSY without waiting (WAL recovery, journal-mode change).
LOCK_RETRY_S = 60.0


# A quick_check reads every page: cheap for a library (a few MB), skipped above this size.
QUICK_CHECK_MAX_BYTES = 64 * 2**20
REBUILD_HINT = ("restore it from a backup, or rebuild it from the files with `yoc doctor --rebuild` "
                "(the damaged file is kept)")


class LibraryError(YocError):
    """The library database cannot be used (corrupt, locked for too long)."""


def is_damage(err: BaseException) -> bool:
    """A DatabaseError that means a damaged file (not a lock, not a constraint)."""
    if not isinstance(err, sqlite3.DatabaseError) or isinstance(err, sqlite3.IntegrityError):
        return False
    text = str(err).lower()
    return type(err) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text \
        or "corrupt" in text


def damaged(err: BaseException, where: str = "the library database") -> LibraryError:
    return LibraryError(f"{where} is damaged ({err}): {REBUILD_HINT}")


def connect(path: Path) -> sqlite_utils.Database:
    """Open the database with the settings every connection needs, migrated to the latest schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        db = sqlite_utils.Database(conn, execute_plugins=False)
        migrate(db)
        _quick_check(conn, path)
    except LibraryError:
        raise
    except sqlite3.DatabaseError as err:
        if is_damage(err):
            raise damaged(err, f"the library database {path}") from err
        raise LibraryError(f"cannot open the library database {path}: {err}") from err
    return db


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    except OSError:
        return
    if size > QUICK_CHECK_MAX_BYTES:
        return
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
    if rows != ["ok"]:
        raise damaged("; ".join(str(r) for r in rows)[:300], f"the library database {path}")


def _is_lock_error(err: sqlite3.OperationalError) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text


def _retry_locked(fn: Callable[[], object]) -> object:
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as err:
            if not _is_lock_error(err) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction holding the write lock from its start; commits or rolls back.

    Nested use joins the outer transaction (sqlite-utils' own writes inside it
    become savepoints).
    """
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    _retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        yield db
    except BaseException as err:
        _rollback(conn)
        if is_damage(err):
            raise damaged(err) from err
        raise
    try:
        _retry_locked(lambda: conn.execute("COMMIT"))
    except BaseException as err:
        _rollback(conn)
        if is_damage(err):
            raise damaged(err) from err
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    # The error being raised matters more than one from ROLLBACK (a damaged file may refuse both).
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


# --- migrations ---------------------------------------------------------------


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE concepts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uid TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            display_name TEXT,
            about TEXT,
            backbone TEXT,
            backbone_fingerprint TEXT,
            status TEXT NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'training', 'ready', 'failed')),
            vectors_path TEXT,
            metrics TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT,
            original_name TEXT,
            added TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE concept_images (
            concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL REFERENCES images(sha256),
            role TEXT NOT NULL CHECK (role IN ('positive', 'negative', 'pool', 'test')),
            note TEXT,
            added TEXT NOT NULL,
            PRIMARY KEY (concept_id, sha256, role)
        )"""
    )
    db.execute("CREATE INDEX concept_images_sha ON concept_images(sha256)")
    db.execute(
        """CREATE TABLE pool (
            sha256 TEXT PRIMARY KEY REFERENCES images(sha256),
            source TEXT,
            added TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE training_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
            config TEXT,
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
            step INTEGER NOT NULL DEFAULT 0,
            total_steps INTEGER,
            loss REAL,
            metrics TEXT,
            checkpoint_path TEXT,
            pid INTEGER,
            host TEXT,
            started TEXT NOT NULL,
            finished TEXT,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX training_runs_concept ON training_runs(concept_id)")
    db.execute(
        """CREATE TABLE caches (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            model TEXT NOT NULL,
            path TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (kind, key, model)
        )"""
    )


def _m2_conversation_log(db: sqlite_utils.Database) -> None:
    """Every request and its answer (app/conversation_log.py writes and reads it)."""
    db.execute(
        """CREATE TABLE log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            source TEXT NOT NULL,
            request TEXT NOT NULL,
            attached TEXT,
            mode TEXT,
            answer TEXT,
            modality TEXT,
            forced INTEGER,
            route TEXT,
            concepts TEXT,
            pictures TEXT,
            seed INTEGER,
            backbone TEXT,
            backbone_fingerprint TEXT,
            seconds REAL,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX log_time ON log(time)")


def _m3_concept_quality(db: sqlite_utils.Database) -> None:
    """A concept's measured quality (JSON, app/quality.py) and when its vectors were
    trained (also for imported ones, which have no training run here)."""
    db["concepts"].add_column("quality", str)
    db["concepts"].add_column("trained", str)


# Append only: the list index + 1 is the schema version a migration produces.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1_initial, _m2_conversation_log,
                                                              _m3_concept_quality]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise IncompatibleError(
            f"the library database has schema version {version}, but this yoc only knows "
            f"up to {SCHEMA_VERSION}; it was written by a newer yoc. Upgrade yoc "
            "(the database was left untouched)."
        )


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to SCHEMA_VERSION, one transaction per migration."""
    _check_not_newer(schema_version(db))
    while True:
        with transaction(db):
            # Re-read under the write lock: another process may have migrated.
            version = schema_version(db)
            _check_not_newer(version)
            if version == SCHEMA_VERSION:
                return version
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
