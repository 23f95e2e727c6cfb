"""Two concepts in one request, measured on the toy world (beyond the paper, which names
this as its limit).

Two instances are trained as `yoc train` trains them (the ablation's `full` variant,
`yoc train`'s recipe), laid side by side in one ConceptSet as the router lays out a
request that mentions both, and asked, greedily as `yoc ask` answers (a yes/no with
the photo witness, `personalize/witness.py`):

* "Is <a> in this photo?" with <b>'s prompt present too (photos of a, of b, of a with
  another thing, of neither): right when yes exactly if a is in the photo;
* "Are <a> and <b> both here?" on photos of both, of one, of neither;
* "Which of <a> and <b> is in this photo?" -> the answer names a, b, both or neither;
* "Draw <a> and <b> on grass.": the instance judge reads each half of the picture; right
  when the two halves are the two instances (accents included).

    python -m yoc_assistant.toyworld.pairs [--a "dotted orange star" --a-instance cyan
        --b "striped blue heart" --b-instance mint] [--seed 0] [--images 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, JUDGE_DIR, set_threads

DEFAULT_B = world.Thing("heart", "blue", "striped", "mint")


def _renamed(vec: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(vec, name=name)


def train_pair(bb: Any, clip: Any, a: world.Thing, b: world.Thing, seed: int, args: argparse.Namespace) -> Any:
    """Both concepts trained alone (as a user trains each), then loaded together."""
    import dataclasses

    from yoc_assistant.personalize.concept import ConceptSet
    from yoc_assistant.toyworld import ablation

    config = ablation.default_recipe(bb)
    if args.steps:
        config = dataclasses.replace(config, max_steps=args.steps)
    vectors = []
    for name, thing in (("a", a), ("b", b)):
        bench = ablation.make_bench(bb, clip, thing, n_test=4, n_pool=args.pool, seed=seed,
                                    hard_negatives=config.hard_negatives)
        cs, seconds = ablation.train_variant(bb, "full", bench, config, seed)
        print(f"[pairs] trained <{name}> ({thing.label()}) in {seconds:.0f} s", file=sys.stderr, flush=True)
        vectors.append(_renamed(cs.get(ablation.NAME), name))
    return ConceptSet(bb, vectors)


def _prompt(bb: Any, cs: Any, text: str, image: Image.Image | None) -> list[int]:
    """The router's layout for a request mentioning both: each concept's prompt, the photo,
    the text (mentions -> identifiers)."""
    from yoc_assistant.assistant.router import request_parts

    return bb.prompt_ids(request_parts(text, cs, [image] if image is not None else []))


def _answer(bb: Any, cs: Any, text: str, image: Image.Image | None, group_of: str) -> str:
    """The text modality's answer (understanding group of `group_of` forced; a yes/no
    decided greedily with the photo witness, as `yoc ask` decides it)."""
    from yoc_assistant.assistant.router import concept_names
    from yoc_assistant.personalize import witness
    from yoc_assistant.personalize.data import answer_first_token

    names = {cs.identifier_id(n): f"<{n}>" for n in cs.names}
    prompt = _prompt(bb, cs, text, image)
    seconded = witness.for_request(bb, prompt, cs, concept_names(text, cs), has_photo=image is not None)
    out = bb.generate_text(prompt + list(cs.group_ids(group_of, "understanding")), extra=cs.extra,
                           max_new_tokens=16, temperature=0.0, allow_ids=list(names), extra_names=names,
                           decisive_ids=[answer_first_token(bb, True), answer_first_token(bb, False)],
                           decisive_bias=None if seconded is None else (lambda: seconded.yes_no_bias(bb)))
    return out.text.strip().lower()


def scenes(a: world.Thing, b: world.Thing, n: int, seed: int) -> dict[str, list[world.Scene]]:
    """Photos of: both, a with another thing, b with another thing, a alone, b alone, neither."""
    rng = np.random.default_rng([seed, 88])
    others = [t for t in world.ALL_THINGS if t.kind() not in (a.kind(), b.kind())]

    def other() -> world.Thing:
        return others[int(rng.integers(len(others)))]

    return {
        "both": [world.random_pair_scene(rng, a, b) for _ in range(n)],
        "a+other": [world.random_pair_scene(rng, a, other()) for _ in range(n)],
        "b+other": [world.random_pair_scene(rng, b, other()) for _ in range(n)],
        "a": [world.random_scene(rng, a) for _ in range(n)],
        "b": [world.random_scene(rng, b) for _ in range(n)],
        "neither": [world.random_pair_scene(rng, other(), None, pool=tuple(others)) for _ in range(n)],
    }


def _halves(image: Image.Image) -> list[Image.Image]:
    """The left and right halves of a two-object picture, each padded back to a square
    with its own edge pixels, so the single-object judge can read each thing."""
    a = np.asarray(image.convert("RGB"))
    h, w, _ = a.shape
    out = []
    for half in (a[:, : w // 2], a[:, w // 2:]):
        pad = (w - half.shape[1]) // 2
        out.append(Image.fromarray(np.pad(half, ((0, 0), (pad, w - half.shape[1] - pad), (0, 0)), mode="edge")))
    return out


def _names_right(answer: str, a: bool, b: bool) -> bool:
    """Does a "which of <a> and <b>" answer name exactly what the photo shows?"""
    words = set(re.findall(r"<[a-z]+>|[a-z]+", answer))
    if a and b:
        return "both" in words and "neither" not in words
    if not a and not b:
        return "neither" in words and "both" not in words
    named = "<a>" if a else "<b>"
    return named in words and not words & ({"<a>", "<b>", "both", "neither"} - {named})


@torch.no_grad()
def measure(bb: Any, judge: Any, cs: Any, a: world.Thing, b: world.Thing, n: int, images: int,
            seed: int) -> dict[str, Any]:
    photos = {k: [world.render(s) for s in v] for k, v in scenes(a, b, n, seed).items()}
    has_a = {"both": True, "a+other": True, "a": True, "b+other": False, "b": False, "neither": False}
    has_b = {"both": True, "b+other": True, "b": True, "a+other": False, "a": False, "neither": False}
    single, both, which = [], [], []
    by_photo: dict[str, dict[str, float]] = {}
    for kind, imgs in photos.items():
        start = len(single)
        for img in imgs:
            said = _answer(bb, cs, "Is <a> in this photo?", img, "a")
            single.append(said.startswith("yes") == has_a[kind])
            said = _answer(bb, cs, "Are <a> and <b> both here?", img, "a")
            both.append(said.startswith("yes") == (has_a[kind] and has_b[kind]))
            said = _answer(bb, cs, "Which of <a> and <b> is in this photo?", img, "a")
            which.append(_names_right(said, has_a[kind], has_b[kind]))
        by_photo[kind] = {"is_a": float(np.mean(single[start:])), "both": float(np.mean(both[start:])),
                          "which": float(np.mean(which[start:]))}
    report: dict[str, Any] = {"is_a_with_b_present": float(np.mean(single)), "both_here": float(np.mean(both)),
                              "which_of": float(np.mean(which)), "n_photos": len(single), "by_photo": by_photo}
    if images:
        from yoc_assistant.assistant.router import request_parts
        from yoc_assistant.personalize import selfcheck

        prompt = bb.prompt_ids(request_parts("Draw <a> and <b> on grass.", cs)) + list(cs.group_ids("a", "generation"))
        # as `yoc draw` draws it: each picture the best of the backbone's candidates by both
        # concepts' own check (the weaker of their two answers)
        drawn = selfcheck.draw_for_concepts(bb, prompt, cs, ["a", "b"], n=images, seed=seed).images
        right = 0
        for picture in drawn:
            seen = {tuple(sorted(x.items())) for x in judge.attributes(_halves(picture))}
            want = {tuple(sorted({"shape": t.shape, "colour": t.colour, "pattern": t.pattern,
                                  "accent": t.accent}.items())) for t in (a, b)}
            right += seen == want
        report["draw_both_shown"] = right / len(drawn)
        report["pictures"] = len(drawn)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default=world.EXAMPLE_THING.describe())
    ap.add_argument("--a-instance", choices=list(world.ACCENTS), default=world.EXAMPLE_THING.accent)
    ap.add_argument("--b", default=DEFAULT_B.describe())
    ap.add_argument("--b-instance", choices=list(world.ACCENTS), default=DEFAULT_B.accent)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=6, help="photos of each kind (6 kinds)")
    ap.add_argument("--images", type=int, default=8, help="pictures of both drawn (0: none)")
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: yoc train's recipe)")
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--clip", type=Path, default=CLIP_DIR)
    ap.add_argument("--judge", type=Path, default=JUDGE_DIR)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    set_threads()
    a, b = world.Thing.parse(args.a, accent=args.a_instance), world.Thing.parse(args.b, accent=args.b_instance)
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    clip = load_clip(ClipSpec(str(args.clip)))
    cs = train_pair(bb, clip, a, b, args.seed, args)
    report = {"a": a.label(), "b": b.label(), "seed": args.seed,
              **measure(bb, ToyJudge.load(args.judge), cs, a, b, args.n, args.images, args.seed)}
    print(json.dumps(report, indent=2) if args.json else
          "\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
