"""`yoc eval NAME`: how well a trained concept recognises, draws and answers."""

from __future__ import annotations

import random
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
from yoc_assistant.errors import UserInputError

MAX_POOL_NEGATIVES = 50


def _read_folder(folder: Path, quiet: bool) -> list[Any]:
    """Every usable picture in `folder` (validated like ingest; bad files named and skipped)."""
    from yoc_assistant.library.ingest import ImageRejected, expand_paths, normalize_file

    files, problems = expand_paths([folder])
    for path, reason in problems:
        warn(f"{path}: {reason}")
    images = []
    for path in files:
        try:
            images.append(normalize_file(path).image)
        except ImageRejected as err:
            warn(str(err))
    if not images:
        raise UserInputError(f"{folder} holds no usable pictures")
    info(f"{len(images)} picture(s) from {folder}", quiet=quiet)
    return images


def _library_images(lib: Any, records: list[Any]) -> list[Any]:
    from PIL import Image

    out = []
    for rec in records:
        with Image.open(lib.image_path(rec.sha256)) as img:
            out.append(img.convert("RGB"))
    return out


def _test_sets(lib: Any, name: str, test_dir: Path | None, neg_dir: Path | None, seed: int,
               notes: list[str], quiet: bool) -> tuple[list[Any], list[Any], list[Any]]:
    """(positives, negatives, real photos for CLIP-I)."""
    if test_dir is not None:
        positives = _read_folder(test_dir, quiet)
    else:
        records = lib.concept_images(name, "test")
        if not records:
            records = lib.concept_images(name, "positive")
            notes.append("no held-out photos: evaluated on the training photos "
                         "(pass --test-dir DIR for a fair score)")
        positives = _library_images(lib, records)
    if neg_dir is not None:
        negatives = _read_folder(neg_dir, quiet)
    else:
        records = lib.concept_images(name, "negative")
        if not records:
            pool = lib.pool_images()
            records = random.Random(seed).sample(pool, min(MAX_POOL_NEGATIVES, len(pool)))
            if records:
                notes.append(f"negatives: {len(records)} random pool images (they may have been "
                             "training negatives; pass --negatives-dir DIR for held-out ones)")
            else:
                notes.append("no negative images (empty pool): negative accuracy not measured")
        negatives = _library_images(lib, records)
    real = _library_images(lib, lib.concept_images(name, "positive")) or positives
    return positives, negatives, real


def _load_concept(lib: Any, bb: Any, name: str) -> Any:
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

    concept = lib.require_concept(name)
    path = concept.vectors_path
    if path is None or not Path(path).is_file():
        raise UserInputError(f"concept {concept.name!r} has no trained vectors yet: "
                             f"run `yoc train {concept.name}`")
    vectors = ConceptVectors.load(path, bb)
    # The file keeps the name it was trained under (a rename does not rewrite it).
    return ConceptSet(bb, [vectors]), vectors.name


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
    for key, label in (("clip_i", "CLIP-I"), ("face_similarity", "face similarity")):
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
    CLIP-I of generated pictures, face similarity (when insightface is installed) and
    multiple-choice QA accuracy."""
    from yoc_assistant.assistant.assistant import ready_concept

    lib = open_library()
    ready_concept(lib, name)  # unknown or untrained: said before torch loads
    from yoc_assistant.personalize import evaluate as E
    from yoc_assistant.personalize import retrieval

    qa_items = E.load_qa(qa_file) if qa_file is not None else []  # bad file: fail before loading
    notes: list[str] = []
    positives, negatives, real = _test_sets(lib, name, test_dir, negatives_dir, seed, notes, quiet or as_json)
    bb = open_backbone("inference", precision, quiet=quiet or as_json)
    concepts, name = _load_concept(lib, bb, name)
    clip, clip_note = None, None
    if bb.has_decoder:  # no pictures, no CLIP-I: do not load a CLIP for nothing
        try:
            clip = retrieval.load_clip(device=str(bb.device))
        except retrieval.ClipUnavailable as err:
            clip_note = str(err)
    with progress("Generating", quiet=quiet or as_json) as on_progress:
        report = E.evaluate_concept(bb, concepts, name, positives=positives, negatives=negatives,
                                    real=real, clip=clip, clip_note=clip_note, n_images=n_images,
                                    qa_items=qa_items, seed=seed, on_progress=on_progress)
    report["notes"] = notes + report["notes"]
    if as_json:
        print_json(report)
    else:
        _print_table(report)
