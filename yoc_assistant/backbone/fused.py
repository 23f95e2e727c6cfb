"""A lean decode step for the image loop: fused projections over the static KV cache.

At batch 2 (the CFG rows) a decode step is memory-bound: every weight is read once
per token, and the step is as fast as those reads are wide and few. Per decoder
layer this step runs ONE matmul for q, k and v (weight [H + 2 KV, H]) and ONE for
gate and up (weight [2 I, H]) instead of five, and skips the HF model's per-call
bookkeeping (mask preprocessing, output capture, cache objects): the layer math is
Chameleon's own, done with the layer's own modules (RMSNorms, per-head q/k
LayerNorms, rotary embedding, o_proj, down_proj, activation), so the numbers are
the HF path's up to matmul rounding.

The fused weights are not a copy: `fuse` concatenates each layer's frozen q/k/v
(and gate/up) weights once, then re-points those Linears' parameters at slices of
the fused tensor, so memory stays the same and the HF modules keep working for
prefill, text and training. Only plain float Linears are fused (bf16/fp16/fp32);
quantized backbones (int8, nf4) keep the HF path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from yoc_assistant import settings

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

FUSABLE_PRECISIONS = {"bf16", "fp16", "fp32"}


@dataclass
class FusedLayer:
    """One decoder layer's fused projections (the originals are views into these)."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    qkv_split: tuple[int, int, int]
    gate_up_weight: torch.Tensor
    gate_up_bias: torch.Tensor | None
    intermediate: int


def _projections(layer: Any) -> tuple[list[torch.nn.Linear], list[torch.nn.Linear]]:
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj], [mlp.gate_proj, mlp.up_proj]


def fusable(bb: Backbone) -> bool:
    """True when every decoder layer's projections are frozen plain float Linears on one device."""
    from transformers.models.chameleon.modeling_chameleon import ChameleonDecoderLayer

    if getattr(bb, "precision", "bf16") not in FUSABLE_PRECISIONS:
        return False
    base = bb.model.model
    device = base.embed_tokens.weight.device
    for layer in base.layers:
        if type(layer) is not ChameleonDecoderLayer:  # the swin-norm variant orders norms differently
            return False
        for group in _projections(layer):
            if not all(_plain_linear(lin, device) for lin in group):
                return False
            if len({lin.bias is not None for lin in group}) != 1 or len({lin.weight.dtype for lin in group}) != 1:
                return False
    return True


def _plain_linear(lin: Any, device: torch.device) -> bool:
    # Frozen only: a backbone being trained (toyworld) keeps separate parameters, so its
    # state dict never holds tensors that share storage (safetensors refuses those).
    return (type(lin) is torch.nn.Linear and not hasattr(lin, "_hf_hook") and not lin.weight.requires_grad
            and lin.weight.is_floating_point() and lin.weight.device == device)


def fused_wanted(bb: Backbone) -> bool:
    """Fused step on CUDA by default; YOC_FUSED=1 turns it on elsewhere, YOC_FUSED=0 off."""
    wanted = settings.fused_step()
    if wanted is False:
        return False
    on = wanted is True or torch.device(bb.device).type == "cuda"
    return on and fusable(bb)


def _fuse_group(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases); make each Linear's parameters slices of them."""
    weight = torch.cat([lin.weight.detach() for lin in linears])
    bias = None
    if linears[0].bias is not None:
        bias = torch.cat([lin.bias.detach() for lin in linears])  # type: ignore[union-attr]
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight = torch.nn.Parameter(weight[start:start + rows], requires_grad=lin.weight.requires_grad)
        if bias is not None:
            lin.bias = torch.nn.Parameter(bias[start:start + rows], requires_grad=lin.bias.requires_grad)
        start += rows
    return weight, bias


def _still_shared(layer: Any, fused: FusedLayer) -> bool:
    """False once someone replaced or moved a projection (e.g. model.to(...))."""
    for group, weight in zip(_projections(layer), (fused.qkv_weight, fused.gate_up_weight), strict=True):
        start = 0
        for lin in group:
            w = lin.weight
            if w.device != weight.device or w.data_ptr() != weight[start].data_ptr():
                return False
            start += w.shape[0]
    return True


