"""Train a concept from the library: the job behind `yoc train`, `yoc add-concept`
and the chat app's "teach" action.

Order of work: backbone -> the concept's photos -> ranked pool images (CLIP;
skipped with a note when there is no pool or no CLIP) -> image tokens (cached per
image hash) -> training examples from every modality plugin -> train -> concept
file written atomically -> THEN the database row (ready, vectors path, metrics).
A failure marks the run failed (and the concept failed unless it already had
vectors); a cancel leaves a checkpoint that `resume=True` continues.

Held-out evaluation: photos with role "test", else one of the concept's photos
when it has at least 4 (held out of training), plus a few pool images as
negatives. With them, the best checkpoint is the one with the highest mean of
recognition accuracy and CLIP-I (recognition alone without CLIP); without, the last.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize.concept import DEFAULT_GROUPS, ConceptSet, ConceptVectors
from yoc_assistant.personalize.trainer import (
    BEST_FILE,
    CHECKPOINT_PREFIX,
    EventFn,
    TrainConfig,
    TrainEvent,
    TrainResult,
    choose_precision,
    train_concept,
)

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone

MIN_PHOTOS_TO_HOLD_OUT = 4
EVAL_NEGATIVES = 4
EVAL_IMAGES = 2  # pictures drawn per evaluation for CLIP-I


@dataclass
class TrainOutcome:
    name: str
    vectors_path: Path | None  # None when cancelled
    metrics: dict[str, Any]
    steps: int
    total_steps: int
    cancelled: bool
    run_id: int | None
    notes: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    backbone: str = ""
    precision: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["vectors_path"] = str(self.vectors_path) if self.vectors_path else None
        out["final_loss"] = self.losses[-1] if self.losses else None
        out.pop("losses")
        return out


# -- pieces ------------------------------------------------------------------------------------
def load_job_backbone(precision: str = "auto") -> tuple[Backbone, list[str]]:
    """The backbone a job uses when none is given: YOC_BACKBONE or the default."""
    from yoc_assistant import Backbone
    from yoc_assistant.backbone.loading import pick_device
    from yoc_assistant.backbone.resolve import default_backbone
    from yoc_assistant.settings import checked_device

    source, is_noise = default_backbone()
    device = pick_device(_process_device(checked_device()))
    chosen = choose_precision(precision, device, weight_bytes_bf16=_bf16_bytes(source))
    notes = []
    if is_noise:
        notes.append("the backbone is a tiny random checkpoint (set YOC_BACKBONE or `yoc pull`): "
                     "training works, but answers and pictures are noise")
    return Backbone.load(source, precision=chosen, device=str(device)), notes


def _process_device(requested: str) -> str:
    """Under `accelerate launch`, each process takes its own GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and requested in ("auto", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


def _bf16_bytes(source: str) -> int | None:
    """Parameter count x 2 from the checkpoint's safetensors headers (no weights read)."""
    try:
        from yoc_assistant.backbone.loading import resolve_source, tensor_shapes

        folder, _ = resolve_source(source)
        total = 0
        for shape, _file in tensor_shapes(folder).values():
            n = 1
            for d in shape:
                n *= int(d)
            total += n
        return 2 * total
    except Exception:  # unknown: choose_precision assumes a 7B
        return None


def group_sizes(plugins: Any | None) -> tuple[dict[str, int], list[Any]]:
    """Token groups of a new concept and the modalities that build examples for them."""
    if plugins is None:
        return dict(DEFAULT_GROUPS), []
    modalities = list(plugins.get_modalities())
    sizes = {m.group: int(m.group_size) for m in modalities}
    return (sizes or dict(DEFAULT_GROUPS)), modalities


def default_plugins() -> Any | None:
    try:
        from yoc_assistant.assistant.plugins import PluginManager
    except ImportError:
        return None
    manager = PluginManager()
    return manager if manager.get_modalities() else None


@dataclass
class JobData:
    train_positives: list[str]
    held_positives: list[str]
    held_negatives: list[str]
    soft: list[str]
    hard: list[str]
    easy: list[str]
    notes: list[str]


def select_images(library: Any, name: str, *, seed: int, clip_device: str = "cpu") -> JobData:
    """The concept's photos (some held out), and ranked pool images (or notes why not)."""
    from yoc_assistant.personalize import retrieval

    positives = sorted(r.sha256 for r in library.concept_images(name, "positive"))
    if not positives:
        raise UserInputError(f"concept {name!r} has no photos to train on; add some with "
                             f"`yoc add-concept PHOTOS --name {name}`")
    tests = sorted(r.sha256 for r in library.concept_images(name, "test"))
    rng = random.Random(seed)
    held: list[str] = []
    if tests:
        held = tests
    elif len(positives) >= MIN_PHOTOS_TO_HOLD_OUT:
        held = [rng.choice(positives)]
        positives = [p for p in positives if p not in held]
    notes: list[str] = []
    pool = [r.sha256 for r in library.pool_images()]
    if pool:
        ranking = retrieval.retrieve(library, positives, pool, device=clip_device, seed=seed)
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
    if not held:
        notes.append(f"fewer than {MIN_PHOTOS_TO_HOLD_OUT} photos: the last checkpoint is kept "
                     "(no held-out photo to pick the best one)")
    return JobData(positives, held, held_neg, list(ranking.soft_positives), list(ranking.hard_negatives),
                   easy, notes)


def build_examples(bb: Backbone, library: Any, name: str, vectors: ConceptVectors, job: JobData,
                   modalities: Sequence[Any], *, about: str | None, seed: int, mirror: bool = False,
                   on_progress: Callable[[int, int], None] | None = None) -> tuple[list[Any], list[str]]:
    """Examples of every modality (or the three built-in tasks without plugins). `mirror`:
    each training photo's mirror image is one more positive."""
    from yoc_assistant.personalize import data
    from yoc_assistant.personalize.imagetokens import mirrored

    positives = list(job.train_positives)
    if mirror:
        positives += [mirrored(s) for s in job.train_positives]
    shas = list(dict.fromkeys(positives + job.soft + job.hard + job.easy))
    tokens = data.image_tokens(library, bb, shas, on_progress=on_progress)
    ctx = data.BuildContext.from_concepts(
        bb, ConceptSet(bb, [vectors]), name,
        positives=[tokens[s] for s in positives], soft_positives=[tokens[s] for s in job.soft],
        hard_negatives=[tokens[s] for s in job.hard], easy_negatives=[tokens[s] for s in job.easy],
        about=about, rng=random.Random(seed))
    if modalities:
        examples = data.balance_tasks([ex for m in modalities for ex in (m.build_examples(ctx) or [])])
    else:
        examples = data.build_training_set(ctx)
    return examples, list(ctx.notes)


def initial_words(bb: Backbone, library: Any, job: JobData) -> list[int]:
    """Word tokens most of the backbone's own descriptions of the training photos share."""
    from yoc_assistant.personalize import data, describe

    tokens = data.image_tokens(library, bb, job.train_positives)
    return describe.photo_words(bb, [tokens[s] for s in job.train_positives])


def make_evaluator(bb: Backbone, library: Any, name: str, job: JobData, notes: list[str],
                   clip_device: str = "cpu") -> Callable[[ConceptVectors], dict[str, float]] | None:
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
        clip = retrieval.load_clip(device=clip_device)
        loader = retrieval.library_loader(library)
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


def vectors_file(library: Any, name: str, bb: Backbone) -> Path:
    """One file per backbone, so retraining on another backbone never clobbers this one."""
    return library.concept_dir(name) / f"vectors-{str(bb.fingerprint)[:12]}.safetensors"


def _clear_run_dir(run_dir: Path) -> None:
    for path in list(run_dir.glob(f"{CHECKPOINT_PREFIX}*.safetensors")) + [run_dir / BEST_FILE]:
        path.unlink(missing_ok=True)


class _RunRecorder:
    """Mirror progress into the training_runs row: at most every few seconds, and at the end
    (the latest checkpoint's path with it; the file is complete before its event)."""

    def __init__(self, library: Any, run_id: int, on_event: EventFn | None, every_s: float = 5.0) -> None:
        self.library, self.run_id, self.on_event, self.every_s = library, run_id, on_event, every_s
        self.last = 0.0
        self.checkpoint: str | None = None

    def __call__(self, event: TrainEvent) -> None:
        now = time.monotonic()
        if event.phase == "checkpoint":
            self.checkpoint = event.note
        final = event.phase in ("done", "cancelled")
        if final or (event.phase in ("train", "checkpoint") and now - self.last >= self.every_s):
            self.library.update_run(self.run_id, step=event.step, loss=event.loss,
                                    total_steps=event.total_steps, checkpoint_path=self.checkpoint)
            self.last = now
        if self.on_event is not None:
            self.on_event(event)


# -- the job -----------------------------------------------------------------------------------
def is_main_process() -> bool:
    """Under `accelerate launch`, only rank 0 writes the library (rows, concept file)."""
    return int(os.environ.get("RANK", "0")) == 0


def train_concept_job(library: Any, name: str, *, backbone: Backbone | None = None,
                      config: TrainConfig | None = None, on_event: EventFn | None = None,
                      cancel: threading.Event | None = None, resume: bool = False,
                      plugins: Any | None = None, clip_device: str | None = None) -> TrainOutcome:
    """Train (or retrain) concept `name` of `library`; see the module doc."""
    config = config or TrainConfig()
    config.validate()
    concept = library.require_concept(name)
    main = is_main_process()
    run_id = library.start_run(concept.name, config=asdict(config)) if main else None
    try:
        return _run_job(library, concept, backbone, config, on_event, cancel, resume, plugins,
                        clip_device, run_id)
    except KeyboardInterrupt:
        if run_id is not None:
            library.finish_run(run_id, "interrupted", error="interrupted")
        raise
    except BaseException as err:
        if run_id is not None:
            library.finish_run(run_id, "failed", error=str(err) or type(err).__name__)
        raise


def _run_job(library: Any, concept: Any, backbone: Backbone | None, config: TrainConfig,
             on_event: EventFn | None, cancel: threading.Event | None, resume: bool, plugins: Any,
             clip_device: str | None, run_id: int | None) -> TrainOutcome:
    name, started, notes = concept.name, time.monotonic(), []

    def note(texts: Sequence[str]) -> None:
        for text in texts:
            notes.append(text)
            if on_event is not None:
                on_event(TrainEvent(0, 0, 0, None, phase="note", note=text))

    if backbone is None:
        backbone, bb_notes = load_job_backbone(config.precision)
        note(bb_notes)
    bb = backbone
    device = clip_device or ("cuda" if bb.device.type == "cuda" else "cpu")
    groups, modalities = group_sizes(plugins if plugins is not None else default_plugins())
    job = select_images(library, name, seed=config.seed, clip_device=device)
    note(job.notes)
    words = initial_words(bb, library, job) if config.init_from_photos else []
    if words:
        note([f"concept rows start from the words {bb.detokenize(words).strip()!r} "
              "(what the backbone says the photos show)"])
    vectors = ConceptVectors.initialize(bb, name, groups, seed=config.seed, words=words)
    examples, data_notes = build_examples(bb, library, name, vectors, job, modalities,
                                          about=concept.about, seed=config.seed,
                                          mirror=config.mirror_photos)
    note(data_notes)
    eval_notes: list[str] = []
    evaluator = make_evaluator(bb, library, name, job, eval_notes, clip_device=device)
    note(eval_notes)
    run_dir = library.concept_runs_dir(name)
    if not resume and run_id is not None:
        _clear_run_dir(run_dir)
    recorder = _RunRecorder(library, run_id, on_event) if run_id is not None else on_event
    result = train_concept(bb, vectors, examples, replace(config, precision=bb.precision),
                           run_dir=run_dir, on_event=recorder, cancel=cancel, resume=resume,
                           evaluator=evaluator)
    metrics = _metrics(result, examples, bb, notes, time.monotonic() - started)
    path = None
    if run_id is not None:
        if result.cancelled:
            library.finish_run(run_id, "interrupted", metrics=metrics)
        else:
            path = _save(library, name, bb, result, metrics)
            library.finish_run(run_id, "done", metrics=metrics)
    return _outcome(name, path, metrics, result, run_id, notes, bb, started)


def _metrics(result: TrainResult, examples: Sequence[Any], bb: Backbone, notes: list[str],
             seconds: float) -> dict[str, Any]:
    by_task: dict[str, int] = {}
    for ex in examples:
        by_task[ex.task] = by_task.get(ex.task, 0) + 1
    out: dict[str, Any] = {
        "steps": result.step, "total_steps": result.total_steps,
        "final_loss": result.losses[-1] if result.losses else None,
        "task_losses": result.task_losses, "examples": len(examples), "examples_by_task": by_task,
        "best_step": result.best_step, "best_score": result.best_score,
        "precision": bb.precision, "backbone": bb.name, "seconds": round(seconds, 2),
        "notes": list(notes),
    }
    out.update({k: v for k, v in result.best_metrics.items() if k != "score"})
    return out


def _save(library: Any, name: str, bb: Backbone, result: TrainResult, metrics: dict[str, Any]) -> Path:
    """The concept file first (atomic), then the row that points at it."""
    chosen = result.vectors
    chosen.metadata.update({"trained_steps": str(result.step),
                            "best_step": str(result.best_step if result.best_step is not None else result.step)})
    path = chosen.save(vectors_file(library, name, bb), bb)
    library.set_vectors(name, path, metrics, status="ready", backbone=str(bb.source),
                        backbone_fingerprint=str(bb.fingerprint))
    return path


def _outcome(name: str, path: Path | None, metrics: dict[str, Any], result: TrainResult, run_id: int | None,
             notes: list[str], bb: Backbone, started: float) -> TrainOutcome:
    return TrainOutcome(name, path, metrics, result.step, result.total_steps, result.cancelled, run_id,
                        list(notes), list(result.losses), str(bb.name), str(bb.precision),
                        round(time.monotonic() - started, 2))


# -- for the command line ---------------------------------------------------------------------
def config_from_options(options: dict[str, Any]) -> TrainConfig:
    """TrainConfig from CLI-style options (None = default)."""
    mapping = {"epochs": "epochs", "steps": "max_steps", "lr": "lr", "batch_size": "batch_size",
               "grad_accum": "grad_accum", "precision": "precision", "seed": "seed",
               "gradient_checkpointing": "gradient_checkpointing", "checkpoint_every": "checkpoint_every",
               "eval_every": "eval_every", "init_from_photos": "init_from_photos",
               "mirror_photos": "mirror_photos"}
    unknown = set(options) - set(mapping)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    values = {mapping[k]: v for k, v in options.items() if v is not None}
    config = TrainConfig(**values)
    config.validate()
    return config


def train_from_cli(library: Any, name: str, *, resume: bool = False, quiet: bool = False,
                   backbone: Backbone | None = None, **options: Any) -> TrainOutcome:
    """Train with a progress bar on a terminal (stderr), quietly when piped or `quiet`.

    Ctrl-C cancels cleanly: the checkpoint is kept and `--resume` continues."""
    config = config_from_options(options)
    show = not quiet and sys.stderr.isatty()
    cancel = threading.Event()
    with _ctrl_c_cancels(cancel, quiet):
        if not show:
            return train_concept_job(library, name, backbone=backbone, config=config, resume=resume,
                                     on_event=_note_printer(quiet), cancel=cancel)
        return _with_progress_bar(library, name, backbone, config, resume, cancel)


def _with_progress_bar(library: Any, name: str, backbone: Backbone | None, config: TrainConfig,
                       resume: bool, cancel: threading.Event) -> TrainOutcome:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"training {name}", total=None, loss="-")

        def on_event(event: TrainEvent) -> None:
            if event.phase == "note":
                progress.console.print(f"[yellow]note:[/] {event.note}")
            elif event.phase in ("start", "train", "done", "cancelled"):
                loss = f"{event.loss:.3f}" if event.loss is not None else "-"
                progress.update(task, total=event.total_steps, completed=event.step, loss=loss)
            elif event.phase == "eval" and event.metrics:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items()
                                  if isinstance(v, float))
                progress.console.print(f"step {event.step}: {shown}")

        return train_concept_job(library, name, backbone=backbone, config=config, resume=resume,
                                 on_event=on_event, cancel=cancel)


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: threading.Event, quiet: bool) -> Iterator[None]:
    """First Ctrl-C: stop after the current step with a checkpoint; second: interrupt now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        cancel.set()
        if not quiet:
            print("\nStopping after this step (Ctrl-C again to stop now)…", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _note_printer(quiet: bool) -> EventFn | None:
    if quiet:
        return None

    def on_event(event: TrainEvent) -> None:
        if event.phase == "note":
            print(f"note: {event.note}", file=sys.stderr)

    return on_event


def remove_checkpoints(library: Any, name: str) -> None:
    """Drop a concept's training checkpoints (they are only needed to resume)."""
    shutil.rmtree(library.concept_runs_dir(name), ignore_errors=True)
