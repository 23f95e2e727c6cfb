"""Measure the shipped toy models on new scenes (the figures in docs/toyworld.md).

* VQ round trip: mean absolute error (0..255) and PSNR of encode -> decode;
* understanding: teacher-forced argmax on each pretraining task (an answer counts only
  if every token is the argmax, which is what greedy decoding says), on scenes of
  pretraining things and, separately, of the held-out things (never seen in pretraining);
* caption -> image: pictures drawn from captions (the backbone's own guidance), named
  by the toy CLIP (zero-shot over all 144 named things, and per attribute); the CLIP's
  accuracy on real photos of the same captions is the ceiling of this judge;
* instances (the unnamed accent): a definition that shows a photo (`NAME is <photo> .`),
  then "Is NAME in this photo?" on the same instance vs the same named thing with
  another accent (chance is 0.5: words cannot tell them apart), or vs a lookalike one
  named attribute away in the same accent (only the words' attributes differ), and "A photo of NAME ."
  drawn and named by the instance judge (accent, whole instance; its score on real
  photos is its ceiling).

    python -m yoc_assistant.toyworld.measure [--json] [--quick] [--cfg-scale S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoc_assistant.toyworld import language, world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, JUDGE_DIR, set_threads


def round_trip(bb: Any, n: int, seed: int) -> dict[str, float]:
    scenes = world.random_scenes(n, seed=seed, pool=world.ALL_THINGS)
    images = [world.render(s) for s in scenes]
    out = bb.decode_images(bb.encode_images(images))
    a = np.stack([np.asarray(x, np.float32) for x in images])
    b = np.stack([np.asarray(x, np.float32) for x in out])
    mse = float(((a - b) ** 2).mean())
    return {"mae": float(np.abs(a - b).mean()), "psnr": float(10 * np.log10(255 ** 2 / mse))}


def understanding(bb: Any, n: int, seed: int, pool: tuple[world.Thing, ...]) -> dict[str, float]:
    from yoc_assistant.toyworld.train_backbone import Batcher, evaluate

    scenes = world.random_scenes(max(n, 50), seed=seed, pool=pool)
    batcher = Batcher(bb, scenes, bb.encode_images([world.render(s) for s in scenes]))
    return evaluate(bb, batcher, n, seed)


def _named(clip: Any, images: list[Any]) -> list[world.Thing]:
    texts = [f"a photo of a {t.describe()}" for t in world.KINDS]
    emb = clip.embed_images(images) @ clip.embed_texts(texts).T
    return [world.KINDS[int(i)] for i in emb.argmax(1)]


def _agreement(wanted: list[world.Thing], got: list[world.Thing]) -> dict[str, float]:
    out = {"thing": float(np.mean([w.kind() == g.kind() for w, g in zip(wanted, got, strict=True)]))}
    for attr in world.ATTRIBUTES:
        out[attr] = float(np.mean([getattr(w, attr) == getattr(g, attr) for w, g in zip(wanted, got, strict=True)]))
    return out


@torch.no_grad()
def drawing(bb: Any, clip: Any, scenes: list[world.Scene], seed: int) -> dict[str, Any]:
    drawn = []
    for k, scene in enumerate(scenes):
        prompt = bb.prompt_ids([scene.caption() + " ."])
        drawn += bb.generate_images(prompt, n=1, seed=seed + k).images
    wanted = [s.thing for s in scenes]
    return {"generated": _agreement(wanted, _named(clip, drawn)),
            "real_photos (judge ceiling)": _agreement(wanted, _named(clip, [world.render(s) for s in scenes])),
            "n": len(scenes)}


def _defined(bb: Any, photo: list[int], extra_row: int, tail: list) -> list[int]:
    """BOS NAME is <photo> . + tail (text, NAME, or image-token lists) + SEP."""
    from yoc_assistant.personalize.data import image_block

    ids = [bb.special.bos, extra_row, *bb.tokenize("is"), *image_block(bb, photo), *bb.tokenize(".")]
    for part in tail:
        ids += [extra_row] if part is None else bb.tokenize(part) if isinstance(part, str) else image_block(bb, part)
    return ids + [bb.special.sep]


@torch.no_grad()
def instances(bb: Any, judge: Any, n: int, draw: int, seed: int, pool: tuple[world.Thing, ...]) -> dict[str, Any]:
    """What the words cannot carry: a definition that *shows* the thing (`NAME is <photo> .`),
    then (1) "Is NAME in this photo?" on another photo of the same instance (yes) or of the
    same named thing with another accent (no), and (2) "A photo of NAME ." drawn and judged:
    is the accent (and the whole instance) the defined one's?"""
    from yoc_assistant.personalize.data import answer_first_token
    from yoc_assistant.toyworld.train_backbone import Batcher

    rng = np.random.default_rng([seed, 3])
    things = [pool[int(rng.integers(len(pool)))] for _ in range(n)]
    refs = [world.random_scene(rng, t) for t in things]
    same = [world.random_scene(rng, t) for t in things]
    other = [world.random_scene(rng, world.same_named(t)[int(rng.integers(3))]) for t in things]
    near_rng = np.random.default_rng([seed, 4])  # its own stream: the figures above keep their scenes
    near = [world.random_scene(near_rng, language._pick(world.lookalikes(t, 1), near_rng)) for t in things]
    tokens = bb.encode_images([world.render(s) for s in refs + same + other + near]).tolist()
    ref_t, same_t, other_t, near_t = tokens[:n], tokens[n:2 * n], tokens[2 * n:3 * n], tokens[3 * n:]
    extra = Batcher(bb, refs[:1], torch.tensor(ref_t[:1])).extra_rows(1, rng)
    name = int(bb.vocab_size)
    yes, no = answer_first_token(bb, True), answer_first_token(bb, False)
    said_yes: dict[str, list[bool]] = {"same": [], "other_accent": [], "lookalike": []}
    for k in range(n):
        for kind, photo in (("same", same_t[k]), ("other_accent", other_t[k]), ("lookalike", near_t[k])):
            logits = bb.next_token_logits(_defined(bb, ref_t[k], name, ["Is", None, "in this photo?", photo]),
                                          extra=extra)
            said_yes[kind].append(bool(logits[yes] > logits[no]))
    right = said_yes["same"] + [not v for v in said_yes["other_accent"]]
    near_right = said_yes["same"] + [not v for v in said_yes["lookalike"]]
    drawn = []
    for k in range(min(draw, n)):
        prompt = _defined(bb, ref_t[k], name, ["A photo of", None, "."])
        drawn += bb.generate_images(prompt, n=1, extra=extra, seed=seed + k).images
    judged = judge.attributes(drawn)
    wanted = things[:len(drawn)]
    ceiling = judge.attributes([world.render(s) for s in same[:len(drawn)]])
    def score(attrs: list[dict[str, str]]) -> dict[str, float]:
        return {"accent": float(np.mean([a["accent"] == w.accent for a, w in zip(attrs, wanted, strict=True)])),
                "instance": float(np.mean([all(a[key] == getattr(w, key) for key in a)
                                           for a, w in zip(attrs, wanted, strict=True)]))}
    return {"same_instance_yes_no": float(np.mean(right)),
            "vs_lookalike_yes_no": float(np.mean(near_right)), "n": n,
            "drawn_from_a_photo_definition": score(judged),
            "real_photos (judge ceiling)": score(ceiling), "pictures": len(drawn)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    set_threads()
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    if args.cfg_scale is not None:  # every picture below is drawn with this guidance
        bb.cfg_scale = args.cfg_scale
    clip = load_clip(ClipSpec(str(args.clip)))
    judge = ToyJudge.load(args.judge)
    held = tuple(sorted(world.HELD_OUT))
    report: dict[str, Any] = {
        "vq_round_trip": round_trip(bb, args.n, args.seed + 10),
        "understanding_pretrain_things": understanding(bb, args.n, args.seed + 20, world.PRETRAIN_THINGS),
        "understanding_held_out_things": understanding(bb, args.n, args.seed + 30, held),
        "caption_to_image": drawing(bb, clip, world.random_scenes(args.draw, args.seed + 40), args.seed),
        "caption_to_image_held_out_things": drawing(
            bb, clip, world.random_scenes(args.draw, args.seed + 50, pool=held), args.seed),
        "instances_pretrain_things": instances(bb, judge, args.n // 2, args.draw, args.seed + 60,
                                               world.PRETRAIN_THINGS),
        "instances_held_out_things": instances(bb, judge, args.n // 2, args.draw, args.seed + 70, held),
    }
    meta = Path(args.backbone) / "toyworld.json"
    if meta.exists():
        report["backbone_training"] = {k: v for k, v in json.loads(meta.read_text()).items() if k != "eval"}
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="examples per task / scenes for the round trip")
    ap.add_argument("--draw", type=int, default=24, help="pictures drawn from captions")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--clip", type=Path, default=CLIP_DIR)
    ap.add_argument("--judge", type=Path, default=JUDGE_DIR)
    ap.add_argument("--cfg-scale", type=float, default=None,
                    help="draw with this guidance instead of the backbone's own (1 = none)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.draw = 20, 4
    report = measure(args)
    print(json.dumps(report, indent=2) if args.json else _text(report))


def _text(report: dict[str, Any]) -> str:
    lines = []
    for key, value in report.items():
        lines.append(f"{key}: {json.dumps(value, default=lambda v: round(v, 3))}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
