"""Speed figures of a loaded backbone: prefill, image tokens (with and without CFG),
seconds per image, VQ decode, text tokens per second, peak memory.

Each timed run follows an untimed warm-up run of the same shape, so compilation
(CUDA graphs on a GPU) is reported apart as `first_call_s` and never counted in
the steady figures. Where the weights can be fused, the CFG image figure is also
taken with the other decode step (fused projections vs HF modules), so one run
records both (`step_compare`).
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

PROMPT = "a photo of a small dog reading a book in a library, in the style of a watercolor painting"


def _sync(bb: Backbone) -> None:
    if torch.device(bb.device).type == "cuda":
        torch.cuda.synchronize()


def _timed(bb: Backbone, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(bb)
    start = time.perf_counter()
    out = fn()
    _sync(bb)
    return time.perf_counter() - start, out


def bench_prefill(bb: Backbone, length: int, repeats: int = 3) -> float:
    """Milliseconds to encode a prompt of `length` tokens (median of `repeats`)."""
    from yoc_assistant.backbone import network

    ids = torch.randint(0, int(bb.vocab_size), (1, length))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            dt, _ = _timed(bb, lambda: network.forward(bb, ids, use_cache=True))
            times.append(dt)
    times = sorted(times[1:])
    return times[len(times) // 2] * 1000


def bench_image(bb: Backbone, prompt: list[int], tokens: int, cfg_scale: float, n: int = 1,
                fused: bool | None = None, decoding: str = "sequential",
                capacity_step: int | None = None) -> dict[str, Any]:
    """Draw `tokens` image tokens twice (warm-up, timed); per-token and per-image figures.

    `fused` picks the decode step (None: the default for this backbone and device);
    `decoding` sequential or sjd (then `passes` counts SJD's forward passes, prefill included;
    its ms_per_token is the decode time spread over the tokens).
    """
    from yoc_assistant.backbone.generation import image_prompt
    from yoc_assistant.backbone.imagegen import sample_image_ids
    from yoc_assistant.backbone.sjd import SJDStats

    full = image_prompt(bb, prompt, None, "prompt")
    uncond = None if cfg_scale == 1.0 else [int(bb.special.bos), int(bb.special.boi)]
    marks: dict[int, float] = {}
    stats = [SJDStats()]  # the latest run's

    def run() -> torch.Tensor:
        marks.clear()
        stats[0] = SJDStats()
        return sample_image_ids(
            bb, full, uncond, n=n, extra=None, cfg_scale=cfg_scale, temperature=1.0, top_p=0.9,
            top_k=0, seeds=list(range(n)), tokens=tokens, fused=fused, decoding=decoding, stats=stats[0],
            **({} if capacity_step is None else {"capacity_step": capacity_step}),
            on_progress=lambda done, total: marks.setdefault(done, time.perf_counter()))

    first, _ = _timed(bb, run)
    start = time.perf_counter()
    total, _ = _timed(bb, run)
    end = start + total
    # The first token comes from the prefill; the rest are decode steps.
    prefill_s = marks[1] - start
    per_token = (end - marks[1]) / max(tokens - 1, 1)
    seq = int(bb.image_seq_length)
    passes = stats[0].passes if decoding == "sjd" else tokens
    return {
        "decoding": decoding, "cfg_scale": cfg_scale, "images": n, "rows": n * (1 if uncond is None else 2),
        "tokens": tokens, "first_call_s": round(first, 3), "seconds": round(total, 4),
        "prefill_ms": round(prefill_s * 1000, 2), "ms_per_token": round(per_token * 1000, 3),
        "s_per_image": round(prefill_s + per_token * (seq - 1), 3),
        "passes": passes, "passes_per_token": round(passes / tokens, 3),
    }


def bench_generate(bb: Backbone, prompt: list[int], tokens: int, cfg_scale: float) -> dict[str, Any]:
    """The same image tokens with transformers' own `generate()` (static cache; only image
    tokens allowed; CFG through its `guidance_scale` and an unconditional prompt), one image,
    warm-up then timed. Upstream's forward masks the image logits, so its pictures are
    noise: only the time is comparable."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from yoc_assistant.backbone.generation import image_prompt

    device = bb.model.model.embed_tokens.weight.device
    forbidden = torch.ones(int(bb.vocab_size), dtype=torch.bool, device=device)
    forbidden[bb.image_vocab.bpe_ids.to(device)] = False

    class ImageTokensOnly(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return scores.masked_fill(forbidden[: scores.shape[-1]], float("-inf"))

    ids = torch.tensor([image_prompt(bb, prompt, None, "prompt")], device=device)
    kw: dict[str, Any] = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, top_p=0.9,
                              top_k=0, temperature=1.0, pad_token_id=int(bb.special.pad),
                              logits_processor=LogitsProcessorList([ImageTokensOnly()]),
                              cache_implementation="static")
    if cfg_scale != 1.0:
        kw.update(guidance_scale=cfg_scale,
                  negative_prompt_ids=torch.tensor([[int(bb.special.bos), int(bb.special.boi)]], device=device))
    with torch.inference_mode():
        first, _ = _timed(bb, lambda: bb.model.generate(input_ids=ids, **kw))
        total, out = _timed(bb, lambda: bb.model.generate(input_ids=ids, **kw))
    made = int(out.shape[1] - ids.shape[1])
    return {"decoding": "transformers generate()", "cfg_scale": cfg_scale, "tokens": made,
            "first_call_s": round(first, 3), "seconds": round(total, 4),
            "ms_per_token": round(total / max(made, 1) * 1000, 3),
            "s_per_image": round(total / max(made, 1) * int(bb.image_seq_length), 3),
            "passes_per_token": 2.0 if cfg_scale != 1.0 else 1.0}


