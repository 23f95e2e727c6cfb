"""Output helpers shared by the commands: JSON, tables, progress bars, warnings, confirmations.

Data goes to stdout (plain, or JSON with --json); progress, notes and warnings go
to stderr, so `yoc concepts list --json | jq` always gets clean JSON. Progress
bars appear only on a terminal and never with --quiet.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from yoc_assistant.errors import UserInputError
from yoc_assistant.safetext import json_safe, printable

# Seeds torch can take (a Generator seeds from 64 bits; picture i of a drawing uses seed + i).
SEED_MAX = 2**63 - 1
SEED = click.IntRange(0, SEED_MAX)


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses inf and nan (which compare as in range or not at all)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)


def quiet_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")(fn)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(data: Any) -> None:
    """Data as indented JSON on stdout (Paths and objects with to_json() allowed)."""
    click.echo(json_safe(json.dumps(data, indent=2, ensure_ascii=False, default=_default)))


def warn(message: str) -> None:
    click.secho(f"Warning: {terminal_text(message)}", fg="yellow", err=True)


def info(message: str, *, quiet: bool = False) -> None:
    """A note for the person at the terminal (stderr), hidden by --quiet."""
    if not quiet:
        click.echo(printable(message, newlines=True), err=True)


def terminal_text(text: object) -> str:
    """`text` safe for a terminal: control characters (escape sequences, carriage
    returns) shown as \\x.. escapes, so a string from a file cannot drive the terminal."""
    return printable(text)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table on stdout (no colour: safe to pipe; cells escaped)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else terminal_text(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


ProgressUpdate = Callable[..., None]


@contextlib.contextmanager
def progress(description: str, total: int | None = None, *, quiet: bool = False) -> Iterator[ProgressUpdate]:
    """Yield update(done, total=None, label=None); draws a rich bar on a terminal only.

    The callback fits the library's on_progress(done, total, path) as well.
    """
    if quiet or not stderr_is_tty():
        yield lambda *args, **kwargs: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total_: int | None = None, label: Any = None) -> None:
            fields: dict[str, Any] = {"completed": done}
            if total_ is not None:
                fields["total"] = total_
            if label is not None:
                fields["description"] = f"{description} {Path(str(label)).name}"
            bar.update(task, **fields)

        yield update


def confirm(question: str, *, yes: bool, what: str = "this") -> None:
    """Ask on a terminal; refuse without --yes when nobody can answer (piped, scripts)."""
    if yes:
        return
    if not stdin_is_tty():
        raise UserInputError(f"not removing {what} without confirmation: pass --yes")
    click.confirm(question, abort=True, err=True)


def print_report(report: Any, *, quiet: bool = False) -> None:
    """An ingest report for people: rejections and duplicates always, notes unless quiet."""
    for path, reason in report.rejected:
        click.secho(terminal_text(f"Skipped {path}: {reason}"), fg="yellow", err=True)
    for path, reason in report.duplicates:
        click.echo(terminal_text(f"Duplicate {path}: {reason}"), err=True)
    already = getattr(report, "already", [])
    if already and report.concept is not None:
        n = len(already)
        click.echo(f"{n} photo{'s' if n != 1 else ''} already belonged to {report.concept.name!r}.", err=True)
    if not quiet:
        for path, note in report.notes:
            click.echo(terminal_text(f"Note {path}: {note}"), err=True)
    for message in getattr(report, "warnings", []):
        warn(message)
