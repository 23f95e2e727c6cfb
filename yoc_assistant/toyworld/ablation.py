"""Personalization quality on the toy world, and the paper's ablation in miniature.

The example concept (the dotted orange star of `concepts/sunny`, a combination the
backbone never saw in pretraining) is trained with yoc's own data builders and
trainer (`personalize.data`, `personalize.trainer`) in several variants, then
measured on held-out scenes generated here:

* recognition: "Is <sunny> in this photo?" on new photos of it (positives) and on
  lookalikes one attribute away plus unrelated scenes (negatives); weighted
  accuracy = mean of the two sides (the paper's metric; untrained ~0.5);
* CLIP-I: mean CLIP cosine between generated pictures and held-out real photos;
* drawn right: the share of generated pictures the toy CLIP names as the concept's
  thing (zero-shot over all 144 things; its accuracy on real photos is reported too).

Variants: `no-concept` (fresh, untrained tokens), `text-prompt` (no tokens; the
concept described in words, the paper's "Chameleon + text prompt"), `caption-init`
(rows started from the words the backbone's descriptions of the photos share, untrained),
`shared-prompt` (one soft prompt, no self-prompting targets), `photos-only`
(self-prompting, no soft positives), `blank-init` (the full recipe from blank rows, as
the paper starts), `full` (self-prompting + soft positives from caption-started rows:
what `yoc train` does).

    python -m yoc_assistant.toyworld.ablation                 # the table in docs/toyworld.md
    python -m yoc_assistant.toyworld.ablation --quick --min-recognition 0.8   # CI check
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ImageOps

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, set_threads
from yoc_assistant.toyworld.make_concept import EXAMPLE_NAME, about_text

VARIANTS = ("no-concept", "text-prompt", "caption-init", "shared-prompt", "photos-only", "blank-init", "full")
TRAINED = ("shared-prompt", "photos-only", "blank-init", "full")


@dataclass
class Bench:
    """Everything a variant is trained and measured on (image-token lists and PIL images)."""

    thing: world.Thing
    photos: list[list[int]]
    mirrored: list[list[int]]  # the photos flipped left-right (yoc train's default extra positives)
    words: list[int]  # what the backbone says the photos show (yoc train's default row start)
    soft: list[list[int]]
    hard: list[list[int]]
    easy: list[list[int]]
    test_pos: list[list[int]]
    test_neg: list[list[int]]
    real: list[Any]  # held-out photos (PIL) for CLIP-I
    real_emb: torch.Tensor
    text_emb: torch.Tensor  # CLIP text embeddings of every thing, for "drawn right"
    notes: list[str] = field(default_factory=list)


def _tokens(bb: Any, scenes: list[world.Scene]) -> list[list[int]]:
    if not scenes:
        return []
    return [row.tolist() for row in bb.encode_images([world.render(s) for s in scenes])]


def make_bench(bb: Any, clip: Any, *, n_test: int, n_pool: int, n_soft: int, n_neg: int,
               seed: int) -> Bench:
    from yoc_assistant.personalize.describe import photo_words
    from yoc_assistant.personalize.retrieval import rank_pool

    thing = world.EXAMPLE_THING
    rng = np.random.default_rng([seed, 41])
    photos = world.photos_of(thing, 5, seed=1)  # the photos in concepts/sunny
    test_pos = world.photos_of(thing, n_test, seed=1001 + seed)
    near = world.lookalikes(thing, 1)
    test_neg = [world.random_scene(rng, near[int(rng.integers(len(near)))]) for _ in range(n_test // 2)]
    others = tuple(t for t in world.ALL_THINGS if t != thing)
    test_neg += [world.random_scene(rng, None, others) for _ in range(n_test - n_test // 2)]
    pool = world.random_scenes(n_pool, seed=77 + seed, pool=others)
    photo_emb = clip.embed_images([world.render(s) for s in photos])
    pool_emb = clip.embed_images([world.render(s) for s in pool])
    ranking = rank_pool(photo_emb, pool_emb, n_soft=n_soft, n_hard=n_neg, n_easy=n_neg, seed=seed)
    by_key = {str(i): s for i, s in enumerate(pool)}
    real = [world.render(s) for s in test_pos]
    texts = [f"a photo of a {t.describe()}" for t in world.ALL_THINGS]
    soft_things = [by_key[k].thing for k in ranking.soft_positives[:20]]
    notes = [f"top soft positives: {sum(t.distance(thing) <= 1 for t in soft_things)}/20 "
             "within one attribute of the concept"]
    photo_tokens = _tokens(bb, photos)
    return Bench(
        thing=thing, photos=photo_tokens,
        mirrored=[row.tolist() for row in bb.encode_images([ImageOps.mirror(world.render(s)) for s in photos])],
        words=photo_words(bb, photo_tokens),
        soft=_tokens(bb, [by_key[k] for k in ranking.soft_positives]),
        hard=_tokens(bb, [by_key[k] for k in ranking.hard_negatives]),
        easy=_tokens(bb, [by_key[k] for k in ranking.easy_negatives]),
        test_pos=_tokens(bb, test_pos), test_neg=_tokens(bb, test_neg), real=real,
        real_emb=clip.embed_images(real), text_emb=clip.embed_texts(texts), notes=notes,
    )


# -- prompts per variant -------------------------------------------------------------------

def _strip_groups(examples: list[Any], group_ids: set[int]) -> list[Any]:
    """Shared prompt: the same examples without the self-prompting group tokens in targets."""
    from yoc_assistant.personalize.data import IGNORE, Example

    out = []
    for ex in examples:
        keep = [i for i, (t, lab) in enumerate(zip(ex.ids, ex.labels, strict=True))
                if lab == IGNORE or t not in group_ids]
        out.append(Example([ex.ids[i] for i in keep], [ex.labels[i] for i in keep], ex.task))
    return out


class Variant:
    """How one variant builds its recognition and generation prompts."""

    def __init__(self, bb: Any, name: str, concepts: Any = None) -> None:
        from yoc_assistant.personalize import data
        from yoc_assistant.personalize import phrasings as P

        self.bb, self.name, self.cs = bb, name, concepts
        self.data, self.P = data, P

    @property
    def extra(self) -> Any:
        return None if self.cs is None else self.cs.extra

    def recognition(self, image: list[int], thing: world.Thing) -> list[int]:
        bb, data, P = self.bb, self.data, self.P
        if self.cs is None:  # text prompt: the concept described in words
            question = P.RECOGNITION_QUESTIONS[0].replace("{name}", f"the {thing.describe()}")
            return bb.prompt_ids([data.image_block(bb, image), question])
        ident = self.cs.identifier_id(EXAMPLE_NAME)
        q = data.text_ids(bb, P.RECOGNITION_QUESTIONS[0], ident)
        prompt = data.recognition_prompt(bb, self.cs.prompt_ids(EXAMPLE_NAME), image, q, True)
        if self.name == "shared-prompt":
            return prompt
        return prompt + list(self.cs.group_ids(EXAMPLE_NAME, "understanding"))

    def generation(self, thing: world.Thing) -> list[int]:
        bb, data, P = self.bb, self.data, self.P
        if self.cs is None:
            return bb.prompt_ids([P.GENERATION_PROMPTS[0].replace("{name}", f"a {thing.describe()}")])
        ident = self.cs.identifier_id(EXAMPLE_NAME)
        text = data.text_ids(bb, P.GENERATION_PROMPTS[0], ident)
        prompt = bb.prompt_ids([list(self.cs.prompt_ids(EXAMPLE_NAME)), text])
        if self.name == "shared-prompt":
            return prompt
        return prompt + list(self.cs.group_ids(EXAMPLE_NAME, "generation"))


@torch.no_grad()
def recognition(bb: Any, variant: Variant, bench: Bench) -> dict[str, float]:
    from yoc_assistant.personalize.data import answer_first_token

    yes, no = answer_first_token(bb, True), answer_first_token(bb, False)
    said = []
    for images in (bench.test_pos, bench.test_neg):
        prompts = torch.tensor([variant.recognition(im, bench.thing) for im in images])
        logits, _ = bb.forward(prompts, extra=variant.extra)
        said.append((logits[:, -1, yes] > logits[:, -1, no]).float())
    pos, neg = float(said[0].mean()), float(1 - said[1].mean())
    return {"recognition": (pos + neg) / 2, "positive": pos, "negative": neg}


@torch.no_grad()
def generation(bb: Any, clip: Any, variant: Variant, bench: Bench, n: int, seed: int) -> dict[str, float]:
    out = bb.generate_images(variant.generation(bench.thing), n=n, extra=variant.extra,
                             seed=seed)
    emb = clip.embed_images(out.images)
    named = (emb @ bench.text_emb.T).argmax(1)
    right = world.ALL_THINGS.index(bench.thing)
    return {"clip_i": float((emb @ bench.real_emb.T).mean()),
            "drawn_right": float((named == right).float().mean()), "images": out.images}


def train_variant(bb: Any, name: str, bench: Bench, steps: int, lr: float, seed: int) -> tuple[Any, float]:
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
    from yoc_assistant.personalize.data import BuildContext, build_training_set
    from yoc_assistant.personalize.trainer import TrainConfig, train_concept

    t0 = time.time()
    words = [] if name in ("no-concept", "blank-init") else bench.words
    vec = ConceptVectors.initialize(bb, EXAMPLE_NAME, seed=seed, words=words)
    cs = ConceptSet(bb, [vec])
    if name in ("no-concept", "caption-init"):
        return cs, time.time() - t0
    ctx = BuildContext.from_concepts(
        bb, cs, EXAMPLE_NAME, positives=bench.photos + bench.mirrored, easy_negatives=bench.easy,
        hard_negatives=bench.hard, soft_positives=[] if name == "photos-only" else bench.soft,
        about=about_text(EXAMPLE_NAME, bench.thing), rng=random.Random(seed))
    examples = build_training_set(ctx)
    if name == "shared-prompt":
        groups = set(cs.group_ids(EXAMPLE_NAME, "generation")) | set(cs.group_ids(EXAMPLE_NAME, "understanding"))
        examples = _strip_groups(examples, groups)
    config = TrainConfig(max_steps=steps, lr=lr, batch_size=4, precision="fp32", seed=seed,
                         checkpoint_every=10**9)
    result = train_concept(bb, vec, examples, config)
    return ConceptSet(bb, [result.vectors]), time.time() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    set_threads()
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    clip = load_clip(ClipSpec(str(args.clip)))
    bench = make_bench(bb, clip, n_test=args.n_test, n_pool=args.pool, n_soft=args.soft,
                       n_neg=args.negatives, seed=args.seed)
    named = (clip.embed_images(bench.real) @ bench.text_emb.T).argmax(1)
    reference = float((named == world.ALL_THINGS.index(bench.thing)).float().mean())
    rows: dict[str, Any] = {}
    for name in args.variants:
        cs, seconds = (None, 0.0) if name == "text-prompt" else \
            train_variant(bb, name, bench, args.steps, args.lr, args.seed)
        variant = Variant(bb, name, cs)
        row: dict[str, Any] = {**recognition(bb, variant, bench), "train_seconds": round(seconds, 1)}
        if args.images:
            gen = generation(bb, clip, variant, bench, args.images, args.seed)
            if args.save_images:
                args.save_images.mkdir(parents=True, exist_ok=True)
                for k, img in enumerate(gen.pop("images")):
                    img.save(args.save_images / f"{name}-{k}.png")
            gen.pop("images", None)
            row.update(gen)
        rows[name] = row
        print(f"[ablation] {name}: {json.dumps({k: round(v, 3) for k, v in row.items()})}",
              file=sys.stderr, flush=True)
    return {"variants": rows, "clip_names_real_photos": reference, "notes": bench.notes,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("json",)}}


def table(report: dict[str, Any]) -> str:
    lines = ["| variant | recognition (weighted) | positives | negatives | CLIP-I | drawn right | train s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in report["variants"].items():
        def cell(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]:.3f}" if key in r else "-"
        lines.append(f"| {name} | {cell('recognition')} | {cell('positive')} | {cell('negative')} | "
                     f"{cell('clip_i')} | {cell('drawn_right')} | {r['train_seconds']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=1600, help="concept training steps per variant")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-test", type=int, default=40, help="held-out positives (and as many negatives)")
    ap.add_argument("--pool", type=int, default=600, help="retrieval pool size")
    ap.add_argument("--soft", type=int, default=400, help="soft positives")
    ap.add_argument("--negatives", type=int, default=100, help="hard and easy negatives, each")
    ap.add_argument("--images", type=int, default=8, help="pictures generated per variant (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--clip", type=Path, default=CLIP_DIR)
    ap.add_argument("--save-images", type=Path, default=None, help="folder for the generated pictures")
    ap.add_argument("--min-recognition", type=float, default=None,
                    help="exit 1 if the full variant's weighted recognition is below this")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--quick", action="store_true", help="the full variant only, no drawings (CI)")
    args = ap.parse_args(argv)
    if args.quick:  # the full variant as measured in docs/toyworld.md, without the drawings
        args.variants, args.images = ["full"], 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    if args.min_recognition is not None and "full" in report["variants"]:
        got = report["variants"]["full"]["recognition"]
        if got < args.min_recognition:
            print(f"recognition {got:.3f} is below {args.min_recognition}", file=sys.stderr)
            raise SystemExit(1)


if __name__ == "__main__":
    main()
