"""Speculative Jacobi Decoding (SJD) of image tokens: several tokens per forward pass,
the same distribution as drawing them one at a time.

The method (Teng et al. 2024, training-free): keep a window of W draft tokens after the
accepted ones. One forward pass feeds the last accepted token and the drafts; the
outputs are the model's distribution p_j for every window position, conditioned on the
drafts before it. Draft j, drawn earlier from a distribution q_j, is accepted with
probability min(1, p_j(x) / q_j(x)) (speculative sampling's rule); at the first rejection
the position is drawn from the normalised residual max(0, p_j - q_j) and the pass ends.
If every draft passes, one more token is drawn from the distribution after the window.
Each accepted token is therefore an exact draw from the model's conditional given the
accepted prefix, whatever the drafts were, so the pictures follow the sequential
sampler's distribution. The drafts after the accepted ones are the Jacobi step: each
is redrawn from this pass's prediction for its position (q := that prediction);
positions past the pass's reach take its last prediction, and the first window starts
as uniform random tokens (q uniform). Any q keeps the result exact: only acceptance
rates depend on it.

CFG, temperature, top-k and top-p shape p and q alike (both are the mixed, filtered
distributions). The static KV cache is shared with the sequential engine: every pass
rewinds the cache's write position to the first slot it feeds, so the K/V of
rejected drafts are overwritten, and the causal mask never lets a query see a slot
past its own (nothing stale is read). Concept rows live in the prompt (prefill).

Seeds: image i draws every random number from its own generator, a fixed count per
iteration, and its window depends only on its own state, so a picture is the same
alone or in a batch. Images in a batch advance at their own pace; one that runs more
than `window` tokens ahead of the slowest waits a pass, so a pass feeds at most
2 * window + 1 tokens per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.backbone import network
from yoc_assistant.backbone.sampling import filter_logits

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import ExtraTokens, PromptPass
    from yoc_assistant.backbone.imagegen import ImageEngine

# Drafts per pass. On a GPU a pass of 2 x 17 tokens reads the weights once, as a pass of 2
# does, so the longer window is free; on a CPU every fed token costs compute, and 8 drew the
# toy world's pictures in the least CPU time (passes per token: 0.48 at 8, 0.47 at 16).
DEFAULT_WINDOW = 8
GPU_WINDOW = 16


def default_window(device: torch.device) -> int:
    return GPU_WINDOW if torch.device(device).type == "cuda" else DEFAULT_WINDOW
WIDTH_BUCKET = 8  # compiled passes round their width up to this, so few shapes compile


@dataclass
class SJDStats:
    """What a run cost: forward passes (the prefill counts as one) and tokens drawn per image."""

    passes: int = 0
    tokens: int = 0
    images: int = 0
    accepted_drafts: int = 0  # drafts that passed the test (the rest of the tokens were drawn fresh)
    widths: list[int] = field(default_factory=list)

    def passes_per_token(self) -> float:
        return self.passes / max(self.tokens, 1)


@dataclass(eq=False)  # compared by identity (`in active`)
class _Image:
    """One picture's decoding state (image-vocab indices, CPU)."""

    gen: torch.Generator
    tokens: list[int]
    drafts: list[int]
    q: torch.Tensor  # [len(drafts), K]: the distribution each draft was drawn from


def draw(probs: torch.Tensor, u: float) -> int:
    """Index drawn from a (possibly unnormalised) distribution by inverse CDF with uniform u."""
    cdf = torch.cumsum(probs.double(), dim=0)
    idx = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64), right=True))
    return min(idx, probs.numel() - 1)


