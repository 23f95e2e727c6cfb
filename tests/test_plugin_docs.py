"""docs/plugins.md's example plugin, taken verbatim from the page, works end to end on a
fresh library: `yoc plugins` lists it, its `yoc_commands` command runs, a forced answer
writes into a folder that does not exist yet, and after training a concept with the
plugin installed the router picks it for one of its example requests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import small_random_backbone
from library_images import photos

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.S)


def install_documented_plugin(site: Path) -> str:
    """The page's module and pyproject, installed the way pip would (module + dist-info)."""
    (module_source,) = [b for b in _blocks("python") if b.startswith("# yoc_audio.py")]
    (toml_source,) = [b for b in _blocks("toml") if b.startswith("# pyproject.toml")]
    project = tomllib.loads(toml_source)["project"]
    site.mkdir(parents=True, exist_ok=True)
    (site / "yoc_audio.py").write_text(module_source)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["yoc"].items())
    (info / "entry_points.txt").write_text(f"[yoc]\n{points}")
    return module_source


def yoc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "yoc_assistant", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_documented_plugin_works_from_the_command_line(tmp_path: Path, yoc_home: Path) -> None:
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    site = tmp_path / "site"
    install_documented_plugin(site)
    checkpoint = tmp_path / "bb"  # byte-level tokenizer: knows any word
    write_tiny_checkpoint(checkpoint, hidden_size=32, intermediate_size=64, num_layers=1, seed=2)
    env = {**os.environ, "PYTHONPATH": str(site), "YOC_HOME": str(yoc_home),
           "YOC_BACKBONE": str(checkpoint), "YOC_DEVICE": "cpu"}
    listed = yoc(env, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    modalities = {m["name"] for p in json.loads(listed.stdout)["plugins"] for m in p["modalities"]}
    assert {"audio", "text", "image"} <= modalities
    assert "installed: image, text, audio" in " ".join(yoc(env, "ask", "--help").stdout.split())
    voices = yoc(env, "voices")
    assert voices.returncode == 0 and voices.stdout.strip() == "plain", voices.stderr
    out = tmp_path / "not" / "yet"
    answer = yoc(env, "ask", "hello", "--mode", "audio", "--out", str(out))
    assert answer.returncode == 0 and "Traceback" not in answer.stderr, answer.stderr
    first, path = answer.stdout.splitlines()[:2]
    assert first.startswith("spoke into ") and Path(path).parent == out
    assert Path(path).read_bytes()[:4] == b"RIFF"


def test_the_documented_plugin_is_routed_to_after_training(tmp_path: Path, yoc_home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.app.plugins import load_plugins
    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.assistant import Assistant, Request
    from yoc_assistant.library import Library
    from yoc_assistant.library.concepts import add_concept_from_paths
    from yoc_assistant.personalize.trainer import TrainConfig

    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    install_documented_plugin(tmp_path / "site")
    plugins = load_plugins()
    assert not plugins.failures, plugins.failures
    assert list(plugins.group_sizes()) == ["generation", "understanding", "audio"]  # appended
    bb = small_random_backbone(tmp_path / "bb", seed=2)  # spells any text
    with Library.open() as lib:
        add_concept_from_paths(lib, photos(tmp_path / "bo", 3), "bo")
        outcome = train_concept_job(lib, "bo", backbone=bb, plugins=plugins,
                                    config=TrainConfig(max_steps=400, batch_size=8, lr=3e-2,
                                                       init_from_photos=False, mirror_photos=False))
        assert outcome.metrics["examples_by_task"]["audio-requests"] > 0
        assistant = Assistant(bb, lib, plugins, log_path=tmp_path / "router.jsonl")
        decision, _ = assistant.route(Request("say <bo>'s name out loud"))
    assert decision.modality == "audio", decision.probabilities
    assert decision.concept == "bo"


def test_the_chat_app_lists_the_files_a_plugin_wrote(tmp_path: Path, yoc_home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`/audio TEXT` (the modality's own name is a chat command) answers with a file: the
    bubble names it."""
    import asyncio

    from conftest import TINY_ANOLE_A

    from yoc_assistant.tui.app import YocApp
    from yoc_assistant.tui.services import Services
    from yoc_assistant.tui.widgets import AssistantBubble, PromptInput

    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    install_documented_plugin(tmp_path / "site")

    async def run() -> str:
        app = YocApp(Services(str(TINY_ANOLE_A / "checkpoint"), seed=0))
        async with app.run_test(size=(100, 30)) as pilot:
            while any(w.is_running for w in app.workers):
                await pilot.pause(0.05)
            app.screen.query_one(PromptInput).value = "/audio a red boat"
            await pilot.press("enter")
            await pilot.pause()
            while any(w.is_running for w in app.workers):
                await pilot.pause(0.05)
            await pilot.pause()
            return app.screen.query(AssistantBubble).last().text

    shown = asyncio.run(run())
    assert shown.startswith("spoke into "), shown
    (line,) = [s for s in shown.splitlines() if s.startswith("file: ")]
    written = Path(line.removeprefix("file: "))
    assert written.is_file() and written.parent == yoc_home / "pictures"


CLASHING_COMMANDS = '''
import click

from yoc_assistant.plugin import hookimpl


@click.command("train")
def train():
    click.echo("the plugin's train")


@click.command("hum")
def hum():
    click.echo("hmm")


@hookimpl
def yoc_commands():
    return [train, "not a command", hum]
'''


def test_a_plugin_command_never_replaces_a_built_in(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "yoc_clash.py").write_text(CLASHING_COMMANDS)
    info = site / "yoc_clash-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: yoc-clash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[yoc]\nclash = yoc_clash\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = yoc(env, "--help")
    assert listed.returncode == 0 and "hum" in listed.stdout
    assert "the command name 'train' is taken" in listed.stderr
    assert "is not a click command" in listed.stderr
    assert yoc(env, "hum").stdout.strip() == "hmm"
    assert "Train (or retrain)" in yoc(env, "train", "--help").stdout  # the built-in
