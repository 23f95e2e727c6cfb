"""Our own VQGAN decoder (spec §2-§4): image-token ids -> pixels.

Upstream transformers ships only the encoder half of Chameleon's VQ-VAE. The
decoder here follows the taming-transformers layout and uses the checkpoint's
state-dict names (`model.vqmodel.decoder.*`), so the Anole-hf weights load as
they are. The codebook and `post_quant_conv` come from the upstream vqmodel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from yoc_assistant.errors import BackboneError, UserInputError

if TYPE_CHECKING:
    from PIL import Image

    from yoc_assistant.backbone.core import Backbone

DECODER_PREFIX = "model.vqmodel.decoder."
DECODE_BATCH = 4


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        k = self.k(n).reshape(b, c, h * w)  # [B, C, HW]
        v = self.v(n).reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        weights = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)  # [B, HW(q), HW(k)]
        out = torch.bmm(weights, v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VQDecoder(nn.Module):
    """Latent [B, latent_channels, g, g] -> pixels [B, out_channels, R, R], unclamped."""

    def __init__(self, vq_config: Any) -> None:
        super().__init__()
        mult = list(vq_config.channel_multiplier)
        base = int(vq_config.base_channels)
        blocks = int(vq_config.num_res_blocks) + 1
        attn_res = set(vq_config.attn_resolutions or [])
        dropout = float(getattr(vq_config, "dropout", 0.0) or 0.0)
        vanilla = getattr(vq_config, "attn_type", "vanilla") == "vanilla"
        levels = len(mult)
        c = base * mult[-1]
        res = int(vq_config.resolution) // 2 ** (levels - 1)

        self.conv_in = nn.Conv2d(int(vq_config.latent_channels), c, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, dropout)
        self.mid.attn_1 = AttnBlock(c) if vanilla else nn.Identity()
        self.mid.block_2 = ResnetBlock(c, c, dropout)

        ups: list[nn.Module] = [nn.Module() for _ in range(levels)]
        for level in reversed(range(levels)):  # built in execution order, stored by level
            c_out = base * mult[level]
            up = ups[level]
            up.block = nn.ModuleList()
            up.attn = nn.ModuleList()
            for _ in range(blocks):
                up.block.append(ResnetBlock(c, c_out, dropout))
                c = c_out
                if vanilla and res in attn_res:
                    up.attn.append(AttnBlock(c))
            if level != 0:
                up.upsample = Upsample(c)
                res *= 2
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, int(getattr(vq_config, "out_channels", 3) or 3), 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def decoder_weights(bb: Backbone) -> dict[str, torch.Tensor]:
    """The `model.vqmodel.decoder.*` tensors of the checkpoint, prefix removed."""
    from yoc_assistant.backbone.loading import read_tensors

    return read_tensors(bb.checkpoint_dir, DECODER_PREFIX)


def build_decoder(bb: Backbone) -> VQDecoder:
    """Construct the decoder for `bb` and load its weights (float32, on bb.device)."""
    if not bb.has_decoder:
        raise BackboneError(
            f"{bb.name} has no VQ decoder weights (model.vqmodel.decoder.*): it can read images "
            "and answer in text but cannot draw; use an Anole checkpoint (leloy/Anole-7b-v0.1-hf)"
        )
    decoder = VQDecoder(bb.model.config.vq_config)
    weights = decoder_weights(bb)
    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise BackboneError(
            f"{bb.checkpoint_dir}: decoder weights do not fit vq_config: missing "
            f"{[DECODER_PREFIX + k for k in missing[:3]]}, unexpected {[DECODER_PREFIX + k for k in unexpected[:3]]}"
        )
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BackboneError(
                f"{bb.checkpoint_dir}: tensor {DECODER_PREFIX + key} has shape {tuple(tensor.shape)}, "
                f"vq_config expects {tuple(expected[key].shape)}"
            )
    decoder.load_state_dict({k: v.float() for k, v in weights.items()})
    return decoder.to(device=bb.device, dtype=torch.float32).eval().requires_grad_(False)


def get_decoder(bb: Backbone) -> VQDecoder:
    """The backbone's decoder, built on first use so text-only use costs nothing."""
    decoder = bb.caches.vq_decoder
    if decoder is None:
        decoder = build_decoder(bb)
        bb.caches.vq_decoder = decoder
    return decoder


def check_image_ids(bb: Backbone, ids: torch.Tensor | Any) -> torch.Tensor:
    """Validate [B, image_seq_length] image-token ids; return codebook indices."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[1] != bb.image_seq_length:
        raise UserInputError(
            f"an image needs exactly {bb.image_seq_length} image tokens per row; got shape "
            f"{tuple(ids.shape)}"
        )
    return bb.image_vocab.to_codebook(ids)


@torch.no_grad()
def decode_pixels(bb: Backbone, ids: torch.Tensor | Any) -> torch.Tensor:
    """Image-token BPE ids [B, N] -> float pixels [B, 3, R, R] before post-processing."""
    codes = check_image_ids(bb, ids)
    decoder = get_decoder(bb)
    vq = bb.model.model.vqmodel
    grid = int(round(bb.image_seq_length ** 0.5))
    emb = vq.quantize.embedding.weight
    out = []
    # A few images at a time: at 512x512 the last level's activations are large.
    for chunk in codes.split(DECODE_BATCH):
        latent = emb[chunk.to(emb.device)].float()  # [b, N, D], raster order
        latent = latent.view(chunk.shape[0], grid, grid, -1).permute(0, 3, 1, 2).contiguous()
        latent = vq.post_quant_conv(latent)
        out.append(decoder(latent.to(bb.device)))
    return torch.cat(out)


def decode_images(bb: Backbone, ids: torch.Tensor | Any) -> list[Image.Image]:
    """Image-token BPE ids [B, image_seq_length] -> RGB PIL images."""
    from yoc_assistant.backbone.imaging import postprocess

    return postprocess(decode_pixels(bb, ids))
