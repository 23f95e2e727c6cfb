"""`yoc add-concept PATH... --name NAME`: teach yoc a new concept from a few photos."""

from __future__ import annotations

from pathlib import Path

import click

from yoc_assistant.cli.output import (
    info,
    json_option,
    print_json,
    print_report,
    progress,
    quiet_option,
)
from yoc_assistant.library import Library
from yoc_assistant.library.concepts import NoUsablePhotosError, add_concept_from_paths


@click.command("add-concept")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Short name: letters, digits, '-' and '_' (used as <name>).")
@click.option("--about", help="What it is, in your words: 'key: value' facts and sentences such as 'bo is my brown "
              "dachshund.' (used for question answering and to check answers about photos).")
@click.option("--display-name", help="A friendlier name to show (any characters).")
@click.option("--no-train", is_flag=True, help="Only store the photos; train later with `yoc train NAME`.")
@click.option("--recursive", "-r", is_flag=True, help="Read the photos in subfolders too.")
@json_option
@quiet_option
def add_concept(paths: tuple[Path, ...], name: str, about: str | None, display_name: str | None,
                no_train: bool, recursive: bool, as_json: bool, quiet: bool) -> None:
    """Add a concept from photos (files or folders), then train it.

    3-5 different photos of the one thing work best (1 is the minimum; past ~20 yoc
    warns). A folder gives the photos at its top; its subfolders are read only with
    --recursive. JPEG, PNG, HEIC, AVIF, WebP and more are read; unusable files are
    skipped with the reason and the rest go on. Re-running the command for a concept
    that was never trained continues it.

    \b
    Example:
      yoc add-concept ~/photos/bo --name bo --about "breed: dachshund
      collar: red"
    """
    with Library.open() as lib:
        _add(lib, paths, name, about, display_name, no_train, recursive, as_json, quiet)


def _add(lib: Library, paths: tuple[Path, ...], name: str, about: str | None, display_name: str | None,
         no_train: bool, recursive: bool, as_json: bool, quiet: bool) -> None:
    try:
        with progress("Checking photos", len(paths), quiet=quiet or as_json) as update:
            report = add_concept_from_paths(lib, list(paths), name, about=about, display_name=display_name,
                                            on_progress=update, recursive=recursive)
    except NoUsablePhotosError as err:
        print_report(err.report, quiet=quiet)
        raise
    except KeyboardInterrupt:
        click.echo("Interrupted while checking the photos; nothing was added. "
                   "Run the same command again to start over.", err=True)
        raise SystemExit(130) from None
    print_report(report, quiet=quiet or as_json)
    concept = report.concept
    if not as_json:
        click.echo(f"Added {concept.name!r}: {concept.photos} photo{'s' if concept.photos != 1 else ''} "
                   f"({len(report.accepted)} new).")
    outcome = None
    if not no_train:
        from yoc_assistant.app.training import resumable
        from yoc_assistant.cli.train import train_with_progress

        # Re-running the command for an interrupted concept continues its training, unless new
        # photos came with it (then the examples differ and training starts over).
        resume = resumable(lib, concept.name)
        if resume and report.accepted:
            info("New photos were added: training starts over.", quiet=quiet or as_json)
            resume = False
        elif resume:
            info("Continuing the interrupted training.", quiet=quiet or as_json)
        outcome = train_with_progress(lib, concept.name, resume=resume, quiet=quiet or as_json)
    concept = lib.require_concept(concept.name)
    if as_json:
        print_json({"concept": concept.to_json(), "report": report.to_json(),
                    "trained": None if outcome is None else not outcome.cancelled})
        return
    if outcome is not None and outcome.cancelled:
        click.echo(f"Stopped training {concept.name!r} at step {outcome.steps}/{outcome.total_steps}; "
                   f"continue with: yoc train {concept.name} --resume")
        return
    click.echo(f"Status of {concept.name!r}: {concept.status}.")
    if outcome is not None:
        from yoc_assistant.cli.train import report_quality

        report_quality(concept.name, outcome.quality)
    if concept.status != "ready":
        info(f"Train it with: yoc train {concept.name}", quiet=quiet)

