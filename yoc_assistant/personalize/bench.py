"""Training speed and memory (`yoc bench --train`): the real trainer on synthetic batches.

Work per step, stated plainly: the backbone is frozen, so the backward pass computes
activation gradients only (no weight gradients). With N the parameters of the
transformer's matrices plus the head (embedding lookups and the VQ model excluded)
and T the tokens of a step:

    useful FLOP per step = 4 * N * T   (forward 2NT + activation-gradient backward 2NT)

Gradient checkpointing recomputes the forward, so the hardware does about 6NT, but
the useful work (the figure used for "% of peak") stays 4NT. The H200 anchor
(`shared/anchors/`): 4 x 1100 tokens of a 7B at 321 ms/step is ~49% of a measured
~790 TFLOP/s bf16 matrix rate.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.personalize.concept import ConceptVectors
from yoc_assistant.personalize.threadpick import SPARE_SLACK, spare_cores, usable_cores
from yoc_assistant.personalize.trainer import TrainConfig, TrainEvent, train_concept

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

FORMULA = "useful FLOP/step = 4 * N * tokens (frozen backbone: forward 2N + activation-gradient backward 2N)"
# Dense bf16 tensor-core peaks (vendor figures, no sparsity), by a substring of the name.
BF16_PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("A6000", 155.0), ("V100", 125.0), ("T4", 65.0),
]


def matrix_params(bb: Backbone) -> int:
    """N: parameters of the decoder's matrices and the head (no embedding, no VQ model).

    Quantized weights count by their logical shape (int8 keeps it; 4-bit packs two per byte)."""
    base = bb.model.model
    total = 0
    for name, module in base.named_modules():
        if name.startswith("vqmodel") or not hasattr(module, "weight") or module is base.embed_tokens:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear8bitLt", "Linear4bit"):
            total += int(module.in_features) * int(module.out_features)
    head = bb.model.lm_head
    return total + int(head.in_features) * int(head.out_features)


def peak_bf16_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


class _Example:
    def __init__(self, ids: list[int], task: str) -> None:
        self.ids, self.labels, self.task = ids, list(ids), task


def synthetic_examples(bb: Backbone, n: int, seq_len: int, n_rows: int, seed: int = 0) -> list[_Example]:
    """Image-token sequences that start with concept tokens, every position supervised
    (the generation task's shape: the costliest one)."""
    gen = torch.Generator().manual_seed(seed)
    image_ids = bb.image_vocab.bpe_ids
    out = []
    for _ in range(n):
        body = image_ids[torch.randint(len(image_ids), (seq_len - 1 - n_rows,), generator=gen)].tolist()
        concept = list(range(bb.vocab_size, bb.vocab_size + n_rows))
        out.append(_Example([int(bb.special.bos), *concept, *body], "generation"))
    return out


def bench_train(bb: Backbone, *, batch_size: int = 4, seq_len: int = 1100, steps: int = 5,
                warmup: int = 2, gradient_checkpointing: bool = False, groups: dict[str, int] | None = None,
                seed: int = 0) -> dict[str, Any]:
    """Time `steps` optimizer steps (after `warmup`) of the real trainer; see the module doc."""
    groups = groups or {"generation": 16, "understanding": 16}
    vectors = ConceptVectors.initialize(bb, "bench", groups, seed=seed)
    total = warmup + steps
    examples = synthetic_examples(bb, batch_size * total, seq_len, vectors.n_rows, seed)
    stamps: list[float] = []

    def on_event(event: TrainEvent) -> None:
        if event.phase in ("start", "train"):
            _sync(bb.device)
            stamps.append(time.perf_counter())

    cuda = bb.device.type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(bb.device)
    config = TrainConfig(epochs=1, max_steps=total, batch_size=batch_size, lr=1e-4, seed=seed,
                         gradient_checkpointing=gradient_checkpointing, checkpoint_every=10**9)
    train_concept(bb, vectors, examples, config, on_event=on_event)
    times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][warmup:]
    ms = statistics.median(times) * 1000 if times else float("nan")
    plain_ms = plain_train_ms(bb, vectors, examples, batch_size=batch_size, steps=steps, warmup=warmup,
                              gradient_checkpointing=gradient_checkpointing)
    tokens = batch_size * seq_len
    n_params = matrix_params(bb)
    flops = 4.0 * n_params * tokens
    peak = peak_bf16_flops(bb.device)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(bb.device) if cuda else "cpu",
        "backbone": bb.name, "precision": bb.precision, "batch_size": batch_size, "seq_len": seq_len,
        "steps": len(times), "gradient_checkpointing": gradient_checkpointing,
        "ms_per_step": round(ms, 2), "tokens_per_s": round(tokens / ms * 1000, 1),
        "plain_transformers_ms_per_step": round(plain_ms, 2),
        "vs_plain_transformers": round(ms / plain_ms, 3),
        "matrix_params": n_params, "flops_per_step": flops, "formula": FORMULA,
        "achieved_tflops": round(flops / ms * 1000 / 1e12, 3),
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "pct_of_bf16_peak": round(100 * flops / (ms / 1000) / peak, 1) if peak else None,
    }
    result["phases_ms"] = train_phases(bb, vectors, examples, batch_size=batch_size, steps=steps, warmup=warmup)
    result["shared_prefix"] = compare_shared_prefix(bb, vectors, batch_size=batch_size, seq_len=seq_len,
                                                    steps=steps, warmup=warmup, seed=seed)
    if not cuda and usable_cores() >= 2:
        # Two threads beside another busy job take many times longer (threadpick.py): not timed then.
        result["threads"] = (compare_threads(bb, vectors, examples, batch_size=batch_size,
                                             steps=max(2, steps // 2), warmup=1)
                             if spare_cores() >= 2 - SPARE_SLACK else
                             "not timed: fewer than 2 idle cores (another job is running)")
    if cuda:
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(bb.device) / 2**30, 2)
    else:
        # ru_maxrss: KiB on Linux, bytes on macOS; the process's peak so far (not reset per run).
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_rss_gb"] = round(rss / (2**30 if sys.platform == "darwin" else 2**20), 2)
    return result


def plain_train_ms(bb: Backbone, vectors: ConceptVectors, examples: Sequence[_Example], *, batch_size: int,
                   steps: int, warmup: int, gradient_checkpointing: bool) -> float:
    """Median ms per step of the same batches trained by hand with transformers' modules only:
    concept rows spliced into `embed_tokens`' output, the base model, `lm_head` plus the rows'
    logits, cross-entropy over every next token, backward, AdamW. The baseline `yoc bench
    --train` sets the trainer against (its extra work: task-balanced loss, bookkeeping)."""
    from yoc_assistant.personalize.trainer import frozen_backbone

    device, vocab = bb.device, int(bb.vocab_size)
    base, head = bb.model.model, bb.model.lm_head
    rows_in = vectors.input_rows.detach().to(device, torch.float32).clone().requires_grad_(True)
    rows_out = vectors.output_rows.detach().to(device, torch.float32).clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([rows_in, rows_out], lr=1e-4)
    autocast = device.type == "cuda" and bb.dtype == torch.bfloat16
    times = []
    with frozen_backbone(bb, gradient_checkpointing):
        for k in range(warmup + steps):
            batch = examples[k * batch_size:(k + 1) * batch_size]
            ids = torch.tensor([e.ids for e in batch], device=device)
            _sync(device)
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
                is_extra = (ids >= vocab).unsqueeze(-1)
                embeds = base.embed_tokens(ids.clamp(max=vocab - 1))
                embeds = torch.where(is_extra, rows_in[(ids - vocab).clamp(min=0)].to(embeds.dtype), embeds)
                hidden = base(inputs_embeds=embeds).last_hidden_state
                logits = torch.cat([head(hidden).float(), hidden.float() @ rows_out.T], dim=-1)
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                         ids[:, 1:].reshape(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]) * 1000 if times[warmup:] else float("nan")


