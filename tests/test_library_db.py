"""The library database: paths, connection settings, migrations, no torch."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from yoc_assistant.errors import IncompatibleError
from yoc_assistant.library import Library, paths
from yoc_assistant.library import db as dbmod


def test_library_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys; import yoc_assistant.library, yoc_assistant.library.bundle, "
            "yoc_assistant.library.concepts, yoc_assistant.cli.concepts, yoc_assistant.cli.add_concept, "
            "yoc_assistant.cli.pool\n"
            "from yoc_assistant.library import Library\n"
            "Library.open(sys.argv[1]).list_concepts()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'open_clip'))\n"
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def test_paths_follow_environment(yoc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.home() == yoc_home
    assert paths.db_path() == yoc_home / "library.db"
    for fn, name in [(paths.images_dir, "images"), (paths.concepts_dir, "concepts"), (paths.cache_dir, "cache"),
                     (paths.runs_dir, "runs"), (paths.backbones_dir, "backbones")]:
        assert fn() == yoc_home / name and fn().is_dir()
    assert paths.pictures_dir() == yoc_home / "pictures"
    monkeypatch.delenv("YOC_HOME")
    monkeypatch.delenv("YOC_PICTURES")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.home() == tmp_path / "xdg" / "yoc"
    assert paths.pictures_dir().name == "yoc"


def test_connection_settings(yoc_home: Path) -> None:
    lib = Library.open()
    assert lib.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert lib.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert lib.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert dbmod.schema_version(lib.db) == dbmod.SCHEMA_VERSION
    assert {"concepts", "images", "concept_images", "pool", "training_runs", "caches"} <= set(
        lib.db.table_names())


def test_foreign_keys_enforced_and_cascade(yoc_home: Path) -> None:
    lib = Library.open()
    with pytest.raises(sqlite3.IntegrityError):
        lib.db.execute("INSERT INTO concept_images (concept_id, sha256, role, added) VALUES (99, 'x', 'positive', 'now')")
    lib.create_concept("bo")
    run = lib.start_run("bo", {"lr": 1e-4})
    lib.finish_run(run, "interrupted")  # a live run refuses removal (test_campaign_training.py)
    lib.remove("bo")
    assert lib.get_run(run) is None  # the run went with its concept


def test_newer_database_is_refused_untouched(yoc_home: Path) -> None:
    Library.open().close()
    conn = sqlite3.connect(paths.db_path())
    conn.execute(f"PRAGMA user_version = {dbmod.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = paths.db_path().read_bytes()
    with pytest.raises(IncompatibleError, match="newer yoc") as info:
        Library.open()
    assert info.value.exit_code == 5
    assert paths.db_path().read_bytes() == before


def test_migrations_are_transactional(yoc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(db: object) -> None:
        db.execute("CREATE TABLE half_done (x)")  # type: ignore[attr-defined]
        raise RuntimeError("killed mid-migration")

    monkeypatch.setattr(dbmod, "MIGRATIONS", [dbmod.MIGRATIONS[0], broken])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 2)
    with pytest.raises(RuntimeError):
        Library.open()
    conn = sqlite3.connect(paths.db_path())
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # the first one committed
    assert "half_done" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    monkeypatch.setattr(dbmod, "MIGRATIONS", [dbmod.MIGRATIONS[0], lambda db: db.execute("CREATE TABLE v2 (x)")])
    lib = Library.open()
    assert dbmod.schema_version(lib.db) == 2 and "v2" in lib.db.table_names()


def test_transaction_rolls_back_on_error(yoc_home: Path) -> None:
    lib = Library.open()
    with pytest.raises(RuntimeError), lib.transaction():
        lib.db.execute("INSERT INTO concepts (uid, name, created, updated) VALUES ('u', 'x', 'a', 'b')")
        raise RuntimeError
    assert lib.list_concepts() == []


def test_corrupt_database_is_a_clear_error(yoc_home: Path) -> None:
    paths.db_path().write_bytes(b"this is not a database" * 100)
    with pytest.raises(dbmod.LibraryError, match="the library database .* is damaged"):
        Library.open()
