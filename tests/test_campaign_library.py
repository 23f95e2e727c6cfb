"""Campaign, category "library": a lost, emptied or damaged library.db, and leftovers of kills
(issue 14, items 4 and 12; "Also seen": garbage collection)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from library_images import photos
from test_bundle import concept_file
from test_cli_concepts import yoc

from yoc_assistant.errors import YocError
from yoc_assistant.library import Library, paths
from yoc_assistant.library.concepts import add_concept_from_paths


def _library_with_concepts(home: Path, tmp_path: Path) -> dict:
    """Two concepts (one trained, one not), a negative photo and a pool; returns what it holds."""
    with Library.open(home) as lib:
        add_concept_from_paths(lib, photos(tmp_path / "bo", 3), "bo", about="my corgi", display_name="Bo!")
        lib.add_images("bo", photos(tmp_path / "neg", 1, start=50), role="negative", note="not bo")
        vec = concept_file(lib.concept_dir("bo") / "vectors-ffff.safetensors")
        lib.set_vectors("bo", vec, {"recognition": 0.8}, backbone="tiny", backbone_fingerprint="f" * 64)
        add_concept_from_paths(lib, photos(tmp_path / "mug", 2, start=10), "mug")
        lib.rename("mug", "cup")
        lib.add_pool_images(photos(tmp_path / "pool", 4, start=100))
        return _state(lib)


def _state(lib: Library) -> dict:
    return {
        "concepts": [(c.name, c.display_name, c.about, c.status, c.photos, c.uid,
                      str(c.vectors_path) if c.vectors_path else None, c.backbone_fingerprint, c.metrics)
                     for c in lib.list_concepts()],
        "images": {c.name: sorted((i.sha256, i.role, i.note, i.original_name) for i in lib.concept_images(c.name))
                   for c in lib.list_concepts()},
        "pool": sorted(i.sha256 for i in lib.pool_images()),
    }


def _drop_db(home: Path, how: str) -> None:
    db = paths.db_path(home)
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    if how == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")


# -- item 4: a lost database is detected, and rebuilt from the files --------------------------
@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_database_is_detected_not_silently_replaced(yoc_home: Path, tmp_path: Path, how: str) -> None:
    _library_with_concepts(yoc_home, tmp_path)
    _drop_db(yoc_home, how)
    with pytest.raises(YocError, match="doctor --rebuild"):
        Library.open(yoc_home)
    listed = yoc("concepts", "list")
    assert listed.exit_code != 0 and "doctor --rebuild" in listed.stderr and "Traceback" not in listed.output
    added = yoc("add-concept", *photos(tmp_path / "new", 1, start=70), "--name", "new", "--no-train")
    assert added.exit_code != 0 and "doctor --rebuild" in added.stderr


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_rebuild_round_trip(yoc_home: Path, tmp_path: Path, how: str) -> None:
    before = _library_with_concepts(yoc_home, tmp_path)
    _drop_db(yoc_home, how)
    rebuilt = yoc("doctor", "--rebuild")
    assert "Rebuilt" in rebuilt.output and "2 concepts" in rebuilt.output, rebuilt.output
    with Library.open(yoc_home) as lib:
        assert _state(lib) == before


def test_rebuild_keeps_the_damaged_database(yoc_home: Path, tmp_path: Path) -> None:
    _library_with_concepts(yoc_home, tmp_path)
    _damage(paths.db_path(yoc_home))
    assert "Rebuilt" in yoc("doctor", "--rebuild").output
    kept = list(yoc_home.glob("library.db.damaged-*[0-9]"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0


# -- item 12: a partly corrupt database gives a clear message, on open and on write -------------
def _damage(db: Path) -> None:
    """Random bytes over every page but the first (the header stays valid)."""
    data = bytearray(db.read_bytes())
    rng = random.Random(3)
    page = 4096
    for start in range(page, len(data), page):
        data[start + 8:start + 400] = bytes(rng.randrange(256) for _ in range(392))
    db.write_bytes(bytes(data))


def _checkpointed(home: Path, tmp_path: Path) -> Path:
    _library_with_concepts(home, tmp_path)
    with Library.open(home) as lib:
        lib.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return paths.db_path(home)


def test_a_partly_corrupt_database_is_a_clear_error_on_open(yoc_home: Path, tmp_path: Path) -> None:
    _damage(_checkpointed(yoc_home, tmp_path))
    with pytest.raises(YocError, match="damaged") as err:
        Library.open(yoc_home).list_concepts()
    assert "doctor --rebuild" in str(err.value)
    for args in (["concepts", "list"], ["concepts", "rename", "bo", "rex"]):
        result = yoc(*args)
        assert result.exit_code == 1 and "damaged" in result.stderr, result.output
        assert "Traceback" not in result.output and "DatabaseError" not in result.output


def test_damage_the_open_check_skips_is_a_clear_error_on_write(yoc_home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.library import db as dbmod

    monkeypatch.setattr(dbmod, "QUICK_CHECK_MAX_BYTES", 0)  # as for a library too big to check
    _damage(_checkpointed(yoc_home, tmp_path))
    with pytest.raises(YocError, match="damaged"):
        lib = Library.open(yoc_home)
        lib.rename("bo", "rex")
        lib.add_pool_images(photos(tmp_path / "more", 2, start=300))
    for args in (["concepts", "list"], ["concepts", "rename", "bo", "rex"], ["pool", "list"]):
        result = yoc(*args)
        assert result.exit_code == 1 and "damaged" in result.stderr, result.output
        assert "Traceback" not in result.output


# -- also seen: leftovers of kills collected by `yoc doctor` ------------------------------------
def test_doctor_collects_leftover_temp_files_and_orphan_vectors(yoc_home: Path, tmp_path: Path) -> None:
    _library_with_concepts(yoc_home, tmp_path)
    old = time.time() - 3600
    leftovers = [yoc_home / "concepts" / ".vectors.safetensors.abc123.tmp",
                 yoc_home / "images" / "ab" / ".x.png.k2j3.tmp",
                 yoc_home / "concepts" / ("0" * 32) / "vectors-ffff.safetensors",
                 yoc_home / "runs" / ("0" * 32) / "step-00000001.safetensors"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        os.utime(path, (old, old))
        os.utime(path.parent, (old, old))
    fresh = yoc_home / "concepts" / ".being-written.safetensors.zz.tmp"  # another process's write
    fresh.write_bytes(b"x")
    report = json.loads(yoc("doctor", "--json").stdout)
    assert report["library"]["collected"] >= len(leftovers)
    assert not any(p.exists() for p in leftovers) and fresh.exists()
    with Library.open(yoc_home) as lib:  # nothing the library uses was touched
        assert all(c.vectors_path is None or c.vectors_path.is_file() for c in lib.list_concepts())
        assert all(i.path.is_file() for c in lib.list_concepts() for i in lib.concept_images(c.name))
