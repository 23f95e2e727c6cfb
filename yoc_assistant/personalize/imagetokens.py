"""VQ image tokens of library images, cached by image sha256 and backbone.

The cache key names the backbone by its fingerprint (vocabulary and hidden size)
plus a digest of its VQ encoder weights and image size, so two checkpoints that
share a vocabulary but encode images differently never share tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.personalize.tensorcache import TensorCache

if TYPE_CHECKING:
    from PIL import Image

KIND = "image_tokens"
MIRRORED = ":mirrored"  # key suffix: the image flipped left-right (an extra training photo)
SHIFTED = ":shifted"  # key suffix: a tighter crop of the image, resized back (a validation view)
SHIFT = 0.125  # share of each side the shifted view drops at the top-left


def mirrored(sha256: str) -> str:
    """The cache key of an image's mirror image."""
    return sha256 + MIRRORED


def shifted(sha256: str) -> str:
    """The cache key of a shifted view of an image: the same thing, never trained on as such,
    so that every photo can train and the views still check the checkpoints."""
    return sha256 + SHIFTED


def variant_loader(load: Callable[[str], Image.Image]) -> Callable[[str], Image.Image]:
    """Wrap an sha256 -> image loader so that `mirrored(sha)` / `shifted(sha)` keys load
    the flipped / shifted image."""

    def load_key(key: str) -> Image.Image:
        from PIL import ImageOps

        if key.endswith(MIRRORED):
            return ImageOps.mirror(load(key[: -len(MIRRORED)]))
        if key.endswith(SHIFTED):
            image = load(key[: -len(SHIFTED)])
            w, h = image.size
            box = (round(w * SHIFT), round(h * SHIFT), w, h)
            return image.crop(box).resize((w, h), 3)  # bicubic
        return load(key)

    return load_key


def vq_id(bb: Any) -> str:
    """The backbone's VQ id (`Backbone.vq_id()`): cached image tokens are keyed by it."""
    return bb.vq_id()


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
