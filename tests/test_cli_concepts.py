"""`yoc add-concept`, `yoc concepts ...` and `yoc pool ...` through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from library_images import photo, photos
from test_bundle import concept_file

import yoc_assistant.cli.concepts as concepts_cli
import yoc_assistant.cli.output as output
from yoc_assistant.cli import main
from yoc_assistant.library import Library


class _Entry:
    """Lets CliRunner drive `yoc_assistant.cli.main`, so errors go through its real handling."""

    name = "yoc"

    def main(self, args: Any = (), prog_name: str | None = None, **_: Any) -> None:
        main(list(args))


def yoc(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(_Entry(), [str(a) for a in args], input=input)  # type: ignore[arg-type]


def test_add_concept_from_folder(tmp_path: Path) -> None:
    photos(tmp_path / "bo", 3)
    result = yoc("add-concept", tmp_path / "bo", "--name", "bo", "--about", "my corgi", "--no-train")
    assert result.exit_code == 0, result.output
    assert "Added 'bo': 3 photos" in result.stdout and "yoc train bo" in result.stderr
    concept = Library.open().get_concept("bo")
    assert (concept.photos, concept.about, concept.status) == (3, "my corgi", "new")


def test_add_concept_names_every_rejected_file(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    photos(folder, 3)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    result = yoc("add-concept", folder, tmp_path / "missing.png", "--name", "bo", "--no-train")
    assert result.exit_code == 0, result.output
    for name, reason in [("empty.jpg", "0 bytes"), ("readme.txt", "not an image"), ("missing.png", "no such file")]:
        assert any(name in line and reason in line for line in result.stderr.splitlines()), result.stderr
    assert Library.open().get_concept("bo").photos == 3


def test_no_usable_photo_is_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_text("nope")
    result = yoc("add-concept", tmp_path / "a.jpg", "--name", "bo", "--no-train")
    assert result.exit_code == 2
    assert "Error: no usable photo" in result.stderr and "Traceback" not in result.output
    assert Library.open().list_concepts() == []


def test_one_photo_warns(tmp_path: Path) -> None:
    result = yoc("add-concept", photo(tmp_path / "one.png"), "--name", "bo", "--no-train")
    assert result.exit_code == 0 and "Warning: only 1 photo" in result.stderr


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 41, "-x", "con", "bo/../../etc"])
def test_bad_concept_names(tmp_path: Path, name: str) -> None:
    result = yoc("add-concept", photo(tmp_path / "a.png"), f"--name={name}", "--no-train")
    assert result.exit_code == 2 and "Error:" in result.stderr, result.output
    assert Library.open().list_concepts() == []
    assert not list((Library.open().home / "images").rglob("*.png"))  # refused before any work


def test_name_taken_by_a_trained_concept(tmp_path: Path) -> None:
    assert yoc("add-concept", photo(tmp_path / "a.png"), "--name", "Bo", "--no-train").exit_code == 0
    lib = Library.open()
    vec = lib.concept_dir("bo") / "v.safetensors"
    vec.write_bytes(b"x")
    lib.set_vectors("bo", vec)
    result = yoc("add-concept", photo(tmp_path / "b.png", seed=2), "--name", "BO", "--no-train")
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_odd_file_names_and_leading_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [photo(tmp_path / n, seed=i) for i, n in enumerate(["-dash.png", "with space.png", "ünï 写真.png"])]
    monkeypatch.chdir(tmp_path)
    result = yoc("add-concept", "--name", "bo", "--no-train", "--", "-dash.png", *files[1:])
    assert result.exit_code == 0, result.output
    names = sorted(i.original_name for i in Library.open().concept_images("bo"))
    assert names == sorted(f.name for f in files)


def test_add_concept_json(tmp_path: Path) -> None:
    result = yoc("add-concept", *photos(tmp_path / "p", 2), tmp_path / "p" / "photo0.png", "--name", "bo",
                 "--no-train", "--json")
    data = json.loads(result.stdout)
    assert data["concept"]["name"] == "bo" and len(data["report"]["accepted"]) == 2
    assert len(data["report"]["duplicates"]) == 1 and data["trained"] is None


def test_concepts_list(tmp_path: Path) -> None:
    empty = yoc("concepts", "list")
    assert empty.exit_code == 0 and "No concepts yet" in empty.stderr
    assert json.loads(yoc("concepts", "list", "--json").stdout) == []
    yoc("add-concept", *photos(tmp_path / "a", 2), "--name", "bo", "--no-train")
    yoc("add-concept", *photos(tmp_path / "b", 1, start=10), "--name", "rex", "--display-name", "Rex T.",
        "--no-train")
    table = yoc("concepts", "list").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "DISPLAY"] and table[1].split()[0] == "bo"
    assert "Rex T." in table[2]
    data = json.loads(yoc("concepts", "list", "--json").stdout)
    assert [(c["name"], c["photos"], c["status"]) for c in data] == [("bo", 2, "new"), ("rex", 1, "new")]


def test_concepts_show(tmp_path: Path) -> None:
    yoc("add-concept", *photos(tmp_path / "a", 2), "--name", "bo", "--about", "a corgi", "--no-train")
    lib = Library.open()
    run = lib.start_run("bo", {"lr": 1e-4}, total_steps=10)
    lib.update_run(run, step=10, loss=0.25)
    lib.finish_run(run, "done")
    text = yoc("concepts", "show", "BO")
    assert text.exit_code == 0 and "a corgi" in text.stdout and "step 10/10" in text.stdout
    data = json.loads(yoc("concepts", "show", "bo", "--json").stdout)
    assert data["about"] == "a corgi" and len(data["images"]) == 2 and data["runs"][0]["loss"] == 0.25
    assert data["vectors"] is None
    missing = yoc("concepts", "show", "boo")
    assert missing.exit_code == 3 and "Did you mean: bo" in missing.stderr


def test_concepts_rm_needs_confirmation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yoc("add-concept", *photos(tmp_path / "a", 1), "--name", "bo", "--no-train")
    piped = yoc("concepts", "rm", "bo")
    assert piped.exit_code == 2 and "--yes" in piped.stderr and Library.open().get_concept("bo")
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    declined = yoc("concepts", "rm", "bo", input="n\n")
    assert declined.exit_code != 0 and Library.open().get_concept("bo")
    accepted = yoc("concepts", "rm", "bo", input="y\n")
    assert accepted.exit_code == 0 and Library.open().get_concept("bo") is None
    assert yoc("concepts", "rm", "bo", "--yes").exit_code == 3


def test_concepts_rename(tmp_path: Path) -> None:
    yoc("add-concept", *photos(tmp_path / "a", 1), "--name", "bo", "--no-train")
    yoc("add-concept", *photos(tmp_path / "b", 1, start=5), "--name", "rex", "--no-train")
    assert yoc("concepts", "rename", "bo", "bobby").exit_code == 0
    assert Library.open().get_concept("bobby").photos == 1
    assert yoc("concepts", "rename", "bobby", "REX").exit_code == 2
    assert yoc("concepts", "rename", "bobby", "a/b").exit_code == 2
    assert yoc("concepts", "rename", "nobody", "x").exit_code == 3


def test_export_import(tmp_path: Path) -> None:
    yoc("add-concept", *photos(tmp_path / "a", 2), "--name", "bo", "--no-train")
    out = tmp_path / "bo.yoc.zip"
    exported = yoc("concepts", "export", "bo", "--out", out)
    assert exported.exit_code == 0 and exported.stdout.strip() == str(out) and out.is_file()
    clash = yoc("concepts", "import", out)
    assert clash.exit_code == 2 and "--name" in clash.stderr
    imported = yoc("concepts", "import", out, "--name", "bo2", "--json")
    assert imported.exit_code == 0 and json.loads(imported.stdout)["photos"] == 2
    bad = tmp_path / "bad.yoc.zip"
    bad.write_text("not a zip")
    result = yoc("concepts", "import", bad)
    assert result.exit_code == 2 and "not a yoc concept bundle" in result.stderr
    assert yoc("concepts", "import", tmp_path / "nothing.zip").exit_code == 3


def test_import_refuses_other_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yoc("add-concept", *photos(tmp_path / "a", 1), "--name", "bo", "--no-train")
    lib = Library.open()
    vec = concept_file(lib.concept_dir("bo") / "vectors.safetensors", "a" * 64)
    lib.set_vectors("bo", vec)
    shown = json.loads(yoc("concepts", "show", "bo", "--json").stdout)["vectors"]
    assert shown["exists"] and shown["metadata"]["backbone_fingerprint"] == "a" * 64
    out = tmp_path / "bo.yoc.zip"
    assert yoc("concepts", "export", "bo", "--out", out).exit_code == 0
    monkeypatch.setattr(concepts_cli, "configured_fingerprint", lambda: "b" * 64)
    refused = yoc("concepts", "import", out, "--name", "other")
    assert refused.exit_code == 5 and "--force" in refused.stderr
    assert yoc("concepts", "import", out, "--name", "other", "--force").exit_code == 0


def test_pool_commands(tmp_path: Path) -> None:
    photos(tmp_path / "pool", 3)
    (tmp_path / "pool" / "broken.png").write_bytes(b"\x89PNG broken")
    added = yoc("pool", "add", tmp_path / "pool")
    assert added.exit_code == 0 and "Added 3 photos" in added.stdout and "broken.png" in added.stderr
    assert json.loads(yoc("pool", "info", "--json").stdout)["photos"] == 3
    listed = json.loads(yoc("pool", "list", "--json").stdout)
    assert len(listed) == 3 and all(Path(i["path"]).is_file() and i["role"] == "pool" for i in listed)
    again = json.loads(yoc("pool", "add", tmp_path / "pool", "--json").stdout)
    assert again["accepted"] == [] and len(again["duplicates"]) == 3 and again["pool_size"] == 3


def test_real_entry_point_subprocess(tmp_path: Path, yoc_home: Path) -> None:
    photos(tmp_path / "p", 2)
    env = {**os.environ, "YOC_HOME": str(yoc_home)}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "yoc_assistant", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=120)

    added = run("add-concept", tmp_path / "p", "--name", "bo", "--no-train", "--quiet")
    assert added.returncode == 0, added.stderr
    listed = run("concepts", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "bo"
    missing = run("concepts", "show", "nope")
    assert missing.returncode == 3 and missing.stderr.startswith("Error: no concept named 'nope'")
    assert "Traceback" not in missing.stderr


def test_progress_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos(tmp_path / "p", 3)
    piped = yoc("add-concept", tmp_path / "p", "--name", "bo", "--no-train")
    assert "Checking photos" not in piped.stderr
    monkeypatch.setattr(output, "stderr_is_tty", lambda: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    shown = yoc("add-concept", tmp_path / "p", "--name", "rex", "--no-train")
    assert "Checking photos" in shown.stderr
    quiet = yoc("add-concept", tmp_path / "p", "--name", "max", "--no-train", "--quiet")
    assert "Checking photos" not in quiet.stderr and quiet.exit_code == 0
