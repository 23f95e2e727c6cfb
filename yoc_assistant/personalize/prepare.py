"""The pure pieces of training a concept from the library (the job itself, which picks
the backbone and the plugins and writes the rows, is `yoc_assistant.app.training`).

Every photo of the concept trains (3-5 photos are few enough). Checkpoints are checked
on photos with role "test" when there are any, else on *shifted views* of the
training photos (a tighter crop, resized back: `imagetokens.shifted`), plus a few pool
images as negatives. The best checkpoint is the one with the highest mean of
recognition accuracy and CLIP-I (recognition alone without CLIP).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.errors import UserInputError, short
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

EVAL_NEGATIVES = 4
EVAL_IMAGES = 2  # pictures drawn per evaluation for CLIP-I


class SharedClip:
    """One CLIP per job, loaded on first use: pool ranking and checkpoint choice share it
    (loading it is the slow part of both)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._clip: Any = None
        self._error: Exception | None = None
        self.loads = 0  # how often the weights were read (tests)

    def get(self) -> Any:
        """The loaded CLIP; raises retrieval.ClipUnavailable (every time) if it cannot load."""
        from yoc_assistant.personalize import retrieval

        if self._clip is None and self._error is None:
            try:
                self.loads += 1
                self._clip = retrieval.load_clip(device=self.device)
            except retrieval.ClipUnavailable as err:
                self._error = err
        if self._error is not None:
            raise self._error
        return self._clip


@dataclass
class JobData:
    train_positives: list[str]
    held_positives: list[str]
    held_negatives: list[str]
    soft: list[str]
    hard: list[str]
    easy: list[str]
    notes: list[str]


def select_images(library: Any, concept: Any, *, seed: int, clip_device: str = "cpu",
                  clip: SharedClip | None = None, hard_negatives: str = "after-soft") -> JobData:
    """The concept's photos (all of them train), the views that check the checkpoints,
    and ranked pool images (or notes why not). `concept`: its name, or the library's row
    (a job fetches it once and passes it down). `hard_negatives`: TrainConfig's."""
    from yoc_assistant.personalize import retrieval
    from yoc_assistant.personalize.imagetokens import shifted

    name = concept if isinstance(concept, str) else concept.name
    positives = sorted(r.sha256 for r in library.concept_images(concept, "positive"))
    if not positives:
        raise UserInputError(f"concept {name!r} has no photos to train on; add some with "
                             f"`yoc add-concept PHOTOS --name {name}`")
    tests = sorted(r.sha256 for r in library.concept_images(concept, "test"))
    held = tests or [shifted(p) for p in positives]
    notes: list[str] = []
    pool = [r.sha256 for r in library.pool_images()]
    if pool:
        shared = clip or SharedClip(clip_device)
        try:
            ranking = retrieval.retrieve(library, positives, pool, clip=shared.get(), seed=seed,
                                         hard_negatives=hard_negatives)
        except retrieval.ClipUnavailable as err:
            ranking = retrieval.Ranking(notes=[f"retrieval skipped: {err}"])
    else:
        ranking = retrieval.Ranking(notes=[retrieval.NO_POOL_NOTE])
    notes += list(ranking.notes)
    easy = list(ranking.easy_negatives)
    if pool and not (ranking.soft_positives or ranking.hard_negatives or easy):
        # No CLIP to rank with: easy negatives are random pool images anyway.
        others = [s for s in pool if s not in set(positives) | set(held)]
        easy = random.Random(seed).sample(others, min(retrieval.PAPER_EASY, len(others)))
        notes.append(f"{len(easy)} random pool images used as easy negatives (no CLIP ranking)")
    held_neg: list[str] = []
    if held and len(easy) > EVAL_NEGATIVES:
        held_neg, easy = easy[-EVAL_NEGATIVES:], easy[:-EVAL_NEGATIVES]
    return JobData(positives, held, held_neg, list(ranking.soft_positives), list(ranking.hard_negatives),
                   easy, notes)


STAND_INS = 4  # other concepts a concept is trained beside (two-concept requests)


@dataclass
class TrainingData:
    """A concept's examples and the frozen stand-in concepts whose rows they use."""

    examples: list[Any]
    stand_ins: list[ConceptVectors]
    notes: list[str]


