"""What the commands share: the `--precision` option, loading the backbone through the
application layer (its notes as warnings, a spinner on a terminal only), opening the
library."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from yoc_assistant.app.backbones import NOISE_WARNING, PRECISION_CHOICES, Purpose, plan_backbone
from yoc_assistant.cli.output import stderr_is_tty, warn

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

__all__ = ["NOISE_WARNING", "open_backbone", "open_library", "precision_option", "status"]

PRECISION_HELP = ("Backbone weights: auto = fp32 on a CPU; on a GPU bf16 when it fits "
                  "(with room to train, for training), else int8. int8wo = int8 weights with fast "
                  "decoding (torchao); int8/nf4 = bitsandbytes (memory for training).")


def precision_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
        help=PRECISION_HELP)(fn)


def open_backbone(purpose: Purpose, precision: str = "auto", *, quiet: bool = False,
                  source: str | None = None, device: str | None = None,
                  threads: int | None = None) -> Backbone:
    """The application layer's backbone for `purpose`; warns if it is noise."""
    plan = plan_backbone(purpose, source=source, precision=precision, device=device, threads=threads)
    for note in plan.notes:
        warn(note)
    with status(f"Loading backbone {plan.source} ({plan.precision})…", quiet=quiet):
        return plan.load()


@contextlib.contextmanager
def status(message: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner on a terminal; nothing when piped or quiet."""
    if quiet or not stderr_is_tty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def open_library() -> Any:
    from yoc_assistant.library.core import Library

    return Library.open()
