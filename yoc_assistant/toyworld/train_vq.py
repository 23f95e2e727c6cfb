"""Train the toy VQ-VAE in Chameleon's layout on world scenes.

Encoder, codebook and quant convs are upstream transformers' `ChameleonVQVAE`; the
decoder is yoc's own `backbone.vqgan.VQDecoder` (the same code that decodes the 7B).
The codebook is learned by exponential moving averages with dead-code restarts,
the encoder through the straight-through estimator. Encoding at inference is
upstream's argmin, so training and use see the same tokens.

    python -m yoc_assistant.toyworld.train_vq [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from yoc_assistant.toyworld import world
from yoc_assistant.toyworld.common import (
    Progress,
    from_pixels,
    load_tensors,
    lr_at,
    save_tensors,
    set_threads,
    to_pixels,
    work_dir,
    write_json,
)

VQ_CONFIG: dict[str, Any] = {
    "resolution": world.SIZE, "base_channels": 32, "channel_multiplier": [1, 1, 2],
    "num_res_blocks": 0, "embed_dim": 16, "latent_channels": 32, "num_embeddings": 512,
    "attn_resolutions": [], "attn_type": "vanilla", "in_channels": 3, "out_channels": 3,
    "double_latent": False, "dropout": 0.0,
}


class ToyVQ(nn.Module):
    """Upstream ChameleonVQVAE (encoder, codebook, quant convs) + yoc's decoder."""

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        from transformers import ChameleonVQVAEConfig
        from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

        from yoc_assistant.backbone.vqgan import VQDecoder

        super().__init__()
        self.cfg = dict(cfg or VQ_CONFIG)
        config = ChameleonVQVAEConfig(**self.cfg)
        self.vq = ChameleonVQVAE(config)
        self.decoder = VQDecoder(config)
        k, d = self.cfg["num_embeddings"], self.cfg["embed_dim"]
        self.vq.quantize.embedding.weight.requires_grad_(False)
        self.register_buffer("ema_count", torch.zeros(k))
        self.register_buffer("ema_sum", torch.zeros(k, d))

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.quantize.embedding.weight

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.vq.quant_conv(self.vq.encoder(x))  # [B, D, g, g]

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        e = self.codebook
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return dist.argmin(1)

    def decode_latents(self, zq: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.vq.post_quant_conv(zq))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook indices [B, g*g] (raster order) -> pixels."""
        b, n = codes.shape
        g = int(round(n ** 0.5))
        zq = self.codebook[codes].view(b, g, g, -1).permute(0, 3, 1, 2)
        return self.decode_latents(zq)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        z = self.latents(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.nearest(flat.float()).view(z.shape[0], -1)

    def exported(self) -> dict[str, torch.Tensor]:
        """State dict in checkpoint naming (`encoder.*`, `quantize.*`, ..., `decoder.*`)."""
        out = dict(self.vq.state_dict())
        out.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        return out


@torch.no_grad()
def _ema_update(model: ToyVQ, flat: torch.Tensor, idx: torch.Tensor, decay: float) -> None:
    k = model.codebook.shape[0]
    counts = torch.bincount(idx, minlength=k).float()
    sums = torch.zeros_like(model.ema_sum).index_add_(0, idx, flat)
    model.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
    model.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
    n = model.ema_count.sum()
    smoothed = (model.ema_count + 1e-5) / (n + k * 1e-5) * n
    model.codebook.copy_(model.ema_sum / smoothed[:, None])


@torch.no_grad()
def _restart_dead(model: ToyVQ, flat: torch.Tensor, gen: torch.Generator, threshold: float) -> int:
    dead = (model.ema_count < threshold).nonzero().flatten()
    if len(dead) == 0:
        return 0
    pick = torch.randint(0, flat.shape[0], (len(dead),), generator=gen)
    fresh = flat[pick] + 0.01 * torch.randn(len(dead), flat.shape[1], generator=gen)
    model.codebook[dead] = fresh
    model.ema_sum[dead] = fresh
    model.ema_count[dead] = 1.0
    return len(dead)


def train_step(model: ToyVQ, x: torch.Tensor, beta: float = 0.25, decay: float = 0.99,
               bf16: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass: (loss, flat latents, indices). Updates the EMA codebook."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        z = model.latents(x)
    z = z.float()
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    idx = model.nearest(flat.detach())
    if model.training:
        _ema_update(model, flat.detach(), idx, decay)
    zq = model.codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    zq_st = z + (zq - z).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        recon = model.decode_latents(zq_st)
    recon = recon.float()
    loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + beta * F.mse_loss(z, zq.detach())
    return loss, flat.detach(), idx


PAIRS = 0.2  # the share of two-object scenes, as in pretraining


def render_pool(n: int, seed: int) -> np.ndarray:
    return world.render_array(world.random_scenes(n, seed, pool=world.ALL_THINGS, pairs=PAIRS))


def load_from_backbone(model: ToyVQ, folder: Path) -> None:
    """Start from the VQ-VAE inside a toy backbone checkpoint (`model.vqmodel.*`), so a
    fine-tuned codebook keeps most codes' meaning and the backbone can continue."""
    tensors = load_tensors(folder / "model.safetensors")
    vq = {k[len("model.vqmodel."):]: v for k, v in tensors.items() if k.startswith("model.vqmodel.")}
    own = set(model.vq.state_dict())  # without mid attention, its weights are left out
    model.vq.load_state_dict({k: v for k, v in vq.items() if not k.startswith("decoder.") and k in own})
    model.decoder.load_state_dict({k[8:]: v for k, v in vq.items() if k.startswith("decoder.")})
    with torch.no_grad():
        model.ema_sum.copy_(model.codebook)
        model.ema_count.fill_(1.0)


