"""`yoc logs`: what was asked and answered (the conversation log), and `yoc logs
off|on|status`."""

from __future__ import annotations

import click

from yoc_assistant.cli.output import info, json_option, print_json
from yoc_assistant.safetext import printable


def _open() -> tuple[object, object]:
    from yoc_assistant.app.conversation_log import ConversationLog
    from yoc_assistant.library import Library

    library = Library.open()
    return library, ConversationLog(library)


def _lines(text: str) -> list[str]:
    return [printable(line) for line in (text or "").splitlines()] or [""]


def _print_entry(entry: object) -> None:
    e = entry  # LogEntry
    route = f" {e.route[e.modality]:.2f}" if e.modality in e.route else ""
    head = [f"#{e.id}", e.time[:19].replace("T", " "), e.source, printable(e.backbone or "-"),
            f"{e.modality or 'failed'}{route}" + (" (forced)" if e.forced else "")]
    if e.seed is not None:
        head.append(f"seed {e.seed}")
    if e.seconds is not None:
        head.append(f"{e.seconds:.2f} s")
    click.secho("  ".join(head), bold=True)
    asked = _lines(e.request)
    photos = f"  [{len(e.attached)} photo{'s' if len(e.attached) != 1 else ''}]" if e.attached else ""
    click.echo(f"  you: {asked[0]}{photos}")
    for line in asked[1:]:
        click.echo(f"       {line}")
    if e.error:
        click.secho(f"  error: {printable(e.error)}", fg="yellow")
    elif e.answer:
        said = _lines(e.answer.strip())
        click.echo(f"  yoc: {said[0]}")
        for line in said[1:]:
            click.echo(f"       {line}")
    for picture in e.pictures:
        click.echo(f"  {printable(picture)}")
    click.echo()


@click.group("logs", invoke_without_command=True)
@click.option("-n", "--count", "count", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many of the newest entries (0: all).")
@click.option("-q", "--query", help="Only entries whose request or answer holds this text.")
@click.option("-c", "--concept", help="Only requests that mention this concept (<name> or name).")
@json_option
@click.pass_context
def logs(ctx: click.Context, count: int, query: str | None, concept: str | None,
         as_json: bool) -> None:
    """Show what was asked and answered: every request from `yoc ask`, `yoc draw`, the
    chat app and the demo, with its answer, pictures, route, seed, backbone and time.

    \b
    Examples:
      yoc logs                    # the last 3
      yoc logs -n 20 -q collar    # the last 20 that mention "collar"
      yoc logs --concept bo --json
      yoc logs off                # stop logging (on, status)
    """
    if ctx.invoked_subcommand is not None:
        return
    library, log = _open()
    try:
        entries = log.entries(limit=count or None, query=query, concept=concept)
        enabled = log.enabled()
    finally:
        library.close()
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    if not entries:
        info("Nothing logged yet." if not (query or concept) else "No entry matches.")
    for entry in entries:
        _print_entry(entry)
    if not enabled:
        info("Note: the conversation log is off (`yoc logs on` turns it on).")


@logs.command("off")
def off_cmd() -> None:
    """Stop logging requests and answers (what is logged stays)."""
    library, log = _open()
    with library:
        log.set_enabled(False)
    click.echo("The conversation log is off.")


@logs.command("on")
def on_cmd() -> None:
    """Log requests and answers again (the default)."""
    library, log = _open()
    with library:
        log.set_enabled(True)
    click.echo("The conversation log is on.")


@logs.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Whether requests are logged, how many entries there are, and where."""
    from yoc_assistant.library import paths

    library, log = _open()
    with library:
        data = {"enabled": log.enabled(), "entries": log.count(),
                "database": str(paths.db_path(library.home))}
    if as_json:
        print_json(data)
        return
    state = "on" if data["enabled"] else "off"
    click.echo(f"The conversation log is {state}: {data['entries']} entries in {data['database']}.")
    click.echo(f"Turn it {'off' if data['enabled'] else 'on'} with: yoc logs "
               f"{'off' if data['enabled'] else 'on'}")