def verify(drafts: Sequence[int], q: torch.Tensor, p: torch.Tensor, u: torch.Tensor,
           bonus: bool) -> tuple[list[int], int]:
    """Speculative sampling's test over one window.

    drafts [W] drawn from q [W, K]; p [W + 1, K] the model's distributions at the draft
    positions and one after; u [W + 1] uniforms (u[:W] for the tests, u[W] for the fresh
    draw). Returns (the new tokens, how many of them are accepted drafts): the accepted
    drafts, then one token from the residual at the first rejection, or from p[W] when all
    pass and `bonus` (another position exists).
    """
    out: list[int] = []
    for j, x in enumerate(drafts):
        px, qx = float(p[j, x]), float(q[j, x])
        if float(u[j]) * qx < px:  # accept with probability min(1, p(x) / q(x))
            out.append(int(x))
            continue
        residual = (p[j] - q[j]).clamp(min=0)
        if not float(residual.sum()) > 0:  # p == q up to rounding: p itself
            residual = p[j]
        return out + [draw(residual, float(u[len(drafts)]))], len(out)
    if bonus:
        out.append(draw(p[len(drafts)], float(u[len(drafts)])))
    return out, len(drafts)


def distributions(mixed: torch.Tensor, knobs: dict[str, Any]) -> torch.Tensor:
    """Mixed image logits [..., K] -> the sampling distribution (one-hot when greedy)."""
    if knobs["greedy"]:
        return torch.nn.functional.one_hot(mixed.argmax(-1), mixed.shape[-1]).float()
    top_p = knobs["top_p"] if knobs["use_top_p"] else None
    return torch.softmax(filter_logits(mixed.float() / knobs["temperature"], knobs["top_k"], top_p), dim=-1)


