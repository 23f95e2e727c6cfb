"""`yoc concepts list|show|rm|rename|export|import`: manage the concept library."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from yoc_assistant.app.quality import advice, summary, verdict
from yoc_assistant.cli.output import (
    confirm,
    info,
    json_option,
    print_json,
    quiet_option,
    stdin_is_tty,
    table,
    terminal_text,
    warn,
)
from yoc_assistant.errors import UserInputError, YocError
from yoc_assistant.library import Library
from yoc_assistant.library.bundle import (
    bundle_target,
    export_bundle,
    import_bundle,
    safetensors_metadata,
)


@click.group("concepts", invoke_without_command=True)
@click.pass_context
def concepts(ctx: click.Context) -> None:
    """List, inspect, rename, remove, export and import concepts.

    `yoc concepts` alone lists them (as `yoc concepts list`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd, as_json=False)


# Shown first when present: the paper's selection metrics.
_PREFERRED = ("score", "best_score", "recognition", "recognition_accuracy", "clip_i", "final_loss")


def _metrics_text(metrics: dict[str, Any]) -> str:
    def numeric(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    keys = [k for k in _PREFERRED if numeric(metrics.get(k))]
    keys += sorted(k for k, v in metrics.items() if numeric(v) and k not in keys)
    return " ".join(f"{k}={metrics[k]:.3g}" for k in keys[:3])


@concepts.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """All concepts with their status and photo count."""
    with Library.open() as lib:
        items = lib.list_concepts(check_files=True)
    if as_json:
        print_json([c.to_json() for c in items])
        return
    if not items:
        info("No concepts yet. Add one with: yoc add-concept PHOTOS --name NAME")
        return
    table([(c.name, terminal_text(c.display_name or ""), c.status, c.photos,
            (c.last_trained or "")[:16].replace("T", " "), summary(c.quality) or _metrics_text(c.metrics))
           for c in items],
          ["NAME", "DISPLAY NAME", "STATUS", "PHOTOS", "TRAINED", "QUALITY"])
    for c in items:
        if verdict(c.quality) == "near chance" and c.status == "ready":
            warn(f"{c.name!r} answers little better than chance: {advice(c.name)}")


def _vectors_info(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    data: dict[str, Any] = {"path": str(path), "exists": path.is_file()}
    if path.is_file():
        data["size"] = path.stat().st_size
        with contextlib.suppress(YocError, OSError):
            data["metadata"] = safetensors_metadata(path)
    return data


@concepts.command("show")
@click.argument("name")
@json_option
def show_cmd(name: str, as_json: bool) -> None:
    """Everything about one concept: photos, status, runs, metrics, vector file."""
    with Library.open() as lib:
        concept = lib.checked(lib.require_concept(name))
        images = lib.concept_images(concept.name)
        runs = lib.runs(concept.name)
    vectors = _vectors_info(concept.vectors_path)
    if as_json:
        print_json({**concept.to_json(), "images": [i.to_json() for i in images],
                    "runs": [r.to_json() for r in runs], "vectors": vectors})
        return
    click.echo(f"{concept.name}" + (f" ({terminal_text(concept.display_name)})" if concept.display_name else ""))
    click.echo(f"  status:   {concept.status}")
    if concept.problem:
        click.echo(f"  problem:  {terminal_text(concept.problem)}; retrain it with `yoc train {concept.name}`")
    about = [terminal_text(line) for line in (concept.about or "-").splitlines()] or ["-"]
    click.echo(f"  about:    {about[0]}")
    for line in about[1:]:
        click.echo(f"            {line}")
    click.echo(f"  backbone: {terminal_text(concept.backbone or '-')}")
    click.echo(f"  created:  {concept.created}")
    click.echo(f"  trained:  {concept.last_trained or '-'}")
    if concept.quality:
        q = concept.quality
        click.echo(f"  quality:  {summary(q)}")
        if isinstance(q.get("recognition"), float):
            click.echo(f"            recognition on {q.get('positives_from', '?')} "
                       f"({q.get('positives', '?')}) and {q.get('negatives_from', '?')} "
                       f"({q.get('negatives', '?')})")
        if isinstance(q.get("routing"), float):
            click.echo(f"            routing right for {round(q['routing'] * q.get('routed', 0))} of "
                       f"{q.get('routed', '?')} requests (text for questions, image for drawings)")
        if verdict(q) == "near chance":
            click.echo(f"            near chance: {advice(concept.name)}")
    if concept.metrics:
        click.echo(f"  metrics:  {terminal_text(_metrics_text(concept.metrics) or concept.metrics)}")
    if vectors is not None:
        state = f"{vectors.get('size', 0)} bytes" if vectors["exists"] else "MISSING"
        click.echo(f"  vectors:  {terminal_text(vectors['path'])} ({state})")
    click.echo(f"  photos:   {len(images)}")
    for img in images:
        click.echo(f"    {img.role:8} {img.width}x{img.height}  {terminal_text(img.original_name or '')}  "
                   f"{terminal_text(img.path)}")
    if runs:
        click.echo(f"  runs:     {len(runs)}")
        for run in runs[-5:]:
            loss = f"{run.loss:.4g}" if run.loss is not None else "-"
            click.echo(f"    #{run.id} {run.status:11} step {run.step}/{run.total_steps or '?'} loss {loss} "
                       f"{run.started[:16].replace('T', ' ')}" + (f"  {terminal_text(run.error)}" if run.error else ""))


@concepts.command("rm")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_cmd(name: str, yes: bool) -> None:
    """Remove a concept, its vectors, its training runs, and photos nothing else uses."""
    with Library.open() as lib:
        concept = lib.require_concept(name)
        confirm(f"Remove {concept.name!r} ({concept.photos} photos, status {concept.status})?", yes=yes,
                what=repr(concept.name))
        lib.remove(concept.name)
    click.echo(f"Removed {concept.name!r}.")


@concepts.command("rename")
@click.argument("old")
@click.argument("new")
def rename_cmd(old: str, new: str) -> None:
    """Give a concept a new name (its vectors and photos stay)."""
    with Library.open() as lib:
        concept = lib.rename(old, new)
    click.echo(f"Renamed {old!r} to {concept.name!r}.")


@concepts.command("export")
@click.argument("name")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle file or folder (default: ./NAME.yoc.zip).")
@click.option("--force", "-f", is_flag=True, help="Overwrite the bundle file if it exists.")
@json_option
def export_cmd(name: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Write a concept (vectors, metadata, photos) to one bundle file.

    An existing file is overwritten only after a yes on a terminal, or with --force."""
    with Library.open() as lib:
        concept = lib.require_concept(name)
        target = bundle_target(concept.name, out)
        if target.exists() and not force:
            if not stdin_is_tty():
                raise UserInputError(f"{target} already exists; pass --force to overwrite it")
            click.confirm(f"{target} already exists. Overwrite it?", abort=True, err=True)
        path = export_bundle(lib, concept.name, target)
    if as_json:
        print_json({"name": name, "bundle": str(path), "size": path.stat().st_size})
    else:
        click.echo(str(path))


def configured_fingerprint() -> str | None:
    """The fingerprint of the configured backbone when it can be known without loading it."""
    try:
        from yoc_assistant.app.backbones import configured_fingerprint as probe
    except ImportError:
        return None
    try:
        return probe()
    except YocError:
        return None


@concepts.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", "new_name", help="Import under this name (e.g. when the name is taken).")
@click.option("--force", is_flag=True, help="Import even if it was made for another backbone.")
@json_option
@quiet_option
def import_cmd(file: Path, new_name: str | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Add a concept from a bundle file (checked fully before anything is written)."""
    with Library.open() as lib:
        concept = import_bundle(lib, file, name=new_name, force=force,
                                expected_fingerprint=configured_fingerprint)
    if as_json:
        print_json(concept.to_json())
        return
    click.echo(f"Imported {concept.name!r}: {concept.photos} photos, status {concept.status}.")
    if concept.status != "ready":
        info(f"Train it with: yoc train {concept.name}", quiet=quiet)
