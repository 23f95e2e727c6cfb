"""`yoc bench`: how fast this machine runs the backbone (and, with --train, training)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from yoc_assistant.cli.output import json_option, print_json
from yoc_assistant.cli.runtime import open_backbone, precision_option, status


@click.command()
@click.option("--backbone", "source", help="Checkpoint directory or cached hub id "
              "(default: YOC_BACKBONE, else the built-in default).")
@click.option("--synthetic", type=click.Choice(["anole-7b", "small"]), default=None,
              help="Time a random-weight model of this shape built in memory instead of a "
                   "checkpoint (anole-7b: Anole's real size, no download).")
@precision_option
@click.option("--device", default=None, help="cpu, cuda or auto (default: YOC_DEVICE, else auto).")
@click.option("--image-tokens", type=click.IntRange(min=2), default=None,
              help="Draw only this many image tokens per timed run (default: a whole image); "
                   "seconds per image are extrapolated.")
@click.option("--text-tokens", type=click.IntRange(min=1), default=32, show_default=True,
              help="Text tokens to sample for the tokens/s figure.")
@click.option("--images", "n_images", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Images drawn together in one batch.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: YOC_THREADS, else 1 for a small CPU "
                   "backbone, else torch's choice).")
@click.option("--train", "with_train", is_flag=True, help="Also time soft-prompt training steps.")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Also time the CFG image with the other decode step (fused vs HF modules).")
@click.option("--eight-bit/--no-eight-bit", "eight_bit", default=True, show_default=True,
              help="Also time the CFG image on the same model with int8 weight-only weights (int8wo).")
@click.option("--quiet", "-q", is_flag=True, help="No notes on stderr.")
@json_option
def bench(source: str | None, synthetic: str | None, precision: str, device: str | None, image_tokens: int | None,
          text_tokens: int, n_images: int, threads: int | None, with_train: bool, compare: bool,
          eight_bit: bool, quiet: bool, as_json: bool) -> None:
    """Measure prefill, image-token and text speed, seconds per image and peak memory."""
    from yoc_assistant.app.backbones import auto_precision, tune_cpu_threads
    from yoc_assistant.backbone.bench import run_bench

    purpose = "training" if with_train else "inference"
    if synthetic is not None:
        from yoc_assistant import settings
        from yoc_assistant.backbone.synthetic import synthetic_backbone

        device = device or settings.device()
        chosen = auto_precision(precision, device, purpose=purpose)
        with status(f"Building a random {synthetic} ({chosen})…", quiet=quiet):
            bb = synthetic_backbone(synthetic, precision=chosen, device=device)
        tune_cpu_threads(bb, threads)
    else:
        bb = open_backbone(purpose, precision, quiet=quiet, source=source, device=device,
                           threads=threads)

    def on_step(name: str) -> None:
        if not quiet:
            click.echo(f"timing {name}…", err=True)

    result = run_bench(bb, image_tokens=image_tokens, text_tokens=text_tokens, images=n_images,
                       on_step=on_step, compare=compare)
    if with_train:
        on_step("training")
        result["train"] = _bench_train(bb)
    if eight_bit and bb.precision in ("bf16", "fp32"):
        on_step("image tokens with CFG, int8 weight-only")
        dev, loaded = str(bb.device), str(bb.source)
        del bb  # the float model leaves memory before its int8 twin is built
        result["eight_bit"] = _bench_eight_bit(synthetic, loaded, dev, result)
    if as_json:
        print_json(result)
    else:
        _print_table(result)


def _bench_eight_bit(synthetic: str | None, source: str, dev: str, result: Any) -> Any:
    """The int8wo twin of the benched model."""
    import gc

    import torch

    from yoc_assistant.backbone import Backbone
    from yoc_assistant.backbone.bench import bench_eight_bit

    tokens = result["image_cfg"]["tokens"]
    reference = {**result["image_cfg"], "precision": result["precision"]}
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if synthetic is not None:
        from yoc_assistant.backbone.synthetic import synthetic_backbone

        bb8 = synthetic_backbone(synthetic, precision="int8wo", device=dev)
    else:
        bb8 = Backbone.load(source, precision="int8wo", device=dev)
    return bench_eight_bit(bb8, tokens, reference)


def _bench_train(bb: Any) -> Any:
    if importlib.util.find_spec("yoc_assistant.personalize.bench") is None:
        return "not available: yoc_assistant.personalize.bench is not installed in this build"
    module = importlib.import_module("yoc_assistant.personalize.bench")
    return module.bench_train(bb)


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from yoc_assistant.backbone.bench import table_rows

    table = Table(title="yoc bench", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value")
    for label, value in table_rows(result):
        table.add_row(label, value)
    Console().print(table)
