"""Personalization quality on the toy world: one harness for any instance, every baseline.

A personal concept is one *instance* (`--thing "dotted orange star" --instance cyan`:
the named thing plus its unnamed accent). It is trained with yoc's own data builders
and trainer, with `yoc train`'s defaults, in several variants, and measured on photos
never trained on:

* recognition: "Is <name> in this photo?" asked exactly as `yoc ask` asks it
  (`personalize.evaluate.recognition_prompt` and `said_yes`, the photo witness included:
  `*_unwitnessed` are the concept's answers alone) on new photos of the
  instance (positives) and on negatives: half the same named thing with another accent
  (`same`: only the unnamed detail says no), a quarter lookalikes one named attribute
  away (`near`), a quarter unrelated things (`far`). Weighted = mean of the positive
  and negative accuracies (the paper's metric; untrained ~0.5);
* generation (`--images`): instance similarity (the toy instance judge's cosine,
  generated vs real held-out photos), drawn right (the judge names the exact instance,
  accent included), CLIP-I (toy CLIP cosine); pictures drawn as `yoc draw` draws them,
  each the best of `--candidates` samples by the variant's own recognition
  (`personalize.selfcheck`), and the same figures for single samples (`*_unchecked`);
* QA: the concept's facts ("What is <name>'s colour?"), answered greedily as `ask` does;
* routing: held-out request phrasings (never trained on) sent through yoc's Router:
  text requests must route to text, drawing requests to the image modality.

Variants: `no-concept` (fresh tokens), `text-prompt` (the named attributes in words:
what a user would type), `image-prompt` (a photo of the instance in the prompt,
`NAME is <photo> .`, training-free, RAP-style), `caption-init` (rows started from the
backbone's own description of the photos, untrained), `shared-prompt` (one soft prompt,
no self-prompting targets), `photos-only` (no soft positives), `blank-init`, `full`
(what `yoc train` does).

    python -m yoc_assistant.toyworld.ablation --seeds 0 1 2 --images 16
    python -m yoc_assistant.toyworld.ablation --thing "striped blue heart" --instance mint
    python -m yoc_assistant.toyworld.ablation --quick --min-recognition 0.8   # CI check
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from yoc_assistant.personalize.retrieval import HARD_NEGATIVES
from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, JUDGE_DIR, set_threads
from yoc_assistant.toyworld.make_concept import EXAMPLE_NAME, about_text

VARIANTS = ("no-concept", "text-prompt", "image-prompt", "caption-init", "shared-prompt",
            "photos-only", "blank-init", "full")
TRAINED = ("shared-prompt", "photos-only", "blank-init", "full")
NAME = EXAMPLE_NAME
NEGATIVE_KINDS = ("same", "near", "far")


@dataclass
class Bench:
    """Everything the variants of one (instance, seed) are trained and measured on."""

    thing: world.Thing
    photo_images: list[Image.Image]
    photos: list[list[int]]
    mirrored: list[list[int]]
    words: list[int]
    soft: list[list[int]]
    hard: list[list[int]]
    easy: list[list[int]]
    test_pos: list[list[int]]
    test_neg: dict[str, list[list[int]]]
    real: list[Image.Image]
    real_clip: torch.Tensor
    notes: list[str] = field(default_factory=list)


def _tokens(bb: Any, images: list[Image.Image]) -> list[list[int]]:
    return [row.tolist() for row in bb.encode_images(images)] if images else []


def training_photos(thing: world.Thing, seed: int) -> list[world.Scene]:
    """The 5 photos a user shows (seed 0 of the example = the photos in concepts/sunny)."""
    return world.photos_of(thing, 5, seed=1 + 100 * seed)


def negatives(thing: world.Thing, n: int, rng: np.random.Generator) -> dict[str, list[world.Scene]]:
    same, near = world.same_named(thing), world.lookalikes(thing, 1)
    far = [t for t in world.ALL_THINGS if t.distance(thing) >= 2]
    n_same = n // 2
    n_near = (n - n_same) // 2
    pick = lambda opts, k: [world.random_scene(rng, opts[int(rng.integers(len(opts)))]) for _ in range(k)]  # noqa: E731
    return {"same": pick(same, n_same), "near": pick(near, n_near), "far": pick(far, n - n_same - n_near)}


def make_bench(bb: Any, clip: Any, thing: world.Thing, *, n_test: int, n_pool: int, seed: int,
               hard_negatives: str) -> Bench:
    from yoc_assistant.personalize.describe import photo_words
    from yoc_assistant.personalize.retrieval import rank_pool, split_sizes

    rng = np.random.default_rng([seed, 41])
    photos = [world.render(s) for s in training_photos(thing, seed)]
    test_pos = world.photos_of(thing, n_test, seed=1001 + seed)
    neg = negatives(thing, n_test, rng)
    # The retrieval pool: random photos of everything but the concept's own instance.
    others = tuple(t for t in world.ALL_THINGS if t != thing)
    pool = world.random_scenes(n_pool, seed=77 + seed, pool=others)
    pool_images = [world.render(s) for s in pool]
    n_soft, n_hard, n_easy = split_sizes(n_pool)
    ranking = rank_pool(clip.embed_images(photos), clip.embed_images(pool_images), n_soft=n_soft,
                        n_hard=n_hard, n_easy=n_easy, seed=seed, hard_negatives=hard_negatives)
    take = lambda keys: _tokens(bb, [pool_images[int(k)] for k in keys])  # noqa: E731
    hard_things = [pool[int(k)].thing for k in ranking.hard_negatives]
    notes = [f"hard negatives: {sum(t.kind() == thing.kind() for t in hard_things)} same named thing, "
             f"{sum(t.distance(thing) == 1 for t in hard_things)} one attribute away, of {len(hard_things)}"]
    photo_tokens = _tokens(bb, photos)
    real = [world.render(s) for s in test_pos]
    return Bench(
        thing=thing, photo_images=photos, photos=photo_tokens,
        mirrored=_tokens(bb, [ImageOps.mirror(p) for p in photos]), words=photo_words(bb, photo_tokens),
        soft=take(ranking.soft_positives), hard=take(ranking.hard_negatives), easy=take(ranking.easy_negatives),
        test_pos=_tokens(bb, real), test_neg={k: _tokens(bb, [world.render(s) for s in v]) for k, v in neg.items()},
        real=real, real_clip=clip.embed_images(real), notes=notes,
    )


# -- how each variant asks ------------------------------------------------------------------

def _fresh_row(bb: Any) -> Any:
    """One untrained extra row (the image prompt's NAME), as a new concept's identifier starts."""
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

    return ConceptSet(bb, [ConceptVectors.initialize(bb, NAME, {"understanding": 1, "generation": 1}, seed=0)])


class Variant:
    """Prompts of one variant: a trained/untrained ConceptSet, or words, or a photo."""

    def __init__(self, bb: Any, name: str, bench: Bench, concepts: Any = None) -> None:
        self.bb, self.name, self.bench = bb, name, bench
        self.cs = _fresh_row(bb) if name == "image-prompt" else concepts
        self.self_prompting = name not in ("text-prompt", "image-prompt", "shared-prompt")

    @property
    def extra(self) -> Any:
        return None if self.cs is None else self.cs.extra

    def _words(self, template: str, article: str = "the") -> str:
        return template.replace("{name}", f"{article} {self.bench.thing.describe()}")

    def _prefix(self) -> list[int]:
        from yoc_assistant.personalize import data

        if self.name == "image-prompt":  # NAME is <photo> .  (the pretraining's definition shape)
            ident = self.cs.identifier_id(NAME)
            return [ident, *self.bb.tokenize("is"), *data.image_block(self.bb, self.bench.photos[0]),
                    *self.bb.tokenize(".")]
        return list(self.cs.prompt_ids(NAME))

    def ask(self, template: str, image: list[int] | None, group: str = "understanding") -> list[int]:
        """The prompt for a text request (the photo, then the question), as the router lays it out."""
        from yoc_assistant.personalize import data

        bb = self.bb
        photo = [data.image_block(bb, image)] if image is not None else []
        if self.cs is None:
            return bb.prompt_ids([*photo, self._words(template)])
        prompt = bb.prompt_ids([self._prefix(), *photo, data.text_ids(bb, template, self.cs.identifier_id(NAME))])
        return prompt + (list(self.cs.group_ids(NAME, group)) if self.self_prompting else [])

    def witness_margins(self, images: list[list[int]], question: str) -> torch.Tensor | None:
        """The photo witness's weighted margins for a question about each image, as `yoc
        ask` adds them (`personalize.witness`): for a concept with a reference photo on a
        backbone that uses the witness; None otherwise."""
        from yoc_assistant.personalize.witness import recognition_margins

        return None if self.cs is None else recognition_margins(self.bb, self.cs, NAME, images, question)

    def draw(self, template: str) -> list[int]:
        from yoc_assistant.personalize import data

        bb = self.bb
        if self.cs is None:
            return bb.prompt_ids([self._words(template, "a")])
        prompt = bb.prompt_ids([self._prefix(), data.text_ids(bb, template, self.cs.identifier_id(NAME))])
        return prompt + (list(self.cs.group_ids(NAME, "generation")) if self.self_prompting else [])


@torch.no_grad()
def recognition(bb: Any, v: Variant, bench: Bench, question: str) -> dict[str, float]:
    """Accuracies as `yoc ask` answers (with the photo witness where it applies); then,
    for a variant with a witness, the same without it (`*_unwitnessed`)."""
    from yoc_assistant.backbone.generation import text_decision
    from yoc_assistant.personalize.data import answer_first_token
    from yoc_assistant.personalize.evaluate import _last_logits
    from yoc_assistant.personalize.witness import yes_no_bias

    decisive = [answer_first_token(bb, True), answer_first_token(bb, False)]
    allow = [] if v.cs is None else [v.cs.identifier_id(NAME)]
    answers: dict[str, tuple[list[bool], list[bool] | None]] = {}
    for kind, images in (("positive", bench.test_pos), *bench.test_neg.items()):
        logits = _last_logits(bb, [v.ask(question, im) for im in images], v.extra)
        alone = (text_decision(bb, logits, v.extra, allow) == decisive[0]).tolist()
        margins = v.witness_margins(images, question)
        witnessed = None if margins is None else (text_decision(
            bb, logits, v.extra, allow, decisive, yes_no_bias(margins)) == decisive[0]).tolist()
        answers[kind] = (alone, witnessed)

    def accuracies(pick: int) -> dict[str, float]:
        said = {k: a[pick] for k, a in answers.items()}
        out = {"positive": float(np.mean(said["positive"]))}
        neg_all: list[bool] = []
        for kind in bench.test_neg:
            no = [not s for s in said[kind]]
            out[f"negative_{kind}"] = float(np.mean(no))
            neg_all += no
        out["negative"] = float(np.mean(neg_all))
        out["recognition"] = (out["positive"] + out["negative"]) / 2
        return out

    if answers["positive"][1] is None:
        return accuracies(0)
    return {**accuracies(1), **{f"{k}_unwitnessed": val for k, val in accuracies(0).items()}}


@torch.no_grad()
def qa(bb: Any, v: Variant, thing: world.Thing) -> float:
    """The named facts, answered greedily; right when the answer holds the value's word."""
    from yoc_assistant.personalize import phrasings as P

    right = []
    for key in world.ATTRIBUTES:
        question = P.FACT_QUESTIONS[0].replace("{key}", "colour" if key == "colour" else key)
        allow = [] if v.cs is None else [v.cs.identifier_id(NAME)]
        text = bb.generate_text(v.ask(question, None), extra=v.extra, max_new_tokens=12, temperature=0.0,
                                allow_ids=allow).text.lower()
        value = getattr(thing, key)
        words = re.findall(r"[a-z]+", text)
        right.append(value in words or (value == "plain" and "no pattern" in text))
    return float(np.mean(right))


@torch.no_grad()
def routing(bb: Any, v: Variant, bench: Bench, seed: int) -> dict[str, float] | None:
    """Held-out phrasings through yoc's own Router (the concept's groups decide)."""
    if v.cs is None or not v.self_prompting:
        return None
    from yoc_assistant.app.plugins import load_plugins
    from yoc_assistant.assistant.modality import Request
    from yoc_assistant.assistant.router import Router
    from yoc_assistant.personalize import phrasings as P

    router = Router(bb, load_plugins(), log_path=None)
    image = bench.real[0]
    rng = random.Random(seed)
    out: dict[str, float] = {}
    for modality, bank, with_image in (("text", P.HELD_OUT_TEXT_REQUESTS, True),
                                       ("image", P.HELD_OUT_GENERATION_PROMPTS, False)):
        right = []
        for template in bank:
            text = template.replace("{name}", f"<{NAME}>").replace("{place}", rng.choice(world.BACKGROUNDS))
            about_a_photo = with_image and any(w in text for w in ("photo", "here", "image", "this"))
            request = Request(text=text, images=[image] if about_a_photo else [])
            right.append(router.route(request, v.cs).modality == modality)
        out[modality] = float(np.mean(right))
    return out


@torch.no_grad()
def generation(bb: Any, clip: Any, judge: Any, v: Variant, bench: Bench, n: int, seed: int,
               candidates: int) -> dict[str, Any]:
    """Pictures as `yoc draw` draws them (`selfcheck.draw_checked`): each the best of
    `candidates` samples by the variant's *own* "Is <name> in this photo?" (its words for the
    text prompt, its photo for the image prompt, its rows for a trained concept); with more
    than one candidate, the same figures for single samples too (`*_unchecked`)."""
    from yoc_assistant.personalize import phrasings as P
    from yoc_assistant.personalize import selfcheck
    from yoc_assistant.personalize.judge import drawn_right, instance_similarity

    def check(ids: torch.Tensor) -> torch.Tensor:
        question = P.RECOGNITION_QUESTIONS[0]
        rows = [row.tolist() for row in ids]
        margins = selfcheck.yes_margins(bb, [v.ask(question, row) for row in rows], v.extra)
        witnessed = v.witness_margins(rows, question)
        return margins if witnessed is None else margins + witnessed

    def scores(images: list[Image.Image], suffix: str = "") -> dict[str, float]:
        emb = clip.embed_images(images)
        return {f"instance_similarity{suffix}": instance_similarity(judge, images, bench.real),
                f"drawn_right{suffix}": drawn_right(judge, images, bench.real),
                f"clip_i{suffix}": float((emb @ bench.real_clip.T).mean())}

    prompt = v.draw(P.GENERATION_PROMPTS[0])
    out = selfcheck.draw_checked(bb, prompt, n=n, candidates=candidates, check=check, extra=v.extra, seed=seed)
    row: dict[str, Any] = {**scores(out.images), "images": out.images}
    if candidates > 1:
        single = bb.generate_images(prompt, n=n, extra=v.extra, seed=seed).images
        row.update(scores(single, "_unchecked"))
    return row


def _strip_groups(examples: list[Any], group_ids: set[int]) -> list[Any]:
    """Shared prompt: the same examples without the self-prompting group tokens in targets."""
    from yoc_assistant.personalize.data import IGNORE, Example

    out = []
    for ex in examples:
        keep = [i for i, (t, lab) in enumerate(zip(ex.ids, ex.labels, strict=True))
                if lab == IGNORE or t not in group_ids]
        labels = [ex.labels[i] for i in keep]
        if all(lab == IGNORE for lab in labels):
            continue  # a router target is its group tokens only: no self-prompting, no example
        weights = None if ex.weights is None else [ex.weights[i] for i in keep]
        out.append(Example([ex.ids[i] for i in keep], labels, ex.task, weights))
    return out


def variant_examples(bb: Any, name: str, bench: Bench, config: Any, seed: int,
                     ) -> tuple[Any, list[Any], list[Any]]:
    """A variant's starting rows, training examples and frozen stand-ins, made as `yoc
    train` makes them (`prepare.training_data`: the installed modalities' groups, examples
    and router targets, the stand-in concepts of two-concept questions)."""
    from yoc_assistant.app.plugins import load_plugins
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
    from yoc_assistant.personalize.prepare import training_data
    from yoc_assistant.personalize.witness import describe

    words = [] if name in ("no-concept", "blank-init") or not config.init_from_photos else bench.words
    plugins = load_plugins()
    vec = ConceptVectors.initialize(bb, NAME, plugins.group_sizes() or None, seed=seed, words=words)
    if config.reference_photo and name != "no-concept":  # as `yoc train` does (its first photo)
        vec.reference, vec.photos = list(bench.photos[0]), [list(p) for p in bench.photos]
    if name != "no-concept":  # the description's veto, from the about text, as `yoc train` keeps it
        describe(vec, about_text(NAME, bench.thing))
    if name in ("no-concept", "caption-init"):
        return vec, [], []
    positives = bench.photos + (bench.mirrored if config.mirror_photos else [])
    made = training_data(bb, vec, plugins.get_modalities(), positives=positives, easy=bench.easy,
                         hard=bench.hard, soft=[] if name == "photos-only" else bench.soft,
                         about=about_text(NAME, bench.thing), seed=seed)
    examples = made.examples
    if name == "shared-prompt":
        cs = ConceptSet(bb, [vec])
        groups = set(cs.group_ids(NAME, "generation")) | set(cs.group_ids(NAME, "understanding"))
        examples = _strip_groups(examples, groups)
    return vec, examples, made.stand_ins


def train_variant(bb: Any, name: str, bench: Bench, config: Any, seed: int) -> tuple[Any, float]:
    """The concept rows of a variant; training through yoc's own builders and trainer."""
    import dataclasses

    from yoc_assistant.personalize.concept import ConceptSet
    from yoc_assistant.personalize.trainer import train_concept

    t0 = time.time()
    vec, examples, stand_ins = variant_examples(bb, name, bench, config, seed)
    if not examples:
        return ConceptSet(bb, [vec]), time.time() - t0
    run = dataclasses.replace(config, seed=seed, precision="fp32", checkpoint_every=10**9, eval_every=None)
    result = train_concept(bb, vec, examples, run, frozen=stand_ins)
    return ConceptSet(bb, [result.vectors]), time.time() - t0


def default_recipe(bb: Any) -> Any:
    """`yoc train`'s configuration for this backbone: its checkpoint's recipe over the
    defaults, by the same function every entry point uses."""
    from yoc_assistant.app.training import backbone_recipe, config_from_options

    return config_from_options({}, recipe=backbone_recipe(bb))


def run_one(bb: Any, clip: Any, judge: Any, thing: world.Thing, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    config = default_recipe(bb)
    if args.steps:
        config = dataclasses.replace(config, max_steps=args.steps)
    # The recipe's retrieval split, as `yoc train` ranks the pool, unless asked otherwise.
    hard = args.hard_negatives or ("top" if args.hard_from_top else config.hard_negatives)
    bench = make_bench(bb, clip, thing, n_test=args.n_test, n_pool=args.pool, seed=seed,
                       hard_negatives=hard)
    rows: dict[str, Any] = {}
    from yoc_assistant.personalize import phrasings as P

    for name in args.variants:
        cs, seconds = (None, 0.0) if name in ("text-prompt", "image-prompt") else \
            train_variant(bb, name, bench, config, seed)
        v = Variant(bb, name, bench, cs)
        if args.save_concepts and cs is not None:  # to study the same rows again without training
            args.save_concepts.mkdir(parents=True, exist_ok=True)
            cs.get(NAME).save(args.save_concepts / f"{_slug(thing)}-seed{seed}-{name}.safetensors", bb)
        row: dict[str, Any] = {**recognition(bb, v, bench, P.RECOGNITION_QUESTIONS[0]),
                               "train_seconds": round(seconds, 1)}
        if v.cs is not None:  # the facts asked by name (a sentence about "the star" needs no memory)
            row["qa"] = qa(bb, v, thing)
        route = routing(bb, v, bench, seed)
        if route is not None:
            row.update({f"routing_{k}": val for k, val in route.items()})
        if args.images:
            gen = generation(bb, clip, judge, v, bench, args.images, seed, args.candidates)
            images = gen.pop("images")
            if args.save_images:
                folder = args.save_images / f"{_slug(thing)}-seed{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                for k, img in enumerate(images):
                    img.save(folder / f"{name}-{k}.png")
            row.update(gen)
        rows[name] = row
        print(f"[ablation] {thing.label()} seed {seed} {name}: "
              f"{json.dumps({k: round(val, 3) for k, val in row.items()})}", file=sys.stderr, flush=True)
    return {"variants": rows, "notes": bench.notes}


def _slug(thing: world.Thing) -> str:
    return thing.label().replace(", ", "-").replace(" ", "-")


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """variant -> metric -> (mean, sd, n) over every (instance, seed) run."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for variant, row in r["variants"].items():
            for key, value in row.items():
                if isinstance(value, (int, float)) and value == value:
                    out.setdefault(variant, {}).setdefault(key, []).append(float(value))
    return {v: {k: (statistics.fmean(x), statistics.pstdev(x) if len(x) > 1 else 0.0, len(x))
                for k, x in metrics.items()} for v, metrics in out.items()}


COLUMNS = ("recognition", "positive", "negative_same", "negative_near", "negative_far",
           "recognition_unwitnessed", "negative_same_unwitnessed", "qa",
           "routing_text", "routing_image", "instance_similarity", "drawn_right", "clip_i",
           "instance_similarity_unchecked", "clip_i_unchecked", "train_seconds")


def table(summary: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    lines = ["| variant | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for variant, metrics in summary.items():
        cells = []
        for c in COLUMNS:
            if c not in metrics:
                cells.append("-")
                continue
            mean, sd, n = metrics[c]
            cells.append(f"{mean:.1f}" if c == "train_seconds" else
                         f"{mean:.3f}" + (f" ± {sd:.3f}" if n > 1 else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_things(args: argparse.Namespace) -> list[world.Thing]:
    if not args.thing:
        return [world.EXAMPLE_THING]
    accents = args.instance or [world.EXAMPLE_THING.accent]
    if len(accents) not in (1, len(args.thing)):
        raise SystemExit("give one --instance, or one per --thing")
    accents = accents * len(args.thing) if len(accents) == 1 else accents
    return [world.Thing.parse(t, accent=a) for t, a in zip(args.thing, accents, strict=True)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thing", nargs="+", default=None,
                    help="named thing(s), e.g. 'dotted orange star' (default: the example concept)")
    ap.add_argument("--instance", nargs="+", choices=list(world.ACCENTS), default=None,
                    help="the accent of each thing (the unnamed instance attribute)")
    ap.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], dest="seeds")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: yoc train's recipe)")
    ap.add_argument("--n-test", type=int, default=40, help="held-out positives (and as many negatives)")
    ap.add_argument("--pool", type=int, default=600, help="retrieval pool size")
    ap.add_argument("--hard-from-top", action="store_true", help="the same as --hard-negatives top")
    ap.add_argument("--hard-negatives", choices=HARD_NEGATIVES, default=None,
                    help="where hard negatives come from in the ranking (default: the recipe's)")
    ap.add_argument("--images", type=int, default=8, help="pictures generated per variant (0: none)")
    ap.add_argument("--candidates", type=int, default=None,
                    help="samples per picture, the variant's own check keeping one (default: the "
                         "backbone's, as yoc draw; 1: single samples)")
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--clip", type=Path, default=CLIP_DIR)
    ap.add_argument("--judge", type=Path, default=JUDGE_DIR)
    ap.add_argument("--save-images", type=Path, default=None, help="folder for the generated pictures")
    ap.add_argument("--save-concepts", type=Path, default=None,
                    help="folder for each variant's concept file (THING-seedN-VARIANT.safetensors)")
    ap.add_argument("--min-recognition", type=float, default=None,
                    help="exit 1 if the full variant's mean weighted recognition is below this")
    ap.add_argument("--min-routing", type=float, default=None,
                    help="exit 1 if the full variant's mean routing accuracy (text, image) is below this")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--quick", action="store_true", help="the full variant only, no drawings (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.variants, args.images = ["full"], 0
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip
    from yoc_assistant.personalize.selfcheck import check_candidates, default_candidates

    set_threads()
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    args.candidates = check_candidates(default_candidates(bb) if args.candidates is None else args.candidates)
    clip = load_clip(ClipSpec(str(args.clip)))
    judge = ToyJudge.load(args.judge)
    runs, t0 = [], time.time()
    for thing in parse_things(args):
        for seed in args.seeds:
            runs.append({"thing": thing.label(), "seed": seed, **run_one(bb, clip, judge, thing, seed, args)})
    summary = summarize(runs)
    return {"summary": {v: {k: {"mean": m, "sd": s, "n": n} for k, (m, s, n) in row.items()}
                        for v, row in summary.items()},
            "runs": runs, "seconds": round(time.time() - t0),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    summary = {v: {k: (d["mean"], d["sd"], d["n"]) for k, d in row.items()} for v, row in report["summary"].items()}
    print(json.dumps(report, indent=2, default=str) if args.json else table(summary))
    full = report["summary"].get("full", {})
    failed = []
    if args.min_recognition is not None and full and full["recognition"]["mean"] < args.min_recognition:
        failed.append(f"recognition {full['recognition']['mean']:.3f} is below {args.min_recognition}")
    if args.min_routing is not None and full:
        for key in ("routing_text", "routing_image"):
            if key in full and full[key]["mean"] < args.min_routing:
                failed.append(f"{key} {full[key]['mean']:.3f} is below {args.min_routing}")
    if failed:
        print("; ".join(failed), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
