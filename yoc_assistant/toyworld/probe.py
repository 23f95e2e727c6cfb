"""Diagnostics of what the backbone can see of an instance (docs/toyworld.md, "What stops
instance recognition").

* `accent`: a linear probe (logistic regression, trained on 3/4 of the single-object
  photos, scored on the rest) that reads the accent from the backbone's mean image-token
  embedding, its last-layer states averaged over the photo, and the state after EOI;
* `tokens`: one scene rendered in each accent: how many of its image tokens change, and
  how often the instance judge still reads the accent after the VQ round trip;
* `pairs`: two things in one photo. "is the X in this photo ?" (the pretraining's own
  wording) about each of the two things and about a third, absent one, on the world's
  two-thing scenes, on one-thing scenes, and on collages of two one-thing photos (the
  only two-thing photos a user's photos of one thing could give a trainer): each photo
  squeezed to half width, or its middle half.

    python -m yoc_assistant.toyworld.probe accent|tokens|pairs [--backbone DIR | --vq DIR] [--n N] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import BACKBONE_DIR, JUDGE_DIR, set_threads


def _singles(n: int, seed: int) -> list[world.Scene]:
    return [s for s in world.random_scenes(2 * n, seed) if s.other is None][:n]


def linear_probe(x: torch.Tensor, y: torch.Tensor, n_train: int, steps: int = 500) -> float:
    """Held-out accuracy of a softmax regression on standardised features."""
    x = (x - x[:n_train].mean(0)) / x[:n_train].std(0).clamp(min=1e-6)
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x[:n_train] @ w + b, y[:n_train]) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x[n_train:] @ w + b).argmax(1) == y[n_train:]).float().mean())


@torch.no_grad()
def accent_probe(bb: Any, n: int = 1600, seed: int = 5) -> dict[str, float]:
    scenes = _singles(n, seed)
    ids = bb.encode_images([world.render(s) for s in scenes])
    accents = list(world.ACCENTS)
    y = torch.tensor([accents.index(s.thing.accent) for s in scenes])
    sp = bb.special
    feats: dict[str, list[torch.Tensor]] = {"embedding": [], "states": [], "after_eoi": []}
    for i in range(0, len(ids), 100):
        chunk = ids[i:i + 100]
        block = torch.cat([torch.full((len(chunk), 1), sp.boi), chunk, torch.full((len(chunk), 1), sp.eoi)], 1)
        embeds = bb.embed(block)
        hidden = bb.hidden_states(embeds)
        feats["embedding"].append(embeds[:, 1:-1].mean(1))
        feats["states"].append(hidden[:, 1:-1].mean(1))
        feats["after_eoi"].append(hidden[:, -1])
    n_train = len(scenes) * 3 // 4
    with torch.enable_grad():
        out = {k: linear_probe(torch.cat(v).float(), y, n_train) for k, v in feats.items()}
    return {**out, "chance": 1 / len(accents), "photos": len(scenes)}


class VQCodes:
    """`encode_images`/`decode_images` of a toy VQ-VAE folder (`train_vq`'s output), for
    probing a VQ-VAE before any backbone is trained on it; ids are codebook indices."""

    def __init__(self, folder: Path) -> None:
        from yoc_assistant.toyworld.train_vq import load_vq

        self.model = load_vq(folder)

    @torch.no_grad()
    def encode_images(self, images: list[Any]) -> torch.Tensor:
        from yoc_assistant.toyworld.common import to_pixels

        return self.model.encode_codes(to_pixels(np.stack([np.asarray(im) for im in images])))

    @torch.no_grad()
    def decode_images(self, ids: torch.Tensor) -> list[Any]:
        from PIL import Image

        from yoc_assistant.toyworld.common import from_pixels

        return [Image.fromarray(a) for a in from_pixels(self.model.decode_codes(ids))]


@torch.no_grad()
def token_stability(bb: Any, judge: Any, n: int = 60, seed: int = 11) -> dict[str, float]:
    """`bb`: a Backbone, or anything with its `encode_images` / `decode_images` (VQCodes)."""
    changed, pixels, right, total = [], [], 0, 0
    for scene in _singles(n, seed):
        variants = [dataclasses.replace(scene, thing=dataclasses.replace(scene.thing, accent=a))
                    for a in world.ACCENTS]
        images = [world.render(v) for v in variants]
        ids = bb.encode_images(images)
        changed.append(int((ids[0] != ids[1:]).any(0).sum()))
        arrays = [np.asarray(im).astype(int) for im in images]
        pixels.append(int((np.abs(arrays[0] - arrays[1]).sum(-1) > 0).sum()))
        seen = judge.attributes(bb.decode_images(ids))
        right += sum(a["accent"] == v.thing.accent for a, v in zip(seen, variants, strict=True))
        total += len(variants)
    return {"tokens_changed_mean": float(np.mean(changed)), "tokens_changed_median": float(np.median(changed)),
            "tokens": int(ids.shape[1]), "pixels_changed_mean": float(np.mean(pixels)),
            "accent_read_after_round_trip": right / total, "scenes": len(changed)}


def collage(a: Any, b: Any, how: str) -> Any:
    """Two photos side by side in one frame of the first's size: `squash` (each resized to
    half width) or `crop` (the middle half of each)."""
    from PIL import Image

    w, h = a.size
    out = Image.new("RGB", (w, h))
    for k, im in enumerate((a, b)):
        im = im.resize((w, h))
        half = im.resize((w // 2, h), Image.BILINEAR) if how == "squash" else \
            im.crop((w // 4, 0, w // 4 + w // 2, h))
        out.paste(half, (k * (w // 2), 0))
    return out


PAIR_PHOTOS = ("two-thing scene", "one-thing scene", "collage squash", "collage crop")


@torch.no_grad()
def pair_reading(bb: Any, n: int = 40, seed: int = 3) -> dict[str, dict[str, float]]:
    """Per kind of photo: how often the backbone says yes to each shown thing (`first`,
    `second`; for a one-thing scene `second` is not in the photo, so lower is right) and
    no to a third thing (`absent`)."""
    from yoc_assistant.backbone.generation import next_token_logits
    from yoc_assistant.personalize.data import image_block

    yes, no = bb.tokenize("yes")[0], bb.tokenize("no")[0]

    def says_yes(block: list[int], thing: world.Thing) -> bool:
        logits = next_token_logits(bb, bb.prompt_ids([block, f"is the {thing.describe()} in this photo ?"]))
        return bool(logits[yes] > logits[no])

    def other_than(rng: np.random.Generator, *things: world.Thing) -> world.Thing:
        while True:
            t = world.random_thing(rng, world.ALL_THINGS)
            if all(t.kind() != x.kind() for x in things):
                return t

    out: dict[str, dict[str, float]] = {}
    for kind in PAIR_PHOTOS:
        rng = np.random.default_rng([seed, 17])
        counts = {"first": 0, "second": 0, "absent": 0}
        for _ in range(n):
            a = world.random_thing(rng, world.ALL_THINGS)
            b = other_than(rng, a)
            c = other_than(rng, a, b)
            if kind == "two-thing scene":
                image = world.render(world.random_pair_scene(rng, a, b, pool=world.ALL_THINGS))
            elif kind == "one-thing scene":
                image = world.render(world.random_scene(rng, a))
            else:
                image = collage(world.render(world.random_scene(rng, a)), world.render(world.random_scene(rng, b)),
                                kind.split()[-1])
            block = image_block(bb, bb.encode_images([image])[0].tolist())  # one encode, three questions
            counts["first"] += says_yes(block, a)
            counts["second"] += says_yes(block, b)
            counts["absent"] += not says_yes(block, c)
        out[kind] = {k: v / n for k, v in counts.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("accent", "tokens", "pairs"))
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--judge", type=Path, default=JUDGE_DIR)
    ap.add_argument("--vq", type=Path, default=None, help="tokens: probe this train_vq folder instead")
    ap.add_argument("--n", type=int, default=0, help="photos (accent: 1600) or scenes (tokens: 60; pairs: 40 per kind)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.judge import ToyJudge

    set_threads()
    bb: Any = VQCodes(args.vq) if args.vq and args.what == "tokens" else \
        Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    if args.what == "accent":
        report: dict[str, Any] = accent_probe(bb, args.n or 1600)
    elif args.what == "pairs":
        report = pair_reading(bb, args.n or 40)
        print(json.dumps(report, indent=2) if args.json else "\n".join(
            f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()) for kind, row in report.items()))
        return
    else:
        report = token_stability(bb, ToyJudge.load(args.judge), args.n or 60)
    print(json.dumps(report, indent=2) if args.json else
          "\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