def compare_decodings(bb: Backbone, prompt: list[int], tokens: int, cfg_scale: float,
                      sequential: dict[str, Any] | None = None) -> dict[str, Any]:
    """SJD, the sequential loop and transformers' generate() on the same image, one run;
    ratios are time(yoc) / time(baseline) (below 1: yoc is faster)."""
    seq = sequential or bench_image(bb, prompt, tokens, cfg_scale=cfg_scale, decoding="sequential")
    fast = bench_image(bb, prompt, tokens, cfg_scale=cfg_scale, decoding="sjd")
    upstream = bench_generate(bb, prompt, tokens, cfg_scale)
    keep = ("seconds", "ms_per_token", "s_per_image", "first_call_s", "passes_per_token")
    return {
        "cfg_scale": cfg_scale, "tokens": tokens,
        "sjd": {k: fast[k] for k in keep}, "sequential": {k: seq[k] for k in keep},
        "generate": {k: upstream[k] for k in keep},
        "passes_per_image_sjd": round(fast["passes_per_token"] * int(bb.image_seq_length), 1),
        "sjd_vs_sequential": round(fast["seconds"] / seq["seconds"], 3),
        "sjd_vs_generate": round(fast["seconds"] / upstream["seconds"], 3),
        "sequential_vs_generate": round(seq["seconds"] / upstream["seconds"], 3),
    }


def bench_decode(bb: Backbone, n: int = 1) -> float | None:
    """Milliseconds for the VQ decoder to turn n token grids into pictures (None: no decoder)."""
    if not bb.has_decoder:
        return None
    ids = bb.image_vocab.bpe_ids[torch.randint(0, len(bb.image_vocab), (n, int(bb.image_seq_length)))]
    bb.decode_images(ids)  # warm-up: builds the decoder
    dt, _ = _timed(bb, lambda: bb.decode_images(ids))
    return round(dt * 1000, 2)


def bench_text(bb: Backbone, tokens: int) -> dict[str, Any]:
    """Sampled text, warm-up then timed; tokens per second of the decode loop."""
    prompt = bb.prompt_ids([PROMPT])
    bb.generate_text(prompt, max_new_tokens=min(tokens, 8), seed=0, temperature=1.0, top_p=1.0)
    prefill_ms = bench_prefill(bb, len(prompt))
    dt, out = _timed(bb, lambda: bb.generate_text(prompt, max_new_tokens=tokens, seed=0,
                                                   temperature=1.0, top_p=1.0))
    made = len(out.ids) + (0 if out.finish_reason == "length" else 1)
    decode_s = max(dt - prefill_ms / 1000, 1e-9)
    return {"tokens": made, "finish_reason": out.finish_reason, "seconds": round(dt, 3),
            "tokens_per_s": round(made / decode_s, 1)}


