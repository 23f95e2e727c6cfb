"""Concept vector files read without torch: the safetensors header, and the checks a
file must pass before the library calls a concept `ready` (import, `concepts list`).

A concept file (written by `personalize.concept.ConceptVectors.save`) is safetensors
with two float32 tensors, `input_rows` and `output_rows`, both
`[1 + sum(group sizes), hidden]`, finite, optionally `reference` (int64 image-token ids
of the photo its prompt shows, 1-D) and `photos` (int64 image-token ids of its training
photos, `[photos, tokens]`, asked by the photo witness), and metadata `format = yoc-concept`
naming its groups and hidden size. Anything else (another tensor, a 200k-entry header, NaN
rows, a wrong shape or dtype) is refused here with a short message, so no later
command trips over it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from yoc_assistant.errors import UserInputError, short

CONCEPT_FORMAT = "yoc-concept"
TENSORS = ("input_rows", "output_rows")
REFERENCE = "reference"  # optional: the reference photo's image-token ids (int64, 1-D)
MAX_REFERENCE = 1 << 16
PHOTOS = "photos"  # optional: the training photos' image-token ids (int64, [photos, tokens])
MAX_PHOTOS = 64
# A concept file's header holds two tensors and a few metadata strings: far below this.
MAX_HEADER_BYTES = 1 * 2**20
MAX_FILE_BYTES = 512 * 2**20  # 1 + 4096 rows of 32k hidden, float32, twice: more than any backbone
MAX_ROWS = 1 + 8 * 4096
# Every metadata key the library keeps private when a concept leaves the machine.
PRIVATE_METADATA = ("backbone_source",)


class VectorFileError(UserInputError):
    """A vector file that cannot be used; the message names the file and the problem."""


def parse_json(raw: bytes | str, what: str, error: type[UserInputError] | None = None) -> Any:
    """json.loads that turns every failure (bad text, absurd nesting) into one clear error
    (`error`, default VectorFileError) whose message starts with `what`."""
    kind = error or VectorFileError
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise kind(f"{what} ({short(err)})") from None
    except RecursionError:
        raise kind(f"{what} (nested too deeply)") from None


def split_header(data: bytes, label: str, max_header: int = MAX_HEADER_BYTES) -> tuple[dict[str, Any], int]:
    """(header, offset of the data section) of safetensors bytes; checks every tensor's
    offsets stay inside the file."""
    if len(data) < 8:
        raise VectorFileError(f"{label}: not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > max_header or 8 + length > len(data):
        raise VectorFileError(f"{label}: not a safetensors file (header length {length})")
    header = parse_json(data[8:8 + length], f"{label}: damaged safetensors header")
    if not isinstance(header, dict):
        raise VectorFileError(f"{label}: damaged safetensors header (not an object)")
    body = len(data) - 8 - length
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise VectorFileError(f"{label}: metadata must map names to strings")
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            raise VectorFileError(f"{label}: tensor {short(key, 60)!r} points outside the file")
    return header, 8 + length


def read_header_of(path: Path, max_header: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    """The header of a safetensors file on disk (reads only the header)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise VectorFileError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > max_header:
            raise VectorFileError(f"{path}: not a safetensors file (header length {length})")
        raw = fh.read(length)
    header = parse_json(raw, f"{path}: damaged safetensors header")
    if not isinstance(header, dict):
        raise VectorFileError(f"{path}: damaged safetensors header (not an object)")
    return header


def _groups(meta: dict[str, str], label: str) -> dict[str, int]:
    groups = parse_json(meta.get("groups", ""), f"{label}: metadata 'groups' is damaged")
    if not isinstance(groups, list) or not groups:
        raise VectorFileError(f"{label}: metadata 'groups' must list [name, size] pairs")
    out: dict[str, int] = {}
    for item in groups:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], int) or isinstance(item[1], bool) or not 1 <= item[1] <= 4096):
            raise VectorFileError(f"{label}: metadata 'groups' has an invalid entry {short(item, 60)!r}")
        out[item[0]] = item[1]
    return out


