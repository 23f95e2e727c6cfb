"""Concept bundles: one zip file holding a concept's metadata, vectors and photos.

Layout: `manifest.json`, `vectors.safetensors` (when trained), `photos/<sha256>.png`.
The manifest records the format version, the concept, the backbone it was made
for (id and fingerprint), and the sha256 and size of every other member.

A bundle comes from someone else, so import trusts nothing: member names (no
absolute paths, `..`, backslashes, symlinks), sizes (declared and actually
read), checksums, the manifest's schema, the photos (decoded and re-checked
like any photo) and the safetensors header (read without torch) are all
checked before anything is written. Then files first, rows in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yoc_assistant
from yoc_assistant.atomic import atomic_path, atomic_write_bytes
from yoc_assistant.errors import IncompatibleError, NotFoundError, UserInputError
from yoc_assistant.library import paths, upkeep, vectorfile
from yoc_assistant.library.core import Library
from yoc_assistant.library.ingest import ImageRejected, normalize_bytes
from yoc_assistant.library.models import (
    ABOUT_MAX,
    DISPLAY_NAME_MAX,
    ROLES,
    Concept,
    check_name,
    dumps,
    now,
)
from yoc_assistant.library.store import is_sha256
from yoc_assistant.library.vectorfile import VectorFileError

FORMAT = "yoc-concept-bundle"
FORMAT_VERSION = 1
SUFFIX = ".yoc.zip"
MANIFEST = "manifest.json"
VECTORS = "vectors.safetensors"
MAX_MEMBER_BYTES = 100 * 2**20
MAX_TOTAL_BYTES = 200 * 2**20
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_MEMBERS = 2000
MAX_SAFETENSORS_HEADER = 16 * 2**20
_HEX = re.compile(r"[0-9a-f]{8,128}")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class BundleError(UserInputError):
    """A bundle that is not valid; the message names the file and the problem."""


# --- safetensors header (no torch) ----------------------------------------------------


def safetensors_header(data: bytes, label: str = "vector file") -> dict[str, Any]:
    """Parse and check a safetensors header: 8-byte little-endian length, then JSON."""
    try:
        return vectorfile.split_header(data, label, MAX_SAFETENSORS_HEADER)[0]
    except VectorFileError as err:
        raise BundleError(str(err)) from None


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, read without torch."""
    try:
        header = vectorfile.read_header_of(Path(path), MAX_SAFETENSORS_HEADER)
    except VectorFileError as err:
        raise BundleError(str(err)) from None
    meta = header.get("__metadata__", {})
    return dict(meta) if isinstance(meta, dict) else {}


# --- export ------------------------------------------------------------------------------


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def default_bundle_path(name: str, folder: Path | None = None) -> Path:
    return (folder or Path.cwd()) / f"{name}{SUFFIX}"


def bundle_target(name: str, out: str | os.PathLike[str] | None = None) -> Path:
    """The file `export_bundle(lib, name, out)` writes: `out`, or `<name>.yoc.zip` in the
    folder `out` (default: the current folder)."""
    target = Path(out) if out is not None else default_bundle_path(name)
    return default_bundle_path(name, target) if target.is_dir() else target


def export_bundle(lib: Library, name: str, out: str | os.PathLike[str] | None = None) -> Path:
    """Write the concept to one bundle file (atomically) and return its path.

    `out` may be a file or an existing folder (the file is then `<name>.yoc.zip` in it).
    """
    concept = lib.require_concept(name)
    target = bundle_target(concept.name, out)
    members: dict[str, bytes] = {}
    images = []
    for rec in lib.concept_images(concept.name):
        if not rec.path.is_file():
            raise NotFoundError(f"photo {rec.sha256[:12]} of {concept.name!r} is missing from {rec.path}")
        member = f"photos/{rec.sha256}.png"
        members.setdefault(member, rec.path.read_bytes())
        images.append({"member": member, "sha256": rec.sha256, "role": rec.role, "note": rec.note,
                       "original_name": rec.original_name})
    meta: dict[str, str] = {}
    if concept.vectors_path is not None:
        if not concept.vectors_path.is_file():
            raise NotFoundError(f"the vector file of {concept.name!r} is missing: {concept.vectors_path}")
        try:
            vectorfile.check_concept_file(concept.vectors_path)
        except VectorFileError as err:
            raise UserInputError(f"{err}; retrain {concept.name!r} before exporting it "
                                 f"(`yoc train {concept.name}`)") from None
        # Where the backbone lies on this machine stays private: only its name and fingerprint travel.
        members[VECTORS] = vectorfile.without_metadata(concept.vectors_path.read_bytes(),
                                                       vectorfile.PRIVATE_METADATA, str(concept.vectors_path))
        meta = safetensors_header(members[VECTORS], str(concept.vectors_path)).get("__metadata__", {})
    total = sum(len(b) for b in members.values())
    if total > MAX_TOTAL_BYTES:
        raise UserInputError(f"{concept.name!r} is too large to export ({total // 2**20} MiB)")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "yoc_version": yoc_assistant.__version__,
        "created": now(),
        "concept": {"name": concept.name, "display_name": concept.display_name, "about": concept.about,
                    "status": concept.status, "metrics": concept.metrics, "quality": concept.quality,
                    "trained": concept.last_trained},
        # The backbone's name, not the local path it was loaded from (that stays private).
        "backbone": {"id": meta.get("backbone") or _public_backbone_id(concept.backbone),
                     "fingerprint": concept.backbone_fingerprint or meta.get("backbone_fingerprint")},
        "vectors": VECTORS if VECTORS in members else None,
        "vectors_metadata": meta,
        "images": images,
        "members": {m: _digest(b) for m, b in sorted(members.items())},
    }
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True), zipfile.ZIP_DEFLATED)
        for member, data in sorted(members.items()):
            zf.writestr(member, data)
    return target


