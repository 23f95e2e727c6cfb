"""What `ask` and `draw` share: choosing and loading the backbone (with a spinner
on a terminal only), opening the library."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from yoc_assistant.cli.output import stderr_is_tty, warn

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

PRECISION_CHOICES = ("auto", "fp32", "bf16", "int8", "nf4")
NOISE_WARNING = ("no backbone is configured, so yoc uses a tiny random backbone: "
                 "its answers and pictures are noise. Set YOC_BACKBONE to a checkpoint "
                 "(`yoc pull` downloads the real one).")


def precision_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
        help="Backbone weights: auto = bf16 on a GPU, fp32 on the CPU.")(fn)


def resolve_precision(precision: str, device: str) -> str:
    from yoc_assistant.backbone.loading import auto_precision

    return auto_precision(precision, device)


def open_backbone(precision: str = "auto", *, quiet: bool = False) -> Backbone:
    """The backbone from YOC_BACKBONE / the default, on YOC_DEVICE; warns if it is noise."""
    from yoc_assistant import settings

    settings.backbone_source()  # a bad YOC_BACKBONE / YOC_DEVICE is said before torch loads
    settings.device()
    from yoc_assistant.backbone import Backbone
    from yoc_assistant.backbone.resolve import default_backbone

    source, is_noise = default_backbone()
    if is_noise:
        warn(NOISE_WARNING)
    device = settings.checked_device()
    chosen = resolve_precision(precision, device)
    with status(f"Loading backbone {source} ({chosen})…", quiet=quiet):
        bb = Backbone.load(source, precision=chosen, device=device)
    settings.tune_cpu_threads(bb)
    return bb


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
