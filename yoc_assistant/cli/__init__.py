"""The `yoc` command line. Commands live in their own modules and are imported
only when run, so `yoc --help` and library commands never import torch.

Each command module exposes one click command (or group); add it to COMMANDS.
Commands stay thin: they parse options, call the parts, print.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

import click

from yoc_assistant.errors import YocError, short
from yoc_assistant.library.db import damaged, is_damage
from yoc_assistant.safetext import printable

MESSAGE_MAX = 2000  # an error quoting a file never floods the terminal

# name -> "module:attribute" (module relative to yoc_assistant.cli)
COMMANDS: dict[str, str] = {
    "add-concept": "add_concept:add_concept",
    "concepts": "concepts:concepts",
    "pool": "pool:pool",
    "train": "train:train",
    "eval": "evaluate:eval_cmd",
    "ask": "chat:ask",
    "draw": "chat:draw",
    "plugins": "system:plugins",
    "doctor": "system:doctor",
    "pull": "system:pull",
    "bench": "bench:bench",
    "demo": "demo:demo",
    "logs": "logs:logs",
    "path": "system:path",
}


class LazyGroup(click.Group):
    """Built-in commands imported when run; plugins' commands (`yoc_commands`) found only
    when a name is not built in (or for the command list), so built-ins load no plugin."""

    _plugin_commands: dict[str, click.Command] | None = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS) + sorted(self.plugin_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return self.plugin_commands().get(cmd_name)
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"yoc_assistant.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"yoc_assistant.cli.{module_name}":
                return None  # command not built yet
            raise
        return getattr(module, attr)

    def plugin_commands(self) -> dict[str, click.Command]:
        """Name -> command from the plugins' `yoc_commands()`; clashes and non-commands skipped."""
        if self._plugin_commands is None:
            from yoc_assistant.app.plugins import load_plugins

            found: dict[str, click.Command] = {}
            for plugin, command in load_plugins().commands():
                name = getattr(command, "name", None)
                if not isinstance(command, click.Command) or not name:
                    click.secho(f"Warning: plugin {printable(plugin)}: {printable(repr(command))} is not a click command; skipped",
                                fg="yellow", err=True)
                elif name in COMMANDS or name in found:
                    click.secho(f"Warning: plugin {printable(plugin)}: the command name {printable(repr(name))} is taken; skipped",
                                fg="yellow", err=True)
                else:
                    found[name] = command
            self._plugin_commands = found
        return self._plugin_commands


@click.group(cls=LazyGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="yoc-assistant", prog_name="yoc")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """yoc: teach a local assistant about your things, then ask about them and draw them.

    With no command, opens the chat app.

    \b
    Examples:
      yoc demo                                  # the walkthrough, offline, ~1 minute
      yoc add-concept ~/photos/bo --name bo     # 3-5 photos of your thing
      yoc ask "is <bo> in this photo?" --image park.jpg
      yoc draw "a photo of <bo>" --out ~/Desktop/
      yoc concepts                              # what yoc knows
      yoc logs -n 5                             # what was asked and answered

    \b
    Every command takes -h. Guide: docs/usage.md (exit codes, environment variables).
    """
    if ctx.invoked_subcommand is None:
        from yoc_assistant.tui import run_app

        run_app()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user-facing errors become one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="yoc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.message = printable(err.message)  # it may quote an argument (a file name)
        err.show()
        sys.exit(err.exit_code)
    except YocError as err:
        click.secho(f"Error: {printable(short(err, MESSAGE_MAX))}", fg="red", err=True)
        sys.exit(err.exit_code)
    except sqlite3.DatabaseError as err:  # a query outside a transaction on a damaged file
        if not is_damage(err):
            raise
        click.secho(f"Error: {damaged(err)}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
