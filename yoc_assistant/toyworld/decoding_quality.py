"""SJD against sequential sampling on the toy world: the pictures' quality and the passes.

For each prompt set (captions of scenes with pretraining things, and with held-out
things) and each decoding, draw `--scenes` x `--per-scene` pictures (one seed per
picture), then judge them with the toy CLIP: "drawn right" (the CLIP names the
captioned thing, zero-shot over all things) and CLIP-I (cosine of the drawing and the
real rendering of the same scene). Repeated over `--repeats` seed sets: the figures
are mean and sd over the repeats, so SJD's difference from sequential can be read
against sequential's own seed-to-seed noise. Also reports forward passes per batch (one picture per batch by default).

    python -m yoc_assistant.toyworld.decoding_quality [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR, set_threads


def judge(clip: Any, scenes: list[world.Scene], drawn: list[list[Any]]) -> tuple[float, float]:
    """(drawn right, CLIP-I) over all pictures; drawn[k] are the pictures of scenes[k]."""
    texts = [f"a photo of a {t.describe()}" for t in world.ALL_THINGS]
    text_emb = clip.embed_texts(texts)
    real = clip.embed_images([world.render(s) for s in scenes])
    right, sims = [], []
    for k, (scene, pictures) in enumerate(zip(scenes, drawn, strict=True)):
        emb = clip.embed_images(pictures)
        named = (emb @ text_emb.T).argmax(1)
        right += [world.ALL_THINGS[int(i)] == scene.thing for i in named]
        sims += (emb @ real[k]).tolist()
    return sum(right) / len(right), sum(sims) / len(sims)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    set_threads()
    bb = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    clip = load_clip(ClipSpec(str(args.clip)))
    held = tuple(sorted(world.HELD_OUT))
    sets = {"pretrain things": world.random_scenes(args.scenes, seed=args.seed + 40),
            "held-out things": world.random_scenes(args.scenes, seed=args.seed + 50, pool=held)}
    report: dict[str, Any] = {"backbone": bb.name, "pictures_per_set": args.scenes * args.per_scene,
                              "repeats": args.repeats, "cfg_scale": bb.cfg_scale,
                              "image_tokens": int(bb.image_seq_length), "sets": {}}
    for name, scenes in sets.items():
        out: dict[str, Any] = {}
        for decoding in ("sequential", "sjd"):
            right, clip_i, passes, seconds = [], [], [], 0.0
            for rep in range(args.repeats):
                drawn = []
                for k, scene in enumerate(scenes):
                    prompt = bb.prompt_ids([scene.caption() + " ."])
                    start = time.process_time()
                    result = bb.generate_images(prompt, n=args.per_scene, decoding=decoding,
                                                seed=args.seed + 100_000 * rep + 100 * k)
                    seconds += time.process_time() - start
                    passes.append(result.passes)  # of the batch: its pictures are drawn together
                    drawn.append(result.images)
                r, c = judge(clip, scenes, drawn)
                right.append(r)
                clip_i.append(c)
            out[decoding] = {
                "drawn_right": _mean_sd(right), "clip_i": _mean_sd(clip_i),
                "passes_per_batch": round(statistics.mean(passes), 2),
                "passes_per_token": round(statistics.mean(passes) / int(bb.image_seq_length), 3),
                "cpu_s_per_picture": round(seconds / (args.repeats * len(scenes) * args.per_scene), 4),
            }
        report["sets"][name] = out
    return report


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=32, help="captions per prompt set")
    ap.add_argument("--per-scene", type=int, default=1, help="pictures per caption (drawn as one batch)")
    ap.add_argument("--repeats", type=int, default=4, help="seed sets (the sd is over these)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--backbone", default=str(BACKBONE_DIR))
    ap.add_argument("--clip", default=str(CLIP_DIR))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    report = run(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
