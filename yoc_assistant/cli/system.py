"""`yoc plugins`, `yoc doctor`, `yoc pull`: what is installed, what works, getting models.

`yoc pull` is the only command in yoc that uses the network.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

from yoc_assistant.errors import YocError
from yoc_assistant.safetext import printable

# Files yoc never reads (pickles, other frameworks); skipped when pulling.
PULL_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.ot"]


# -- plugins ---------------------------------------------------------------------------
def plugins_report() -> dict[str, Any]:
    from yoc_assistant import settings
    from yoc_assistant.assistant import PluginManager

    pm = PluginManager()
    return {
        "selection": settings.plugin_selection_text(),
        "plugins": [{
            "name": info.name, "distribution": info.distribution, "version": info.version,
            "modalities": [{"name": m.name, "group": m.group, "group_size": m.group_size,
                            "description": m.description} for m in info.modalities],
        } for info in pm.plugins()],
        "failures": [{"name": f.name, "reason": f.reason} for f in pm.failures],
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins(as_json: bool) -> None:
    """List plugins, their modalities and token groups, and plugins that failed to load."""
    report = plugins_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if report["selection"] is not None:
        click.echo(f"YOC_LOAD_PLUGINS={report['selection']!r}")
    if not report["plugins"]:
        click.echo("No plugins loaded.")
    for info in report["plugins"]:
        version = f" {info['version']}" if info["version"] else ""
        click.echo(printable(f"{info['name']} ({info['distribution'] or 'not from a package'}{version})"))
        for m in info["modalities"]:
            desc = f" — {m['description']}" if m["description"] else ""
            click.echo(printable(f"  modality {m['name']}: token group {m['group']} "
                                 f"({m['group_size']} tokens){desc}"))
        if not info["modalities"]:
            click.echo("  (no modalities)")
    for failure in report["failures"]:
        click.secho(printable(f"failed: {failure['name']}: {failure['reason']}"), fg="yellow")


# -- doctor ----------------------------------------------------------------------------
def _torch_facts() -> dict[str, Any]:
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - a broken install is what doctor reports
        return {"torch": None, "error": str(err), "cuda": False, "gpus": []}
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": torch.cuda.get_device_name(i),
                         "free_gib": round(free / 2**30, 2), "total_gib": round(total / 2**30, 2)})
    return {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "cuda_version": torch.version.cuda, "gpus": gpus}


def _bitsandbytes_facts() -> dict[str, Any]:
    # On the CPU bitsandbytes logs a failed optional `kernels` import; it works without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.CRITICAL)
    try:
        import bitsandbytes as bnb
        import torch

        # A real 4-bit round trip: importing can succeed while the native library is broken.
        weight = torch.randn(64, 64)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
        restored = bnb.functional.dequantize_4bit(packed, state)
        ok = bool(torch.isfinite(restored).all())
        return {"usable": ok, "version": bnb.__version__}
    except Exception as err:  # noqa: BLE001
        return {"usable": False, "error": f"{type(err).__name__}: {err}"}


def _backbone_facts() -> dict[str, Any]:
    from yoc_assistant import settings
    from yoc_assistant.app.backbones import default_backbone
    from yoc_assistant.backbone.loading import resolve_source, validate_checkpoint

    facts: dict[str, Any] = {"device": settings.device()}
    try:
        source, is_noise = default_backbone()
        facts.update(source=source, noise=is_noise)
        folder, name = resolve_source(source)
        validate_checkpoint(folder)
        facts.update(found=True, name=name, path=str(folder))
    except Exception as err:  # noqa: BLE001 - doctor reports, never crashes
        facts.update(found=False, error=str(err) if isinstance(err, YocError)
                     else f"{type(err).__name__}: {err}")
    return facts


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


def _library_facts() -> dict[str, Any]:
    from yoc_assistant.library import paths

    home = paths.home()
    facts: dict[str, Any] = {"path": str(home), "size_mib": round(_folder_size(home) / 2**20, 2)}
    try:
        from yoc_assistant.library.core import Library

        with Library.open(home) as lib:
            concepts = lib.list_concepts()
            # Leftovers of killed processes: old temp files, folders of removed concepts.
            facts["collected"] = lib.collect_garbage(leftovers=True)
        facts["concepts"] = len(concepts)
        facts["ready"] = sum(1 for c in concepts if c.status == "ready")
    except Exception as err:  # noqa: BLE001 - doctor reports, never crashes
        facts["error"] = str(err) if isinstance(err, YocError) else f"{type(err).__name__}: {err}"
    return facts


def doctor_report() -> dict[str, Any]:
    report = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "torch": _torch_facts(),
        "bitsandbytes": _bitsandbytes_facts(),
        "backbone": _backbone_facts(),
        "library": _library_facts(),
        "plugins": plugins_report(),
    }
    report["problems"] = _problems(report)
    report["notes"] = []
    if report["backbone"].get("noise"):
        report["notes"].append("the backbone is a tiny random one: answers and pictures are "
                               "noise (set YOC_BACKBONE; `yoc pull` downloads the real model)")
    return report


def _problems(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["torch"].get("torch") is None:
        problems.append(f"torch cannot be imported: {report['torch'].get('error')}")
    bb = report["backbone"]
    if not bb.get("found"):
        problems.append(f"backbone: {bb.get('error')}")
    if "error" in report["library"]:
        problems.append(f"library: {report['library']['error']}")
    modalities = [m for p in report["plugins"]["plugins"] for m in p["modalities"]]
    if not modalities:
        problems.append("no modality plugins are loaded (install plugins/yoc-text and "
                        "plugins/yoc-image, or check YOC_LOAD_PLUGINS)")
    problems += [f"plugin {f['name']}: {f['reason']}" for f in report["plugins"]["failures"]]
    return problems


def _print_doctor(report: dict[str, Any]) -> None:
    t, bnb, bb, lib = report["torch"], report["bitsandbytes"], report["backbone"], report["library"]
    click.echo(f"Python        {report['python']['version']} ({report['python']['executable']})")
    click.echo(f"torch         {t.get('torch') or 'NOT IMPORTABLE'}")
    click.echo(f"CUDA          {'yes ' + str(t.get('cuda_version')) if t.get('cuda') else 'no'}")
    for gpu in t.get("gpus", []):
        click.echo(f"  GPU {gpu['index']}       {gpu['name']}: {gpu['free_gib']} GiB free "
                   f"of {gpu['total_gib']} GiB")
    click.echo(f"bitsandbytes  {'usable ' + bnb['version'] if bnb['usable'] else 'not usable: ' + bnb.get('error', '')}")
    if bb.get("found"):
        noise = " (tiny random: noise)" if bb.get("noise") else ""
        click.echo(f"backbone      {bb['name']}{noise} at {bb['path']}; device {bb['device']}")
    else:
        click.echo(f"backbone      NOT FOUND: {bb.get('error')}")
    click.echo(f"library       {lib['path']} ({lib['size_mib']} MiB, "
               f"{lib.get('concepts', '?')} concepts, {lib.get('ready', '?')} ready)")
    if lib.get("collected"):
        click.echo(f"              removed {lib['collected']} leftover files of interrupted work")
    for info in report["plugins"]["plugins"]:
        mods = ", ".join(f"{m['name']} ({m['group']}, {m['group_size']})" for m in info["modalities"])
        click.echo(f"plugin        {info['name']}: {mods or 'no modalities'}")
    for note in report["notes"]:
        click.echo(printable(f"note: {note}"))
    for problem in report["problems"]:
        click.secho(printable(f"problem: {problem}"), fg="yellow")
    if not report["problems"]:
        click.echo("All good.")


def rebuild_library() -> dict[str, Any]:
    """Rebuild library.db from the files when it is lost or damaged; refuses a healthy one."""
    from yoc_assistant.library import paths
    from yoc_assistant.library.core import Library
    from yoc_assistant.library.upkeep import rebuild

    home = paths.home()
    try:
        with Library.open(home):
            pass
    except YocError:
        return rebuild(home).to_json()
    raise YocError(f"the library database {paths.db_path(home)} is fine: nothing to rebuild")


def _print_rebuilt(rebuilt: dict[str, Any]) -> None:
    names = ", ".join(rebuilt["concepts"]) or "none"
    n = len(rebuilt["concepts"])
    click.echo(f"Rebuilt the library from its files: {n} concept{'s' if n != 1 else ''} ({names}), "
               f"{rebuilt['photos']} photo links, {rebuilt['pool']} pool photos.")
    if rebuilt["kept_database"]:
        click.echo(f"The old database is kept as {rebuilt['kept_database']}.")
    for note in rebuilt["notes"]:
        click.echo(f"note: {note}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--rebuild", is_flag=True,
              help="Rebuild a lost or damaged library.db from the concept folders and photos on disk.")
def doctor(as_json: bool, rebuild: bool) -> None:
    """Check the installation: Python, torch, CUDA and VRAM, bitsandbytes, backbone, library, plugins.

    Also removes what killed processes left behind (old temp files, folders of removed
    concepts). Exits with status 1 when it finds a problem."""
    rebuilt = rebuild_library() if rebuild else None
    if rebuilt is not None and not as_json:
        _print_rebuilt(rebuilt)
    report = doctor_report()
    if rebuilt is not None:
        report["rebuilt"] = rebuilt
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_doctor(report)
    if report["problems"]:
        sys.exit(1)


# -- pull ------------------------------------------------------------------------------
def _clip_repo() -> str:
    import open_clip.pretrained as pretrained

    from yoc_assistant.personalize.retrieval import DEFAULT_MODEL, DEFAULT_TAG

    cfg = pretrained.get_pretrained_cfg(DEFAULT_MODEL, DEFAULT_TAG) or {}
    hub = str(cfg.get("hf_hub", "")).strip("/")
    if not hub:
        raise YocError(f"open_clip knows no Hugging Face repository for {DEFAULT_MODEL}/{DEFAULT_TAG}")
    return hub


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def download(repo_id: str, revision: str | None = None) -> Path:
    """snapshot_download into the HF cache (progress bars from huggingface_hub)."""
    if offline():
        raise YocError(f"cannot download {repo_id}: HF_HUB_OFFLINE is set, so the network is off; "
                       f"run `HF_HUB_OFFLINE=0 yoc pull {repo_id}` to allow the download")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    from yoc_assistant.backbone.loading import hf_cache_dir

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(hf_cache_dir()),
                                      ignore_patterns=PULL_IGNORE))
    except RepositoryNotFoundError as err:
        raise YocError(f"no model {repo_id} on the Hugging Face hub (or it needs a login: "
                       f"`hf auth login`): {err}") from err
    except Exception as err:  # HTTP, connection (httpx), disk: all end the same way for the user
        raise YocError(f"downloading {repo_id} failed: {type(err).__name__}: {err}") from err


@click.command()
@click.argument("model", required=False)
@click.option("--clip", is_flag=True, help="Also download the default CLIP weights (used for retrieval).")
@click.option("--revision", help="A branch, tag or commit of MODEL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
def pull(model: str | None, clip: bool, revision: str | None, quiet: bool) -> None:
    """Download MODEL (default: the Anole backbone) into the Hugging Face cache.

    The only yoc command that uses the network. Respects HF_HOME and HF_HUB_OFFLINE."""
    from yoc_assistant.settings import ANOLE_ID

    targets = [(model or ANOLE_ID, revision)]
    if clip:
        targets.append((_clip_repo(), None))
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    for repo_id, rev in targets:
        if not quiet:
            click.echo(f"Downloading {repo_id} into the Hugging Face cache…", err=True)
        path = download(repo_id, rev)
        click.echo(str(path))
    if (model is None or model == ANOLE_ID) and not quiet:
        click.echo(f"Use it with: YOC_BACKBONE={ANOLE_ID} yoc doctor", err=True)


# -- path ------------------------------------------------------------------------------
PATH_KINDS = ("library", "database", "pictures", "logs")


def yoc_paths() -> dict[str, str]:
    from yoc_assistant.library import paths

    home = paths.home()
    return {"library": str(home), "database": str(paths.db_path(home)),
            "pictures": str(paths.pictures_dir()), "logs": str(paths.logs_dir(home))}


@click.command("path")
@click.argument("kind", required=False, type=click.Choice(PATH_KINDS))
@click.option("--json", "as_json", is_flag=True, help="Print the folders as JSON.")
def path(kind: str | None, as_json: bool) -> None:
    """Where yoc keeps things: the library folder, its database (concepts and the
    conversation log, `yoc logs`), the pictures folder and the diagnostic logs folder.

    With KIND, only that path (for scripts: `cd "$(yoc path pictures)"`)."""
    found = yoc_paths()
    if kind is not None:
        click.echo(found[kind])
    elif as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        width = max(map(len, found))
        for name, where in found.items():
            click.echo(f"{name.ljust(width)}  {printable(where)}")
