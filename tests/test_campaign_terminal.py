"""Campaign, category "terminal": strings that came from a file never reach a terminal raw
(issue 14, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bundle import rebuild, trained
from test_cli_concepts import yoc

from yoc_assistant.library import Library

# Set the window title, clear the screen, plant an OSC-8 hyperlink, a C1 CSI, a bidi override.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"
LINK = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
NASTY = TITLE + "Bo" + CLEAR + LINK + "\x9b31m" + "\u202e" + "\r"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


@pytest.fixture
def hostile(yoc_home: Path, tmp_path: Path) -> str:
    with Library.open() as lib:
        bundle = trained(lib, tmp_path)
        lib.remove("bo")

    def poison(members: dict[str, bytes], manifest: dict) -> None:
        manifest["concept"]["display_name"] = NASTY
        manifest["concept"]["about"] = "about " + NASTY
        for item in manifest["images"]:
            item["original_name"] = NASTY + ".png"
            item["note"] = NASTY
        manifest["concept"]["metrics"] = {NASTY: 0.5}

    bad = rebuild(bundle, tmp_path / "bad.zip", poison)
    imported = yoc("concepts", "import", bad, "--force")
    assert imported.exit_code == 0, imported.output
    return "bo"


def _clean(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the terminal"


def test_concepts_list_and_show_escape_control_characters(hostile: str) -> None:
    for args in (["concepts", "list"], ["concepts", "show", hostile]):
        result = yoc(*args)
        assert result.exit_code == 0, result.output
        _clean(result.output)
        assert "Bo" in result.output


def test_json_output_keeps_the_data_and_escapes_it(hostile: str) -> None:
    for args in (["concepts", "list", "--json"], ["concepts", "show", hostile, "--json"]):
        result = yoc(*args)
        _clean(result.stdout)
        data = json.loads(result.stdout)
        item = data[0] if isinstance(data, list) else data
        assert item["display_name"] == NASTY  # the data itself is kept, only escaped


def test_an_import_error_quoting_the_bundle_is_escaped(yoc_home: Path, tmp_path: Path) -> None:
    with Library.open() as lib:
        bundle = trained(lib, tmp_path)
    bad = rebuild(bundle, tmp_path / "bad.zip", lambda m, man: man["concept"].update(name=NASTY))
    result = yoc("concepts", "import", bad, "--force")
    assert result.exit_code == 2
    _clean(result.output)


def test_file_names_in_ingest_reports_are_escaped(yoc_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / ("\x1b]0;pwned\x07" + "x.png")).write_bytes(b"not an image")
    result = yoc("add-concept", folder, "--name", "bo", "--no-train")
    _clean(result.output)
    assert "x.png" in result.output


def test_the_chat_app_shows_errors_escaped() -> None:
    from yoc_assistant.errors import UserInputError
    from yoc_assistant.tui.app import describe_error

    _clean(describe_error(UserInputError(f"{NASTY}: not a usable photo")))
    _clean(describe_error(ValueError(NASTY)))


def test_printable_keeps_ordinary_text() -> None:
    from yoc_assistant.safetext import printable

    assert printable("Bo the corgi — ünïcödé 🐶") == "Bo the corgi — ünïcödé 🐶"
    assert printable("two\nlines", newlines=True) == "two\nlines"
    assert printable("two\nlines") == "two\\nlines"
    assert printable("\x1b[2J") == "\\x1b[2J"
