"""The GPU check: one run (<= 8 minutes on an H100/H200) that records yoc's GPU figures.

    scripts/gpu-check                 # on a machine with a CUDA GPU, from the repository root
    scripts/gpu-check --dry-run       # anywhere: a tiny random model on the CPU, nothing written to docs

It sets up .venv if there is none (`make setup`), runs `pytest -m gpu`, then measures on a
random-weight model of Anole-7b's shape (`--synthetic anole-7b`, built in GPU memory, no
download): seconds per 512x512 image (1,024 tokens, CFG) in bf16 with the sequential loop,
with SJD, and with int8 weight-only weights (int8wo); transformers' generate() on the same
image; a training step of 4 x 1,100 tokens (ms and % of the card's bf16 peak); peak memory
of int8 and nf4 (bitsandbytes) training at batch 1 with gradient checkpointing; and the
default recipe's time for one concept estimated from the measured step. The figures, with
the card's name, replace the block between the gpu-check markers in docs/performance.md
(and go to --json). Sections run in order of importance; one that would not fit in the
time left is skipped and says so.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
# The paper's data for one concept: ~1,000 soft positives + 200 negatives + recognition and
# QA of the real photos, about 1,300 examples; 15 epochs at batch 4 (TrainConfig defaults).
RECIPE_EXAMPLES, RECIPE_EPOCHS, RECIPE_BATCH = 1300, 15, 4
SECTIONS = ("images_bf16", "training_bf16", "images_int8wo", "pytest_gpu", "training_int8_nf4")


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.monotonic(), budget_s

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)


def section(report: dict[str, Any], name: str, clock: Clock, needs_s: float, fn: Any) -> None:
    """Run fn() into report[name] unless fewer than needs_s seconds are left; errors are
    recorded, never fatal (the other figures still come back)."""
    if clock.left() < needs_s:
        report[name] = {"skipped": f"needs ~{needs_s:.0f} s, {clock.left():.0f} s left"}
        return
    started = time.monotonic()
    print(f"[gpu-check] {name} ({clock.left():.0f} s left)", flush=True)
    try:
        report[name] = fn()
    except Exception as err:  # noqa: BLE001 - a failed section is a figure too
        report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-1500:]}
    if isinstance(report[name], dict):
        report[name]["section_s"] = round(time.monotonic() - started, 1)
    _free()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_gpu_tests(dry: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240 if not dry else 120)
    tail = (out.stdout + out.stderr).strip().splitlines()[-1:]
    return {"command": " ".join(cmd[2:]), "returncode": out.returncode, "summary": tail}


def images(bb: Any, tokens: int) -> dict[str, Any]:
    """Sequential, SJD and transformers generate() on one CFG image (bench.compare_decodings)."""
    from yoc_assistant.backbone.bench import PROMPT, compare_decodings

    prompt = bb.prompt_ids([PROMPT])
    out = compare_decodings(bb, prompt, tokens, 3.0)
    out["image_tokens"] = int(bb.image_seq_length)
    return out


def eight_bit_images(shape: str, device: str, tokens: int) -> dict[str, Any]:
    from yoc_assistant.backbone.bench import PROMPT, bench_image
    from yoc_assistant.backbone.synthetic import synthetic_backbone

    bb = synthetic_backbone(shape, precision="int8wo", device=device)
    prompt = bb.prompt_ids([PROMPT])
    keep = ("seconds", "ms_per_token", "s_per_image", "first_call_s", "passes_per_token")
    seq = bench_image(bb, prompt, tokens, cfg_scale=3.0, decoding="sequential")
    fast = bench_image(bb, prompt, tokens, cfg_scale=3.0, decoding="sjd")
    return {"sequential": {k: seq[k] for k in keep}, "sjd": {k: fast[k] for k in keep}}


def training(bb: Any, seq_len: int, steps: int) -> dict[str, Any]:
    from yoc_assistant.personalize.bench import bench_train

    out = bench_train(bb, batch_size=4, seq_len=seq_len, steps=steps, warmup=2)
    recipe_steps = -(-RECIPE_EXAMPLES // RECIPE_BATCH) * RECIPE_EPOCHS
    out["recipe_estimate"] = {
        "examples": RECIPE_EXAMPLES, "epochs": RECIPE_EPOCHS, "batch_size": RECIPE_BATCH, "steps": recipe_steps,
        "minutes": round(recipe_steps * out["ms_per_step"] / 1000 / 60, 1),
        "how": "steps x the measured 4 x 1,100-token step (bf16, no checkpointing); evaluation not counted",
    }
    return out


def quantized_training(shape: str, device: str, seq_len: int, folder: Path) -> dict[str, Any]:
    """Peak memory and step time of int8 and nf4 training (batch 1, checkpointing): the
    random model is written to disk once so that bitsandbytes quantizes it at load."""
    from yoc_assistant.backbone.synthetic import write_synthetic_checkpoint
    from yoc_assistant.personalize.bench import bench_train_precisions

    started = time.monotonic()
    write_synthetic_checkpoint(shape, folder, device=device)
    written_s = time.monotonic() - started
    results = bench_train_precisions(str(folder), ["int8", "nf4"], device=device, batch_size=1, seq_len=seq_len,
                                     steps=3, warmup=1, gradient_checkpointing=True)
    keep = ("precision", "ms_per_step", "peak_memory_gb", "peak_rss_gb", "plain_transformers_ms_per_step")
    return {"write_checkpoint_s": round(written_s, 1),
            "runs": [{k: r[k] for k in keep if k in r} for r in results]}


def card(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} (dry run)"


def markdown(report: dict[str, Any]) -> str:
    lines = [BEGIN, f"### GPU check: {report['card']}, {report['date']}", "",
             f"Command: `{report['command']}` (torch {report['torch']}, transformers {report['transformers']}, "
             f"{report['wall_s']:.0f} s in all). Model: {report['model']}.", ""]
    im = report.get("images_bf16", {})
    eb = report.get("images_int8wo", {})
    if "sjd" in im:
        n = im["image_tokens"]
        lines += ["| image, CFG, 1,024 tokens | s per image | ms per token | passes per token | first call s |",
                  "|---|---|---|---|---|"]
        fp = report["precision"]
        for label, fig in ((f"{fp} sequential", im["sequential"]), (f"{fp} SJD", im["sjd"]),
                           ("transformers generate() (static cache)", im["generate"]),
                           ("int8wo sequential", eb.get("sequential")), ("int8wo SJD", eb.get("sjd"))):
            if fig:
                lines.append(f"| {label} | {fig['s_per_image']:.2f} | {fig['ms_per_token']:.2f} | "
                             f"{fig['passes_per_token']:.2f} | {fig['first_call_s']:.1f} |")
        lines += ["", f"Timed on {im['tokens']} of the {n} tokens and extrapolated. SJD / sequential "
                  f"x{im['sjd_vs_sequential']:.2f}, SJD / generate() x{im['sjd_vs_generate']:.2f}. Random "
                  "weights accept drafts more often than a trained model: SJD's passes here are a floor.", ""]
    tr = report.get("training_bf16", {})
    if "ms_per_step" in tr:
        pct = tr.get("pct_of_bf16_peak")
        peak = f"{pct:.0f} % of bf16 peak" if pct is not None else "peak unknown for this card"
        lines += [f"Training step, {report['precision']}, 4 x {tr['seq_len']} tokens: {tr['ms_per_step']:.0f} ms ({peak}; "
                  f"plain transformers {tr['plain_transformers_ms_per_step']:.0f} ms), peak "
                  f"{tr.get('peak_memory_gb', '?')} GB. Default recipe for one concept, estimated: "
                  f"{tr['recipe_estimate']['minutes']} min ({tr['recipe_estimate']['steps']} steps).", ""]
    qt = report.get("training_int8_nf4", {})
    for run in qt.get("runs", []):
        mem = run.get("peak_memory_gb", run.get("peak_rss_gb"))
        lines.append(f"- {run['precision']} training, batch 1, checkpointing: {run['ms_per_step']:.0f} ms/step, "
                     f"peak {mem} GB")
    for name, value in report.items():
        if isinstance(value, dict) and ("skipped" in value or "error" in value):
            lines.append(f"- {name}: {value.get('skipped') or value.get('error')}")
    gpu = report.get("pytest_gpu", {})
    if gpu:
        lines += ["", f"`{gpu.get('command', 'pytest -m gpu')}`: {' '.join(gpu.get('summary', []))}"]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="a tiny random model on the CPU, short runs; writes to a temporary copy of the doc")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    ap.add_argument("--image-tokens", type=int, default=256, help="image tokens timed (extrapolated to 1,024)")
    ap.add_argument("--doc", type=Path, default=None, help="the markdown file to update")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated sections to run (a second run's leftovers): {', '.join(SECTIONS)}")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here; use --dry-run to try the script on the CPU", file=sys.stderr)
        return 2
    shape = "small" if dry else "anole-7b"
    tokens = 8 if dry else args.image_tokens
    seq_len = 64 if dry else 1100
    clock = Clock(args.budget)
    doc = args.doc or (Path(tempfile.gettempdir()) / "performance-dry-run.md" if dry else DOC)
    if dry and args.doc is None and DOC.exists():
        doc.write_text(DOC.read_text())
    report: dict[str, Any] = {
        "card": card(device), "date": datetime.date.today().isoformat(),
        "command": "scripts/gpu-check" + (" --dry-run" if dry else ""), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": f"random-weight {shape} (`yoc bench --synthetic {shape}`)",
        "precision": "fp32" if dry else "bf16",
    }
    from yoc_assistant.backbone.synthetic import synthetic_backbone

    precision = report["precision"]
    holder: dict[str, Any] = {}
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)

    def bf16_images() -> dict[str, Any]:
        holder["bb"] = synthetic_backbone(shape, precision=precision, device=device)
        return images(holder["bb"], tokens)

    def bf16_training() -> dict[str, Any]:
        bb = holder.pop("bb", None) or synthetic_backbone(shape, precision=precision, device=device)
        return training(bb, seq_len, 3 if dry else 5)

    def quantized() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="yoc-gpu-check-") as tmp:
            return quantized_training(shape, device, seq_len, Path(tmp) / "synthetic")

    # In order of importance; the second number is a generous guess of the section's time on
    # an H200 (compiles included), so a section is only started when it can finish.
    runs = {
        "images_bf16": (240, bf16_images),
        "training_bf16": (40, bf16_training),
        "images_int8wo": (200, lambda: eight_bit_images(shape, device, tokens)),
        "pytest_gpu": (90, lambda: run_gpu_tests(dry)),
        "training_int8_nf4": (200, quantized),
    }
    for name, (needs, fn) in runs.items():
        if name in wanted:
            section(report, name, clock, 1 if dry else needs, fn)
        if name == "training_bf16":
            holder.clear()
            _free()
    report["wall_s"] = round(time.monotonic() - clock.start, 1)
    block = markdown(report)
    write_doc(doc, block)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(block)
    print(f"[gpu-check] figures written to {doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