def _trainable_copy(bb: Backbone, vectors: ConceptVectors) -> tuple[list[torch.Tensor], Any]:
    """The rows (input, output) as fresh fp32 leaves on the backbone's device, and a
    ConceptSet over them: what a bench trains without touching `vectors`."""
    from yoc_assistant.personalize.concept import ConceptSet

    rows = [r.detach().to(bb.device, torch.float32).clone().requires_grad_(True)
            for r in (vectors.input_rows, vectors.output_rows)]
    return rows, ConceptSet(bb, [ConceptVectors(vectors.name, vectors.groups, rows[0], rows[1], {})])


def _step_parts(bb: Backbone, vectors: ConceptVectors, examples: Sequence[_Example], batch_size: int,
                n: int) -> tuple[list[dict[str, float]], list[torch.Tensor]]:
    """`n` optimizer steps with the trainer's own functions (`batch_loss`: batching,
    embedding, base model, head, task-balanced loss; backward; AdamW), each part timed
    by wall clock; and the rows' gradients of the first step."""
    from yoc_assistant.personalize.batches import check_examples
    from yoc_assistant.personalize.trainer import batch_loss, frozen_backbone

    tasks = check_examples(examples, bb, vectors.n_rows)
    rows, concepts = _trainable_copy(bb, vectors)
    optimizer = torch.optim.AdamW(rows, lr=1e-4)
    parts: list[dict[str, float]] = []
    first: list[torch.Tensor] = []
    with frozen_backbone(bb, False):
        for k in range(n):
            batch = examples[(k * batch_size) % len(examples):][:batch_size]
            _sync(bb.device)
            a = time.perf_counter()
            loss, _, _ = batch_loss(bb, concepts, batch, tasks)
            _sync(bb.device)
            b = time.perf_counter()
            loss.backward()
            _sync(bb.device)
            c = time.perf_counter()
            if k == 0:
                first = [r.grad.detach().clone() for r in rows]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(bb.device)
            parts.append({"forward_and_loss": b - a, "backward": c - b, "optimizer": time.perf_counter() - c})
    return parts, first