def stand_ins(bb: Backbone, vectors: ConceptVectors, photos: Sequence[Sequence[int]], seed: int,
              ) -> list[ConceptVectors]:
    """Other concepts to train beside: one per photo (hard negatives first), each an
    untrained concept whose rows start at the backbone's own description of its photo, as
    a new concept's do. With them in the prompt the concept learns to answer about the
    name it is asked about ("Is <a> ...?" with <b>'s prompt there, "Which of <a> and <b>
    ...?"), which it never does when trained alone."""
    from yoc_assistant.personalize import describe

    return [ConceptVectors.initialize(bb, f"{vectors.name} stand-in {k}", vectors.groups,
                                      seed=seed + 1 + k, words=describe.photo_words(bb, [photo]))
            for k, photo in enumerate(photos[:STAND_INS])]


def training_data(bb: Backbone, vectors: ConceptVectors, modalities: Sequence[Any], *,
                  positives: Sequence[Sequence[int]], soft: Sequence[Sequence[int]],
                  hard: Sequence[Sequence[int]], easy: Sequence[Sequence[int]], about: str | None,
                  seed: int) -> TrainingData:
    """Everything a concept trains on, from image tokens: `yoc train` (`build_examples`)
    and the toy world's harnesses both come through here."""
    from yoc_assistant.personalize import data

    others_photos = list(hard) + list(easy)
    extra = stand_ins(bb, vectors, others_photos, seed)
    concepts = ConceptSet(bb, [vectors, *extra])
    ctx = data.BuildContext.from_concepts(
        bb, concepts, vectors.name, positives=list(positives), soft_positives=list(soft),
        hard_negatives=list(hard), easy_negatives=list(easy), about=about, rng=random.Random(seed),
        others=[data.Other(concepts.identifier_id(v.name), list(concepts.prompt_ids(v.name)), list(photo))
                for v, photo in zip(extra, others_photos, strict=False)])
    return TrainingData(training_set(ctx, modalities), extra, list(ctx.notes))


