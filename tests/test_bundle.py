"""Concept bundles: export/import round trip, and every kind of bad or malicious bundle refused."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from library_images import photos
from safetensors.numpy import save_file

from yoc_assistant.errors import IncompatibleError, UserInputError
from yoc_assistant.library import Library
from yoc_assistant.library import bundle as bundlemod
from yoc_assistant.library.bundle import BundleError, export_bundle, import_bundle, read_bundle
from yoc_assistant.library.concepts import add_concept_from_paths

FP = "f" * 64


@pytest.fixture
def lib(yoc_home: Path) -> Library:
    library = Library.open()
    yield library
    library.close()


def trained(lib: Library, tmp_path: Path, name: str = "bo", fingerprint: str | None = FP) -> Path:
    add_concept_from_paths(lib, photos(tmp_path / "photos", 3), name, about="my corgi", display_name="Bo!")
    vec = lib.concept_dir(name) / "vectors.safetensors"
    concept_file(vec, fingerprint)
    lib.set_vectors(name, vec, {"recognition": 0.8})
    return export_bundle(lib, name, tmp_path / "bo.yoc.zip")


def concept_file(path: Path, fingerprint: str | None = FP, **extra_meta: str) -> Path:
    """A valid concept file (what ConceptVectors.save writes), made without torch."""
    meta = {"format": "yoc-concept", "format_version": "1", "backbone": "tiny-test", "concept": "bo",
            "groups": json.dumps([["generation", 16], ["understanding", 16]]), "hidden_size": "8",
            **extra_meta}
    if fingerprint:
        meta["backbone_fingerprint"] = fingerprint
    save_file({"input_rows": np.arange(33 * 8, dtype=np.float32).reshape(33, 8),
               "output_rows": np.ones((33, 8), dtype=np.float32)}, str(path), metadata=meta)
    return path


def rebuild(src: Path, dst: Path, mutate: Callable[[dict[str, bytes], dict], None], redigest: bool = True,
            extra: Callable[[zipfile.ZipFile], None] | None = None) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members.pop("manifest.json"))
    mutate(members, manifest)
    if redigest:
        manifest["members"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                               for n, b in members.items()}
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for n, b in members.items():
            zf.writestr(n, b)
        if extra is not None:
            extra(zf)
    return dst


def test_round_trip(lib: Library, tmp_path: Path) -> None:
    bundle = trained(lib, tmp_path)
    before = lib.get_concept("bo")
    shas = sorted(i.sha256 for i in lib.concept_images("bo"))
    vec_bytes = before.vectors_path.read_bytes()
    lib.remove("bo")
    assert not list((lib.home / "images").rglob("*.png"))
    concept = import_bundle(lib, bundle, expected_fingerprint=FP)
    assert (concept.name, concept.display_name, concept.about, concept.status) == ("bo", "Bo!", "my corgi", "ready")
    assert concept.metrics == {"recognition": 0.8} and concept.backbone_fingerprint == FP
    assert concept.vectors_path.read_bytes() == vec_bytes
    assert concept.vectors_path.parent.parent == lib.home / "concepts"
    assert sorted(i.sha256 for i in lib.concept_images("bo")) == shas
    assert all(i.path.is_file() for i in lib.concept_images("bo"))


def test_export_default_name_in_folder(lib: Library, tmp_path: Path) -> None:
    add_concept_from_paths(lib, photos(tmp_path / "p", 1), "rex")
    out = tmp_path / "out"
    out.mkdir()
    path = export_bundle(lib, "rex", out)
    assert path == out / "rex.yoc.zip" and read_bundle(path).vectors is None


def test_untrained_concept_round_trip(lib: Library, tmp_path: Path) -> None:
    add_concept_from_paths(lib, photos(tmp_path / "p", 2), "rex")
    path = export_bundle(lib, "rex", tmp_path / "rex.yoc.zip")
    concept = import_bundle(lib, path, name="rex2", expected_fingerprint=FP)
    assert concept.status == "new" and concept.photos == 2


def test_name_clash_suggests_name(lib: Library, tmp_path: Path) -> None:
    bundle = trained(lib, tmp_path)
    with pytest.raises(UserInputError, match="--name"):
        import_bundle(lib, bundle)
    assert import_bundle(lib, bundle, name="bo2").name == "bo2"
    with pytest.raises(UserInputError):
        import_bundle(lib, bundle, name="../evil")


def test_other_backbone_refused_unless_forced(lib: Library, tmp_path: Path) -> None:
    bundle = trained(lib, tmp_path)
    lib.remove("bo")
    with pytest.raises(IncompatibleError, match="--force") as info:
        import_bundle(lib, bundle, expected_fingerprint="0" * 64)
    assert info.value.exit_code == 5 and lib.get_concept("bo") is None
    assert import_bundle(lib, bundle, expected_fingerprint="0" * 64, force=True).status == "ready"


def test_unknown_backbone_refused_unless_forced(lib: Library, tmp_path: Path) -> None:
    bundle = trained(lib, tmp_path, fingerprint=None)
    lib.remove("bo")
    with pytest.raises(IncompatibleError, match="does not say which backbone"):
        import_bundle(lib, bundle, expected_fingerprint=FP)
    import_bundle(lib, bundle, expected_fingerprint=FP, force=True)


def test_not_a_zip(lib: Library, tmp_path: Path) -> None:
    fake = tmp_path / "fake.yoc.zip"
    fake.write_bytes(b"PK but not really")
    with pytest.raises(BundleError, match="not a yoc concept bundle"):
        import_bundle(lib, fake)


def _add(name: str, data: bytes = b"x", mode: int | None = None) -> Callable[[zipfile.ZipFile], None]:
    def add(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return add


@pytest.mark.parametrize("evil", [
    _add("../evil.txt"), _add("/etc/evil"), _add("photos/../../evil"), _add("photos\\..\\evil"),
    _add("C:/evil"), _add("link", b"/etc/passwd", stat.S_IFLNK | 0o777), _add("dir/")])
def test_path_escapes_and_links_refused(lib: Library, tmp_path: Path,
                                        evil: Callable[[zipfile.ZipFile], None]) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "evil.zip", lambda m, man: None, extra=evil)
    lib.remove("bo")
    with pytest.raises(BundleError, match="unsafe|symbolic link"):
        import_bundle(lib, bundle, expected_fingerprint=FP)
    assert lib.list_concepts() == [] and not (tmp_path / "evil.txt").exists()


def test_checksum_mismatch(lib: Library, tmp_path: Path) -> None:
    def tamper(members: dict[str, bytes], manifest: dict) -> None:
        name = next(n for n in members if n.startswith("photos/"))
        members[name] = members[name][:-1] + bytes([members[name][-1] ^ 1])

    bundle = rebuild(trained(lib, tmp_path), tmp_path / "t.zip", tamper, redigest=False)
    with pytest.raises(BundleError, match="checksum"):
        import_bundle(lib, bundle, name="x")


def test_photo_content_must_match_its_id(lib: Library, tmp_path: Path) -> None:
    def swap(members: dict[str, bytes], manifest: dict) -> None:
        a, b = sorted(n for n in members if n.startswith("photos/"))[:2]
        members[a], members[b] = members[b], members[a]

    with pytest.raises(BundleError, match="content id"):
        import_bundle(lib, rebuild(trained(lib, tmp_path), tmp_path / "s.zip", swap), name="x")


def test_photo_that_is_not_an_image(lib: Library, tmp_path: Path) -> None:
    def garbage(members: dict[str, bytes], manifest: dict) -> None:
        name = next(n for n in members if n.startswith("photos/"))
        members[name] = b"not a png at all"

    with pytest.raises(BundleError, match="not usable"):
        import_bundle(lib, rebuild(trained(lib, tmp_path), tmp_path / "g.zip", garbage), name="x")


def test_size_limits(lib: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = trained(lib, tmp_path)
    monkeypatch.setattr(bundlemod, "MAX_MEMBER_BYTES", 500)
    with pytest.raises(BundleError, match="larger than"):
        import_bundle(lib, bundle, name="x")
    monkeypatch.setattr(bundlemod, "MAX_MEMBER_BYTES", 100 * 2**20)
    monkeypatch.setattr(bundlemod, "MAX_TOTAL_BYTES", 2000)
    with pytest.raises(BundleError, match="larger than"):
        import_bundle(lib, bundle, name="x")
    assert [c.name for c in lib.list_concepts()] == ["bo"]


@pytest.mark.parametrize("mutate,message", [
    (lambda m, man: man.update(format="something-else"), "format"),
    (lambda m, man: man.pop("concept"), "concept"),
    (lambda m, man: man["concept"].update(name=42), "concept.name"),
    (lambda m, man: man["images"][0].update(role="owner"), "role"),
    (lambda m, man: man["backbone"].update(fingerprint="../../../evil"), "backbone.fingerprint"),
    (lambda m, man: man["images"][0].update(member="photos/other.png"), "member"),
    (lambda m, man: man.update(vectors=None), "vector file"),
    (lambda m, man: m.update({"notes.txt": b"extra"}), "unexpected members"),
])
def test_manifest_schema(lib: Library, tmp_path: Path, mutate: Callable, message: str) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "m.zip", mutate)
    with pytest.raises(BundleError, match=message):
        import_bundle(lib, bundle, name="x")


def test_unlisted_member(lib: Library, tmp_path: Path) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "u.zip", lambda m, man: None, extra=_add("extra.bin"))
    with pytest.raises(BundleError, match="do not match the manifest"):
        import_bundle(lib, bundle, name="x")


def test_newer_format_is_incompatible(lib: Library, tmp_path: Path) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "n.zip", lambda m, man: man.update(format_version=99))
    with pytest.raises(IncompatibleError, match="newer"):
        import_bundle(lib, bundle, name="x")


def test_manifest_and_vectors_must_agree_on_backbone(lib: Library, tmp_path: Path) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "b.zip",
                     lambda m, man: man["backbone"].update(fingerprint="1" * 64))
    with pytest.raises(BundleError, match="different backbones"):
        import_bundle(lib, bundle, name="x", expected_fingerprint="1" * 64)


def _header(obj: object) -> bytes:
    raw = json.dumps(obj).encode()
    return len(raw).to_bytes(8, "little") + raw


@pytest.mark.parametrize("blob,message", [
    (b"", "too short"),
    (b"\xff" * 8 + b"{}", "header length"),
    ((6).to_bytes(8, "little") + b"nojson", "damaged safetensors header"),
    (_header({"t": {"dtype": "F32", "shape": [9], "data_offsets": [0, 999]}}), "outside the file"),
    (_header({"__metadata__": {"n": 1}}), "metadata"),
])
def test_damaged_vector_file(lib: Library, tmp_path: Path, blob: bytes, message: str) -> None:
    bundle = rebuild(trained(lib, tmp_path), tmp_path / "v.zip",
                     lambda m, man: m.update({"vectors.safetensors": blob}))
    with pytest.raises(BundleError, match=message):
        import_bundle(lib, bundle, name="x")
