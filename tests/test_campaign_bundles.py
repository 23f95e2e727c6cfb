"""Campaign, category "bundles": what export writes and import keeps (issue 14, items 3, 8-11)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from library_images import photo, photos
from safetensors.numpy import save_file
from test_bundle import FP, concept_file, rebuild, trained
from test_cli_concepts import yoc

from yoc_assistant.cli import cli
from yoc_assistant.errors import UserInputError
from yoc_assistant.library import Library
from yoc_assistant.library.bundle import BundleError, export_bundle, import_bundle
from yoc_assistant.library.concepts import add_concept_from_paths

ABOUT_MAX, DISPLAY_NAME_MAX = 20_000, 200  # the limits import has always had


@pytest.fixture
def lib(yoc_home: Path) -> Library:
    library = Library.open()
    yield library
    library.close()


# -- item 3: one set of limits, checked at entry --------------------------------------------
@pytest.mark.parametrize("field,size", [("about", ABOUT_MAX + 1), ("display_name", DISPLAY_NAME_MAX + 1)])
def test_text_over_the_bundle_limits_is_refused_at_entry(lib: Library, tmp_path: Path, field: str,
                                                        size: int) -> None:
    with pytest.raises(UserInputError, match="too long"):
        add_concept_from_paths(lib, photos(tmp_path / "p", 1), "bo", **{field: "x" * size})
    assert lib.get_concept("bo") is None
    with pytest.raises(UserInputError, match="too long"):
        lib.create_concept("bo", **{field: "x" * size})
    lib.create_concept("bo")
    with pytest.raises(UserInputError, match="too long"):
        lib.update_concept("bo", **{field: "x" * size})


def test_every_concept_at_the_limits_exports_and_imports_back(lib: Library, tmp_path: Path) -> None:
    add_concept_from_paths(lib, photos(tmp_path / "p", 1), "bo", about="a" * ABOUT_MAX,
                           display_name="d" * DISPLAY_NAME_MAX)
    bundle = export_bundle(lib, "bo", tmp_path / "bo.yoc.zip")
    back = import_bundle(lib, bundle, name="bo2")
    assert (len(back.about), len(back.display_name)) == (ABOUT_MAX, DISPLAY_NAME_MAX)


def test_add_concept_cli_refuses_a_long_about_before_reading_photos(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    photos(folder, 1)
    result = yoc("add-concept", folder, "--name", "bo", "--no-train", "--about", "x" * (ABOUT_MAX + 1))
    assert result.exit_code == 2 and "too long" in result.stderr
    with Library.open() as lib:
        assert lib.get_concept("bo") is None and not lib.store.all_hashes()


# -- item 8: imported photos re-encoded like ingest ------------------------------------------
def _png_with_chunks(path: Path, seed: int) -> bytes:
    """The same pixels as `photo(seed)` plus a GPS text chunk and a big private chunk."""
    import zlib

    photo(path, seed=seed)
    data = path.read_bytes()
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    at = data.index(b"IDAT") - 4
    extra = chunk(b"tEXt", b"GPS\x0048.8584 N, 2.2945 E") + chunk(b"prVt", b"\x00" * (2 * 2**20))
    return data[:at] + extra + data[at:]


def test_imported_photos_lose_the_senders_metadata(lib: Library, tmp_path: Path) -> None:
    bundle = trained(lib, tmp_path)
    lib.remove("bo")  # the store must not already hold these pictures

    def swap(members: dict[str, bytes], manifest: dict) -> None:
        for i, item in enumerate(manifest["images"]):
            original = tmp_path / "photos" / f"photo{i}.png"
            members[item["member"]] = _png_with_chunks(tmp_path / "chunky" / original.name, i)

    dirty = rebuild(bundle, tmp_path / "dirty.zip", swap)
    concept = import_bundle(lib, dirty, name="bo2", expected_fingerprint=FP)
    for image in lib.concept_images(concept.name):
        stored = image.path.read_bytes()
        assert b"GPS" not in stored and b"prVt" not in stored
        assert len(stored) < 2**20


# -- item 9: no local backbone path in a bundle ---------------------------------------------
def test_export_drops_the_local_backbone_path(lib: Library, tmp_path: Path) -> None:
    secret = "/home/alice-smith/models/anole"
    add_concept_from_paths(lib, photos(tmp_path / "p", 2), "bo")
    vec = concept_file(lib.concept_dir("bo") / "vectors.safetensors", backbone_source=secret)
    lib.set_vectors("bo", vec, {}, backbone=secret, backbone_fingerprint=FP)
    bundle = export_bundle(lib, "bo", tmp_path / "bo.yoc.zip")
    with zipfile.ZipFile(bundle) as zf:
        blob = b"".join(zf.read(n) for n in zf.namelist())
    assert b"alice-smith" not in blob
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["backbone"]["fingerprint"] == FP
    back = import_bundle(lib, bundle, name="bo2", expected_fingerprint=FP)
    assert back.status == "ready" and back.backbone_fingerprint == FP


def test_untrained_export_keeps_only_the_backbones_folder_name(lib: Library, tmp_path: Path) -> None:
    add_concept_from_paths(lib, photos(tmp_path / "p", 1), "bo", backbone="/home/alice-smith/anole")
    bundle = export_bundle(lib, "bo", tmp_path / "bo.yoc.zip")
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["backbone"]["id"] == "anole"


# -- item 10: unusable vector files refused at import; broken ones listed as broken ---------------
def _vectors(path: Path, **change: object) -> bytes:
    rows = np.ones((33, 8), dtype=np.float32)
    tensors = {"input_rows": rows, "output_rows": rows.copy()}
    meta = {"format": "yoc-concept", "format_version": "1", "concept": "bo", "hidden_size": "8",
            "groups": json.dumps([["generation", 16], ["understanding", 16]]), "backbone_fingerprint": FP}
    if "nan" in change:
        tensors["input_rows"] = np.full((33, 8), np.nan, dtype=np.float32)
    if "shape" in change:
        tensors = {k: np.ones((12, 8), dtype=np.float32) for k in tensors}
    if "dtype" in change:
        tensors["output_rows"] = np.ones((33, 8), dtype=np.float16)
    if "format" in change:
        meta["format"] = "something-else"
    if "extra" in change:
        tensors["payload"] = np.zeros(2**20, dtype=np.float32)
    if "many" in change:
        tensors.update({f"tensor-with-a-long-name-{i}": np.zeros(1, dtype=np.float32) for i in range(5000)})
    save_file(tensors, str(path), metadata=meta)
    return path.read_bytes()


@pytest.mark.parametrize("change,message", [
    ("nan", "NaN"), ("shape", "shape"), ("dtype", "float32"), ("format", "not a yoc concept file"),
    ("extra", "exactly the tensors"), ("many", "exactly the tensors"),
])
def test_unusable_vector_files_are_refused_at_import(lib: Library, tmp_path: Path, change: str,
                                                     message: str) -> None:
    blob = _vectors(tmp_path / "v.safetensors", **{change: True})
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "bad.zip",
                     lambda m, man: m.update({"vectors.safetensors": blob}))
    with pytest.raises(BundleError, match=message) as err:
        import_bundle(lib, bundle, name="x", expected_fingerprint=FP)
    assert len(str(err.value)) < 500
    assert lib.get_concept("x") is None


@pytest.mark.parametrize("damage", ["missing", "truncated", "nan"])
def test_concepts_list_shows_a_concept_with_a_bad_file_as_broken(lib: Library, tmp_path: Path,
                                                                 damage: str) -> None:
    trained(lib, tmp_path)
    path = lib.get_concept("bo").vectors_path
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(_vectors(tmp_path / "nan.safetensors", nan=True))
    listed = CliRunner().invoke(cli, ["concepts", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.output)
    assert item["status"] == "broken" and item["problem"]
    table = CliRunner().invoke(cli, ["concepts", "list"])
    assert "broken" in table.output and "ready" not in table.output


def test_a_huge_bad_header_gives_a_short_error_when_loading(tmp_path: Path) -> None:
    from yoc_assistant.personalize.concept import ConceptVectors

    path = tmp_path / "v.safetensors"
    _vectors(path, many=True)  # a valid safetensors file with 5002 tensors
    with pytest.raises(UserInputError) as err:
        ConceptVectors.load(path)
    assert len(str(err.value)) < 500


# -- item 11: deeply nested JSON -------------------------------------------------------------
def _deep(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_manifest_is_a_clear_error(lib: Library, tmp_path: Path) -> None:
    bad = tmp_path / "deep.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("manifest.json", _deep())
    with pytest.raises(BundleError, match="manifest.json"):
        import_bundle(lib, bad)


def test_deeply_nested_safetensors_header_is_a_clear_error(lib: Library, tmp_path: Path) -> None:
    raw = b'{"__metadata__": {}, "x": ' + _deep(50_000) + b"}"
    blob = struct.pack("<Q", len(raw)) + raw
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "deep.zip",
                     lambda m, man: m.update({"vectors.safetensors": blob}))
    with pytest.raises(BundleError, match="safetensors header"):
        import_bundle(lib, bundle, name="x", expected_fingerprint=FP)
    path = lib.get_concept("bo").vectors_path
    path.write_bytes(blob)
    shown = CliRunner().invoke(cli, ["concepts", "show", "bo"])
    assert shown.exit_code == 0 and "Traceback" not in shown.output


def test_the_chat_apps_concept_list_shows_a_broken_file_as_broken(lib: Library, tmp_path: Path) -> None:
    from yoc_assistant.tui.services import Services

    trained(lib, tmp_path)
    lib.get_concept("bo").vectors_path.unlink()
    (row,) = Services().concepts()
    assert row.status == "broken"
