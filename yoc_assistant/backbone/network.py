"""The backbone's network calls: embeddings with extra rows, the head with extra rows.

Ids < `bb.vocab_size` use the checkpoint's embedding and head; ids >= `vocab_size`
address rows of an `ExtraTokens` (learned concept tokens). Upstream's full forward
is never used: it masks every image-token logit, so yoc runs `model.model` (the base
transformer) and applies `model.lm_head` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone, ExtraTokens


def id_limit(bb: Backbone, extra: ExtraTokens | None) -> int:
    """One past the largest valid id: vocab_size plus the extra rows."""
    return int(bb.vocab_size) + (len(extra) if extra is not None else 0)


def check_ids(bb: Backbone, ids: torch.Tensor, extra: ExtraTokens | None, what: str = "prompt") -> None:
    """Refuse ids outside [0, vocab_size + extra rows) with a message naming them."""
    if ids.numel() == 0:
        return
    limit = id_limit(bb, extra)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= limit:
        bad = ids[(ids < 0) | (ids >= limit)].unique()[:5].tolist()
        rows = len(extra) if extra is not None else 0
        raise UserInputError(
            f"{what} has token id(s) {bad} outside 0..{limit - 1} "
            f"(vocabulary {bb.vocab_size} + {rows} extra row(s))"
        )


def embedding_layer(bb: Backbone) -> torch.nn.Embedding:
    return bb.model.model.embed_tokens


def embed(bb: Backbone, ids: torch.Tensor, extra: ExtraTokens | None = None) -> torch.Tensor:
    """Input embeddings [*, H] for ids [*]; ids >= vocab_size take `extra.input_rows`.

    The result is in the embedding's dtype and stays differentiable w.r.t. the extra
    rows (they are gathered, not copied into the table).
    """
    layer = embedding_layer(bb)
    weight = layer.weight
    ids = torch.as_tensor(ids, dtype=torch.long).to(weight.device)
    check_ids(bb, ids, extra)
    vocab = int(bb.vocab_size)
    is_extra = ids >= vocab
    base = layer(ids.clamp(max=vocab - 1))
    if extra is None or not bool(is_extra.any()):
        return base
    rows = extra.input_rows.to(device=weight.device, dtype=base.dtype)
    picked = rows[(ids - vocab).clamp(min=0)]
    return torch.where(is_extra.unsqueeze(-1), picked, base)


def logits(bb: Backbone, hidden: torch.Tensor, extra: ExtraTokens | None = None) -> torch.Tensor:
    """Head logits [*, V+E] in float32: `lm_head(hidden)` then `hidden @ output_rows.T`."""
    base = bb.model.lm_head(hidden).float()
    if extra is None or len(extra) == 0:
        return base
    rows = extra.output_rows.to(device=hidden.device, dtype=torch.float32)
    return torch.cat([base, hidden.float() @ rows.T], dim=-1)


def base_forward(bb: Backbone, embeds: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, cache: Any = None,
                 use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """The base transformer only: last hidden states [B, T, H] and the cache."""
    out = bb.model.model(inputs_embeds=embeds, attention_mask=attention_mask,
                         position_ids=position_ids, cache=cache, use_cache=use_cache)
    return out.last_hidden_state, getattr(out, "cache", None) if use_cache or cache is not None else None


def forward(bb: Backbone, ids: torch.Tensor | None = None, *, embeds: torch.Tensor | None = None,
            extra: ExtraTokens | None = None, attention_mask: torch.Tensor | None = None,
            position_ids: torch.Tensor | None = None, cache: Any = None,
            use_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """Ids or embeddings -> (logits [B, T, V+E] float32, cache)."""
    if (ids is None) == (embeds is None):
        raise ValueError("forward: give exactly one of ids or embeds")
    if embeds is None:
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        embeds = embed(bb, ids, extra)
    hidden, cache = base_forward(bb, embeds, attention_mask=attention_mask, position_ids=position_ids,
                                 cache=cache, use_cache=use_cache)
    return logits(bb, hidden, extra), cache


# A shared prefix is run once only when that saves at least this share of a batch's
# positions: the rest then attends through an explicit mask, which a short saving may
# not pay for (measured on CPU only; docs/performance.md).
MIN_SHARED_FRACTION = 0.1


def common_prefix(ids: torch.Tensor, lengths: torch.Tensor | None = None) -> int:
    """How many leading positions every row of `ids` [B, T] shares (within every row's
    length, and at most T - 1, so each row keeps at least one position of its own), or
    0 when running them once would save under `MIN_SHARED_FRACTION` of the positions."""
    batch, width = ids.shape
    if batch < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    limit = int(width if lengths is None else lengths.min()) - 1
    differs = (~same[:limit]).nonzero()
    prefix = int(differs[0]) if differs.numel() else max(limit, 0)
    return prefix if prefix * (batch - 1) >= MIN_SHARED_FRACTION * batch * width else 0


def right_padded(mask: torch.Tensor | None) -> bool:
    """True when `mask` [B, T] (or None: no padding) marks each row's first positions
    only: the layout `common_prefix`'s lengths assume."""
    if mask is None:
        return True
    lengths = mask.sum(dim=1, keepdim=True)
    return bool(torch.equal(mask.bool(), torch.arange(mask.shape[1], device=mask.device) < lengths))


def _checkpointing(bb: Backbone) -> bool:
    # HF's checkpointed layers drop the cache in training mode, so a shared prefix
    # cannot be continued from there.
    base = bb.model.model
    return base.training and any(getattr(layer, "gradient_checkpointing", False) for layer in base.layers)


def shared_prefix_hidden(bb: Backbone, embeds: torch.Tensor, prefix: int) -> torch.Tensor:
    """`base_forward`'s hidden states [B, T, H] for right-padded rows whose first
    `prefix` positions are the same: the prefix runs once (batch 1) and every row's rest
    continues from its cache. Equal to the full rows' forward up to float rounding;
    gradients reach the prefix's embeddings through the shared cache (summed over rows).

    Why: a concept's training examples all start with its prompt (`<x> is <rows> ...`,
    with the reference photo on the toy backbone), ~30 % of a batch's positions. Without
    a usable prefix (under 2 positions, one row, checkpointed layers) it is the plain
    forward."""
    batch = embeds.shape[0]
    if prefix < 2 or batch < 2 or prefix >= embeds.shape[1] or _checkpointing(bb):
        return base_forward(bb, embeds)[0]
    head, cache = base_forward(bb, embeds[:1, :prefix], use_cache=True)
    cache.batch_repeat_interleave(batch)
    tail, _ = base_forward(bb, embeds[:, prefix:], cache=cache)
    return torch.cat([head.expand(batch, -1, -1), tail], dim=1)
