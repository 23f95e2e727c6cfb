"""The image-token decoding loop: static KV cache, batched CFG rows, one step per token.

Rows: n conditional rows (the prompt) and, with CFG, n unconditional rows, left-padded
to one length. Pads are never attended to: every forward gets an explicit additive
4-D mask (row b may attend to cache slot k iff k is not a pad of row b and k <= the
query's slot), and position ids count from each row's first real token. Each distinct
prompt is encoded once (prefill, eager; the conditional one continues the router's pass
over its start when it is handed one); each later step feeds one token per row.

The step (forward, image-row logits, CFG mix, temperature/top-k/top-p, Gumbel-max
draw, writing the token into the engine's preallocated output and feed buffers) is a
function of tensors with fixed shapes and fixed addresses, so on CUDA it is compiled
with torch.compile(mode="reduce-overhead") (CUDA graphs) and the same function runs
eagerly on the CPU: one code path, same math, no host sync until the last token.
The forward is either the HF modules' or the fused one of `fused.py` (one matmul for
q/k/v, one for gate/up; the default on CUDA, YOC_FUSED=1 elsewhere).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant import settings
from yoc_assistant.backbone import fused as fusing
from yoc_assistant.backbone import network
from yoc_assistant.backbone.generation import prefix_length
from yoc_assistant.backbone.sampling import filter_logits, select

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone, ExtraTokens, PromptPass

log = logging.getLogger(__name__)

CAPACITY_STEP = 64  # cache length is rounded up to this, so nearby prompt lengths share a compiled step
# Every engine (rows x capacity) and sampling setup is one more compile of the same `_step`;
# past dynamo's default limit of 8 it would silently run eagerly (several times slower).
RECOMPILE_LIMIT = 64
_COMPILABLE = {"bf16", "fp16", "fp32", "int8wo"}  # int8wo: compile is what makes it fast
DECODINGS, DEFAULT_DECODING = settings.IMAGE_DECODINGS, settings.IMAGE_DECODING


def compile_wanted(bb: Backbone) -> bool:
    """Compile the step on CUDA for unquantized weights, unless YOC_COMPILE=0."""
    if not settings.compile_image_step():
        return False
    return torch.device(bb.device).type == "cuda" and getattr(bb, "precision", "bf16") in _COMPILABLE


def image_head(bb: Backbone) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image ids on device, head rows of the image ids or None).

    Only the image rows of the head are computed while drawing (an eighth of Anole's
    head). A quantized head (not a plain float Linear) falls back to the full head.
    """
    cached = bb.caches.image_head
    if cached is not None:
        return cached
    head = bb.model.lm_head
    ids = bb.image_vocab.bpe_ids.to(head.weight.device)
    rows = None
    if type(head) is torch.nn.Linear and head.weight.is_floating_point() and head.bias is None:
        lo, count = int(ids[0]), int(ids.numel())
        with torch.no_grad():
            if torch.equal(ids, torch.arange(lo, lo + count, device=ids.device)):
                rows = head.weight.detach()[lo:lo + count]  # a view (Anole: ids 4..8195): no copy
            else:
                rows = head.weight.detach()[ids].contiguous()
    bb.caches.image_head = (ids, rows)
    return ids, rows


