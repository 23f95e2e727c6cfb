"""Measure the shipped toy models on new scenes (the figures in docs/toyworld.md).

* VQ round trip: mean absolute error (0..255) and PSNR of encode -> decode;
* understanding: teacher-forced argmax on each pretraining task (an answer counts only
  if every token is the argmax, which is what greedy decoding says), on scenes of
  pretraining things and, separately, of the held-out things (never seen in pretraining);
* caption -> image: pictures drawn from captions (CFG 3), named by the toy CLIP
  (zero-shot over all 144 things, and per attribute); the CLIP's accuracy on real
  photos of the same captions is the ceiling of this judge.

    python -m yoc_assistant.toyworld.measure [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, set_threads


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
    texts = [f"a photo of a {t.describe()}" for t in world.ALL_THINGS]
    emb = clip.embed_images(images) @ clip.embed_texts(texts).T
    return [world.ALL_THINGS[int(i)] for i in emb.argmax(1)]


def _agreement(wanted: list[world.Thing], got: list[world.Thing]) -> dict[str, float]:
    out = {"thing": float(np.mean([w == g for w, g in zip(wanted, got, strict=True)]))}
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


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    set_threads()
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    clip = load_clip(ClipSpec(str(args.clip)))
    held = tuple(sorted(world.HELD_OUT))
    report: dict[str, Any] = {
        "vq_round_trip": round_trip(bb, args.n, args.seed + 10),
        "understanding_pretrain_things": understanding(bb, args.n, args.seed + 20, world.PRETRAIN_THINGS),
        "understanding_held_out_things": understanding(bb, args.n, args.seed + 30, held),
        "caption_to_image": drawing(bb, clip, world.random_scenes(args.draw, args.seed + 40), args.seed),
        "caption_to_image_held_out_things": drawing(
            bb, clip, world.random_scenes(args.draw, args.seed + 50, pool=held), args.seed),
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
