"""`yoc ask` and `yoc draw`: one request to the assistant from the command line."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from yoc_assistant.cli.output import SEED, FiniteFloat, print_json, progress, quiet_option, warn
from yoc_assistant.cli.runtime import open_backbone, open_library, precision_option
from yoc_assistant.safetext import printable
from yoc_assistant.settings import IMAGE_DECODING, IMAGE_DECODINGS, MAX_DRAW_CANDIDATES

# `yoc draw` answers with the modality that declares this alias (the image plugin does).
DRAW = "draw"


class ModeOption(click.Option):
    """--mode: its help names the installed modalities (found only when help is shown)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from yoc_assistant.app.plugins import load_plugins

        names = [printable(m.name) for m in load_plugins().get_modalities()]
        self.help = ("Answer with this modality instead of letting the model choose "
                     f"(installed: {', '.join(names) or 'none'}; see `yoc plugins`).")
        return super().get_help_record(ctx)


def _load_images(paths: tuple[Path, ...]) -> list[Any]:
    from yoc_assistant.library.ingest import normalize_file

    return [normalize_file(Path(p)).image for p in paths]


def _assistant(precision: str, quiet: bool, request: Any, mode: str | None) -> Any:
    """The assistant for one request. The request's concepts and --mode are checked
    first: the library and the plugins know them, the backbone (and torch) is not needed."""
    from yoc_assistant.assistant import Assistant, PluginManager
    from yoc_assistant.assistant.assistant import check_mentions

    plugins = PluginManager()
    for failure in plugins.failures:
        warn(f"plugin {failure.name} skipped: {failure.reason}")
    if mode is not None:
        plugins.modality(mode)
    library = open_library()
    check_mentions(library, request)
    backbone = open_backbone("inference", precision, quiet=quiet)
    return Assistant(backbone, library, plugins)


def _response_json(response: Any) -> dict[str, Any]:
    return {
        "modality": response.modality,
        "text": response.text,
        "image_paths": [str(p) for p in response.image_paths],
        "files": [str(p) for p in response.files],
        "probabilities": response.probabilities,
        "forced": response.forced,
        "concept": response.concept,
    }


def _print_files(response: Any) -> None:
    for path in [*response.image_paths, *response.files]:
        click.echo(str(path))


@click.command()
@click.argument("text")
@click.option("--image", "images", multiple=True, type=click.Path(path_type=Path),
              help="Attach a photo (repeatable).")
@click.option("--mode", cls=ModeOption)
@click.option("--explain", is_flag=True, help="Show the router's choice and its probabilities.")
@click.option("--seed", type=SEED, help="Seed for sampling (repeatable answers).")
@click.option("--max-tokens", type=click.IntRange(1, 8192), default=256, show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="File or folder for pictures, if the answer is a picture.")
@quiet_option
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def ask(text: str, images: tuple[Path, ...], mode: str | None, explain: bool, seed: int | None,
        max_tokens: int, out: Path | None, quiet: bool, precision: str, as_json: bool) -> None:
    """Ask about TEXT (mention concepts as <name>); the answer is streamed."""
    from yoc_assistant.app.conversation_log import log_request, with_seed
    from yoc_assistant.assistant import Request

    request = with_seed(Request(text=text, images=_load_images(images), mode=mode, seed=seed,
                                max_tokens=max_tokens, out=out))
    assistant = _assistant(precision, quiet or as_json, request, mode)
    streamed: list[str] = []

    def on_route(decision: Any) -> None:
        if explain and not as_json:
            click.echo(decision.explain(), err=True)
        streams_text = assistant.plugins.modality(decision.modality).fallback
        if not streams_text and not (quiet or as_json):
            how = "as asked (--mode)" if decision.forced else "chosen by the model"
            click.echo(f"Answering with {decision.modality} ({how}); files written:", err=True)

    def on_text(piece: str) -> None:
        streamed.append(piece)
        if not as_json:
            click.echo(printable(piece, newlines=True), nl=False)

    # The bar opens only if a modality reports progress (pictures), not while text streams.
    with contextlib.ExitStack() as stack:
        bar: list[Any] = []

        def on_progress(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress("Drawing", quiet=quiet or as_json)))
            bar[0](done, total)

        with log_request(assistant.library, request, source="ask",
                         backbone=assistant.backbone) as entry:
            response = entry.response = assistant.respond(request, on_text=on_text,
                                                          on_progress=on_progress, on_route=on_route)
    if as_json:
        print_json({**_response_json(response), "seed": request.seed})
        return
    if streamed:
        click.echo()
    elif response.text:
        click.echo(printable(response.text, newlines=True))
    _print_files(response)


@click.command()
@click.argument("text")
@click.option("--out", type=click.Path(path_type=Path),
              help="PNG file or folder (default: the yoc folder in your pictures folder).")
@click.option("--seed", type=SEED,
              help="Seed of the first picture (picture i uses seed+i; with k candidates, its "
                   "candidates seed+i*k .. seed+i*k+k-1, and the kept one's seed is in its PNG).")
@click.option("--n", "n", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many pictures.")
@click.option("--candidates", type=click.IntRange(1, MAX_DRAW_CANDIDATES), default=None,
              help="Samples drawn per picture; the mentioned concepts keep the one they recognize "
                   "best (default: the backbone's, 1 for Anole; no concept: 1).")
@click.option("--cfg", "cfg", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Classifier-free guidance scale (1.0 = off; default: the backbone's, 3.0 for Anole).")
@click.option("--decoding", type=click.Choice(IMAGE_DECODINGS), default=IMAGE_DECODING, show_default=True,
              help="sjd: several image tokens per forward pass (speculative Jacobi decoding, the same "
                   "pictures' distribution); sequential: one pass per token.")
@click.option("--explain", is_flag=True,
              help="Also show what the router would have chosen, with probabilities.")
@quiet_option
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def draw(text: str, out: Path | None, seed: int | None, n: int, candidates: int | None, cfg: float | None,
         decoding: str, explain: bool, quiet: bool, precision: str, as_json: bool) -> None:
    """Draw TEXT (mention concepts as <name>) to PNG files and print their paths."""
    from yoc_assistant.app.conversation_log import log_request, with_seed
    from yoc_assistant.assistant import Request

    request = with_seed(Request(text=text, seed=seed, n=n, cfg_scale=cfg, out=out, decoding=decoding,
                                candidates=candidates))
    assistant = _assistant(precision, quiet or as_json, request, DRAW)
    request.mode = assistant.plugins.modality(DRAW).name  # the modality that draws
    routed: list[Any] = []

    def on_route(decision: Any) -> None:  # --explain: the routing pass ran; the drawing continues it
        routed.append(decision)
        if not as_json:
            click.echo(decision.explain(), err=True)

    with progress(f"Drawing {n} picture{'s' if n > 1 else ''}", quiet=quiet or as_json) as on_progress, \
            log_request(assistant.library, request, source="draw", backbone=assistant.backbone) as entry:
        response = entry.response = assistant.respond(request, on_progress=on_progress, score=explain,
                                                      on_route=on_route if explain else None)
    if as_json:
        data = {**_response_json(response), "seed": request.seed}
        if routed and routed[0].model_choice is not None:
            data["router"] = {**routed[0].to_json(), "modality": routed[0].model_choice, "forced": False}
        print_json(data)
        return
    _print_files(response)
