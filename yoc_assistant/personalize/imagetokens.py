"""VQ image tokens of library images, cached by image sha256 and backbone.

The cache key names the backbone by its fingerprint (vocabulary and hidden size)
plus a digest of its VQ encoder weights and image size, so two checkpoints that
share a vocabulary but encode images differently never share tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.personalize.tensorcache import TensorCache

if TYPE_CHECKING:
    from PIL import Image

KIND = "image_tokens"
MIRRORED = ":mirrored"  # key suffix: the image flipped left-right (an extra training photo)


def mirrored(sha256: str) -> str:
    """The cache key of an image's mirror image."""
    return sha256 + MIRRORED


def variant_loader(load: Callable[[str], Image.Image]) -> Callable[[str], Image.Image]:
    """Wrap an sha256 -> image loader so that `mirrored(sha)` keys load the flipped image."""

    def load_key(key: str) -> Image.Image:
        from PIL import ImageOps

        if key.endswith(MIRRORED):
            return ImageOps.mirror(load(key[: -len(MIRRORED)]))
        return load(key)

    return load_key


def vq_id(bb: Any) -> str:
    """Digest of the VQ encoder (weights, dtype) and image size; computed once per backbone."""
    cached = getattr(bb, "_yoc_vq_id", None)
    if cached:
        return cached
    digest = hashlib.sha256(f"size={bb.image_size};seq={bb.image_seq_length}".encode())
    vq = getattr(getattr(bb.model, "model", bb.model), "vqmodel", None)
    if vq is not None:
        for name, tensor in sorted(vq.state_dict().items()):
            if ".decoder." in f".{name}":
                continue  # decoding does not change the tokens
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            try:
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            except (RuntimeError, TypeError):  # an exotic (quantized) dtype: its values will do
                digest.update(repr(flat.float().sum().item()).encode())
    value = f"{bb.fingerprint[:16]}-vq{digest.hexdigest()[:16]}"
    try:
        bb._yoc_vq_id = value
    except AttributeError:
        pass
    return value


def cached_image_tokens(library: Any, bb: Any, sha256s: Sequence[str], *,
                        load_image: Callable[[str], Image.Image] | None = None,
                        batch_size: int = 8,
                        on_progress: Callable[[int, int], None] | None = None,
                        ) -> dict[str, list[int]]:
    from yoc_assistant.personalize.retrieval import library_loader

    load = variant_loader(load_image or library_loader(library))
    cache = TensorCache(library, KIND, vq_id(bb))

    def compute(batch: list[str]) -> dict[str, torch.Tensor]:
        ids = bb.encode_images([load(sha) for sha in batch])
        return {sha: row.to(torch.int32) for sha, row in zip(batch, ids, strict=True)}

    found = cache.get_or_compute(list(sha256s), compute, batch_size=batch_size,
                                 on_progress=on_progress)
    return {sha: [int(t) for t in found[sha].tolist()] for sha in sha256s}
