"""Evaluating a trained concept: the job behind `yoc eval` (and anything else that
scores a concept). Which photos it is measured on is decided here: held-out photos
(`--test-dir`, else the concept's "test" photos, else its training photos, with a note)
and negatives (`--negatives-dir`, else its "negative" photos, else up to 50 random pool
images, with a note). Never prints: problems with files go to `on_warning`, counts to
`on_info`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

MAX_POOL_NEGATIVES = 50
NoteFn = Callable[[str], None]


def _quiet(_text: str) -> None:
    return None


@dataclass
class EvalSets:
    positives: list[Any]  # PIL images that show the concept
    negatives: list[Any]  # PIL images that do not
    real: list[Any]  # the concept's own photos, for CLIP-I
    notes: list[str] = field(default_factory=list)


def read_folder(folder: Path, on_warning: NoteFn = _quiet, on_info: NoteFn = _quiet) -> list[Any]:
    """Every usable picture in `folder` (validated like ingest; bad files named and skipped)."""
    from yoc_assistant.library.ingest import ImageRejected, expand_paths, normalize_file

    files, problems = expand_paths([folder])
    for path, reason in problems:
        on_warning(f"{path}: {reason}")
    images = []
    for path in files:
        try:
            images.append(normalize_file(path).image)
        except ImageRejected as err:
            on_warning(str(err))
    if not images:
        raise UserInputError(f"{folder} holds no usable pictures")
    on_info(f"{len(images)} picture(s) from {folder}")
    return images


def library_images(lib: Any, records: list[Any]) -> list[Any]:
    from PIL import Image

    out = []
    for rec in records:
        with Image.open(lib.image_path(rec.sha256)) as img:
            out.append(img.convert("RGB"))
    return out


def test_sets(lib: Any, name: str, *, test_dir: Path | None = None, neg_dir: Path | None = None,
              seed: int = 0, on_warning: NoteFn = _quiet, on_info: NoteFn = _quiet) -> EvalSets:
    """The pictures concept `name` is measured on (see the module doc)."""
    notes: list[str] = []
    if test_dir is not None:
        positives = read_folder(test_dir, on_warning, on_info)
    else:
        records = lib.concept_images(name, "test")
        if not records:
            records = lib.concept_images(name, "positive")
            notes.append("no held-out photos: evaluated on the training photos "
                         "(pass --test-dir DIR for a fair score)")
        positives = library_images(lib, records)
    if neg_dir is not None:
        negatives = read_folder(neg_dir, on_warning, on_info)
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
        negatives = library_images(lib, records)
    real = library_images(lib, lib.concept_images(name, "positive")) or positives
    return EvalSets(positives, negatives, real, notes)


def load_trained_concept(lib: Any, bb: Backbone, name: str) -> tuple[Any, str]:
    """(ConceptSet of the concept, the name its file was trained under)."""
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

    concept = lib.require_concept(name)
    path = concept.vectors_path
    if path is None or not Path(path).is_file():
        raise UserInputError(f"concept {concept.name!r} has no trained vectors yet: "
                             f"run `yoc train {concept.name}`")
    vectors = ConceptVectors.load(path, bb)
    # The file keeps the name it was trained under (a rename does not rewrite it).
    return ConceptSet(bb, [vectors]), vectors.name


TOY_NAME = "yoc-toy"  # the shipped toy backbone's config.json yoc_name


def instance_judge(bb: Backbone) -> tuple[Any, str | None]:
    """The toy world's instance judge for the toy backbone, DINOv2 for any other; (None,
    why) when the backbone cannot draw or the model is not on this machine."""
    from yoc_assistant.personalize.judge import JudgeUnavailable, load_judge

    if not bb.has_decoder:
        return None, "the backbone has no VQ decoder, so it cannot draw"
    try:
        return load_judge(backbone_is_toy=str(bb.name) == TOY_NAME), None
    except JudgeUnavailable as err:
        return None, str(err)


def evaluate_concept_job(lib: Any, bb: Backbone, name: str, sets: EvalSets, *,
                         qa_items: list[Any] | None = None, n_images: int = 4, seed: int = 0,
                         on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score concept `name` on `sets` (see `personalize.evaluate.evaluate_concept`); CLIP and
    the instance judge are loaded only when the backbone can draw."""
    from yoc_assistant.personalize import evaluate as E
    from yoc_assistant.personalize import retrieval

    concepts, trained_name = load_trained_concept(lib, bb, name)
    clip, clip_note = None, None
    if bb.has_decoder:  # no pictures, no CLIP-I: do not load a CLIP for nothing
        try:
            clip = retrieval.load_clip(device=str(bb.device))
        except retrieval.ClipUnavailable as err:
            clip_note = str(err)
    judge, judge_note = instance_judge(bb)
    report = E.evaluate_concept(bb, concepts, trained_name, positives=sets.positives,
                                negatives=sets.negatives, real=sets.real, clip=clip,
                                clip_note=clip_note, n_images=n_images, qa_items=qa_items or [],
                                seed=seed, on_progress=on_progress, judge=judge, judge_note=judge_note)
    report["notes"] = list(sets.notes) + report["notes"]
    return report
