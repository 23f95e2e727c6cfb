"""Words the frozen backbone uses for what a concept's photos show: where its rows start.

A concept's prompt `<name> is <g1..gk><u1..uh>.` reads like a definition. Starting
the last rows of each group at the words the backbone itself says about the photos
(the words most of its answers to "What does it look like?" share) starts training
from a description instead of from blank rows. docs/toyworld.md measures it (`full`
vs `blank-init`): +0.05 to +0.11 recognition on early toy backbones, none on the
shipped one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# About the thing, not the scene: captions ("a small dotted orange star on sand") also
# name the size and the background, which change from photo to photo and are not what
# the concept is. On the toy backbone, rows started from "it is a orange star striped"
# recognized the star 0.875 after training, from "a small orange star on striped" 0.81.
DESCRIBE_PROMPT = "What does it look like?"
MAX_WORDS = 16  # one group's worth


def description_ids(bb: Any, image: Sequence[int], *, max_new_tokens: int = 40) -> list[int]:
    """The backbone's greedy answer to DESCRIBE_PROMPT about one photo (image-token ids)."""
    from yoc_assistant.personalize.data import image_block

    prompt = bb.prompt_ids([image_block(bb, image), DESCRIBE_PROMPT])
    out = bb.generate_text(prompt, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    return [int(t) for t in out.ids]


def _is_word(bb: Any, token: int) -> bool:
    if token >= int(bb.vocab_size) or token in bb.special.ids() or bool(bb.image_vocab.is_image([token])[0]):
        return False
    return any(ch.isalnum() for ch in bb.detokenize([token]))


def shared_words(captions: Sequence[Sequence[int]], min_share: float = 0.5,
                 limit: int = MAX_WORDS) -> list[int]:
    """Tokens found in at least `min_share` of the captions, each once, in the order the
    first captions use them; at most `limit`."""
    if not captions:
        return []
    need = max(1, math.ceil(min_share * len(captions)))
    counts: dict[int, int] = {}
    for caption in captions:
        for token in set(caption):
            counts[token] = counts.get(token, 0) + 1
    out: list[int] = []
    for caption in captions:
        for token in caption:
            if counts[token] >= need and token not in out:
                out.append(token)
    return out[:limit]


def photo_words(bb: Any, images: Sequence[Sequence[int]], *, max_new_tokens: int = 40) -> list[int]:
    """Word tokens most captions of `images` share (see `shared_words`); [] if none."""
    captions = [[t for t in description_ids(bb, im, max_new_tokens=max_new_tokens) if _is_word(bb, t)]
                for im in images]
    return shared_words(captions)