class ImageEngine:
    """Static cache + step for one (rows, capacity, compiled, fused) setup; reused across calls."""

    def __init__(self, bb: Backbone, rows: int, capacity: int, compiled: bool, fused: bool = False) -> None:
        from transformers import StaticCache

        self.bb = bb
        self.rows = rows
        self.capacity = capacity
        device = bb.model.model.embed_tokens.weight.device
        self.device = device
        self.dtype = bb.model.model.embed_tokens.weight.dtype
        self.cache = StaticCache(config=bb.model.config, max_cache_len=capacity)
        self.slots = torch.arange(capacity, device=device)
        # Filled per call in place (fixed addresses for CUDA graphs).
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.pads = torch.zeros(rows, dtype=torch.long, device=device)
        # The token fed next (every row) and every token drawn so far, written by the step.
        self.feed = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.out = torch.zeros(rows, capacity, dtype=torch.long, device=device)
        self.img_ids, self.img_rows = image_head(bb)
        self.fused_layers = fusing.fuse(bb) if fused else None
        self.compiled = compiled
        self.step_fn: Callable[..., None] = self._step
        self.window_fn: Callable[..., Any] | None = None  # the compiled SJD pass, made on first use
        if compiled:
            # Fixed addresses: CUDA graphs then read these in place instead of copying them in.
            for t in (self.valid, self.pads, self.slots, self.feed, self.out, self.img_ids, self.img_rows):
                if t is not None:
                    torch._dynamo.mark_static_address(t)
            if self.fused_layers is not None:
                fusing.mark_static(self.fused_layers)
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
            mode = settings.compile_mode()  # reduce-overhead, or max-autotune
            self.step_fn = torch.compile(self._step, mode=mode, dynamic=False)

    def sjd_pass(self) -> Callable[..., Any] | None:
        """The SJD window pass compiled for this engine (None: eager)."""
        if not self.compiled:
            return None
        if self.window_fn is None:
            from yoc_assistant.backbone import sjd

            mode = settings.compile_mode()
            compiled = torch.compile(sjd.window_pass, mode=mode, dynamic=False)

            def run(*args: Any) -> Any:
                try:
                    return compiled(*args)
                except Exception as err:
                    raise CompiledStepFailed(str(err)) from err

            self.window_fn = run
        return self.window_fn

    # -- pieces of the step ---------------------------------------------------------
    def mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Bool [R, Q, K] -> additive float [R, 1, Q, K] in the model's dtype."""
        low = torch.finfo(self.dtype).min
        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.full_like(zero, low)).unsqueeze(1)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [R, H] -> float32 logits over the image ids [R, K]."""
        if self.img_rows is not None:
            return (hidden @ self.img_rows.T).float()
        return self.bb.model.lm_head(hidden).float()[:, self.img_ids]

    def choose(self, hidden: torch.Tensor, noise: torch.Tensor, knobs: dict[str, Any]) -> torch.Tensor:
        """Last hidden states [R, H] -> the next image-token id per image [n]."""
        logits = self.image_logits(hidden)
        n = knobs["n"]
        if knobs["cfg"]:
            cond, uncond = logits[:n], logits[n:]
            logits = uncond + knobs["scale"] * (cond - uncond)
        if knobs["greedy"]:
            return self.img_ids[torch.argmax(logits, dim=-1)]
        top_p = knobs["top_p"] if knobs["use_top_p"] else None
        x = filter_logits(logits / knobs["temperature"], knobs["top_k"], top_p)
        return self.img_ids[select(x, noise, greedy=False)]

    def hidden(self, tok: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Feed tok [R, 1] at cache slot `cur` (0-d); return the last hidden states [R, H]."""
        embeds = self.bb.model.model.embed_tokens(tok)
        positions = (cur - self.pads).clamp(min=0).unsqueeze(1)
        mask = self.mask((self.valid & (self.slots <= cur)).unsqueeze(1))
        if self.fused_layers is not None:
            return fusing.decode_hidden(self.bb, self.fused_layers, self.cache, embeds, cur.reshape(1),
                                        positions, mask)
        hidden, _ = network.base_forward(self.bb, embeds, attention_mask=mask,
                                         position_ids=positions, cache=self.cache, use_cache=True)
        return hidden[:, -1]

    def emit(self, nxt: torch.Tensor, index: torch.Tensor, cfg: bool) -> None:
        """Store the images' tokens nxt [n] as column `index` (0-d) of `out` and as the next feed."""
        row = nxt.repeat(2) if cfg else nxt  # the unconditional rows take their image's token
        self.feed.copy_(row.unsqueeze(1))
        self.out.index_copy_(1, index.reshape(1), row.unsqueeze(1))

    def _step(self, cur: torch.Tensor, index: torch.Tensor, noise: torch.Tensor,
              knobs: dict[str, Any]) -> None:
        """One decoding step: feed `feed` at slot `cur`, store the drawn tokens at `index`."""
        self.emit(self.choose(self.hidden(self.feed, cur), noise, knobs), index, knobs["cfg"])

    # -- one call -------------------------------------------------------------------
    def prefill(self, rows: list[list[int]], extra: ExtraTokens | None,
                prefix: PromptPass | None = None) -> torch.Tensor:
        """Reset the cache, fill it with the left-padded prompts; return the last hidden [R, H].

        Each distinct prompt runs once, alone, and its K/V go into each of its rows after
        the row's pads: a row's K/V depend on its own tokens only (positions count from its
        first real token, pads are never attended), so the n copies of a prompt share one
        run. The conditional prompt continues from `prefix`, the router's pass over its
        start (BOS .. separator): only the self-prompt tokens and BOI run here. CFG's
        unconditional prompt ([BOS, BOI] by default) is another sequence, which the router
        never ran: it gets its own run, of its own (short) length.
        """
        width = max(len(r) for r in rows)
        pads = torch.tensor([width - len(r) for r in rows], device=self.device)
        self.cache.reset()
        self.pads.copy_(pads)
        self.valid.copy_(self.slots.unsqueeze(0) >= pads.unsqueeze(1))
        runs: dict[tuple[int, ...], tuple[torch.Tensor, Any]] = {}
        for row in rows:
            if tuple(row) not in runs:
                runs[tuple(row)] = prompt_states(self.bb, row, extra, prefix)
        hidden = torch.stack([runs[tuple(r)][0] for r in rows])
        for layer in range(len(self.cache.layers)):
            keys, values = [], []
            for row in rows:
                done = runs[tuple(row)][1].layers[layer]
                gap = width - len(row)
                keys.append(torch.nn.functional.pad(done.keys[0], (0, 0, gap, 0)))
                values.append(torch.nn.functional.pad(done.values[0], (0, 0, gap, 0)))
            self.cache.update(torch.stack(keys), torch.stack(values), layer)
        return hidden


