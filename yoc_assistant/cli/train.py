"""`yoc train NAME`: (re)train a concept's vectors from its photos.

`train_with_progress` is the terminal's side of the application layer's training job
(also used by `yoc add-concept` and `yoc demo`): a progress bar on stderr when it is a
terminal, notes otherwise, and Ctrl-C that cancels cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from yoc_assistant.cli.output import SEED, json_option, print_json, quiet_option, warn
from yoc_assistant.cli.runtime import precision_option

if TYPE_CHECKING:
    from yoc_assistant.app.training import TrainOutcome
    from yoc_assistant.backbone import Backbone
    from yoc_assistant.personalize.trainer import EventFn, TrainEvent


@click.command("train")
@click.argument("name")
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the training examples (default 15).")
@click.option("--steps", type=click.IntRange(min=1),
              help="Stop after this many optimizer steps (overrides epochs).")
@click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True),
              help="AdamW learning rate (default 1e-4).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per step (default 4).")
@click.option("--grad-accum", type=click.IntRange(min=1),
              help="Micro-batches per optimizer step (default 1).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]),
              help="constant (default), or cosine: warmup, then decay to 5% of --lr.")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Warmup steps of the cosine schedule (default 0).")
@click.option("--clip-grad-norm", type=click.FloatRange(min=0, min_open=True),
              help="Clip the rows' gradient to this L2 norm (default: no clipping).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in the backward pass: less memory, ~35% slower.")
@precision_option
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of an interrupted run.")
@click.option("--seed", type=SEED, help="Random seed (data order, initialization; default 0).")
@click.option("--blank-init", is_flag=True,
              help="Start every concept row blank, not from the words the backbone uses for the photos.")
@click.option("--no-mirror", is_flag=True,
              help="Do not add mirror images of the photos (for things with text or a left/right side).")
@click.option("--reference-photo/--no-reference-photo", default=None,
              help="Show one of the photos in the concept's prompt after its learned rows "
                   "(default: the backbone's recipe; on for the toy backbone).")
@click.option("--hard-negatives", type=click.Choice(["after-soft", "top", "shared-top"]),
              help="Where the pool's hard negatives come from in the CLIP ranking: just below the "
                   "soft positives, the most similar, or the most similar kept as soft positives "
                   "too (default: the backbone's recipe; shared-top for the toy backbone).")
@json_option
@quiet_option
def train(name: str, epochs: int | None, steps: int | None, lr: float | None, batch_size: int | None,
          grad_accum: int | None, lr_schedule: str | None, warmup_steps: int | None,
          clip_grad_norm: float | None, gradient_checkpointing: bool | None, precision: str,
          resume: bool, seed: int | None, blank_init: bool, no_mirror: bool, reference_photo: bool | None,
          hard_negatives: str | None, as_json: bool, quiet: bool) -> None:
    """Train (or retrain) concept NAME. Ctrl-C stops after the current step; --resume continues."""
    from yoc_assistant.errors import UserInputError
    from yoc_assistant.library import Library

    lib = Library.open()
    try:
        # What the library knows is checked before torch and the backbone load.
        concept = lib.require_concept(name)
        if concept.photos == 0:
            raise UserInputError(f"{concept.name!r} has no photos to train on; add some with "
                                 f"`yoc add-concept PHOTOS --name {concept.name}`")
        outcome = train_with_progress(
            lib, name, resume=resume, quiet=quiet or as_json, epochs=epochs, steps=steps, lr=lr,
            batch_size=batch_size, grad_accum=grad_accum, lr_schedule=lr_schedule,
            warmup_steps=warmup_steps, clip_grad_norm=clip_grad_norm,
            gradient_checkpointing=gradient_checkpointing,
            precision=precision, seed=seed, init_from_photos=False if blank_init else None,
            mirror_photos=False if no_mirror else None, reference_photo=reference_photo,
            hard_negatives=hard_negatives)
    finally:
        lib.close()
    if as_json:
        print_json(outcome.to_json())
        return
    if outcome.cancelled:
        click.echo(f"Stopped {outcome.name!r} at step {outcome.steps}/{outcome.total_steps}; "
                   f"continue with: yoc train {outcome.name} --resume")
        return
    metrics = outcome.metrics
    parts = [f"{outcome.steps} steps"]
    if isinstance(metrics.get("final_loss"), float):
        parts.append(f"final loss {metrics['final_loss']:.3f}")
    for key in ("recognition", "clip_i"):
        if isinstance(metrics.get(key), float):
            parts.append(f"{key.replace('_', '-')} {metrics[key]:.3f}")
    click.echo(f"Trained {outcome.name!r} ({', '.join(parts)}, {outcome.seconds:.0f} s, "
               f"{outcome.precision}): {outcome.vectors_path}")
    report_quality(outcome.name, outcome.quality)


def report_quality(name: str, quality: dict[str, Any] | None) -> None:
    """The measured quality on stdout; a concept near chance is a warning that says what to do."""
    from yoc_assistant.app.quality import advice, summary

    if not quality:
        return
    where = quality.get("positives_from")
    click.echo(f"Quality of {name!r}: {summary(quality)}" + (f" (on {where})" if where else ""))
    if quality.get("verdict") == "near chance":
        warn(f"{name!r} answers little better than chance: {advice(name)}")


def train_with_progress(library: Any, name: str, *, resume: bool = False, quiet: bool = False,
                        backbone: Backbone | None = None, plugins: Any = None,
                        **options: Any) -> TrainOutcome:
    """Run the training job with a progress bar on a terminal (stderr), quietly when piped
    or `quiet`. `options` are `config_from_options`'s (None = default).

    Ctrl-C cancels cleanly: the checkpoint is kept and `--resume` continues."""
    from yoc_assistant.app.training import config_from_options, train_concept_job

    config_from_options(options)  # bad values are said before any slow load
    cancel = threading.Event()

    def run(on_event: EventFn | None) -> TrainOutcome:
        # the backbone's recommended recipe under the user's options, as every entry point
        return train_concept_job(library, name, backbone=backbone, options=options, resume=resume,
                                 on_event=on_event, cancel=cancel, plugins=plugins)

    try:
        with _ctrl_c_cancels(cancel, quiet):
            if quiet or not sys.stderr.isatty():
                return run(_note_printer(quiet))
            return _with_progress_bar(name, run)
    except KeyboardInterrupt:  # the second Ctrl-C: the last checkpoint is still there
        click.echo(f"Interrupted; continue from the last checkpoint with: yoc train {name} --resume",
                   err=True)
        raise SystemExit(130) from None


def _with_progress_bar(name: str, run: Callable[[EventFn | None], TrainOutcome]) -> TrainOutcome:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"training {name}", total=None, loss="-")

        def on_event(event: TrainEvent) -> None:
            if event.phase == "note":
                progress.console.print(f"[yellow]note:[/] {escape(event.note)}")
            elif event.phase in ("start", "train", "done", "cancelled"):
                loss = f"{event.loss:.3f}" if event.loss is not None else "-"
                progress.update(task, total=event.total_steps, completed=event.step, loss=loss)
            elif event.phase == "eval" and event.metrics:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items()
                                  if isinstance(v, float))
                progress.console.print(f"step {event.step}: {shown}")

        return run(on_event)


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
