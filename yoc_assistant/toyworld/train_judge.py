"""Train the toy world's instance judge (its DINO): a small CNN that names a photo's
shape, colour, pattern and accent, and whose embedding clusters photos of one instance.

Trained on single-object scenes of every instance (held-out named things included: a
judge is a measuring instrument, not a model under test), half of them passed through
the backbone's VQ-VAE round trip when a backbone is given, so that the judge reads
pictures the way the backbone draws them, not only crisp renders. Loss: cross-entropy
of each attribute head plus a supervised contrastive term on the embedding (photos of
the same instance are positives of each other).

    python -m yoc_assistant.toyworld.train_judge [--steps N] [--backbone DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import (
    BACKBONE_DIR,
    JUDGE_DIR,
    Progress,
    lr_at,
    save_tensors,
    set_threads,
    write_json,
)

HEADS: dict[str, list[str]] = {
    "shape": list(world.SHAPES), "colour": list(world.COLOURS), "pattern": list(world.PATTERNS),
    "accent": list(world.ACCENTS),
}
ARCH = {"width": 32, "dim": 128, "resolution": world.SIZE}


def _labels(scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v.index(getattr(s.thing, k)) for s in scenes]) for k, v in HEADS.items()}


def _instance_ids(scenes: list[world.Scene]) -> torch.Tensor:
    return torch.tensor([world.ALL_THINGS.index(s.thing) for s in scenes])


def render_set(n: int, seed: int, backbone: Any | None) -> tuple[torch.Tensor, list[world.Scene]]:
    """Inputs [N, 3, 32, 32] in -1..1; with a backbone, every other scene is its VQ round trip."""
    from yoc_assistant.personalize.judge import to_input

    scenes = world.random_scenes(n, seed, pool=world.ALL_THINGS)
    images = [world.render(s) for s in scenes]
    if backbone is not None:
        half = list(range(0, n, 2))
        for start in range(0, len(half), 256):
            chunk = half[start:start + 256]
            decoded = backbone.decode_images(backbone.encode_images([images[i] for i in chunk]))
            for i, img in zip(chunk, decoded, strict=True):
                images[i] = img
    return to_input(images, world.SIZE), scenes


def supcon(emb: torch.Tensor, ids: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    z = F.normalize(emb, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (ids[:, None] == ids[None, :]) & ~eye
    logp = sim - sim.logsumexp(1, keepdim=True)
    has = pos.any(1)
    return -(logp * pos).sum(1)[has].div(pos.sum(1)[has]).mean() if has.any() else sim.sum() * 0


@torch.no_grad()
def evaluate(net: Any, x: torch.Tensor, scenes: list[world.Scene]) -> dict[str, float]:
    net.eval()
    emb, logits = net(x)
    labels = _labels(scenes)
    out = {k: float((logits[k].argmax(-1) == labels[k]).float().mean()) for k in HEADS}
    right = torch.stack([logits[k].argmax(-1) == labels[k] for k in HEADS]).all(0)
    out["instance"] = float(right.float().mean())
    z = F.normalize(emb, dim=-1)
    sim = (z @ z.T).fill_diagonal_(-2)
    ids = _instance_ids(scenes)
    out["nearest_same_instance"] = float((ids[sim.argmax(1)] == ids).float().mean())
    net.train()
    return out


def train(args: argparse.Namespace) -> dict[str, Any]:
    from yoc_assistant.personalize.judge import JudgeNet

    set_threads()
    torch.manual_seed(args.seed)
    backbone = None
    if args.backbone is not None:
        from yoc_assistant.backbone.core import Backbone

        backbone = Backbone.load(str(args.backbone), precision="fp32", device="cpu")
    t0 = time.time()
    x, scenes = render_set(args.scenes, args.seed, backbone)
    labels, ids = _labels(scenes), _instance_ids(scenes)
    x_test, test_scenes = render_set(args.test, args.seed + 1, None)
    x_vq, vq_scenes = render_set(args.test, args.seed + 2, backbone) if backbone is not None else (None, None)
    print(f"[judge] {args.scenes} training scenes in {time.time() - t0:.0f}s", flush=True)
    net = JudgeNet(HEADS, **{k: ARCH[k] for k in ("width", "dim", "resolution")}).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    prog = Progress(args.steps, "judge")
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        pick = torch.randint(0, len(scenes), (args.batch,), generator=gen)
        xb = x[pick]
        if torch.rand((), generator=gen) < 0.5:  # mirror: the judge must not care about handedness
            xb = xb.flip(3)
        emb, logits = net(xb + 0.03 * torch.randn(xb.shape, generator=gen))
        loss = sum(F.cross_entropy(logits[k], labels[k][pick]) for k in HEADS) + 0.5 * supcon(emb, ids[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        prog.update(step + 1, float(loss.detach()))
    report: dict[str, Any] = {"renders": evaluate(net, x_test, test_scenes)}
    if x_vq is not None:
        report["vq_round_trip"] = evaluate(net, x_vq, vq_scenes)
    report.update(steps=args.steps, seed=args.seed, train_seconds=round(time.time() - t0),
                  command="python -m yoc_assistant.toyworld.train_judge")
    args.out.mkdir(parents=True, exist_ok=True)
    save_tensors(args.out / "judge.safetensors", {k: v.detach().half() for k, v in net.state_dict().items()},
                 {"format": "pt"})
    write_json(args.out / "judge_config.json", {"heads": HEADS, **ARCH})
    write_json(args.out / "toyworld.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--scenes", type=int, default=12000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", type=Path, default=BACKBONE_DIR,
                    help="toy backbone whose VQ round trip half the training photos go through")
    ap.add_argument("--no-vq", action="store_true", help="train on crisp renders only")
    ap.add_argument("--out", type=Path, default=JUDGE_DIR)
    ap.add_argument("--quick", action="store_true", help="a few steps (CI)")
    args = ap.parse_args(argv)
    if args.no_vq:
        args.backbone = None
    if args.quick:
        args.steps, args.scenes, args.test, args.batch = 5, 64, 32, 16
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
