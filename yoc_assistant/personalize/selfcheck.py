"""Self-check: draw a few candidates for each picture and keep the one the concept itself
recognizes best.

A concept's understanding side is much stronger than its drawing side on a small
backbone (docs/toyworld.md, "Self-check"): the trained concept tells its own instance
from the same named thing with another accent most of the time, yet draws it rarely. So
a picture of `<bo>` is drawn as `candidates` samples (seeds `seed + i*k .. seed + i*k + k-1`
for picture i), each is asked "Is <bo> in this photo?" exactly as `yoc ask` asks it
(`evaluate.forced_recognition_prompt`: one forward pass, no sampling; plus the photo
witness's margin where the checkpoint uses one, `witness.py`), and the one with the
largest yes-over-no margin is kept (for several concepts in one request, the smallest
margin of them counts: every one must be there). The kept picture's seed redraws it alone
(`--candidates 1 --seed S`). This is DALL-E's reranking with the concept as its own judge;
the judge that scores the figures (the toy instance judge, DINOv2) never picks.

The default number of candidates is the checkpoint's (`yoc_draw_candidates` in its
config.json, measured on the toy backbone), else 1: every entry point that draws (`yoc
draw`, `yoc ask`, the chat app, the demo, `yoc eval`) reads it through `default_candidates`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize import data
from yoc_assistant.personalize import phrasings as P
from yoc_assistant.settings import MAX_DRAW_CANDIDATES

# ids [k, L] of k candidate pictures -> their scores [k] (higher: more like the concept)
CheckFn = Callable[[torch.Tensor], torch.Tensor]


def default_candidates(bb: Any) -> int:
    """The checkpoint's recommended candidates per picture (config.json
    `yoc_draw_candidates`), else 1."""
    from yoc_assistant.backbone.loading import draw_candidates_of

    folder = getattr(bb, "checkpoint_dir", None)
    return 1 if folder is None else draw_candidates_of(folder)


def check_candidates(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DRAW_CANDIDATES:
        raise UserInputError(f"candidates must be a whole number from 1 to {MAX_DRAW_CANDIDATES}, got {value!r}")
    return value


@torch.no_grad()
def yes_margins(bb: Any, prompts: Sequence[Sequence[int]], extra: Any) -> torch.Tensor:
    """logit(first token of Yes) - logit(first token of No) after each prompt [N]."""
    from yoc_assistant.personalize.evaluate import _last_logits

    yes, no = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    if yes == no:
        raise UserInputError("this backbone's tokenizer gives 'Yes' and 'No' the same first token, "
                             "so a concept cannot check its pictures: draw with candidates 1")
    logits = _last_logits(bb, prompts, extra)
    return logits[:, yes] - logits[:, no]


def checkable(concepts: Any, names: Sequence[str]) -> list[str]:
    """The names among `names` whose concept is loaded and can be asked about a photo (it
    has the understanding group: a concept trained without the text modality has none)."""
    from yoc_assistant.personalize.evaluate import UNDERSTANDING

    if concepts is None:
        return []
    return [n for n in names if n in concepts.names and UNDERSTANDING in concepts.get(n).groups]


def concept_check(bb: Any, concepts: Any, names: Sequence[str]) -> CheckFn:
    """Scores candidates by "Is <name> in this photo?" as `yoc ask` asks it; with several
    names, the smallest margin (all of them should be in the picture)."""
    from yoc_assistant.personalize.evaluate import forced_recognition_prompt
    from yoc_assistant.personalize.witness import recognition_margins

    names = list(names)
    if not names:
        raise ValueError("a concept check needs at least one concept name")

    def check(ids: torch.Tensor) -> torch.Tensor:
        per_name = []
        question = P.RECOGNITION_QUESTIONS[0]
        for name in names:
            rows = [row.tolist() for row in ids]
            prompts = [forced_recognition_prompt(bb, concepts, name, row, question) for row in rows]
            margins = yes_margins(bb, prompts, concepts.extra)
            witnessed = recognition_margins(bb, concepts, name, rows, question)
            per_name.append(margins if witnessed is None else margins + witnessed)
        return torch.stack(per_name).min(0).values

    return check


def effective_candidates(bb: Any, concepts: Any, names: Sequence[str], candidates: int | None = None) -> int:
    """The samples each picture of these concepts is drawn from: `candidates`, else the
    checkpoint's; 1 when none of them can be checked (`checkable`)."""
    if not checkable(concepts, names):
        return 1
    return check_candidates(default_candidates(bb) if candidates is None else candidates)


def draw_for_concepts(bb: Any, prompt_ids: Sequence[int], concepts: Any, names: Sequence[str], *, n: int,
                      candidates: int | None = None, **options: Any) -> Any:
    """`draw_checked` as every entry point calls it: the mentioned concepts that can be
    asked about a photo check the samples (`concept_check`), `candidates` None meaning the
    checkpoint's number; with none of them, plain samples. `options`: `generate_images`'."""
    names = checkable(concepts, names)
    k = effective_candidates(bb, concepts, names, candidates)
    check = concept_check(bb, concepts, names) if names else None
    extra = None if concepts is None else concepts.extra
    return draw_checked(bb, prompt_ids, n=n, candidates=k, check=check, extra=extra, **options)


def draw_checked(bb: Any, prompt_ids: Sequence[int], *, n: int, candidates: int, check: CheckFn | None,
                 seed: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                 prefix: Any = None, **options: Any) -> Any:
    """`n` pictures, each the best of `candidates` samples by `check` (GeneratedImages,
    `.seeds` the kept samples' seeds, `.passes` all samples' forward passes). With one
    candidate or no check: `bb.generate_images` as it is. `options`: `generate_images`'
    sampling options (extra, cfg_scale, temperature, decoding, ...)."""
    import secrets

    from yoc_assistant.backbone.core import GeneratedImages

    k = check_candidates(candidates)
    if k == 1 or check is None:
        return bb.generate_images(prompt_ids, n=n, seed=seed, on_progress=on_progress, prefix=prefix, **options)
    if not isinstance(n, int) or n < 1:
        raise UserInputError(f"n (number of images) must be a positive integer, got {n!r}")
    base = secrets.randbits(31) if seed is None else int(seed)
    kept, seeds, passes, decoding = [], [], 0, "sequential"
    for i in range(n):
        def progress(done: int, total: int, i: int = i) -> None:
            if on_progress is not None:
                on_progress(i * total + done, n * total)

        # The router's pass is continued once: its cache goes to the first batch.
        drawn = bb.generate_images(prompt_ids, n=k, seed=base + i * k, on_progress=progress,
                                   prefix=prefix if i == 0 else None, decode=False, **options)
        best = int(torch.argmax(check(drawn.ids)))
        kept.append(drawn.ids[best])
        seeds.append(drawn.seeds[best])
        passes += drawn.passes
        decoding = drawn.decoding
    ids = torch.stack(kept)
    return GeneratedImages(ids=ids, images=bb.decode_images(ids), seeds=seeds, decoding=decoding, passes=passes)
