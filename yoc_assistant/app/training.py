"""Train a concept from the library: the one job behind `yoc train`, `yoc add-concept`,
`yoc demo` and the chat app's "teach" action.

Order of work: backbone (`open_backbone("training")` unless one is given) -> the
concept's photos -> ranked pool images (CLIP; skipped with a note when there is no
pool or no CLIP) -> image tokens (cached per image hash) -> training examples from
every modality plugin -> train -> its quality measured (app/quality.py) -> concept
file written atomically -> THEN the database row (ready, vectors path, metrics, quality). A failure marks the run failed (and the
concept failed unless it already had vectors); a cancel leaves a checkpoint that
`resume=True` continues. Progress goes to `on_event` only: the front ends draw it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.app.quality import measure_quality
from yoc_assistant.personalize import witness
from yoc_assistant.personalize.checkpoints import clear_run_dir
from yoc_assistant.personalize.concept import DEFAULT_GROUPS, ConceptVectors
from yoc_assistant.personalize.prepare import (
    SharedClip,
    build_examples,
    initial_words,
    make_evaluator,
    reference_tokens,
    select_images,
    vectors_file,
    witness_tokens,
)
from yoc_assistant.personalize.trainer import (
    EventFn,
    TrainConfig,
    TrainEvent,
    TrainResult,
    train_concept,
)

if TYPE_CHECKING:
    from yoc_assistant.assistant.plugins import PluginManager
    from yoc_assistant.backbone.core import Backbone

__all__ = ["TrainConfig", "TrainEvent", "TrainOutcome", "config_from_options", "resumable",
           "train_concept_job"]


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
    quality: dict[str, Any] = field(default_factory=dict)  # measured at the end (app/quality.py)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["vectors_path"] = str(self.vectors_path) if self.vectors_path else None
        out["final_loss"] = self.losses[-1] if self.losses else None
        out.pop("losses")
        return out


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


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """For one training run: torch's deterministic algorithms (warn-only where an op has
    none) and the CPU thread count held fixed, so the same command on the same machine
    gives the same rows, and a resumed run ends as an uninterrupted one. Both restored after."""
    import torch

    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def resumable(library: Any, name: str) -> bool:
    """The concept's latest run stopped before the end (interrupted, failed) and left a
    checkpoint: training it again can continue from there."""
    from yoc_assistant.personalize.checkpoints import checkpoint_paths

    run = library.latest_run(name)
    if run is None or run.status not in ("interrupted", "failed"):
        return False
    return bool(checkpoint_paths(library.concept_runs_dir(name)))


def is_main_process() -> bool:
    """Under `accelerate launch`, only rank 0 writes the library (rows, concept file)."""
    return int(os.environ.get("RANK", "0")) == 0


def backbone_recipe(bb: Backbone) -> dict[str, Any]:
    """The training options the backbone's checkpoint recommends (config.json `yoc_recipe`)."""
    from yoc_assistant.backbone.loading import recipe_of

    return recipe_of(getattr(bb, "checkpoint_dir", None))


