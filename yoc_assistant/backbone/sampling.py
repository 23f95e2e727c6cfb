"""Logit processing and sampling: temperature, top-k, top-p, greedy.

Sampling uses the Gumbel-max trick with uniform noise the caller draws from its own
seeded generator: argmax(logits / T + Gumbel(u)) is an exact draw from
softmax(logits / T). Drawing the noise outside the step keeps the step a pure,
shape-static function (so CUDA graphs can capture it) and makes a seed give the same
tokens on any device, one independent stream per image.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def check_options(temperature: float, top_p: float, top_k: int) -> None:
    from yoc_assistant.errors import UserInputError

    if not temperature >= 0:  # also catches NaN
        raise UserInputError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise UserInputError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise UserInputError(f"top_k must be >= 0 (0 = off), got {top_k}")


def warp(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then top-p (HF's order), on float logits [..., V].

    Removed entries become -inf. With temperature 0 (greedy) the logits are returned
    unchanged: the argmax does not depend on the filters.
    """
    if temperature <= 0:
        return logits
    return filter_logits(logits / temperature, top_k, top_p if top_p < 1.0 else None)


def filter_logits(x: torch.Tensor, top_k: int, top_p: float | torch.Tensor | None) -> torch.Tensor:
    """Top-k (0 = off) then top-p (None = off) on tempered logits; shape-static."""
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, NEG_INF)
    if top_p is not None:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # Drop a token once the mass strictly before it already exceeds top_p: the
        # most likely token always survives.
        before = torch.cumsum(probs, dim=-1) - probs
        sorted_x = sorted_x.masked_fill(before > top_p, NEG_INF)
        x = torch.full_like(x, NEG_INF).scatter(-1, order, sorted_x)
    return x


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise from uniform [0, 1) noise (clamped away from 0 and 1)."""
    u = uniform.float().clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def select(warped: torch.Tensor, uniform: torch.Tensor | None, greedy: bool) -> torch.Tensor:
    """Indices [...] chosen from warped logits [..., V]: argmax, or a Gumbel-max draw."""
    if greedy or uniform is None:
        return torch.argmax(warped, dim=-1)
    return torch.argmax(warped + gumbel(uniform), dim=-1)


class NoiseStream:
    """Uniform noise for one sampled row, from its own seeded CPU generator.

    Drawn in fixed-size chunks, so the values at step t depend only on the seed and t
    (never on how many rows are batched or on the device).
    """

    CHUNK = 16

    def __init__(self, seed: int, width: int) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.width = int(width)
        self._buf = torch.empty(0, self.width)
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self._pos >= self._buf.shape[0]:
            self._buf = torch.rand(self.CHUNK, self.width, generator=self.generator)
            self._pos = 0
        row = self._buf[self._pos]
        self._pos += 1
        return row