def fuse(bb: Backbone) -> list[FusedLayer]:
    """The fused projections of every layer, built once per backbone (cached on it)."""
    base = bb.model.model
    cached: list[FusedLayer] | None = bb.caches.fused_layers
    if cached is not None and all(_still_shared(lay, f) for lay, f in zip(base.layers, cached, strict=True)):
        return cached
    layers = []
    # Outside inference mode: the fused tensors become the model's parameters, which
    # training must still be able to use in autograd.
    with torch.inference_mode(False), torch.no_grad():
        for layer in base.layers:
            qkv, gate_up = _projections(layer)
            split = tuple(int(lin.weight.shape[0]) for lin in qkv)
            qkv_w, qkv_b = _fuse_group(qkv)
            gu_w, gu_b = _fuse_group(gate_up)
            layers.append(FusedLayer(qkv_w, qkv_b, split, gu_w, gu_b,  # type: ignore[arg-type]
                                     int(gate_up[0].weight.shape[0])))
    bb.caches.fused_layers = layers
    return layers


def mark_static(layers: list[FusedLayer]) -> None:
    """Tell torch.compile the fused weights never move, so CUDA graphs never copy them."""
    for f in layers:
        for t in (f.qkv_weight, f.qkv_bias, f.gate_up_weight, f.gate_up_bias):
            if t is not None:
                torch._dynamo.mark_static_address(t)


# -- the step ------------------------------------------------------------------------
def _attention(attn: Any, fused: FusedLayer, kv: Any, h: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Chameleon self-attention of one new token per row over the static cache."""
    from transformers.models.chameleon.modeling_chameleon import apply_rotary_pos_emb

    rows, q_len, _ = h.shape
    heads, kv_heads, dim = attn.num_heads, attn.num_key_value_heads, attn.head_dim
    q, k, v = F.linear(h, fused.qkv_weight, fused.qkv_bias).split(fused.qkv_split, dim=-1)
    # Per-head LayerNorm over head_dim, then [rows, heads, q_len, dim], as ChameleonAttention does.
    q = attn.q_norm(q.reshape(-1, heads, dim)).reshape(rows, q_len, heads, dim).transpose(1, 2)
    k = attn.k_norm(k.reshape(-1, kv_heads, dim)).reshape(rows, q_len, kv_heads, dim).transpose(1, 2)
    v = v.reshape(rows, q_len, kv_heads, dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    kv.keys.index_copy_(2, slot, k)
    kv.values.index_copy_(2, slot, v)
    groups = heads // kv_heads
    if groups > 1:  # GQA with one query: the group's heads become query rows of their kv head
        q = q.reshape(rows, kv_heads, groups * q_len, dim)
    out = F.scaled_dot_product_attention(q, kv.keys, kv.values, attn_mask=mask, scale=attn.scaling)
    out = out.reshape(rows, heads, q_len, dim).transpose(1, 2).reshape(rows, q_len, heads * dim)
    return attn.o_proj(out)


def _mlp(mlp: Any, fused: FusedLayer, h: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(h, fused.gate_up_weight, fused.gate_up_bias).split(fused.intermediate, dim=-1)
    return mlp.down_proj(mlp.act_fn(gate) * up)


def decode_hidden(bb: Backbone, layers: list[FusedLayer], cache: Any, embeds: torch.Tensor,
                  slot: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One token per row (embeds [R, 1, H]) written at cache `slot` ([1]); the last
    hidden states after the final norm [R, H].

    `positions` [R, 1] are the rotary positions, `mask` [R, 1, 1, K] the additive mask
    over the K cache slots. Only for one query token per row (GQA packing assumes it).
    """
    base = bb.model.model
    cos, sin = base.rotary_emb(embeds, positions)
    x = embeds
    for layer, fused in zip(base.layers, layers, strict=True):
        attn = layer.self_attn
        kv = cache.layers[attn.layer_idx]
        x = x + _attention(attn, fused, kv, layer.input_layernorm(x), cos, sin, slot, mask)
        x = x + _mlp(layer.mlp, fused, layer.post_attention_layernorm(x))
    return base.norm(x)[:, -1]
