"""Text <-> ids, and Anole's turn format (spec §9): BOS + parts + end-of-turn separator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from PIL import Image

    from yoc_assistant.backbone.core import Backbone


def tokenize(bb: Backbone, text: str, bos: bool = False) -> list[int]:
    """Token ids of `text`; no special tokens are added except BOS when asked."""
    if not isinstance(text, str):
        raise UserInputError(f"text to tokenize must be a string, not {type(text).__name__}")
    ids = list(bb.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
    return [bb.special.bos, *ids] if bos else ids


def detokenize(bb: Backbone, ids: Sequence[int] | torch.Tensor) -> str:
    """Text of `ids`, leaving out special tokens, image tokens and extra (concept) ids."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    keep = [int(i) for i in ids if 0 <= int(i) < bb.vocab_size]
    image = bb.image_vocab.is_image(keep).tolist() if keep else []
    keep = [i for i, img in zip(keep, image, strict=True) if not img]
    return bb.tokenizer.decode(keep, skip_special_tokens=True)


def _is_image(part: Any) -> bool:
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(part, PILImage.Image)


def _part_ids(bb: Backbone, part: Any, index: int) -> list[int]:
    if isinstance(part, str):
        return tokenize(bb, part)
    if _is_image(part):
        from yoc_assistant.backbone.imaging import encode_images

        image_ids = encode_images(bb, [part])[0].tolist()
        return [bb.special.boi, *image_ids, bb.special.eoi]
    if isinstance(part, torch.Tensor):
        part = part.reshape(-1).tolist()
    if isinstance(part, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in part):
        bad = [i for i in part if i < 0]
        if bad:
            raise UserInputError(f"prompt part {index}: negative token id {bad[0]}")
        return list(part)
    raise UserInputError(
        f"prompt part {index} is a {type(part).__name__}: expected text, a list of token ids or a PIL image"
    )


def prompt_ids(bb: Backbone, parts: Sequence[str | Sequence[int] | Image.Image],
               end_turn: bool = True) -> list[int]:
    """BOS, each part (text tokenized, id lists as they are, images as BOI + ids + EOI), then SEP."""
    if isinstance(parts, str) or _is_image(parts):
        parts = [parts]  # type: ignore[list-item]
    ids = [bb.special.bos]
    for index, part in enumerate(parts):
        ids.extend(_part_ids(bb, part, index))
    if end_turn:
        ids.append(bb.special.sep)
    return ids
