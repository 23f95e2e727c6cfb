"""The Library API: concepts, photos, pool, training runs, caches, removal."""

from __future__ import annotations

from pathlib import Path

import pytest
from library_images import photo, photos

from yoc_assistant.errors import NotFoundError, UserInputError
from yoc_assistant.library import Library, check_name
from yoc_assistant.library.concepts import NoUsablePhotosError, add_concept_from_paths


@pytest.fixture
def lib(yoc_home: Path) -> Library:
    library = Library.open()
    yield library
    library.close()


@pytest.mark.parametrize("name", ["bo", "My-Dog_2", "a", "x" * 40, "007"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 41, "../etc", "a/b", "a\\b", ".hidden", "-rf", "_x", "bo bo",
                                  "zoë", "con", "NUL", "lpt1", "a.b", "a\x00b", "<bo>", "日本"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UserInputError) as info:
        check_name(name)
    assert info.value.exit_code == 2


def test_create_get_case_insensitive(lib: Library) -> None:
    created = lib.create_concept("Bo", display_name="Bo the dog", about="a corgi")
    assert lib.get_concept("bo") == created and lib.get_concept("BO").name == "Bo"
    assert created.status == "new" and created.vectors_path is None
    with pytest.raises(UserInputError, match="already exists"):
        lib.create_concept("bO")


def test_require_concept_suggests_close_names(lib: Library) -> None:
    with pytest.raises(NotFoundError, match="add-concept"):
        lib.require_concept("bo")
    lib.create_concept("biscuit")
    with pytest.raises(NotFoundError, match="Did you mean: biscuit") as info:
        lib.require_concept("biscut")
    assert info.value.exit_code == 3


def test_add_concept_links_photos_and_dedupes(lib: Library, tmp_path: Path) -> None:
    files = photos(tmp_path / "p", 3)
    report = add_concept_from_paths(lib, tmp_path / "p", "bo", about="my dog")
    assert len(report.accepted) == 3 and not report.warnings
    images = lib.concept_images("bo")
    assert [i.original_name for i in images] == [f.name for f in files]
    assert all(i.role == "positive" and i.path.is_file() for i in images)
    again = lib.add_images("bo", [files[0], photo(tmp_path / "new.png", seed=50)])
    assert len(again.accepted) == 1 and [i.source for i in again.already] == [files[0]]
    assert lib.get_concept("bo").photos == 4


def test_fewer_than_three_photos_warns(lib: Library, tmp_path: Path) -> None:
    report = add_concept_from_paths(lib, [photo(tmp_path / "one.png")], "bo")
    assert report.warnings and "only 1 photo" in report.warnings[0]


def test_no_usable_photo_creates_nothing(lib: Library, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(NoUsablePhotosError) as info:
        add_concept_from_paths(lib, [tmp_path / "bad.jpg"], "bo")
    assert info.value.exit_code == 2 and "bad.jpg" in str(info.value)
    assert lib.list_concepts() == []


def test_readding_a_new_concept_continues_but_trained_one_is_refused(lib: Library, tmp_path: Path) -> None:
    files = photos(tmp_path / "p", 2)
    add_concept_from_paths(lib, files[:1], "bo")
    report = add_concept_from_paths(lib, files, "BO", about="later")
    assert len(report.accepted) == 1 and len(report.already) == 1 and not report.duplicates
    assert lib.get_concept("bo").photos == 2 and lib.get_concept("bo").about == "later"
    vec = tmp_path / "v.safetensors"
    vec.write_bytes(b"x")
    lib.set_vectors("bo", vec)
    with pytest.raises(UserInputError, match="already exists"):
        add_concept_from_paths(lib, files, "bo")


def test_rename(lib: Library) -> None:
    lib.create_concept("bo")
    lib.create_concept("rex")
    assert lib.rename("bo", "Bobby").name == "Bobby"
    assert lib.get_concept("bo") is None
    assert lib.rename("bobby", "BOBBY").name == "BOBBY"  # case-only change of itself
    with pytest.raises(UserInputError, match="already exists"):
        lib.rename("bobby", "REX")
    with pytest.raises(UserInputError):
        lib.rename("bobby", "../x")
    with pytest.raises(NotFoundError):
        lib.rename("nobody", "x")


def test_remove_deletes_files_but_keeps_shared_photos(lib: Library, tmp_path: Path) -> None:
    shared = photo(tmp_path / "shared.png", seed=1)
    own = photo(tmp_path / "own.png", seed=2)
    add_concept_from_paths(lib, [shared, own], "bo")
    add_concept_from_paths(lib, [shared], "rex")
    pool = lib.add_pool_images([photo(tmp_path / "pool.png", seed=3)])
    lib.link_images("bo", [pool.accepted[0].sha256], "negative")
    vec = lib.concept_dir("bo") / "vectors.safetensors"
    vec.write_bytes(b"x")
    lib.set_vectors("bo", vec, {"score": 0.5})
    run = lib.start_run("bo", {})
    ckpt = lib.concept_runs_dir("bo") / "step10.safetensors"
    ckpt.write_bytes(b"y")
    lib.update_run(run, step=10, checkpoint_path=ckpt)
    lib.finish_run(run, "interrupted")  # a live run refuses removal (tests/test_campaign_training.py)
    paths_of = {i.original_name: i.path for i in lib.concept_images("bo")}
    lib.remove("bo")
    assert lib.get_concept("bo") is None and not vec.exists() and not ckpt.exists()
    assert not paths_of["own.png"].exists()  # no longer used
    assert paths_of["shared.png"].exists() and lib.concept_images("rex")[0].path == paths_of["shared.png"]
    assert pool.accepted[0].path.exists() and lib.pool_count() == 1  # the pool still holds it
    with pytest.raises(NotFoundError):
        lib.remove("bo")


def test_set_vectors_requires_the_file_first(lib: Library, tmp_path: Path) -> None:
    lib.create_concept("bo")
    with pytest.raises(NotFoundError):
        lib.set_vectors("bo", tmp_path / "missing.safetensors")
    assert lib.get_concept("bo").status == "new"


def test_runs_lifecycle(lib: Library) -> None:
    lib.create_concept("bo")
    run = lib.start_run("bo", {"lr": 1e-4}, total_steps=100)
    assert lib.get_concept("bo").status == "training"
    lib.update_run(run, step=40, loss=1.25, metrics={"acc": 0.5})
    lib.finish_run(run, "interrupted")
    latest = lib.latest_run("bo")
    assert (latest.step, latest.loss, latest.status, latest.config) == (40, 1.25, "interrupted", {"lr": 1e-4})
    assert lib.get_concept("bo").status == "new"  # no vectors yet
    second = lib.start_run("bo", {})
    lib.finish_run(second, "failed", error="out of memory")
    assert lib.get_concept("bo").status == "failed" and lib.latest_run("bo").error == "out of memory"
    assert [r.id for r in lib.runs("bo")] == [run, second]
    with pytest.raises(ValueError):
        lib.finish_run(second, "running")
    with pytest.raises(NotFoundError):
        lib.update_run(12345, step=1)


def test_cache_entries(lib: Library) -> None:
    path = lib.cache_path("clip", "a" * 64, "ViT-B/32")
    assert lib.cache_get("clip", "a" * 64, "ViT-B/32") is None
    with pytest.raises(NotFoundError):
        lib.cache_put("clip", "a" * 64, "ViT-B/32", path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"data")
    lib.cache_put("clip", "a" * 64, "ViT-B/32", path)
    assert lib.cache_get("clip", "a" * 64, "ViT-B/32") == path
    assert lib.cache_get("clip", "a" * 64, "other-model") is None
    shard = lib.home / "cache" / "shard.safetensors"
    shard.write_bytes(b"s")
    lib.cache_put_many("tokens", {"k1": shard, "k2": shard}, "bb")
    assert lib.cache_get_many("tokens", ["k1", "k2", "k3"], "bb") == {"k1": shard, "k2": shard}
    shard.unlink()  # a lost file is a miss, and the entry is forgotten
    assert lib.cache_get_many("tokens", ["k1", "k2"], "bb") == {}
    assert lib.db.execute("SELECT COUNT(*) FROM caches WHERE kind = 'tokens'").fetchone()[0] == 0
    assert lib.cache_clear("clip") == 1 and not path.exists()


def test_pool(lib: Library, tmp_path: Path) -> None:
    files = photos(tmp_path / "pool", 4)
    report = lib.add_pool_images([tmp_path / "pool"], chunk=3)
    assert len(report.accepted) == 4 and lib.pool_count() == 4
    again = lib.add_pool_images([files[0]])
    assert not again.accepted and again.duplicates[0][1] == "already in the pool"
    assert {i.role for i in lib.pool_images()} == {"pool"}
    lib.remove_pool_images([report.accepted[0].sha256])
    assert lib.pool_count() == 3 and not report.accepted[0].path.exists()


def test_garbage_from_a_killed_ingest_is_collected(lib: Library, tmp_path: Path) -> None:
    staged = lib.ingest([photo(tmp_path / "a.png")])  # files stored, no rows (as if killed now)
    assert staged.accepted[0].path.exists()
    assert lib.collect_garbage() == 1 and not staged.accepted[0].path.exists()


def test_linking_rewrites_a_file_deleted_meanwhile(lib: Library, tmp_path: Path) -> None:
    # Another process may remove an unreferenced file between our ingest and our link.
    staged = lib.ingest([photo(tmp_path / "a.png")])
    staged.accepted[0].path.unlink()
    concept, _ = lib.add_concept("bo", staged.accepted)
    assert lib.concept_images("bo")[0].path.is_file()


def test_library_folder_can_move(tmp_path: Path) -> None:
    first = Library.open(tmp_path / "one")
    add_concept_from_paths(first, [photo(tmp_path / "a.png")], "bo")
    vec = first.concept_dir("bo") / "v.safetensors"
    vec.write_bytes(b"x")
    first.set_vectors("bo", vec)
    first.close()
    (tmp_path / "one").rename(tmp_path / "two")
    second = Library.open(tmp_path / "two")
    assert second.get_concept("bo").vectors_path == tmp_path / "two" / vec.relative_to(tmp_path / "one")
    assert second.concept_images("bo")[0].path.is_file()


def test_runs_of_dead_processes_are_recovered(yoc_home: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    with Library.open() as lib:
        add_concept_from_paths(lib, [photo(tmp_path / "a.png")], "bo")
        add_concept_from_paths(lib, [photo(tmp_path / "r.png", seed=9)], "rex")
        run = lib.start_run("bo", {})
        live = lib.start_run("rex", {})  # one live run per concept
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        lib.db.execute("UPDATE training_runs SET pid = ? WHERE id = ?", [int(dead.stdout), run])
        assert lib.get_concept("bo").status == "training"
    with Library.open() as lib:  # e.g. `yoc add-concept` killed while training
        assert lib.get_run(run).status == "interrupted" and lib.get_run(live).status == "running"
        lib.finish_run(live, "interrupted")
        assert lib.get_concept("bo").status == "new"
        report = add_concept_from_paths(lib, [photo(tmp_path / "b.png", seed=3)], "bo")
        assert report.concept.photos == 2