def check_concept_bytes(data: bytes, label: str) -> dict[str, str]:
    """Validate a whole concept file held in memory; returns its metadata."""
    if len(data) > MAX_FILE_BYTES:
        raise VectorFileError(f"{label}: larger than any concept file ({len(data) // 2**20} MiB)")
    header, start = split_header(data, label)
    meta = dict(header.pop("__metadata__", {}) or {})
    if meta.get("format") != CONCEPT_FORMAT:
        raise VectorFileError(f"{label}: not a yoc concept file (format {short(meta.get('format'), 40)!r})")
    if set(header) - {REFERENCE, PHOTOS} != set(TENSORS):
        found = sorted(header)[:4]
        raise VectorFileError(f"{label}: a concept file holds exactly the tensors input_rows and "
                              f"output_rows, and an optional reference and photos "
                              f"(found {len(header)}: {short(found, 120)})")
    groups = _groups(meta, label)
    rows = 1 + sum(groups.values())
    try:
        hidden = int(meta.get("hidden_size", ""))
    except ValueError:
        raise VectorFileError(f"{label}: metadata 'hidden_size' is not a number") from None
    if rows > MAX_ROWS or not 1 <= hidden <= 65536:
        raise VectorFileError(f"{label}: implausible size ({rows} rows of width {hidden})")
    end = 0
    for name in TENSORS:
        entry = header[name]
        if entry.get("dtype") != "F32":
            raise VectorFileError(f"{label}: {name} is {short(entry.get('dtype'), 20)}, not float32 (F32)")
        if entry.get("shape") != [rows, hidden]:
            raise VectorFileError(f"{label}: {name} has shape {short(entry.get('shape'), 40)}; "
                                  f"groups {groups} of width {hidden} need [{rows}, {hidden}]")
        first, last = entry["data_offsets"]
        if last - first != rows * hidden * 4:
            raise VectorFileError(f"{label}: {name} has {last - first} bytes of data, not {rows * hidden * 4}")
        end = max(end, last)
    if REFERENCE in header:
        entry = header[REFERENCE]
        shape = entry.get("shape")
        if (entry.get("dtype") != "I64" or not isinstance(shape, list) or len(shape) != 1
                or not isinstance(shape[0], int) or not 1 <= shape[0] <= MAX_REFERENCE):
            raise VectorFileError(f"{label}: its reference photo is not a list of token ids "
                                  f"({short(entry.get('dtype'), 20)} {short(shape, 40)})")
        first, last = entry["data_offsets"]
        if last - first != shape[0] * 8:
            raise VectorFileError(f"{label}: reference has {last - first} bytes of data, not {shape[0] * 8}")
        end = max(end, last)
    if PHOTOS in header:
        entry = header[PHOTOS]
        shape = entry.get("shape")
        if (entry.get("dtype") != "I64" or not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(n, int) for n in shape)
                or not (1 <= shape[0] <= MAX_PHOTOS and 1 <= shape[1] <= MAX_REFERENCE)):
            raise VectorFileError(f"{label}: its witness photos are not rows of token ids "
                                  f"({short(entry.get('dtype'), 20)} {short(shape, 40)})")
        first, last = entry["data_offsets"]
        if last - first != shape[0] * shape[1] * 8:
            raise VectorFileError(f"{label}: photos have {last - first} bytes of data, "
                                  f"not {shape[0] * shape[1] * 8}")
        end = max(end, last)
    if start + end != len(data):
        raise VectorFileError(f"{label}: {len(data) - start - end} bytes more than its tensors")
    _check_finite(data, start, header, label)
    return meta


def _check_finite(data: bytes, start: int, header: dict[str, Any], label: str) -> None:
    import numpy as np

    for name in TENSORS:
        first, last = header[name]["data_offsets"]
        values = np.frombuffer(data, dtype="<f4", count=(last - first) // 4, offset=start + first)
        if not bool(np.isfinite(values).all()):
            raise VectorFileError(f"{label}: {name} holds NaN or infinite values")


def check_concept_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Validate a concept file on disk (missing, truncated, invalid: VectorFileError)."""
    target = Path(path)
    try:
        size = target.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VectorFileError(f"{target}: larger than any concept file ({size // 2**20} MiB)")
        data = target.read_bytes()
    except FileNotFoundError:
        raise VectorFileError(f"{target}: the vector file is missing") from None
    except OSError as err:
        raise VectorFileError(f"{target}: cannot be read ({short(err.strerror or err)})") from None
    return check_concept_bytes(data, str(target))


def problem_of(path: Path | None) -> str | None:
    """Why the vector file at `path` cannot be used, or None when it is fine."""
    if path is None:
        return None
    try:
        check_concept_file(path)
    except VectorFileError as err:
        return str(err)
    return None


def without_metadata(data: bytes, keys: tuple[str, ...], label: str) -> bytes:
    """The same safetensors bytes with metadata `keys` dropped (tensors untouched)."""
    header, start = split_header(data, label)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not any(k in meta for k in keys):
        return data
    header["__metadata__"] = {k: v for k, v in meta.items() if k not in keys}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section stays 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw + data[start:]
