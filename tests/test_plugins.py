"""The plugin manager: entry points in group `yoc`, failures reported and skipped,
YOC_LOAD_PLUGINS, validation of modalities; `yoc plugins`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from assistant_helpers import AUDIO_PLUGIN, BROKEN_PLUGIN, install_plugin
from click.testing import CliRunner

from yoc_assistant.assistant import Modality, PluginManager, Response, hookimpl
from yoc_assistant.cli import cli
from yoc_assistant.errors import UserInputError

THROWAWAY = ("yoc_audio_test", "yoc_broken_test", "yoc_clash_test")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path holding throwaway installed plugins."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in THROWAWAY:
        sys.modules.pop(name, None)


def test_first_party_plugins_are_found_through_entry_points() -> None:
    pm = PluginManager()
    infos = {i.name: i for i in pm.plugins()}
    assert {"text", "image"} <= set(infos)
    assert infos["text"].distribution == "yoc-text"
    assert infos["image"].distribution == "yoc-image"
    groups = pm.group_sizes()
    assert groups["understanding"] == 16 and groups["generation"] == 16
    assert pm.failures == []


def test_third_party_audio_plugin_registers_its_group(site: Path) -> None:
    install_plugin(site, "yoc_audio_test", AUDIO_PLUGIN, "audio")
    pm = PluginManager()
    audio = pm.modality("audio")
    assert (audio.group, audio.group_size) == ("audio", 4)
    assert pm.group_sizes()["audio"] == 4
    assert {m.name for m in pm.get_modalities()} >= {"text", "image", "audio"}
    info = next(i for i in pm.plugins() if i.name == "audio")
    assert info.distribution == "yoc-audio-test" and info.version == "0.1"


def test_broken_plugin_is_reported_and_skipped(site: Path) -> None:
    install_plugin(site, "yoc_broken_test", BROKEN_PLUGIN, "broken")
    install_plugin(site, "yoc_audio_test", AUDIO_PLUGIN, "audio")
    pm = PluginManager()
    failures = {f.name: f.reason for f in pm.failures}
    assert "broken on purpose" in failures["broken"]
    assert "RuntimeError" in failures["broken"]
    assert "broken" not in {i.name for i in pm.plugins()}
    assert pm.modality("audio").name == "audio"  # the others still load


def test_load_plugins_selects_entry_points(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(site, "yoc_audio_test", AUDIO_PLUGIN, "audio")
    monkeypatch.setenv("YOC_LOAD_PLUGINS", "text, audio,nosuch")
    pm = PluginManager()
    assert sorted(i.name for i in pm.plugins()) == ["audio", "text"]
    assert [f.name for f in pm.failures] == ["nosuch"]
    assert "YOC_LOAD_PLUGINS" in pm.failures[0].reason
    monkeypatch.setenv("YOC_LOAD_PLUGINS", "")
    empty = PluginManager()
    assert empty.plugins() == [] and empty.get_modalities() == []
    with pytest.raises(UserInputError, match="no plugins loaded"):
        empty.modality("text")


class _Plain(Modality):
    def respond(self, request, ctx):  # pragma: no cover - never called here
        return Response(self.name)


class _Bad:
    """A plugin object whose modalities are wrong in every way the manager checks."""

    @hookimpl
    def yoc_modalities(self):
        return [
            _Plain(name="speech", group="understanding", group_size=4),  # group taken by text
            _Plain(name="text", group="words", group_size=4),  # name taken by text
            _Plain(name="zero", group="zero", group_size=0),
            _Plain(name="bad name!", group="g", group_size=2),
            Modality(name="noresponder", group="nr", group_size=2),
            "not a modality",
            _Plain(name="fine", group="fine", group_size=3),
        ]


class _Raising:
    @hookimpl
    def yoc_modalities(self):
        raise ValueError("hook exploded")


def test_invalid_modalities_are_failures_and_valid_ones_stay() -> None:
    pm = PluginManager()
    assert pm.register(_Bad(), "bad") == 1
    assert pm.register(_Raising(), "raising") == 1
    assert pm.register(_Bad(), "bad") == 0  # same name twice
    names = {m.name for m in pm.get_modalities()}
    assert names == {"text", "image", "fine"}
    reasons = [f.reason for f in pm.failures]
    assert any("'understanding' is already owned" in r for r in reasons)
    assert any("'text' is already registered" in r for r in reasons)
    assert any("group size 0" in r for r in reasons)
    assert any("'bad name!'" in r for r in reasons)
    assert any("does not implement respond" in r for r in reasons)
    assert any("not a yoc Modality" in r for r in reasons)
    assert any("hook exploded" in r for r in reasons)
    assert "a plugin of this name is already registered" in reasons


def test_yoc_plugins_lists_modalities_and_failures(site: Path) -> None:
    install_plugin(site, "yoc_audio_test", AUDIO_PLUGIN, "audio")
    install_plugin(site, "yoc_broken_test", BROKEN_PLUGIN, "broken")
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    mods = {m["name"]: m for p in data["plugins"] for m in p["modalities"]}
    assert mods["audio"]["group"] == "audio" and mods["audio"]["group_size"] == 4
    assert mods["image"]["group"] == "generation"
    assert [f["name"] for f in data["failures"]] == ["broken"]
    text = runner.invoke(cli, ["plugins"])
    assert text.exit_code == 0
    assert "modality audio: token group audio (4 tokens)" in text.output
    assert "failed: broken" in text.output and "broken on purpose" in text.output


def test_plugins_subprocess_finds_plugin_on_pythonpath(tmp_path: Path) -> None:
    """The real `python -m yoc_assistant plugins`, with the plugin only on PYTHONPATH."""
    site = install_plugin(tmp_path / "site", "yoc_audio_test", AUDIO_PLUGIN, "audio")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-m", "yoc_assistant", "plugins"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "audio (yoc-audio-test 0.1)" in out.stdout


def test_first_party_modalities_build_examples_for_their_groups() -> None:
    """The text and image plugins' builders (via personalize.data) train their own
    group: every target starts with that group's tokens."""
    from assistant_helpers import tiny_backbone

    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
    from yoc_assistant.personalize.data import BuildContext

    bb = tiny_backbone()
    pm = PluginManager()
    vec = ConceptVectors.initialize(bb, "bo", pm.group_sizes(), seed=0)
    concepts = ConceptSet(bb, [vec])
    photo = bb.image_vocab.bpe_ids[: bb.image_seq_length].tolist()
    ctx = BuildContext.from_concepts(bb, concepts, "bo", positives=[photo],
                                     easy_negatives=[photo[::-1]], about="bo is a red mug")
    for name in ("text", "image"):
        modality = pm.modality(name)
        examples = modality.build_examples(ctx)
        assert examples, name
        group = concepts.group_ids("bo", modality.group)
        for example in examples:
            assert example.target[: len(group)] == group
