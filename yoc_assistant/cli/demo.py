"""`yoc demo`: the walkthrough a new user sees, on the embedded backbone.

Adds the example concept from `concepts/`, trains it, asks a recognition question
and a question about it, and draws it to a PNG. Each step calls the same parts
the other commands call; nothing here is demo-only logic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from yoc_assistant.cli.output import SEED, info, print_json, progress, quiet_option, warn
from yoc_assistant.errors import NotFoundError
from yoc_assistant.safetext import printable

PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


# A drawing asked for in words: the router, not a --mode, must send it to the image modality.
DRAW_REQUEST = "Draw <{name}> on the beach."


@dataclass
class ExampleConcept:
    name: str
    photos: list[Path]
    about: str | None
    held_out: list[Path]  # photos of the concept not used for training
    others: list[Path]  # photos of something else
    question: str
    pool: list[Path]  # generic photos for retrieval (soft positives, negatives)


def examples_root() -> Path:
    """`concepts/` of a source checkout, or the copy packaged with yoc."""
    for root in (Path(__file__).resolve().parents[2] / "concepts",
                 Path(__file__).resolve().parents[1] / "toyworld" / "concepts"):
        if root.is_dir():
            return root
    raise NotFoundError("no example concept found: expected a `concepts/` folder next to yoc")


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def load_example(root: Path | None = None) -> ExampleConcept:
    """The first concept folder: photos at its top, `held-out/`, `others/` and `pool/`
    beside them, `about.txt` and `question.txt`. (The demo trains with the backbone's
    recipe, as `yoc train` and `yoc add-concept` do: there is no recipe of its own.)"""
    root = root or examples_root()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _images(p))
    if not folders:
        raise NotFoundError(f"no example concept in {root}")
    folder = folders[0]
    about_file = folder / "about.txt"
    question_file = folder / "question.txt"
    about = about_file.read_text().strip() if about_file.is_file() else None
    question = (question_file.read_text().strip() if question_file.is_file()
                else f"What does <{folder.name}> look like?")
    return ExampleConcept(name=folder.name, photos=_images(folder), about=about,
                          held_out=_images(folder / "held-out"), others=_images(folder / "others"),
                          question=question, pool=_images(folder / "pool"))


def show_picture(path: Path, width: int = 24) -> bool:
    """Draw the picture in the terminal (Kitty / Sixel graphics where the terminal has them,
    else coloured half blocks); only on a terminal. Returns whether it was drawn."""
    import sys

    from yoc_assistant.tui import quiet_image_log

    if not sys.stdout.isatty():
        return False
    quiet_image_log()
    try:
        from rich.console import Console
        from textual_image.renderable import Image as TerminalImage

        # Height from the width and the picture's shape: left to itself textual-image takes
        # the picture's pixel height over the cell height, a one-row strip for a 64-pixel
        # picture where the terminal reports its cell size (tmux).
        Console().print(TerminalImage(str(path), width=width, height="auto"))
    except Exception:  # a picture the terminal cannot show is not a failed demo: the path is printed
        return False
    return True


def _step(title: str, quiet: bool) -> None:
    """A numbered heading: bold on a terminal (the style is ours; the title, which may
    quote the example's files, is escaped)."""
    if not quiet:
        click.secho(f"\n== {printable(title)}", bold=True, err=True)


@click.command()
@click.option("--steps", type=click.IntRange(1, 100000), default=None,
              help="Training steps (default: the demo's budget for this backbone).")
@click.option("--retrain", is_flag=True, help="Train again even if the concept is ready.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the drawn picture.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON at the end.")
def demo(steps: int | None, retrain: bool, out: Path | None, seed: int, quiet: bool,
         as_json: bool) -> None:
    """Walk through yoc on the embedded backbone: add, train, ask, draw."""
    from yoc_assistant.app.backbones import default_backbone
    from yoc_assistant.app.conversation_log import log_request
    from yoc_assistant.app.plugins import load_plugins
    from yoc_assistant.assistant import Assistant, Request
    from yoc_assistant.cli.runtime import open_backbone, open_library
    from yoc_assistant.cli.train import report_quality, train_with_progress
    from yoc_assistant.library.concepts import add_concept_from_paths
    from yoc_assistant.library.ingest import normalize_file

    quiet = quiet or as_json
    started = time.monotonic()
    example = load_example()
    _, is_noise = default_backbone()
    summary: dict[str, Any] = {"concept": example.name, "noise_backbone": is_noise}

    _step("1. Loading the backbone", quiet)
    bb = open_backbone("training", quiet=quiet)
    info(f"backbone: {bb.name} ({bb.precision} on {bb.device})", quiet=quiet)
    if is_noise:
        warn("this backbone is random: the answers and pictures below are noise. They show "
             "that every step runs, not what yoc can do.")

    plugins = load_plugins()
    for failure in plugins.failures:
        warn(f"plugin {failure.name} skipped: {failure.reason}")

    _step(f"2. Adding <{example.name}> from {len(example.photos)} photos", quiet)
    library = open_library()
    concept = library.get_concept(example.name)
    if concept is not None and concept.status == "ready" and not retrain:
        info(f"<{example.name}> is already in your library and trained; "
             "use --retrain to train it again", quiet=quiet)
    else:
        if concept is None or not getattr(concept, "vectors_path", None):
            add_concept_from_paths(library, example.photos, example.name, about=example.about,
                                   backbone=bb.name)
        if example.pool:
            report = library.add_pool_images(example.pool)
            info(f"pool: {len(report.accepted)} generic photos added for retrieval "
                 f"({len(library.pool_images())} in all)", quiet=quiet)
        _step(f"3. Training <{example.name}>'s tokens (the backbone stays frozen)", quiet)
        options: dict[str, Any] = {"seed": seed}  # the backbone's recipe, as `yoc train` uses
        if steps is not None:
            options["steps"] = steps
        elif is_noise:
            options["steps"] = 20  # noise learns nothing; show the loop, quickly
        outcome = train_with_progress(library, example.name, quiet=quiet, backbone=bb,
                                      plugins=plugins, **options)
        summary["training"] = outcome.to_json()
        if not quiet:
            report_quality(example.name, outcome.quality)

    assistant = Assistant(bb, library, plugins)

    answers: list[dict[str, Any]] = []
    asks = [(f"Is <{example.name}> in this photo?", path) for path in
            [*example.held_out[:1], *example.others[:1]]]
    asks.append((example.question, None))
    for i, (question, photo) in enumerate(asks):
        _step(f"{4 + i}. Asking: {question}" + (f" [{photo.name}]" if photo else ""), quiet)
        images = [normalize_file(photo).image] if photo else []
        # No --mode: the concept's own first token picks the answer's modality (self-prompting).
        request = Request(text=question, images=images, seed=seed, max_tokens=32, temperature=0.0)
        with log_request(library, request, source="demo", backbone=bb) as entry:
            response = entry.response = assistant.respond(
                request, on_route=lambda d: info(d.explain(), quiet=quiet))
        if response.image_paths:
            info(f"yoc drew {len(response.image_paths)} picture(s): {response.image_paths[0]}", quiet=quiet)
        else:
            info(f"yoc: {response.text.strip()}", quiet=quiet)
        answers.append({"question": question, "photo": str(photo) if photo else None,
                        "answer": response.text.strip()})
    summary["answers"] = answers

    text = DRAW_REQUEST.format(name=example.name)
    _step(f"{4 + len(asks)}. Asking: {text}  (a drawing asked for in words, no --mode)", quiet)
    request = Request(text=text, seed=seed, out=out)
    with progress("Drawing", quiet=quiet) as on_progress, \
            log_request(library, request, source="demo", backbone=bb) as entry:
        response = entry.response = assistant.respond(request, on_progress=on_progress,
                                                      on_route=lambda d: info(d.explain(), quiet=quiet))
    summary["draw_route"] = response.modality
    if not response.image_paths:
        info(f"yoc answered in words instead of drawing: {response.text.strip()}", quiet=quiet)
    for path in response.image_paths:
        info(f"picture: {path}", quiet=quiet)
        if not quiet:
            show_picture(path)
    summary["pictures"] = [str(p) for p in response.image_paths]
    summary["seconds"] = round(time.monotonic() - started, 1)
    info(f"\nDone in {summary['seconds']} s. Chat with <{example.name}>: run `yoc`.", quiet=quiet)
    if as_json:
        print_json(summary)
