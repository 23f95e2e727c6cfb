"""Campaign, category "plugins": a third-party plugin never replaces a built-in modality, and
its faults are reported and skipped, never fatal (issue 14, items 6 and 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from assistant_helpers import install_plugin
from library_images import photos

from yoc_assistant.assistant import PluginManager
from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_paths

THROWAWAY = ("yoc_fake_text", "yoc_shadow_text", "yoc_exits", "yoc_bad_examples")

FAKE_TEXT = '''
from yoc_assistant.assistant import Modality, Response, hookimpl


class FakeText(Modality):
    def build_examples(self, ctx):
        return []

    def respond(self, request, ctx):
        return Response(modality=self.name, text="hijacked")


@hookimpl
def yoc_modalities():
    return [FakeText(name="text", group="understanding", group_size=4, description="not the real one")]
'''

EXITS = '''
import sys
sys.exit(3)
'''

BAD_EXAMPLES = '''
from yoc_assistant.assistant import Modality, Response, hookimpl


class Sound(Modality):
    def build_examples(self, ctx):
        raise RuntimeError("cannot build examples today")

    def respond(self, request, ctx):
        return Response(modality=self.name, text="...")


@hookimpl
def yoc_modalities():
    return [Sound(name="sound", group="sound", group_size=2, description="raises while training")]
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder FIRST on sys.path (found before the installed packages, as PYTHONPATH is)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in THROWAWAY:
        sys.modules.pop(name, None)


def _builtin_groups() -> dict[str, int]:
    return {"generation": 16, "understanding": 16}


# -- item 6: first-party modalities win ties; every conflict reported ---------------------------
def test_a_third_party_modality_named_text_does_not_replace_the_builtin(site: Path) -> None:
    install_plugin(site, "yoc_fake_text", FAKE_TEXT, "faketext")
    pm = PluginManager()
    text = pm.modality("text")
    assert type(text).__module__.startswith("yoc_text") and text.group_size == 16
    assert pm.group_sizes() == _builtin_groups()  # a new concept's groups do not change
    failures = {f.name: f.reason for f in pm.failures}
    assert "faketext" in failures and "text" not in failures
    assert "already registered" in failures["faketext"] or "first-party" in failures["faketext"]


def test_an_entry_point_named_like_a_builtin_is_reported_not_silently_shadowing(site: Path) -> None:
    install_plugin(site, "yoc_shadow_text", FAKE_TEXT, "text", dist="yoc-shadow-text")
    pm = PluginManager()
    assert type(pm.modality("text")).__module__.startswith("yoc_text")
    infos = {i.name: i for i in pm.plugins()}
    assert infos["text"].distribution == "yoc-text"
    reasons = " ".join(f.reason for f in pm.failures if f.name == "text")
    assert "yoc-shadow-text" in reasons


def test_yoc_plugins_reports_every_conflict(site: Path) -> None:
    install_plugin(site, "yoc_fake_text", FAKE_TEXT, "faketext")
    install_plugin(site, "yoc_shadow_text", FAKE_TEXT, "text", dist="yoc-shadow-text")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "yoc_assistant", "plugins", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout)
    names = {f["name"] for f in report["failures"]}
    assert {"faketext", "text"} <= names
    text = next(p for p in report["plugins"] if p["name"] == "text")
    assert text["distribution"] == "yoc-text"


# -- item 13: a plugin's fault is reported and skipped ----------------------------------------
def test_a_plugin_calling_sys_exit_at_import_is_skipped(site: Path) -> None:
    install_plugin(site, "yoc_exits", EXITS, "exits")
    pm = PluginManager()  # must not raise SystemExit
    assert any(f.name == "exits" and "SystemExit" in f.reason for f in pm.failures)
    assert {m.name for m in pm.get_modalities()} >= {"text", "image"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "yoc_assistant", "plugins"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "exits" in result.stdout and "text" in result.stdout


def test_a_plugin_whose_build_examples_raises_does_not_fail_training(site: Path, yoc_home: Path,
                                                                     tmp_path: Path, bb) -> None:
    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.personalize.trainer import TrainConfig

    install_plugin(site, "yoc_bad_examples", BAD_EXAMPLES, "badexamples")
    pm = PluginManager()
    with Library.open() as lib:
        add_concept_from_paths(lib, photos(tmp_path / "bo", 2), "bo")
        outcome = train_concept_job(lib, "bo", backbone=bb, plugins=pm,
                                    config=TrainConfig(max_steps=1, batch_size=2))
        assert lib.require_concept("bo").status == "ready"
    assert any("badexamples" in n or "sound" in n for n in outcome.notes)
    assert any("cannot build examples today" in n for n in outcome.notes)


def test_a_responder_calling_sys_exit_is_a_clear_error_not_the_end(tmp_path: Path) -> None:
    from assistant_helpers import tiny_backbone

    from yoc_assistant.assistant import Assistant, Modality, Request, hookimpl
    from yoc_assistant.errors import YocError

    class Exits(Modality):
        def respond(self, request, ctx):
            sys.exit("bye from a plugin")

    class Plugin:
        @hookimpl
        def yoc_modalities(self):
            return [Exits(name="exits", group="exits", group_size=1)]

    plugins = PluginManager()
    plugins.register(Plugin(), "exits")
    assistant = Assistant(tiny_backbone(), None, plugins, log_path=tmp_path / "r.jsonl")
    with pytest.raises(YocError, match="'exits' modality failed: SystemExit"):
        assistant.respond(Request("a cat", mode="exits"))
