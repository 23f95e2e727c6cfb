"""`yoc ask` and `yoc draw` on the tiny checkpoint (CliRunner), plus one run of the
real `python -m yoc_assistant` with a third-party modality on PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from assistant_helpers import AUDIO_PLUGIN, TINY, install_plugin
from click.testing import CliRunner
from PIL import Image

from yoc_assistant.cli import cli, main
from yoc_assistant.cli.runtime import NOISE_WARNING
from yoc_assistant.errors import UserInputError


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("YOC_BACKBONE", str(TINY))
    monkeypatch.setenv("YOC_DEVICE", "cpu")
    return TINY


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result



def test_ask_streams_and_json_agree(tiny: Path, yoc_home: Path) -> None:
    streamed = run("ask", "a red boat", "--mode", "text", "--seed", "4", "--max-tokens", "6",
                   "--explain")
    assert streamed.exit_code == 0, streamed.output
    assert "route: text (forced by --mode)" in streamed.stderr
    assert NOISE_WARNING not in streamed.stderr
    as_json = run("ask", "a red boat", "--mode", "text", "--seed", "4", "--max-tokens", "6", "--json")
    data = json.loads(as_json.stdout)
    assert data["modality"] == "text" and data["forced"] is True and data["text"]
    assert streamed.stdout == data["text"] + "\n"
    lines = (yoc_home / "logs" / "router.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["text"] == "a red boat"


def test_ask_routes_without_mode(tiny: Path) -> None:
    result = run("ask", "a boat", "--seed", "1", "--max-tokens", "3", "--json")
    data = json.loads(result.stdout)
    assert data["forced"] is False
    assert set(data["probabilities"]) == {"text", "image"}
    assert data["modality"] == max(data["probabilities"], key=data["probabilities"].get)


def test_ask_with_image_answer_prints_paths(tiny: Path, tmp_path: Path) -> None:
    photo = tmp_path / "in.png"
    Image.new("RGB", (50, 40), (0, 120, 200)).save(photo)
    result = run("ask", "draw the cat", "--image", str(photo), "--mode", "image", "--seed", "2",
                 "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "Answering with image" in result.stderr
    (printed,) = result.stdout.split()
    assert Path(printed).parent == tmp_path / "o" and Path(printed).is_file()


def test_ask_rejects_a_bad_image_naming_it(tiny: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    result = CliRunner().invoke(cli, ["ask", "is this ok", "--image", str(bad)])
    assert isinstance(result.exception, UserInputError)
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", "is this ok", "--image", str(bad)])
    assert exit_info.value.code == UserInputError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and str(bad) in err and "Traceback" not in err


def test_draw_writes_repeatable_pngs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "pics"
    first = run("draw", "a red boat", "--out", str(out), "--n", "2", "--seed", "3", "--cfg", "2")
    assert first.exit_code == 0, first.output
    paths = [Path(p) for p in first.stdout.split()]
    assert len(paths) == 2 and all(p.parent == out and p.is_file() for p in paths)
    second = run("draw", "a red boat", "--out", str(out / "again.png"), "--n", "2", "--seed", "3",
                 "--cfg", "2", "--explain", "--json")
    data = json.loads(second.stdout)
    assert data["router"]["forced"] is False and set(data["router"]["probabilities"]) == {"text", "image"}
    assert data["image_paths"] == [str(out / "again-1.png"), str(out / "again-2.png")]
    for i, (path, again) in enumerate(zip(paths, data["image_paths"], strict=True)):
        with Image.open(path) as a, Image.open(again) as b:
            assert a.tobytes() == b.tobytes()  # same seed, same pictures
            assert a.text["seed"] == str(3 + i) and a.text["prompt"] == "a red boat"


def test_draw_decoding_choice_and_ask_uses_the_default(tiny: Path, tmp_path: Path) -> None:
    """`--decoding` reaches the image engine; `yoc ask` draws with the same default as `yoc draw`."""
    from yoc_assistant.settings import IMAGE_DECODING

    def picture(*args: str) -> bytes:
        result = run(*args, "--seed", "5", "--quiet")
        assert result.exit_code == 0, result.output
        (path,) = result.stdout.split()
        with Image.open(path) as img:
            return img.tobytes()

    sjd = picture("draw", "a red boat", "--out", str(tmp_path / "a.png"), "--decoding", "sjd")
    seq = picture("draw", "a red boat", "--out", str(tmp_path / "b.png"), "--decoding", "sequential")
    default = picture("draw", "a red boat", "--out", str(tmp_path / "c.png"))
    asked = picture("ask", "a red boat", "--mode", "image", "--out", str(tmp_path / "d.png"))
    assert sjd != seq  # different random streams, same distribution
    assert default == asked == (sjd if IMAGE_DECODING == "sjd" else seq)
    assert run("draw", "x", "--decoding", "fast").exit_code == 2


def test_draw_default_folder_and_noise_warning(monkeypatch: pytest.MonkeyPatch, yoc_home: Path) -> None:
    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    # As on an install without the shipped toy model: the tiny random backbone is the default.
    monkeypatch.setattr("yoc_assistant.app.backbones.TOY_WEIGHTS", Path("/nonexistent/yoc-toy"))
    monkeypatch.setenv("YOC_DEVICE", "cpu")
    result = run("draw", "a cat", "--seed", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert NOISE_WARNING in result.stderr
    (printed,) = result.stdout.split()
    assert Path(printed).parent == yoc_home / "pictures"  # YOC_PICTURES (conftest)


def test_draw_rejects_bad_options(tiny: Path) -> None:
    assert run("draw", "x", "--n", "0").exit_code == 2
    assert run("draw", "x", "--cfg", "0").exit_code == 2
    bad_mode = CliRunner().invoke(cli, ["ask", "x", "--mode", "video"])
    assert isinstance(bad_mode.exception, UserInputError)
    assert "available modalities" in str(bad_mode.exception)


def test_audio_modality_from_the_command_line(tmp_path: Path) -> None:
    """A third-party modality installed only on PYTHONPATH answers `yoc ask --mode audio`."""
    site = install_plugin(tmp_path / "site", "yoc_audio_test", AUDIO_PLUGIN, "audio")
    env = {**os.environ, "PYTHONPATH": str(site), "YOC_BACKBONE": str(TINY), "YOC_DEVICE": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "yoc_assistant", "ask", "a red boat", "--mode", "audio", "--out",
         str(tmp_path / "sound")], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("spoke into ")
    written = Path(lines[1])
    assert written.parent == tmp_path / "sound" and "audio for 'a red boat'" in written.read_text()


def test_draw_reports_progress_unless_quiet(tiny: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawing loop's progress reaches the CLI's bar (which draws on a terminal only)."""
    import contextlib

    import yoc_assistant.cli.chat as chat

    seen: list[tuple[str, bool, list]] = []
    real = chat.progress

    @contextlib.contextmanager
    def recording(description, total=None, *, quiet=False):
        calls: list = []
        seen.append((description, quiet, calls))
        with real(description, total, quiet=quiet) as update:
            yield lambda *args: (calls.append(args), update(*args))

    monkeypatch.setattr(chat, "progress", recording)
    assert run("draw", "a boat", "--seed", "1", "--out", str(tmp_path)).exit_code == 0
    assert run("draw", "a boat", "--seed", "1", "--out", str(tmp_path), "--quiet").exit_code == 0
    assert run("ask", "a cat", "--mode", "text", "--max-tokens", "2").exit_code == 0
    (loud, quiet) = seen  # a text answer opens no bar
    assert loud[:2] == ("Drawing 1 picture", False) and quiet[1] is True
    total = loud[2][-1][1]
    assert total > 0 and loud[2][-1] == (total, total)


