"""`yoc eval NAME`: how well a trained concept recognises, draws and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from yoc_assistant.cli.output import (
    SEED,
    info,
    json_option,
    print_json,
    progress,
    quiet_option,
    warn,
)
from yoc_assistant.cli.runtime import open_backbone, open_library, precision_option


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rec = report["recognition"]
    table = Table(title=f"yoc eval {report['concept']}  ({report['backbone']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("n / note")
    table.add_row("recognition, positive", _fmt(rec["positive"]), str(rec["n_positive"]))
    table.add_row("recognition, negative", _fmt(rec["negative"]), str(rec["n_negative"]))
    table.add_row("recognition, weighted", _fmt(rec["weighted"]), "")
    for key, label in (("clip_i", "CLIP-I"), ("instance_similarity", "instance similarity (toy judge)"),
                       ("drawn_right", "drawn right (exact instance)"), ("dino", "DINO"),
                       ("face_similarity", "face similarity")):
        if key not in report and key not in report["skipped"]:
            continue
        skipped = report["skipped"].get(key)
        note = f"skipped: {skipped}" if skipped else str(report.get("n_generated", ""))
        table.add_row(label, _fmt(report.get(key)), note)
    qa = report.get("qa") or {}
    table.add_row("QA accuracy", _fmt(qa.get("accuracy")),
                  f"skipped: {report['skipped']['qa']}" if "qa" in report["skipped"] else str(qa.get("n")))
    console = Console()
    console.print(table)
    for note in report["notes"]:
        console.print(f"Note: {note}", style="dim")


@click.command("eval")
@click.argument("name")
@click.option("--test-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Held-out photos of the concept (default: its 'test' photos, else its training photos).")
@click.option("--negatives-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Photos that do NOT show the concept (default: its 'negative' photos, else pool images).")
@click.option("--qa", "qa_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Multiple-choice questions (JSON: [{question, options: {A: .., B: ..}, answer}]).")
@click.option("--images", "n_images", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Pictures to generate for CLIP-I.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@precision_option
@json_option
@quiet_option
def eval_cmd(name: str, test_dir: Path | None, negatives_dir: Path | None, qa_file: Path | None,
             n_images: int, seed: int, precision: str, as_json: bool, quiet: bool) -> None:
    """Measure a trained concept: recognition accuracy (positive, negative, weighted),
    CLIP-I of generated pictures, instance similarity and "drawn right" (the toy
    backbone's instance judge) or DINO (DINOv2 from the local HF cache, other backbones),
    face similarity (when insightface is installed) and multiple-choice QA accuracy.
    Recognition is asked exactly as `yoc ask` asks it."""
    from yoc_assistant.assistant.assistant import ready_concept

    lib = open_library()
    ready_concept(lib, name)  # unknown or untrained: said before torch loads
    from yoc_assistant.app.evaluation import evaluate_concept_job, test_sets
    from yoc_assistant.personalize.evaluate import load_qa

    qa_items = load_qa(qa_file) if qa_file is not None else []  # bad file: fail before loading
    sets = test_sets(lib, name, test_dir=test_dir, neg_dir=negatives_dir, seed=seed, on_warning=warn,
                     on_info=lambda text: info(text, quiet=quiet or as_json))
    bb = open_backbone("inference", precision, quiet=quiet or as_json)
    with progress("Generating", quiet=quiet or as_json) as on_progress:
        report = evaluate_concept_job(lib, bb, name, sets, qa_items=qa_items, n_images=n_images,
                                      seed=seed, on_progress=on_progress)
    if as_json:
        print_json(report)
    else:
        _print_table(report)