def peak_memory_mb(bb: Backbone) -> dict[str, Any]:
    if torch.device(bb.device).type == "cuda":
        return {"kind": "cuda max_memory_allocated",
                "mb": round(torch.cuda.max_memory_allocated(bb.device) / 2**20, 1)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    return {"kind": "process peak RSS", "mb": round(mb, 1)}


def machine(bb: Backbone) -> str:
    if torch.device(bb.device).type == "cuda":
        return torch.cuda.get_device_name(bb.device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"


def compare_steps(bb: Backbone, prompt: list[int], tokens: int, images: int,
                  default: dict[str, Any], default_fused: bool) -> dict[str, Any]:
    """The CFG image figure with the fused and the HF-module decode step, side by side."""
    other = bench_image(bb, prompt, tokens, cfg_scale=3.0, n=images, fused=not default_fused)
    fused, plain = (default, other) if default_fused else (other, default)
    keep = ("ms_per_token", "s_per_image", "first_call_s")
    return {"fused": {k: fused[k] for k in keep}, "unfused": {k: plain[k] for k in keep},
            "speedup": round(plain["ms_per_token"] / max(fused["ms_per_token"], 1e-9), 3)}


def run_bench(bb: Backbone, *, image_tokens: int | None = None, text_tokens: int = 32,
              images: int = 1, on_step: Callable[[str], None] | None = None,
              compare: bool = True, decodings: bool = True) -> dict[str, Any]:
    """All figures for `bb` as one JSON-ready dict (`compare`: also time the other decode step;
    `decodings`: SJD vs sequential vs transformers' generate())."""
    from yoc_assistant.backbone.fused import fusable, fused_wanted
    from yoc_assistant.backbone.imagegen import compile_wanted

    step = on_step or (lambda _name: None)
    if torch.device(bb.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(bb.device)
    seq = int(bb.image_seq_length)
    tokens = seq if image_tokens is None else max(2, min(int(image_tokens), seq))
    prompt = bb.prompt_ids([PROMPT])
    result: dict[str, Any] = {
        "backbone": bb.name, "source": bb.source, "device": str(bb.device), "machine": machine(bb),
        "precision": bb.precision, "torch": torch.__version__,
        "parameters_m": round(sum(p.numel() for p in bb.model.parameters()) / 1e6, 2),
        "image_seq_length": seq, "compiled_step": compile_wanted(bb), "fused_step": fused_wanted(bb),
    }
    fusing_figures: dict[str, Any] = {}
    if compare and fusable(bb):
        step("layer matrices before fusing")
        fusing_figures["before_fuse_ms"] = layer_matrix_ms(bb)
    step("prefill")
    result["prefill_ms"] = {str(n): round(bench_prefill(bb, n), 2) for n in (len(prompt), len(prompt) + seq + 2)}
    step("image tokens with CFG")
    result["image_cfg"] = bench_image(bb, prompt, tokens, cfg_scale=3.0, n=images)
    if decodings:
        step("image tokens with CFG: SJD, sequential, transformers generate()")
        result["decoding_compare"] = compare_decodings(
            bb, prompt, tokens, 3.0, sequential=result["image_cfg"] if images == 1 else None)
    step("image tokens without CFG")
    result["image_no_cfg"] = bench_image(bb, prompt, tokens, cfg_scale=1.0, n=images)
    if compare and fusable(bb):
        step("image tokens with CFG, the other decode step")
        result["step_compare"] = compare_steps(bb, prompt, tokens, images, result["image_cfg"],
                                               result["fused_step"])
        step("layer matrices after fusing")
        after = layer_matrix_ms(bb)
        before = fusing_figures["before_fuse_ms"]["separate"]
        result["fusing"] = {**fusing_figures, "after_fuse_ms": after,
                            "plain_path_after_fuse_vs_before": round(after["separate"] / before, 3),
                            "fused_vs_separate": round(after["fused"] / after["separate"], 3)}
        step("static cache rounding")
        result["cache_rounding"] = cache_rounding(bb, prompt, tokens)
    step("VQ decode")
    result["vq_decode_ms"] = bench_decode(bb, images)
    step("text")
    result["text"] = bench_text(bb, text_tokens)
    result["peak_memory"] = peak_memory_mb(bb)
    return result


def layer_matrix_ms(bb: Backbone, passes: int = 10, repeats: int = 7) -> dict[str, float]:
    """CPU milliseconds (min of `repeats`) for `passes` passes of 2 rows over every layer's
    q, k, v, gate and up matrices: as the HF modules read them, and (if fused) as the fused
    step reads them. Taken before and after `fuse()`, it shows whether fusing slows the
    plain path (the weights leaving the checkpoint's mapping) or the fused matmuls."""
    from yoc_assistant.backbone.fused import FusedLayer, _projections

    layers = bb.model.model.layers
    x = torch.randn(2, int(bb.hidden_size), dtype=bb.model.model.embed_tokens.weight.dtype,
                    device=bb.model.model.embed_tokens.weight.device)
    plain = [lin.weight for layer in layers for group in _projections(layer) for lin in group]
    fused: list[FusedLayer] | None = bb.caches.fused_layers
    sets = {"separate": plain}
    if fused is not None:
        sets["fused"] = [t for f in fused for t in (f.qkv_weight, f.gate_up_weight)]
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, weights in sets.items():
            best = float("inf")
            for _ in range(repeats):
                _sync(bb)
                start = time.process_time() if bb.device.type == "cpu" else time.perf_counter()
                for _ in range(passes):
                    for w in weights:
                        torch.nn.functional.linear(x, w)
                _sync(bb)
                best = min(best, (time.process_time() if bb.device.type == "cpu" else time.perf_counter()) - start)
            out[name] = round(best * 1000, 2)
    return out


def cache_rounding(bb: Backbone, prompt: list[int], tokens: int) -> dict[str, Any]:
    """The sequential CFG image with the cache rounded up to 64 slots (the default) and with
    exactly the slots it needs: what the rounding costs in attention time."""
    from yoc_assistant.backbone.imagegen import CAPACITY_STEP

    rounded = bench_image(bb, prompt, tokens, cfg_scale=3.0, decoding="sequential")
    exact = bench_image(bb, prompt, tokens, cfg_scale=3.0, decoding="sequential", capacity_step=1)
    needed = len(prompt) + 1 + tokens
    return {"slots_needed": needed, "slots_rounded": -(-needed // CAPACITY_STEP) * CAPACITY_STEP,
            "rounded_ms_per_token": rounded["ms_per_token"], "exact_ms_per_token": exact["ms_per_token"],
            "cost": round(rounded["ms_per_token"] / max(exact["ms_per_token"], 1e-9), 3)}


def bench_eight_bit(bb8: Backbone, tokens: int, reference: dict[str, Any]) -> dict[str, Any]:
    """The CFG image (sequential and SJD) on the int8 weight-only twin of the benched backbone,
    against the reference's sequential CFG figure (ratio = int8wo / reference)."""
    prompt = bb8.prompt_ids([PROMPT])
    seq = bench_image(bb8, prompt, tokens, cfg_scale=3.0, decoding="sequential")
    fast = bench_image(bb8, prompt, tokens, cfg_scale=3.0, decoding="sjd")
    keep = ("seconds", "ms_per_token", "s_per_image", "first_call_s", "passes_per_token")
    from yoc_assistant.backbone.imagegen import compile_wanted

    return {"precision": bb8.precision, "compiled_step": compile_wanted(bb8),
            "sequential": {k: seq[k] for k in keep}, "sjd": {k: fast[k] for k in keep},
            "vs_reference_sequential": round(seq["ms_per_token"] / max(reference["ms_per_token"], 1e-9), 3),
            "reference_precision": reference.get("precision")}


def table_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for a human-readable table."""
    cfg, plain, text = result["image_cfg"], result["image_no_cfg"], result["text"]
    rows = [
        ("backbone", f"{result['backbone']} ({result['precision']}, {result['parameters_m']} M params)"),
        ("device", f"{result['device']}: {result['machine']}"),
        ("compiled decode step", "yes" if result["compiled_step"] else "no"),
        ("decode step", "fused projections" if result.get("fused_step") else "HF modules"),
    ]
    rows += [(f"prefill, {n} tokens", f"{ms:.1f} ms") for n, ms in result["prefill_ms"].items()]
    for label, r in (("image, CFG 3.0", cfg), ("image, no CFG", plain)):
        rows.append((f"{label}: ms / image token", f"{r['ms_per_token']:.2f} ms ({r['rows']} rows)"))
        rows.append((f"{label}: s / image ({result['image_seq_length']} tokens)",
                     f"{r['s_per_image']:.2f} s (first call {r['first_call_s']:.2f} s)"))
    if "decoding_compare" in result:
        dec = result["decoding_compare"]
        rows.append(("image, CFG: passes / image",
                     f"SJD {dec['passes_per_image_sjd']:.0f} ({dec['sjd']['passes_per_token']:.2f} per token), "
                     f"sequential {result['image_seq_length']}, generate() {2 * result['image_seq_length']}"))
        rows.append(("SJD / sequential / generate()",
                     f"{dec['sjd']['seconds']:.3f} / {dec['sequential']['seconds']:.3f} / "
                     f"{dec['generate']['seconds']:.3f} s for {dec['tokens']} tokens (SJD x{dec['sjd_vs_sequential']:.2f} "
                     f"of sequential, x{dec['sjd_vs_generate']:.2f} of generate(); sequential "
                     f"x{dec['sequential_vs_generate']:.2f} of generate())"))
    if "step_compare" in result:
        cmp = result["step_compare"]
        rows.append(("CFG: fused vs HF-module step",
                     f"{cmp['fused']['ms_per_token']:.2f} vs {cmp['unfused']['ms_per_token']:.2f} ms / token "
                     f"(x{cmp['speedup']:.2f})"))
    if "fusing" in result:
        fz = result["fusing"]
        rows.append(("layer matrices: after fuse() / before",
                     f"plain path x{fz['plain_path_after_fuse_vs_before']:.2f}, fused matmuls "
                     f"x{fz['fused_vs_separate']:.2f} of separate"))
    if "cache_rounding" in result:
        cr = result["cache_rounding"]
        rows.append((f"cache {cr['slots_rounded']} vs {cr['slots_needed']} slots",
                     f"{cr['rounded_ms_per_token']:.2f} vs {cr['exact_ms_per_token']:.2f} ms / token "
                     f"(x{cr['cost']:.2f})"))
    if "eight_bit" in result:
        eb = result["eight_bit"]
        rows.append(("image, CFG, int8wo: ms / token",
                     f"sequential {eb['sequential']['ms_per_token']:.2f}, SJD {eb['sjd']['ms_per_token']:.2f} "
                     f"(sequential x{eb['vs_reference_sequential']:.2f} of {eb['reference_precision']})"))
    if result["vq_decode_ms"] is not None:
        rows.append(("VQ decode, per call", f"{result['vq_decode_ms']:.1f} ms"))
    rows.append(("text", f"{text['tokens_per_s']:.1f} tokens/s ({text['tokens']} tokens)"))
    rows.append((f"peak memory ({result['peak_memory']['kind']})", f"{result['peak_memory']['mb']:.0f} MB"))
    if "train" in result:
        rows += train_rows(result["train"])
    return rows


def train_rows(train: Any) -> list[tuple[str, str]]:
    """The table's rows of `yoc bench --train`'s figures."""
    rows: list[tuple[str, str]] = []
    if isinstance(train, dict) and "ms_per_step" in train:
        rows.append((f"training step ({train['batch_size']} x {train['seq_len']} tokens)",
                     f"{train['ms_per_step']:.1f} ms (plain transformers "
                     f"{train['plain_transformers_ms_per_step']:.1f} ms, x{train['vs_plain_transformers']:.2f})"))
        phases = train.get("phases_ms") or {}
        if phases:
            rows.append(("training step, by part", ", ".join(f"{k.replace('_', ' ')} {v:.1f} ms"
                                                              for k, v in phases.items())))
        shared = train.get("shared_prefix")
        if shared:
            ms = shared["ms_per_batch"]
            rows.append((f"forward + backward, rows sharing {shared['shared_positions']} of {shared['of']} positions",
                         f"shared part once {ms['shared_prefix']:.1f} ms, whole rows {ms['whole_rows']:.1f} ms "
                         f"(x{shared['ratio']:.2f})"))
        threads = train.get("threads") or {}
        if isinstance(threads, str):
            rows.append(("training step, by CPU threads", threads))
        elif threads:
            same = next((v for k, v in threads.items() if k.startswith("same_gradients")), {})
            rows.append(("training step, by CPU threads", ", ".join(
                f"{c}: {ms:.1f} ms" + ("" if c not in same else " (same gradients)" if same[c]
                                       else " (other gradients)")
                for c, ms in threads["ms_per_step"].items())))
    else:
        rows.append(("training", str(train)))
    return rows