def test_ask_about_a_concept(tiny: Path, capsys) -> None:
    from assistant_helpers import make_ready_concept, tiny_backbone

    from yoc_assistant.library.core import Library

    with Library.open() as lib:
        make_ready_concept(lib, tiny_backbone(), "bo")
    data = json.loads(run("ask", "is <bo> red ?", "--seed", "1", "--max-tokens", "4",
                          "--json").stdout)
    assert data["concept"] == "bo" and set(data["probabilities"]) == {"text", "image"}
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", "where is <rex> ?"])
    assert exit_info.value.code == 3
    assert "unknown concept <rex>; known concepts: <bo>" in capsys.readouterr().err


class CountingPattern:
    """The mention regex, counting the texts it scans."""

    def __init__(self, real) -> None:  # noqa: ANN001
        self.real, self.scans = real, 0

    def finditer(self, text: str):  # noqa: ANN201
        self.scans += 1
        return self.real.finditer(text)


@pytest.mark.parametrize("command", [["draw", "draw <bo> ."], ["ask", "is <bo> red ?", "--max-tokens", "3"]])
def test_one_request_parses_its_mentions_once(tiny: Path, yoc_home: Path, command: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant_helpers import make_ready_concept, tiny_backbone

    from yoc_assistant.assistant import mentions
    from yoc_assistant.library import Library

    with Library.open() as library:
        make_ready_concept(library, tiny_backbone(), "bo")
    pattern = CountingPattern(mentions.MENTION_RE)
    monkeypatch.setattr(mentions, "MENTION_RE", pattern)
    # Checked against the library, concepts loaded, routed, the prompt built, the answer
    # made and logged: all from one parse of the request's text.
    result = run(*command, "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["concept"] == "bo"
    assert pattern.scans == 1