def train_concept_job(library: Any, name: str, *, backbone: Backbone | None = None,
                      config: TrainConfig | None = None, options: dict[str, Any] | None = None,
                      on_event: EventFn | None = None,
                      cancel: threading.Event | None = None, resume: bool = False,
                      plugins: PluginManager | None = None, clip_device: str | None = None) -> TrainOutcome:
    """Train (or retrain) concept `name` of `library`; see the module doc.

    The configuration is `config` when given; else `options` (`config_from_options`'s,
    the user's choices) over the backbone's recommended recipe over TrainConfig's
    defaults: the one rule every entry point (add-concept, train, the chat app, the
    demo) trains by."""
    # Fetched once, before any slow load (a clear message), and passed down: what the job
    # reads of it (id, uid, name, about) does not change while it trains.
    concept = library.require_concept(name)
    if config is None:
        if backbone is None:
            from yoc_assistant.app.backbones import open_backbone

            def say(text: str) -> None:
                if on_event is not None:
                    on_event(TrainEvent(0, 0, 0, None, phase="note", note=text))

            backbone = open_backbone("training", precision=(options or {}).get("precision") or "auto",
                                     on_note=say)
        config = config_from_options(options or {}, recipe=backbone_recipe(backbone))
    config.validate()
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
             on_event: EventFn | None, cancel: threading.Event | None, resume: bool, plugins: PluginManager | None,
             clip_device: str | None, run_id: int | None) -> TrainOutcome:
    name, started, notes = concept.name, time.monotonic(), []

    def note(texts: Sequence[str]) -> None:
        for text in texts:
            notes.append(text)
            if on_event is not None:
                on_event(TrainEvent(0, 0, 0, None, phase="note", note=text))

    if backbone is None:
        from yoc_assistant.app.backbones import open_backbone

        backbone = open_backbone("training", precision=config.precision,
                                 on_note=lambda text: note([text]))
    bb = backbone
    device = clip_device or ("cuda" if bb.device.type == "cuda" else "cpu")
    if plugins is None:
        from yoc_assistant.app.plugins import load_plugins

        plugins = load_plugins()
    modalities = plugins.get_modalities()
    groups = plugins.group_sizes() or dict(DEFAULT_GROUPS)
    clip = SharedClip(device)  # one CLIP for pool ranking and checkpoint choice
    job = select_images(library, concept, seed=config.seed, clip=clip, hard_negatives=config.hard_negatives)
    note(job.notes)
    words = initial_words(bb, library, job) if config.init_from_photos else []
    if words:
        note([f"concept rows start from the words {bb.detokenize(words).strip()!r} "
              "(what the backbone says the photos show)"])
    vectors = ConceptVectors.initialize(bb, name, groups, seed=config.seed, words=words)
    if config.reference_photo:
        vectors.reference = reference_tokens(bb, library, job)
        vectors.photos = witness_tokens(bb, library, job)
    witness.describe(vectors, concept.about)  # the description's veto (personalize/witness.py)
    training = build_examples(bb, library, vectors, job, modalities, about=concept.about,
                              seed=config.seed, mirror=config.mirror_photos)
    examples = training.examples
    note(training.notes)
    eval_notes: list[str] = []
    evaluator = make_evaluator(bb, library, name, job, eval_notes, shared_clip=clip)
    note(eval_notes)
    run_dir = library.concept_runs_dir(concept)
    if not resume and run_id is not None:
        clear_run_dir(run_dir)
    recorder = _RunRecorder(library, run_id, on_event) if run_id is not None else on_event
    with deterministic():
        result = train_concept(bb, vectors, examples, replace(config, precision=bb.precision),
                               run_dir=run_dir, on_event=recorder, cancel=cancel, resume=resume,
                               evaluator=evaluator, frozen=training.stand_ins)
    notes += result.notes  # already shown: the trainer's own events carried them
    metrics = _metrics(result, examples, bb, notes, time.monotonic() - started)
    path, quality = None, {}
    if not result.cancelled:
        if on_event is not None:
            on_event(TrainEvent(result.step, result.total_steps, 0, None, phase="note",
                                note="measuring how well it learnt (recognition, routing)"))
        quality = measure_quality(bb, library, name, result.vectors, job, plugins, seed=config.seed)
    if run_id is not None:
        if result.cancelled:
            library.finish_run(run_id, "interrupted", metrics=metrics)
        else:
            path = _save(library, concept, bb, result, metrics, quality)
            library.finish_run(run_id, "done", metrics={**metrics, "quality": quality})
    outcome = _outcome(name, path, metrics, result, run_id, notes, bb, started)
    outcome.quality = quality
    return outcome


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
        "notes": list(notes), "resumed_from": result.resumed_from, "cpu_threads": result.cpu_threads,
    }
    out.update({k: v for k, v in result.best_metrics.items() if k != "score"})
    return out


def _save(library: Any, concept: Any, bb: Backbone, result: TrainResult, metrics: dict[str, Any],
          quality: dict[str, Any]) -> Path:
    """The concept file first (atomic), then the row that points at it."""
    name = concept.name
    chosen = result.vectors
    chosen.metadata.update({"trained_steps": str(result.step),
                            "best_step": str(result.best_step if result.best_step is not None else result.step)})
    path = chosen.save(vectors_file(library, concept, bb), bb)
    library.set_vectors(name, path, metrics, status="ready", backbone=str(bb.source),
                        backbone_fingerprint=str(bb.fingerprint), quality=quality)
    return path


def _outcome(name: str, path: Path | None, metrics: dict[str, Any], result: TrainResult, run_id: int | None,
             notes: list[str], bb: Backbone, started: float) -> TrainOutcome:
    return TrainOutcome(name, path, metrics, result.step, result.total_steps, result.cancelled, run_id,
                        list(notes), list(result.losses), str(bb.name), str(bb.precision),
                        round(time.monotonic() - started, 2))


def config_from_options(options: dict[str, Any], recipe: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig from CLI-style options (None = not given): the options over `recipe`
    (a checkpoint's recommended options, same names) over TrainConfig's defaults."""
    mapping = {"epochs": "epochs", "steps": "max_steps", "lr": "lr", "batch_size": "batch_size",
               "grad_accum": "grad_accum", "precision": "precision", "seed": "seed",
               "gradient_checkpointing": "gradient_checkpointing", "checkpoint_every": "checkpoint_every",
               "eval_every": "eval_every", "init_from_photos": "init_from_photos",
               "mirror_photos": "mirror_photos", "lr_schedule": "lr_schedule",
               "warmup_steps": "warmup_steps", "clip_grad_norm": "clip_grad_norm",
               "reference_photo": "reference_photo", "hard_negatives": "hard_negatives"}
    unknown = set(options) - set(mapping)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    recommended = {mapping[k]: v for k, v in (recipe or {}).items() if k in mapping and v is not None}
    if "max_steps" in recommended and options.get("epochs") is not None and options.get("steps") is None:
        del recommended["max_steps"]  # the user's --epochs wins over a recipe's step count
    values = {**recommended, **{mapping[k]: v for k, v in options.items() if v is not None}}
    config = TrainConfig(**values)
    config.validate()
    return config