def compare_shared_prefix(bb: Backbone, vectors: ConceptVectors, *, batch_size: int, seq_len: int,
                          steps: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Forward + backward of batches whose rows share their first half (a concept's
    prompt with its reference photo is ~40 % of a toy example's positions), with the
    shared part run once (`Backbone.hidden_states(share_prefix_of=)`) and with every row
    run whole: median ms per batch."""
    from yoc_assistant.personalize.batches import check_examples
    from yoc_assistant.personalize.trainer import batch_loss, frozen_backbone

    prefix = seq_len // 2
    rows = synthetic_examples(bb, batch_size * (warmup + steps), seq_len, vectors.n_rows, seed)
    head = rows[0].ids[:prefix]
    examples = [_Example(head + e.ids[prefix:], e.task) for e in rows]
    tasks = check_examples(examples, bb, vectors.n_rows)
    rows, concepts = _trainable_copy(bb, vectors)
    ms: dict[str, float] = {}
    with frozen_backbone(bb, False):
        for label, share in (("whole_rows", False), ("shared_prefix", True)):
            times = []
            for k in range(warmup + steps):
                batch = examples[k * batch_size:(k + 1) * batch_size]
                _sync(bb.device)
                start = time.perf_counter()
                loss, _, _ = batch_loss(bb, concepts, batch, tasks, share_prefix=share)
                loss.backward()
                for r in rows:
                    r.grad = None
                _sync(bb.device)
                times.append(time.perf_counter() - start)
            ms[label] = round(statistics.median(times[warmup:] or times) * 1000, 2)
    return {"shared_positions": prefix, "of": seq_len, "ms_per_batch": ms,
            "ratio": round(ms["shared_prefix"] / ms["whole_rows"], 3)}


def train_phases(bb: Backbone, vectors: ConceptVectors, examples: Sequence[_Example], *, batch_size: int,
                 steps: int, warmup: int) -> dict[str, float]:
    """Median wall ms of a step's parts (`_step_parts`) over `steps` steps after `warmup`."""
    parts, _ = _step_parts(bb, vectors, examples, batch_size, warmup + steps)
    timed = parts[warmup:] or parts
    return {name: round(statistics.median(p[name] for p in timed) * 1000, 2) for name in timed[0]}


def compare_threads(bb: Backbone, vectors: ConceptVectors, examples: Sequence[_Example], *, batch_size: int,
                    steps: int, warmup: int, counts: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """The same steps at each CPU thread count: median wall ms per step, and whether
    the rows' gradients are bit-identical to the first count's (training keeps one count
    per run, so a run is repeatable; this says whether another count would change it).
    torch's thread count is restored after."""
    before = torch.get_num_threads()
    ms: dict[str, float] = {}
    grads: list[list[torch.Tensor]] = []
    try:
        for count in counts:
            torch.set_num_threads(count)
            parts, first = _step_parts(bb, vectors, examples, batch_size, warmup + steps)
            grads.append(first)
            ms[str(count)] = round(statistics.median(sum(p.values()) for p in parts[warmup:] or parts) * 1000, 2)
    finally:
        torch.set_num_threads(before)
    same = {str(c): all(torch.equal(a, b) for a, b in zip(grads[0], g, strict=True))
            for c, g in zip(counts[1:], grads[1:], strict=True)}
    return {"ms_per_step": ms, f"same_gradients_as_{counts[0]}": same}


def bench_train_precisions(source: str, precisions: list[str], *, device: str = "auto",
                           **kwargs: Any) -> list[dict[str, Any]]:
    """Load the backbone at each precision in turn and bench it (one in memory at a time)."""
    from yoc_assistant import Backbone

    results = []
    for precision in precisions:
        bb = Backbone.load(source, precision=precision, device=device)
        try:
            results.append(bench_train(bb, **kwargs))
        finally:
            del bb
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