def window_pass(engine: ImageEngine, ids: torch.Tensor, start: torch.Tensor, n: int,
                knobs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ids [R, Q] (image BPE ids) at cache slots start.. (start 0-d); return the mixed
    image logits [n, Q, K] and their distributions [n, Q, K]."""
    rows, width = ids.shape
    rewind(engine.cache, start)
    embeds = engine.bb.model.model.embed_tokens(ids)
    query = start + torch.arange(width, device=ids.device)
    positions = (query.unsqueeze(0) - engine.pads.unsqueeze(1)).clamp(min=0)
    allowed = engine.valid.unsqueeze(1) & (engine.slots.view(1, 1, -1) <= query.view(1, -1, 1))
    hidden, _ = network.base_forward(engine.bb, embeds, attention_mask=engine.mask(allowed),
                                     position_ids=positions, cache=engine.cache, use_cache=True)
    logits = engine.image_logits(hidden.reshape(rows * width, -1)).reshape(rows, width, -1)
    if knobs["cfg"]:
        cond, uncond = logits[:n], logits[n:]
        logits = uncond + knobs["scale"] * (cond - uncond)
    return logits, distributions(logits, knobs)


def rewind(cache: Any, slot: torch.Tensor) -> None:
    """Point the static cache's next write at `slot`: later slots are stale and will be
    overwritten (the rollback of rejected drafts)."""
    for layer in cache.layers:
        length = getattr(layer, "cumulative_length", None)
        if isinstance(length, torch.Tensor):
            length.fill_(slot)
        else:
            layer.cumulative_length = int(slot)


def extra_capacity(window: int) -> int:
    """Cache slots an SJD run needs past the prompt and the image (its last window's reach)."""
    return 2 * window + WIDTH_BUCKET + 1


def sample(engine: ImageEngine, rows: list[list[int]], total: int, *, n: int, extra: ExtraTokens | None,
           knobs: dict[str, Any], seeds: Sequence[int], on_progress: Callable[[int, int], None] | None,
           window: int = DEFAULT_WINDOW, stats: SJDStats | None = None,
           record: list[torch.Tensor] | None = None,
           pass_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
           prefix: PromptPass | None = None) -> torch.Tensor:
    """Image-token BPE ids [n, total] (CPU) drawn with SJD; `rows` as for the sequential loop.

    `record`, if given, receives per image a [total, K] tensor of the mixed logits each token
    was accepted under (tests compare them with a full recompute). `pass_fn` replaces
    `window_pass` (the compiled one on CUDA). `prefix`: the router's pass, continued by
    the prefill (`ImageEngine.prefill`).
    """
    stats = stats if stats is not None else SJDStats()
    run_pass = pass_fn or window_pass
    device = engine.device
    img_ids = engine.img_ids
    width_k = int(img_ids.numel())
    uniform = torch.full((width_k,), 1.0 / width_k)
    prompt_len = max(len(r) for r in rows)
    window = max(1, int(window))
    lead = window
    kept = [torch.zeros(total, width_k) for _ in range(n)] if record is not None else None
    with torch.inference_mode():
        hidden = engine.prefill(rows, extra, prefix)
        logits = engine.image_logits(hidden)
        if knobs["cfg"]:
            logits = logits[n:] + knobs["scale"] * (logits[:n] - logits[n:])
        first = distributions(logits, knobs).cpu()
        images: list[_Image] = []
        for i in range(n):
            gen = torch.Generator().manual_seed(int(seeds[i]))
            tok = draw(first[i], float(torch.rand(1, generator=gen)))
            image = _Image(gen, [tok], [], uniform.new_zeros(0, width_k))
            _redraft(image, None, 0, 0, total, window, uniform)
            images.append(image)
            if kept is not None:
                kept[i][0] = logits[i].float().cpu()
        stats.passes += 1
        reported = 1
        if on_progress is not None:
            on_progress(1, total)
        while True:
            todo = [im for im in images if len(im.tokens) < total]
            if not todo:
                break
            c = min(len(im.tokens) for im in todo)
            active = [im for im in todo if len(im.tokens) - c <= lead]
            end = max(len(im.tokens) + len(im.drafts) for im in active)
            width = end - c + 1
            # Compiled: one shape for a lone picture (every pass padded to at least W + 1), a
            # second only when a batch's pictures drift apart.
            padded = width if pass_fn is None else -(-max(width, window + 1) // WIDTH_BUCKET) * WIDTH_BUCKET
            feed = torch.empty(n, padded, dtype=torch.long)
            for i, im in enumerate(images):
                seq = im.tokens + (im.drafts if im in active else [])
                part = seq[c - 1:c - 1 + padded]
                feed[i] = torch.tensor(part + [part[-1]] * (padded - len(part)))
            bpe = img_ids[feed.to(device)]
            if knobs["cfg"]:
                bpe = bpe.repeat(2, 1)  # the unconditional rows take their image's tokens
            mixed, probs = run_pass(engine, bpe, torch.tensor(prompt_len + c - 1, device=device), n, knobs)
            probs = probs.cpu()
            if kept is not None:
                mixed = mixed.float().cpu()
            stats.passes += 1
            stats.widths.append(padded)
            for i, im in enumerate(images):
                if im not in active:
                    continue
                done = len(im.tokens)
                col = done - c  # column of p for position `done`
                w = len(im.drafts)
                u = torch.rand(2 * window + 1, generator=im.gen)
                new, accepted = verify(im.drafts, im.q, probs[i, col:col + w + 1],
                                       torch.cat([u[:w], u[window:window + 1]]),
                                       bonus=done + w < total)
                stats.accepted_drafts += accepted
                if kept is not None:
                    kept[i][done:done + len(new)] = mixed[i, col:col + len(new)]
                im.tokens.extend(new)
                _redraft(im, probs[i], c, done + w, total, window, uniform, u[window + 1:])
            low = min(len(im.tokens) for im in images)
            if on_progress is not None and low > reported:
                reported = low
                on_progress(low, total)
    stats.tokens += n * total
    stats.images += n
    if kept is not None and record is not None:
        record.extend(kept)
    out = torch.tensor([im.tokens for im in images], dtype=torch.long)
    return img_ids.cpu()[out]


def _redraft(im: _Image, probs: torch.Tensor | None, c: int, reach: int, total: int, window: int,
             uniform: torch.Tensor, u: torch.Tensor | None = None) -> None:
    """New drafts after the accepted tokens: position t is drawn from this pass's prediction
    for it (column t - c) while t <= reach (the image's own window), from the prediction at
    `reach` after that; before the first pass (probs None) uniformly at random."""
    start = len(im.tokens)
    count = min(window, total - start)
    if u is None:
        u = torch.rand(window, generator=im.gen)
    drafts, qs = [], []
    for k in range(count):
        t = start + k
        if probs is None:
            q = uniform
        else:  # past the window's reach: the last prediction stands in (a better guess than uniform)
            q = probs[min(t, reach) - c]
        drafts.append(draw(q, float(u[k])))
        qs.append(q)
    im.drafts = drafts
    im.q = torch.stack(qs) if qs else uniform.new_zeros(0, uniform.numel())
