"""`yoc pool add|list|info`: the pool of generic photos that training ranks by similarity.

Training draws a concept's hard negatives and soft positives from this pool; the
more varied it is (hundreds to thousands of everyday photos), the better.
"""

from __future__ import annotations

from pathlib import Path

import click

from yoc_assistant.cli.output import (
    json_option,
    print_json,
    print_report,
    progress,
    quiet_option,
    table,
)
from yoc_assistant.library import Library


@click.group("pool")
def pool() -> None:
    """The pool of generic photos used to find similar and dissimilar examples."""


@pool.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@quiet_option
def add_cmd(paths: tuple[Path, ...], as_json: bool, quiet: bool) -> None:
    """Add photos (files or folders, searched recursively) to the pool."""
    with Library.open() as lib, progress("Adding photos", quiet=quiet or as_json) as update:
        report = lib.add_pool_images(list(paths), on_progress=update)
        size = lib.pool_count()
    print_report(report, quiet=quiet or as_json)
    if as_json:
        print_json({**report.to_json(), "pool_size": size})
        return
    click.echo(f"Added {len(report.accepted)} photo{'s' if len(report.accepted) != 1 else ''} to the pool "
               f"({size} in all; {len(report.rejected)} skipped, {len(report.duplicates)} duplicates).")


@pool.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every photo in the pool."""
    with Library.open() as lib:
        images = lib.pool_images()
    if as_json:
        print_json([i.to_json() for i in images])
        return
    table([(i.sha256[:12], f"{i.width}x{i.height}", i.original_name or "", i.path) for i in images],
          ["ID", "SIZE", "ORIGINAL NAME", "PATH"])


@pool.command("info")
@json_option
def info_cmd(as_json: bool) -> None:
    """How many photos the pool holds and how much space they take."""
    with Library.open() as lib:
        images = lib.pool_images()
    size = sum(i.path.stat().st_size for i in images if i.path.is_file())
    data = {"photos": len(images), "bytes": size}
    if as_json:
        print_json(data)
        return
    click.echo(f"{len(images)} photo{'s' if len(images) != 1 else ''} in the pool, {size / 2**20:.1f} MiB.")
