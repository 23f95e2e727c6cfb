"""`yoc add-concept PATH... --name NAME`: teach yoc a new concept from a few photos."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
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

TRAIN_MODULE = "yoc_assistant.personalize.train"


@click.command("add-concept")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Short name: letters, digits, '-' and '_' (used as <name>).")
@click.option("--about", help="What it is, in your words (used for question answering).")
@click.option("--display-name", help="A friendlier name to show (any characters).")
@click.option("--no-train", is_flag=True, help="Only store the photos; train later with `yoc train NAME`.")
@json_option
@quiet_option
def add_concept(paths: tuple[Path, ...], name: str, about: str | None, display_name: str | None,
                no_train: bool, as_json: bool, quiet: bool) -> None:
    """Add a concept from photos (files or folders); 3-5 different photos work best.

    Unusable files are skipped with the reason; the rest go on. Re-running the
    command for a concept that was never trained continues it.
    """
    with Library.open() as lib:
        _add(lib, paths, name, about, display_name, no_train, as_json, quiet)


def _add(lib: Library, paths: tuple[Path, ...], name: str, about: str | None, display_name: str | None,
         no_train: bool, as_json: bool, quiet: bool) -> None:
    try:
        with progress("Checking photos", len(paths), quiet=quiet or as_json) as update:
            report = add_concept_from_paths(lib, list(paths), name, about=about, display_name=display_name,
                                            on_progress=update)
    except NoUsablePhotosError as err:
        print_report(err.report, quiet=quiet)
        raise
    print_report(report, quiet=quiet or as_json)
    concept = report.concept
    if not as_json:
        click.echo(f"Added {concept.name!r}: {concept.photos} photo{'s' if concept.photos != 1 else ''} "
                   f"({len(report.accepted)} new).")
    trained = None if no_train else _train(lib, concept.name, quiet=quiet or as_json)
    concept = lib.require_concept(concept.name)
    if as_json:
        print_json({"concept": concept.to_json(), "report": report.to_json(), "trained": trained})
        return
    click.echo(f"Status of {concept.name!r}: {concept.status}.")
    if concept.status != "ready":
        info(f"Train it with: yoc train {concept.name}", quiet=quiet)


def _train(lib: Library, name: str, *, quiet: bool) -> bool:
    """Train with the personalize part when it is installed; False when it is not available."""
    if importlib.util.find_spec(TRAIN_MODULE) is None:
        info("Training is not available in this version yet; the concept stays 'new'.", quiet=quiet)
        return False
    module = importlib.import_module(TRAIN_MODULE)
    train_from_cli = getattr(module, "train_from_cli", None)
    if train_from_cli is None:
        info("Training is not available in this version yet; the concept stays 'new'.", quiet=quiet)
        return False
    accepted = inspect.signature(train_from_cli).parameters
    kwargs = {"quiet": quiet} if "quiet" in accepted else {}
    train_from_cli(lib, name, **kwargs)
    return True