@torch.no_grad()
def evaluate(model: ToyVQ, images: np.ndarray) -> dict[str, float]:
    """Round trip through the codes, in uint8 pixel space like a user sees it."""
    model.eval()
    x = to_pixels(images)
    codes = model.encode_codes(x)
    out = from_pixels(model.decode_codes(codes))
    err = np.abs(out.astype(np.float32) - images.astype(np.float32))
    mse = float((err ** 2).mean())
    used = len(torch.unique(codes))
    model.train()
    return {"mae": float(err.mean()), "psnr": float(10 * np.log10(255 ** 2 / max(mse, 1e-9))),
            "codes_used": used}


def save(model: ToyVQ, out: Path, step: int, metrics: dict[str, float] | None = None) -> None:
    save_tensors(out / "vq.safetensors", model.exported(), {"format": "pt", "step": str(step)})
    write_json(out / "vq_config.json", model.cfg)
    if metrics is not None:
        write_json(out / "metrics.json", {"step": step, **metrics})


def load_vq(folder: Path) -> ToyVQ:
    import json

    model = ToyVQ(json.loads((folder / "vq_config.json").read_text()))
    tensors = load_tensors(folder / "vq.safetensors")
    model.vq.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("decoder.")})
    model.decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
    return model.eval()


def train(steps: int, batch: int, pool_size: int, seed: int, out: Path, lr: float = 2e-3,
          save_every: int = 250, bf16: bool = True, init_from: Path | None = None,
          config: dict[str, Any] | None = None) -> dict[str, float]:
    set_threads()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    pool = render_pool(pool_size, seed)
    held = render_pool(256, seed + 1)
    print(f"[vq] rendered {pool_size} scenes in {time.time() - t0:.0f}s", flush=True)
    model = ToyVQ(config).train()
    if init_from is not None:
        load_from_backbone(model, init_from)
        print(f"[vq] from {init_from}: {evaluate(model, held)}", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    prog = Progress(steps, "vq")
    metrics: dict[str, float] = {}
    for step in range(steps):
        pick = torch.randint(0, pool_size, (batch,), generator=gen).numpy()
        x = to_pixels(pool[pick])
        if step == 0 and init_from is None:  # start the codebook on real latents
            with torch.no_grad():
                z = model.latents(x)
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                model.codebook.copy_(flat[torch.randperm(flat.shape[0], generator=gen)[:len(model.codebook)]])
                model.ema_sum.copy_(model.codebook)
                model.ema_count.fill_(1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss, flat, _ = train_step(model, x, bf16=bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 49 and step < steps * 0.8:
            _restart_dead(model, flat, gen, threshold=0.03 * float(model.ema_count.mean()))
        prog.update(step + 1, float(loss.detach()))
        if (step + 1) % save_every == 0 or step + 1 == steps:
            metrics = evaluate(model, held)
            print(f"[vq] step {step + 1}: {metrics}", flush=True)
            save(model, out, step + 1, {**metrics, "train_seconds": time.time() - t0})
    if steps == 0:  # `--init-from X --steps 0`: X's VQ-VAE as it is, for train_backbone --vq
        metrics = evaluate(model, held)
        save(model, out, 0, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pool", type=int, default=10000, help="scenes rendered for training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=None, help="default: $YOC_TOY_WORK/vq")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast (slower than fp32 for these small convs on CPU)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="fine-tune the VQ-VAE of this toy backbone directory instead of starting fresh "
                         "(with --steps 0: extract it unchanged)")
    ap.add_argument("--no-mid-attention", action="store_true",
                    help="encoder without its mid attention block (attn_type none): an experiment on "
                         "token locality (docs/toyworld.md)")
    ap.add_argument("--quick", action="store_true", help="a few steps (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.pool = 20, 16, 256
    config = {**VQ_CONFIG, "attn_type": "none"} if args.no_mid_attention else None
    out = args.out or work_dir() / "vq"
    metrics = train(args.steps, args.batch, args.pool, args.seed, out, lr=args.lr,
                    save_every=max(1, min(100, args.steps)), bf16=args.bf16, init_from=args.init_from,
                    config=config)
    print(f"[vq] done: {metrics} -> {out}", flush=True)


if __name__ == "__main__":
    main()