def build_examples(bb: Backbone, library: Any, vectors: ConceptVectors, job: JobData,
                   modalities: Sequence[Any], *, about: str | None, seed: int, mirror: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> TrainingData:
    """Examples of every modality (or the three built-in tasks without plugins). `mirror`:
    each training photo's mirror image is one more positive."""
    from yoc_assistant.personalize import data
    from yoc_assistant.personalize.imagetokens import mirrored

    positives = list(job.train_positives)
    if mirror:
        positives += [mirrored(s) for s in job.train_positives]
    shas = list(dict.fromkeys(positives + job.soft + job.hard + job.easy))
    tokens = data.image_tokens(library, bb, shas, on_progress=on_progress)
    return training_data(bb, vectors, modalities, positives=[tokens[s] for s in positives],
                         soft=[tokens[s] for s in job.soft], hard=[tokens[s] for s in job.hard],
                         easy=[tokens[s] for s in job.easy], about=about, seed=seed)


def training_set(ctx: Any, modalities: Sequence[Any]) -> list[Any]:
    """A concept's training examples: each modality's own and its router targets, small
    tasks repeated; without modalities, the three built-in tasks. The one place that
    decides the mix (`yoc train` and the toy world's harnesses both call it)."""
    from yoc_assistant.personalize import data

    if not modalities:
        return data.build_training_set(ctx)
    # Every modality gets as many router targets as the one with the most example requests:
    # a plugin's three requests beside 60 first-party text requests otherwise lost "say
    # <bo>'s name out loud" to text.
    most = max((len(tuple(getattr(m, "example_requests", ()) or ())) for m in modalities), default=0)
    n = most * data.ROUTING_REPEATS
    return data.balance_tasks([ex for m in modalities for ex in _examples_of(m, ctx) + _routing_of(m, ctx, n)])


def _examples_of(modality: Any, ctx: Any) -> list[Any]:
    """One modality's examples; a plugin that raises is a note, never the end of the job
    (its group is still trained by the others' prompts, it just gets no examples of its own)."""
    try:
        return list(modality.build_examples(ctx) or [])
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as err:  # noqa: BLE001 - a plugin's bug, even sys.exit(), is not ours to die of
        ctx.notes.append(f"modality {getattr(modality, 'name', '?')!r}: build_examples() raised "
                         f"{type(err).__name__}: {short(err)}; trained without its examples")
        return []


def _routing_of(modality: Any, ctx: Any, n: int) -> list[Any]:
    """`n` router targets from the modality's declared example requests (`Modality.example_requests`),
    the requests in turn."""
    from yoc_assistant.personalize import data

    requests = tuple(getattr(modality, "example_requests", ()) or ())
    made = data.routing_examples(ctx, modality.group, requests) if requests else []
    one_each = made[::data.ROUTING_REPEATS]
    return [one_each[i % len(one_each)] for i in range(max(n, len(made)))] if one_each else []


def initial_words(bb: Backbone, library: Any, job: JobData) -> list[int]:
    """Word tokens most of the backbone's own descriptions of the training photos share."""
    from yoc_assistant.personalize import data, describe

    tokens = data.image_tokens(library, bb, job.train_positives)
    return describe.photo_words(bb, [tokens[s] for s in job.train_positives])


def reference_tokens(bb: Backbone, library: Any, job: JobData) -> list[int]:
    """The image tokens of the photo a concept shows in its prompt (TrainConfig.reference_photo):
    its first training photo (photos are kept in hash order, so the choice is stable)."""
    from yoc_assistant.personalize import data

    first = job.train_positives[0]
    return list(data.image_tokens(library, bb, [first])[first])


def witness_tokens(bb: Backbone, library: Any, job: JobData) -> list[list[int]]:
    """The image tokens of every training photo, in hash order (the first is the reference):
    the photos the concept's photo witness asks (`personalize/witness.py`)."""
    from yoc_assistant.personalize import data

    tokens = data.image_tokens(library, bb, job.train_positives)
    return [list(tokens[s]) for s in job.train_positives]


def make_evaluator(bb: Backbone, library: Any, name: str, job: JobData, notes: list[str],
                   clip_device: str = "cpu", shared_clip: SharedClip | None = None,
                   ) -> Callable[[ConceptVectors], dict[str, float]] | None:
    """Score = mean(recognition weighted accuracy, CLIP-I) on held-out photos; None without them."""
    if not job.held_positives:
        return None
    from yoc_assistant.personalize import data, evaluate, retrieval

    if data.answer_first_token(bb, True) == data.answer_first_token(bb, False):
        notes.append("this backbone's tokenizer cannot tell 'Yes' from 'No': no recognition score, "
                     "the last checkpoint is kept")
        return None
    tokens = data.image_tokens(library, bb, job.held_positives + job.held_negatives)
    pos = [tokens[s] for s in job.held_positives]
    neg = [tokens[s] for s in job.held_negatives]
    clip = real = None
    reason = retrieval.unavailable_reason()
    if reason is None and bb.has_decoder:
        try:
            clip = (shared_clip or SharedClip(clip_device)).get()
        except retrieval.ClipUnavailable as err:  # damaged weights: as documented, a note
            reason = str(err)
    if clip is not None:
        from yoc_assistant.personalize.imagetokens import variant_loader

        loader = variant_loader(retrieval.library_loader(library))
        real = clip.embed_images([loader(s) for s in job.held_positives])
    else:
        notes.append(f"CLIP-I skipped for checkpoint choice ({reason or 'the backbone cannot draw'}): "
                     "recognition accuracy alone picks the best checkpoint")

    def evaluator(vectors: ConceptVectors) -> dict[str, float]:
        concepts = ConceptSet(bb, [vectors])
        rec = evaluate.recognition_accuracy(bb, concepts, name, pos, neg)
        metrics = {"recognition": float(rec["weighted"])}
        if clip is not None and real is not None and "generation" in vectors.groups:
            images = evaluate.generate_concept_images(bb, concepts, name, EVAL_IMAGES, seed=0)
            metrics["clip_i"] = evaluate.clip_i(clip, images, real)
        metrics["score"] = sum(metrics.values()) / len(metrics)
        return metrics

    return evaluator


def vectors_file(library: Any, concept: Any, bb: Backbone) -> Path:
    """One file per backbone, so retraining on another backbone never clobbers this one.
    `concept`: its name, or the library's row of it."""
    return library.concept_dir(concept) / f"vectors-{str(bb.fingerprint)[:12]}.safetensors"
