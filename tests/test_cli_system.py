"""`yoc plugins`, `yoc doctor`, `yoc pull` (pull only on its offline error path: the
tests never reach the network)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
from assistant_helpers import TINY
from click.testing import CliRunner

from yoc_assistant.cli import cli, main
from yoc_assistant.errors import UserInputError
from yoc_assistant.settings import ANOLE_ID


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))



def test_plugins_none_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_LOAD_PLUGINS", "")
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "YOC_LOAD_PLUGINS=''" in result.output and "No plugins loaded." in result.output
    data = json.loads(invoke("plugins", "--json").output)
    assert data == {"selection": "", "plugins": [], "failures": []}


def test_doctor_json_reports_everything(monkeypatch: pytest.MonkeyPatch, yoc_home: Path) -> None:
    monkeypatch.setenv("YOC_BACKBONE", str(TINY))
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["python"]["version"] == platform.python_version()
    assert report["torch"]["torch"] and report["torch"]["cuda"] in (True, False)
    assert set(report["bitsandbytes"]) >= {"usable"}
    bb = report["backbone"]
    assert bb["found"] is True and bb["noise"] is False and bb["name"] == "tiny-anole-a"
    assert Path(bb["path"]) == TINY
    assert Path(report["library"]["path"]) == yoc_home and report["library"]["concepts"] == 0
    names = {m["name"] for p in report["plugins"]["plugins"] for m in p["modalities"]}
    assert {"text", "image"} <= names
    assert report["problems"] == [] and report["notes"] == []


def test_doctor_text_and_problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    monkeypatch.setenv("YOC_BACKBONE", str(missing))
    monkeypatch.setenv("YOC_LOAD_PLUGINS", "")
    result = invoke("doctor")
    assert result.exit_code == 1
    assert "backbone      NOT FOUND" in result.output and str(missing) in result.output
    assert "problem: no modality plugins are loaded" in result.output
    assert "Python        " in result.output and "library       " in result.output


def test_doctor_notes_the_noise_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    # As on an install without the shipped toy model: the tiny random backbone is the default.
    monkeypatch.setattr("yoc_assistant.app.backbones.TOY_WEIGHTS", Path("/nonexistent/yoc-toy"))
    report = json.loads(invoke("doctor", "--json").stdout)
    assert report["backbone"]["noise"] is True and report["backbone"]["found"] is True
    assert any("noise" in note for note in report["notes"])


@pytest.mark.parametrize("args, named", [((), ANOLE_ID), (("someone/model",), "someone/model"),
                                          (("--clip",), ANOLE_ID)])
def test_pull_offline_is_a_clear_error(args, named, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["pull", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert f"Error: cannot download {named}: HF_HUB_OFFLINE is set" in err
    assert "Traceback" not in err


def test_small_cpu_backbones_run_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from yoc_assistant.app.backbones import tune_cpu_threads
    from yoc_assistant.backbone import Backbone
    from yoc_assistant.toyworld.common import BACKBONE_DIR

    bb = Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("YOC_THREADS", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert tune_cpu_threads(bb) is None  # the user's own choice stands
        assert bb.caches.cpu_threads == ()
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr("yoc_assistant.personalize.threadpick.usable_cores", lambda: 2)
        assert tune_cpu_threads(bb) == 1 and torch.get_num_threads() == 1
        assert bb.caches.cpu_threads == (1, 2)  # training may time a second thread
        monkeypatch.setattr("yoc_assistant.personalize.threadpick.usable_cores", lambda: 1)
        assert tune_cpu_threads(bb) == 1 and bb.caches.cpu_threads == (1,)
        monkeypatch.setenv("YOC_THREADS", "2")
        assert tune_cpu_threads(bb) == 2
        assert bb.caches.cpu_threads == ()  # ... never against the user's count
        monkeypatch.setenv("YOC_THREADS", "many")
        with pytest.raises(UserInputError, match="YOC_THREADS must be a whole number"):
            tune_cpu_threads(bb)
    finally:
        torch.set_num_threads(before)