def prompt_states(bb: Backbone, ids: Sequence[int], extra: ExtraTokens | None,
                  prefix: PromptPass | None = None) -> tuple[torch.Tensor, Any]:
    """`ids` through the base transformer alone: (the last hidden state [H], the KV cache
    of every token). Continues `prefix` when it is a start of `ids` that leaves at least
    one token to run (the hidden state after the last one is what the first draw reads)."""
    device = network.embedding_layer(bb).weight.device
    known = prefix_length(prefix, ids, extra)
    cache = prefix.take_cache() if prefix is not None and 0 < known < len(ids) else None
    rest = torch.tensor(list(ids[known:] if cache is not None else ids), device=device)
    hidden, cache = network.base_forward(bb, network.embed(bb, rest.unsqueeze(0), extra),
                                         cache=cache, use_cache=True)
    return hidden[0, -1], cache


def get_engine(bb: Backbone, rows: int, needed: int, compiled: bool, fused: bool = False,
               capacity_step: int = CAPACITY_STEP) -> ImageEngine:
    capacity = -(-needed // capacity_step) * capacity_step
    engine: ImageEngine | None = bb.caches.image_engine
    key = (rows, capacity, compiled, fused)
    if engine is None or (engine.rows, engine.capacity, engine.compiled, engine.fused_layers is not None) != key:
        engine = None
        bb.caches.image_engine = None  # free the old cache first
        engine = ImageEngine(bb, rows, capacity, compiled, fused)
        bb.caches.image_engine = engine
    return engine


def release(bb: Backbone) -> None:
    """Free the image engine's KV cache and compiled step (e.g. before training on the GPU)."""
    bb.caches.image_engine = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def draw_noise(seeds: Sequence[int], steps: int, width: int, device: torch.device) -> torch.Tensor:
    """Uniform noise [steps, n, width]: image i's values depend only on seeds[i]."""
    per_image = [torch.rand(steps, width, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(per_image, dim=1).to(device)


def sample_image_ids(bb: Backbone, prompt: list[int], uncond: list[int] | None, *, n: int,
                     extra: ExtraTokens | None, cfg_scale: float, temperature: float, top_p: float,
                     top_k: int, seeds: Sequence[int], on_progress: Callable[[int, int], None] | None,
                     compiled: bool | None = None, record: list[torch.Tensor] | None = None,
                     tokens: int | None = None, fused: bool | None = None,
                     decoding: str = "sequential", window: int | None = None,
                     stats: Any = None, capacity_step: int = CAPACITY_STEP,
                     prefix: PromptPass | None = None) -> torch.Tensor:
    """Image-token ids [n, image_seq_length] (on the CPU). `prompt` ends with BOI.

    `uncond` (ending with BOI) turns CFG on; None turns it off. `record`, if given,
    receives the sampled step's float logits per step (tests compare them with a
    full recompute); it forces the eager path. `tokens` draws fewer tokens than an
    image has (benchmarks only: the result is not a decodable image). `fused` picks
    the fused decode step (None: `fused.fused_wanted`; True is ignored where the
    weights cannot be fused, e.g. int8/nf4). `decoding` is "sequential" or "sjd"
    (`window` drafts per pass, `stats` an `sjd.SJDStats` that receives the pass count;
    with SJD, `record` receives one [total, K] tensor per image). `capacity_step`: the
    cache's length is rounded up to a multiple of it (benchmarks measure what that costs).
    `prefix`: the router's pass over the prompt's start, continued by the prefill
    (`ImageEngine.prefill`); the pictures are those drawn without it.
    """
    from yoc_assistant.backbone import sjd

    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    total = int(bb.image_seq_length) if tokens is None else int(tokens)
    compiled = compile_wanted(bb) if compiled is None else compiled
    fused = fusing.fused_wanted(bb) if fused is None else (fused and fusing.fusable(bb))
    if record is not None:
        compiled = False
    rows = [prompt] * n + ([uncond] * n if uncond is not None else [])
    needed = max(len(r) for r in rows) + total
    setup: dict[str, Any] = {"decoding": decoding, "stats": stats, "capacity_step": max(1, int(capacity_step)),
                             "prefix": prefix}
    if decoding == "sjd":
        setup["window"] = sjd.default_window(bb.device) if window is None else max(1, int(window))
        needed += sjd.extra_capacity(setup["window"])
        fused = False  # the SJD pass feeds several tokens per row: the HF modules' path
    with _lock(bb):
        return _sample(bb, rows, total, needed, compiled, fused, n=n, extra=extra, cfg_scale=cfg_scale,
                       temperature=temperature, top_p=top_p, top_k=top_k, seeds=seeds,
                       on_progress=on_progress, record=record, setup=setup)


def _lock(bb: Backbone) -> threading.Lock:
    """One image decode at a time per backbone: the engine's cache is shared state."""
    return bb.caches.image_lock


def _sample(bb: Backbone, rows: list[list[int]], total: int, needed: int, compiled: bool, fused: bool, *, n: int,
            extra: ExtraTokens | None, cfg_scale: float, temperature: float, top_p: float, top_k: int,
            seeds: Sequence[int], on_progress: Callable[[int, int], None] | None,
            record: list[torch.Tensor] | None, setup: dict[str, Any]) -> torch.Tensor:
    try:
        engine = get_engine(bb, len(rows), needed, compiled, fused, setup["capacity_step"])
        return _run(engine, rows, total, n=n, extra=extra, cfg_scale=cfg_scale, temperature=temperature,
                    top_p=top_p, top_k=top_k, seeds=seeds, on_progress=on_progress, record=record,
                    setup=setup)
    except CompiledStepFailed as failure:  # a compiler failure must not cost the user the picture
        err = failure.__cause__
        log.warning("compiled image decoding failed (%s: %s); decoding without compile",
                    type(err).__name__, err)
        bb.caches.image_engine = None
        engine = get_engine(bb, len(rows), needed, False, fused, setup["capacity_step"])
        return _run(engine, rows, total, n=n, extra=extra, cfg_scale=cfg_scale, temperature=temperature,
                    top_p=top_p, top_k=top_k, seeds=seeds, on_progress=on_progress, record=record,
                    setup=setup)


def sampling_knobs(device: torch.device, *, n: int, cfg: bool, width: int, cfg_scale: float,
                   temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    """What the step reads besides the cache: flags, and values as tensors (changing them never
    recompiles)."""
    return {
        "n": n, "cfg": cfg, "greedy": temperature <= 0,
        "top_k": top_k if 0 < top_k < width else 0, "use_top_p": top_p < 1.0,
        "scale": torch.tensor(float(cfg_scale), device=device),
        "temperature": torch.tensor(max(float(temperature), 1e-6), device=device),
        "top_p": torch.tensor(float(top_p), device=device),
    }


def _run(engine: ImageEngine, rows: list[list[int]], total: int, *, n: int, extra: ExtraTokens | None,
         cfg_scale: float, temperature: float, top_p: float, top_k: int, seeds: Sequence[int],
         on_progress: Callable[[int, int], None] | None,
         record: list[torch.Tensor] | None, setup: dict[str, Any]) -> torch.Tensor:
    device = engine.device
    cfg = len(rows) > n
    width = int(engine.img_ids.numel())
    greedy = temperature <= 0
    knobs = sampling_knobs(device, n=n, cfg=cfg, width=width, cfg_scale=cfg_scale, temperature=temperature,
                           top_p=top_p, top_k=top_k)
    if setup["decoding"] == "sjd":
        from yoc_assistant.backbone import sjd

        return sjd.sample(engine, rows, total, n=n, extra=extra, knobs=knobs, seeds=seeds,
                          on_progress=on_progress, window=setup["window"], stats=setup["stats"],
                          record=record, pass_fn=engine.sjd_pass(), prefix=setup.get("prefix"))
    noise = (torch.zeros(total, n, 1, device=device) if greedy  # unused by greedy steps
             else draw_noise(seeds, total, width, device))
    prompt_len = max(len(r) for r in rows)
    slots = torch.arange(prompt_len, prompt_len + total, device=device)
    steps = torch.arange(total, device=device)
    with torch.inference_mode():
        hidden = engine.prefill(rows, extra, setup.get("prefix"))
        if record is not None:
            record.append(_mixed(engine, hidden, n, cfg, float(cfg_scale)))
        engine.emit(engine.choose(hidden, noise[0], knobs), steps[0], cfg)
        if on_progress is not None:
            on_progress(1, total)
        for t in range(1, total):
            if record is None:
                _compiled_step(engine, slots[t - 1], steps[t], noise[t], knobs)
            else:  # the same composition as the step, with the logits kept
                hidden = engine.hidden(engine.feed, slots[t - 1])
                record.append(_mixed(engine, hidden, n, cfg, float(cfg_scale)))
                engine.emit(engine.choose(hidden, noise[t], knobs), steps[t], cfg)
            if on_progress is not None:
                on_progress(t + 1, total)
    # A copy: the engine's buffer is overwritten by the next call (the only host sync).
    return engine.out[:n, :total].to("cpu", copy=True)


class CompiledStepFailed(Exception):
    """The compiled step raised (compiler or CUDA-graph trouble); its cause is attached."""


def _compiled_step(engine: ImageEngine, cur: torch.Tensor, index: torch.Tensor, noise: torch.Tensor,
                   knobs: dict[str, Any]) -> None:
    if not engine.compiled:
        engine.step_fn(cur, index, noise, knobs)
        return
    try:
        engine.step_fn(cur, index, noise, knobs)
    except Exception as err:
        raise CompiledStepFailed(str(err)) from err


def _mixed(engine: ImageEngine, hidden: torch.Tensor, n: int, cfg: bool, scale: float) -> torch.Tensor:
    logits = engine.image_logits(hidden)
    if cfg:
        logits = logits[n:] + scale * (logits[:n] - logits[n:])
    return logits.cpu()