def _public_backbone_id(stored: str | None) -> str | None:
    """A hub id ("org/model") as is; of a local path, only the folder's name."""
    if not stored:
        return None
    if _HUB_ID.fullmatch(stored) and not Path(stored).expanduser().exists():
        return stored
    return PurePosixPath(stored.replace("\\", "/")).name or None


# --- import: validation -----------------------------------------------------------------


@dataclass
class BundleContents:
    manifest: dict[str, Any]
    photos: dict[str, bytes]  # member -> PNG bytes
    vectors: bytes | None

    @property
    def concept(self) -> dict[str, Any]:
        return self.manifest["concept"]

    @property
    def fingerprint(self) -> str | None:
        return self.manifest["backbone"].get("fingerprint")


def _check_member_name(label: str, info: zipfile.ZipInfo) -> None:
    name = info.filename
    pure = PurePosixPath(name)
    bad = (not name or name.startswith("/") or "\\" in name or ":" in name or "\x00" in name
           or any(part in ("", ".", "..") for part in name.split("/")) or pure.is_absolute())
    if bad or info.is_dir():
        raise BundleError(f"{label}: unsafe or unexpected member name {name!r}")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BundleError(f"{label}: member {name!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise BundleError(f"{label}: member {name!r} is encrypted")


def _read_member(label: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    # Sizes in the header can lie: never read more than the limit.
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as err:
        raise BundleError(f"{label}: member {info.filename!r} cannot be read ({err})") from None
    if len(data) > limit:
        raise BundleError(f"{label}: member {info.filename!r} is larger than {limit // 2**20} MiB")
    return data


def _require(cond: bool, label: str, what: str) -> None:
    if not cond:
        raise BundleError(f"{label}: invalid manifest ({what})")


def _check_manifest(label: str, m: Any) -> None:
    _require(isinstance(m, dict), label, "not an object")
    _require(m.get("format") == FORMAT, label, f"format is not {FORMAT!r}")
    version = m.get("format_version")
    _require(isinstance(version, int) and not isinstance(version, bool), label, "format_version")
    if version > FORMAT_VERSION:
        raise IncompatibleError(f"{label}: bundle format {version} is newer than this yoc reads "
                                f"({FORMAT_VERSION}); upgrade yoc")
    c = m.get("concept")
    _require(isinstance(c, dict) and isinstance(c.get("name"), str), label, "concept.name")
    for key, most in (("display_name", DISPLAY_NAME_MAX), ("about", ABOUT_MAX)):
        value = c.get(key)
        _require(value is None or (isinstance(value, str) and len(value) <= most), label, f"concept.{key}")
    _require(c.get("metrics") is None or isinstance(c.get("metrics"), dict), label, "concept.metrics")
    _require(c.get("quality") is None or isinstance(c.get("quality"), dict), label, "concept.quality")
    _require(c.get("trained") is None or (isinstance(c.get("trained"), str) and len(c["trained"]) <= 40),
             label, "concept.trained")
    b = m.get("backbone")
    _require(isinstance(b, dict), label, "backbone")
    _require(b.get("id") is None or isinstance(b.get("id"), str), label, "backbone.id")
    fp = b.get("fingerprint")
    _require(fp is None or (isinstance(fp, str) and _HEX.fullmatch(fp) is not None), label, "backbone.fingerprint")
    _require(m.get("vectors") in (None, VECTORS), label, "vectors")
    members = m.get("members")
    _require(isinstance(members, dict), label, "members")
    for member, d in members.items():
        _require(isinstance(d, dict) and isinstance(d.get("sha256"), str) and isinstance(d.get("size"), int),
                 label, f"members[{member!r}]")
    images = m.get("images")
    _require(isinstance(images, list), label, "images")
    for item in images:
        _require(isinstance(item, dict) and isinstance(item.get("sha256"), str) and is_sha256(item["sha256"]),
                 label, "images[].sha256")
        _require(item.get("member") == f"photos/{item['sha256']}.png", label, "images[].member")
        _require(item.get("member") in members, label, f"images: {item.get('member')!r} not in members")
        _require(item.get("role") in ROLES, label, "images[].role")
        for key in ("note", "original_name"):
            _require(item.get(key) is None or isinstance(item.get(key), str), label, f"images[].{key}")


def read_bundle(file: str | os.PathLike[str]) -> BundleContents:
    """Open and fully validate a bundle; raises BundleError / IncompatibleError."""
    path = Path(file)
    label = str(path)
    if not path.is_file():
        raise NotFoundError(f"no bundle file at {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise BundleError(f"{label}: not a yoc concept bundle ({err})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"{label}: too many members ({len(infos)})")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise BundleError(f"{label}: duplicate member names")
        total = 0
        for info in infos:
            _check_member_name(label, info)
            if info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(f"{label}: member {info.filename!r} is larger than {MAX_MEMBER_BYTES // 2**20} MiB")
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"{label}: contents larger than {MAX_TOTAL_BYTES // 2**20} MiB")
        if MANIFEST not in names:
            raise BundleError(f"{label}: not a yoc concept bundle (no {MANIFEST})")
        manifest = vectorfile.parse_json(_read_member(label, zf, zf.getinfo(MANIFEST), MAX_MANIFEST_BYTES),
                                         f"{label}: {MANIFEST} is not valid JSON", BundleError)
        _check_manifest(label, manifest)
        listed = set(manifest["members"])
        present = set(names) - {MANIFEST}
        if listed != present:
            extra, missing = sorted(present - listed), sorted(listed - present)
            raise BundleError(f"{label}: members do not match the manifest "
                              f"(unlisted: {extra[:3]}, missing: {missing[:3]})")
        data: dict[str, bytes] = {}
        read_total = 0
        for member in sorted(listed):
            blob = _read_member(label, zf, zf.getinfo(member), MAX_MEMBER_BYTES)
            read_total += len(blob)
            if read_total > MAX_TOTAL_BYTES:
                raise BundleError(f"{label}: contents larger than {MAX_TOTAL_BYTES // 2**20} MiB")
            if _digest(blob) != {"sha256": manifest["members"][member]["sha256"],
                                 "size": manifest["members"][member]["size"]}:
                raise BundleError(f"{label}: member {member!r} does not match its checksum")
            data[member] = blob
    vectors = data.pop(VECTORS, None)
    if (vectors is None) != (manifest["vectors"] is None):
        raise BundleError(f"{label}: manifest and members disagree about the vector file")
    if vectors is not None:
        _check_vectors(label, manifest, vectors)
    photo_members = {i["member"] for i in manifest["images"]}
    if set(data) != photo_members:
        raise BundleError(f"{label}: unexpected members {sorted(set(data) - photo_members)[:3]}")
    return BundleContents(manifest=manifest, photos=data, vectors=vectors)


def _check_vectors(label: str, manifest: dict[str, Any], vectors: bytes) -> None:
    safetensors_header(vectors, f"{label}: {VECTORS}")  # the structural errors first
    try:
        # The whole file, as loading it would: two finite float32 tensors of the right shape.
        meta = vectorfile.check_concept_bytes(vectors, f"{label}: {VECTORS}")
    except VectorFileError as err:
        raise BundleError(str(err)) from None
    inner = meta.get("backbone_fingerprint")
    outer = manifest["backbone"].get("fingerprint")
    if inner and outer and inner != outer:
        raise BundleError(f"{label}: the vector file and the manifest name different backbones")
    if inner and not outer:
        if _HEX.fullmatch(inner) is None:
            raise BundleError(f"{label}: the vector file's backbone fingerprint is not valid")
        manifest["backbone"]["fingerprint"] = inner


def check_compatible(contents: BundleContents, label: str, expected_fingerprint: str | None,
                     force: bool) -> None:
    """Refuse vectors made for another backbone (or for an unknown one) unless forced."""
    if contents.vectors is None or force or expected_fingerprint is None:
        return
    theirs = contents.fingerprint
    backbone_id = contents.manifest["backbone"].get("id") or "an unknown backbone"
    if theirs is None:
        raise IncompatibleError(f"{label}: the bundle does not say which backbone its vectors are for; "
                                "pass --force to import it anyway")
    if theirs != expected_fingerprint:
        raise IncompatibleError(
            f"{label}: this concept was trained for {backbone_id} (fingerprint {theirs[:12]}), not for the "
            f"configured backbone (fingerprint {expected_fingerprint[:12]}). Pass --force to import it "
            "anyway (it will need retraining: `yoc train NAME`)."
        )


# --- import: writing ---------------------------------------------------------------------


def import_bundle(lib: Library, file: str | os.PathLike[str], *, name: str | None = None, force: bool = False,
                  expected_fingerprint: str | Callable[[], str | None] | None = None) -> Concept:
    """Validate a bundle and add its concept to the library; returns the new concept.

    `expected_fingerprint` may be a function: it is called only once the name is known
    to be free and the vectors need comparing (knowing it can mean importing torch)."""
    label = str(file)
    contents = read_bundle(file)
    target = name or contents.concept["name"]
    try:
        check_name(target)
    except UserInputError as err:
        raise BundleError(f"{label}: {err}; import it under another name with --name NEW") from None
    _refuse_clash(lib, target)
    if callable(expected_fingerprint):
        needed = contents.vectors is not None and not force
        expected_fingerprint = expected_fingerprint() if needed else None
    check_compatible(contents, label, expected_fingerprint, force)
    photos = _decode_photos(label, contents)
    uid = uuid.uuid4().hex
    vectors_path = None
    if contents.vectors is not None:
        stem = f"vectors-{contents.fingerprint[:12]}" if contents.fingerprint else "vectors"
        vectors_path = paths.concepts_dir(lib.home) / uid / f"{stem}.safetensors"
        atomic_write_bytes(vectors_path, contents.vectors)
    with lib.transaction():
        _refuse_clash(lib, target)
        _insert(lib, contents, target, uid, vectors_path, photos)
    return lib.require_concept(target)


def _refuse_clash(lib: Library, target: str) -> None:
    existing = lib.get_concept(target)
    if existing is not None:
        raise UserInputError(f"a concept named {existing.name!r} already exists; import this one under "
                             "another name with --name NEW")


def _decode_photos(label: str, contents: BundleContents) -> dict[str, tuple[bytes, int, int]]:
    out: dict[str, tuple[bytes, int, int]] = {}
    for item in contents.manifest["images"]:
        sha = item["sha256"]
        if sha in out:
            continue
        member = item["member"]
        try:
            norm = normalize_bytes(contents.photos[member], Path(member))
        except ImageRejected as err:
            raise BundleError(f"{label}: photo {member!r} is not usable ({err.reason})") from None
        if norm.sha256 != sha:
            raise BundleError(f"{label}: photo {member!r} does not match its content id")
        # Re-encoded exactly as ingest stores a photo added directly: whatever else the sender's
        # file carried (private chunks, GPS text) stays out of the store.
        out[sha] = (norm.png_bytes(), norm.image.width, norm.image.height)
    return out


def _insert(lib: Library, contents: BundleContents, target: str, uid: str, vectors_path: Path | None,
            photos: dict[str, tuple[bytes, int, int]]) -> None:
    c = contents.concept
    stamp = now()
    status = "ready" if vectors_path is not None else "new"
    lib.db["concepts"].insert({
        "uid": uid, "name": target, "display_name": c.get("display_name"), "about": c.get("about"),
        "backbone": contents.manifest["backbone"].get("id"),
        "backbone_fingerprint": contents.fingerprint, "status": status,
        "vectors_path": lib._rel(vectors_path) if vectors_path is not None else None,
        "metrics": dumps(c.get("metrics")), "created": stamp, "updated": stamp,
        "quality": dumps(c.get("quality")),
        # Trained where it was made: when, if the bundle says, else no later than the export.
        "trained": (c.get("trained") or contents.manifest.get("created")) if vectors_path else None,
    })
    concept_id = lib.require_concept(target).id
    _link_photos(lib, contents, concept_id, photos, stamp)
    upkeep.write_record(lib, concept_id)


def _link_photos(lib: Library, contents: BundleContents, concept_id: int,
                 photos: dict[str, tuple[bytes, int, int]], stamp: str) -> None:
    for item in contents.manifest["images"]:
        sha = item["sha256"]
        png, width, height = photos[sha]
        lib.store.put(sha, png)  # under the write lock, so no concurrent delete can race it
        lib._insert_image_row(sha, width, height, "PNG", item.get("original_name"))
        lib.db.execute(
            "INSERT OR IGNORE INTO concept_images (concept_id, sha256, role, note, added) VALUES (?, ?, ?, ?, ?)",
            [concept_id, sha, item["role"], item.get("note"), stamp])
