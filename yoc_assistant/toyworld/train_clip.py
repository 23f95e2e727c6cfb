"""Train a small open_clip model on world scenes, for retrieval and CLIP-I.

A tiny ViT image tower and a tiny text tower (open_clip's own `CLIP` class and
tokenizer), trained contrastively on (scene, text) pairs. The text names the
object ('a photo of a dotted orange star', sometimes with its size and
background), so images of the same thing end up close whatever their background:
that is what soft-positive ranking and CLIP-I need. Identical texts in a batch
count as positives of each other (many scenes share a description).

Saved in open_clip's `local-dir` layout, which `personalize.retrieval` loads:
`open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) + `open_clip_model.safetensors`.

    python -m yoc_assistant.toyworld.train_clip [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import (
    CLIP_DIR,
    Progress,
    lr_at,
    save_tensors,
    set_threads,
    write_json,
)

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
VIT_CFG: dict[str, Any] = {"image_size": world.SIZE, "layers": 3, "width": 96, "head_width": 32,
                           "patch_size": 4}
# open_clip's ModifiedResNet (a list of layers selects it): convolutions see shapes on
# 32x32 scenes far sooner than a small ViT trained from scratch (which learnt colours
# and patterns but named shapes at chance after 800 steps).
RESNET_CFG: dict[str, Any] = {"image_size": world.SIZE, "layers": [1, 1, 1, 1], "width": 16,
                              "head_width": 32}
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": RESNET_CFG,
    # open_clip's BPE tokenizer has 49408 ids; the embedding table is most of the text tower.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 2},
}
PREPROCESS_CFG: dict[str, Any] = {
    "size": world.SIZE, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
    "interpolation": "bicubic", "resize_mode": "shortest",
}


def scene_text(scene: world.Scene, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return f"a photo of {scene.caption()}"
    return f"a photo of a {scene.thing.describe()}"


def _pixels(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                     texts: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE with multi-positive targets (rows with the same text)."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale.exp().clamp(max=100) * img @ txt.t()
    same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                  + torch.sum(-target * logits.t().log_softmax(1), 1).mean())


@torch.no_grad()
def evaluate(model: Any, tokenizer: Any, seed: int) -> dict[str, float]:
    """Retrieval sanity: for photos of one thing, how often the nearest other photo shows
    the same thing, and zero-shot naming accuracy over all things' descriptions."""
    model.eval()
    rng = np.random.default_rng([seed, 11])
    things = [world.ALL_THINGS[i] for i in rng.choice(len(world.ALL_THINGS), 40, replace=False)]
    scenes = [s for t in things for s in world.photos_of(t, 3, int(rng.integers(1 << 30)))]
    emb = F.normalize(model.encode_image(_pixels(world.render_array(scenes))), dim=-1)
    sim = emb @ emb.t()
    sim.fill_diagonal_(-2)
    labels = torch.tensor([things.index(s.thing) for s in scenes])
    nn_same = float((labels[sim.argmax(1)] == labels).float().mean())
    texts = [f"a photo of a {t.describe()}" for t in world.KINDS]  # words name kinds, never accents
    temb = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    pred = (emb @ temb.t()).argmax(1)
    names = torch.tensor([world.KINDS.index(s.thing.kind()) for s in scenes])
    model.train()
    return {"nearest_same_thing": nn_same, "zero_shot_thing": float((pred == names).float().mean())}


def save(model: Any, out: Path, meta: dict[str, Any]) -> None:
    # fp16 storage halves the file; open_clip casts to the model's dtype when loading.
    tensors = {k: v.detach().half() if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    save_tensors(out / WEIGHTS_NAME, tensors, {"format": "pt"})
    write_json(out / CONFIG_NAME, {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG})
    write_json(out / "toyworld.json", meta)


def train(steps: int, batch: int, seed: int, out: Path, lr: float = 1e-3,
          save_every: int = 200, tower: str = "resnet") -> dict[str, float]:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    set_threads()
    torch.manual_seed(seed)
    MODEL_CFG["vision_cfg"] = RESNET_CFG if tower == "resnet" else VIT_CFG
    model = open_clip.model.CLIP(**MODEL_CFG)
    tokenizer = SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng([seed, 3])
    prog = Progress(steps, "clip", every=25)
    t0, metrics = time.time(), {}
    for step in range(steps):
        scenes = [world.random_scene(rng, None, world.ALL_THINGS) for _ in range(batch)]
        texts = [scene_text(s, rng) for s in scenes]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        img = model.encode_image(_pixels(world.render_array(scenes)))
        txt = model.encode_text(tokenizer(texts))
        loss = contrastive_loss(img, txt, model.logit_scale, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        prog.update(step + 1, float(loss.detach()))
        if (step + 1) % save_every == 0 or step + 1 == steps:
            metrics = evaluate(model, tokenizer, seed)
            print(f"[clip] step {step + 1}: {metrics}", flush=True)
            save(model, out, {"step": step + 1, "seed": seed, "eval": metrics,
                              "train_seconds": round(time.time() - t0),
                              "command": "python -m yoc_assistant.toyworld.train_clip"})
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=CLIP_DIR)
    ap.add_argument("--tower", choices=("resnet", "vit"), default="resnet", help="image tower")
    ap.add_argument("--quick", action="store_true", help="a few steps (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch = 5, 16
    metrics = train(args.steps, args.batch, args.seed, args.out, lr=args.lr,
                    save_every=max(1, min(200, args.steps)), tower=args.tower)
    print(f"[clip] done: {metrics} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
