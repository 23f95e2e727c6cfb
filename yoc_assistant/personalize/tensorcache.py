"""A cache of per-image tensors (CLIP embeddings, VQ image tokens) keyed by image sha256.

Layout: each batch of newly computed tensors is written as ONE safetensors shard
(`<cache_dir>/<kind>/<model-hash>/<shard>.safetensors`, tensor name = image sha256),
then one library cache row per image `(kind, sha256, model) -> shard path` is added.
Shards are never rewritten, so adding 100 images to a pool of 10,000 writes 100
tensors, not 10,100, and a kill mid-batch leaves at most an orphan shard file
(the rows come after the file). A missing or unreadable shard counts as a miss:
the tensors are recomputed.

The index is anything with `cache_get(kind, key, model) -> str | None` and
`cache_put(kind, key, model, path)` (the library's `Library`); the batch forms
`cache_get_many(kind, keys, model) -> {key: path}` and
`cache_put_many(kind, {key: path}, model)` are used when it has them (one query /
one transaction for a whole pool instead of one per image).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from yoc_assistant.atomic import atomic_path


class CacheIndex(Protocol):
    def cache_get(self, kind: str, key: str, model: str) -> str | None: ...

    def cache_put(self, kind: str, key: str, model: str, path: str) -> None: ...


def _short(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def default_cache_dir(index: object = None) -> Path:
    """The library's cache folder (the index's own library when it has a `home`)."""
    from yoc_assistant.library import paths

    home = getattr(index, "home", None)
    return paths.cache_dir(Path(home)) if home is not None else paths.cache_dir()


class TensorCache:
    """Tensors of one `kind` made by one `model` (a CLIP id, a backbone fingerprint)."""

    def __init__(self, index: CacheIndex, kind: str, model: str,
                 root: Path | None = None) -> None:
        self.index = index
        self.kind = kind
        self.model = model
        self.folder = (root or default_cache_dir(index)) / kind / _short(model)

    def _paths(self, keys: Sequence[str]) -> dict[str, str]:
        many = getattr(self.index, "cache_get_many", None)
        if many is not None:
            found = many(self.kind, list(keys), self.model)
            return {k: str(v) for k, v in found.items() if v}
        out: dict[str, str] = {}
        for key in keys:
            path = self.index.cache_get(self.kind, key, self.model)
            if path:
                out[key] = str(path)
        return out

    def get_many(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The cached tensors among `keys` (missing or unreadable ones are left out)."""
        by_shard: dict[str, list[str]] = {}
        for key, path in self._paths(list(dict.fromkeys(keys))).items():
            by_shard.setdefault(path, []).append(key)
        out: dict[str, torch.Tensor] = {}
        for path, shard_keys in by_shard.items():
            out.update(_read_shard(Path(path), shard_keys))
        return out

    def put_many(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write one shard, then the index rows (file first: a row never points at nothing)."""
        if not tensors:
            return
        path = self.folder / f"{uuid.uuid4().hex}.safetensors"
        data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(data, str(tmp), metadata={"kind": self.kind, "model": self.model})
        many = getattr(self.index, "cache_put_many", None)
        if many is not None:
            many(self.kind, dict.fromkeys(data, str(path)), self.model)
            return
        for key in data:
            self.index.cache_put(self.kind, key, self.model, str(path))

    def get_or_compute(self, keys: Sequence[str],
                       compute: Callable[[list[str]], dict[str, torch.Tensor]],
                       batch_size: int = 256,
                       on_progress: Callable[[int, int], None] | None = None,
                       ) -> dict[str, torch.Tensor]:
        """Cached tensors for all `keys`; the missing ones are computed in batches and cached."""
        out = self.get_many(keys)
        missing = [k for k in dict.fromkeys(keys) if k not in out]
        done = 0
        for batch in _batches(missing, batch_size):
            fresh = compute(batch)
            self.put_many(fresh)
            out.update(fresh)
            done += len(batch)
            if on_progress is not None:
                on_progress(done, len(missing))
        return out


def _read_shard(path: Path, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            names = set(fh.keys())
            for key in keys:
                if key in names:
                    out[key] = fh.get_tensor(key)
    except Exception:  # a damaged or vanished shard is a miss: the tensors get recomputed
        return {}
    return out


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


class MemoryIndex:
    """A cache index kept in memory: for callers without a library (one-off evaluation)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], str] = {}

    def cache_get(self, kind: str, key: str, model: str) -> str | None:
        return self.rows.get((kind, key, model))

    def cache_put(self, kind: str, key: str, model: str, path: str) -> None:
        self.rows[(kind, key, model)] = path
