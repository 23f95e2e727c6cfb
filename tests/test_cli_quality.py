"""A concept's measured quality as a user meets it: `yoc train` ends with it, `yoc concepts`
and `concepts show` show it, and a concept near chance is flagged with what to do."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from cli_run import run_yoc

from yoc_assistant.app.quality import NEAR_CHANCE, verdict

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "concepts" / "sunny").glob("*.png"))


def test_a_concept_trained_too_little_is_flagged_near_chance(tmp_path: Path) -> None:
    folder = tmp_path / "sunny"
    folder.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, folder / photo.name)
    assert run_yoc("add-concept", folder, "--name", "sunny", "--no-train").returncode == 0
    # Two steps from blank rows: it cannot have learnt anything yet.
    done = run_yoc("train", "sunny", "--steps", "2", "--blank-init", "--seed", "0")
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("Quality of 'sunny':"))
    # Blank rows prefer one group for every request: routing is right 4 or 5 times in 9.
    assert re.search(r"recognition 0\.\d\d, routing 0\.[45]\d: near chance", line), line
    assert "held-out photos" in line
    assert "answers little better than chance" in done.stderr and "yoc train sunny --steps" in done.stderr
    assert "yoc pool add" in done.stderr

    listed = run_yoc("concepts")
    row = listed.stdout.splitlines()[1]
    assert row.startswith("sunny") and "ready" in row and "near chance" in row
    assert re.search(r"\b20\d\d-\d\d-\d\d \d\d:\d\d\b", row)  # TRAINED is filled in
    assert "answers little better than chance" in listed.stderr

    shown = run_yoc("concepts", "show", "sunny").stdout
    assert "quality:  recognition 0." in shown and "near chance: train longer" in shown
    assert "routing right for" in shown

    (concept,) = json.loads(run_yoc("concepts", "list", "--json").stdout)
    quality = concept["quality"]
    assert min(quality["recognition"], quality["routing"]) <= NEAR_CHANCE
    assert quality["verdict"] == "near chance" and f"recognition {quality['recognition']:.2f}" in line
    assert quality["positives"] >= 1 and quality["negatives"] >= 1 and quality["routed"] == 9

    # The quality travels with an exported concept, and the import has a TRAINED time.
    bundle = tmp_path / "sunny.yoc.zip"
    assert run_yoc("concepts", "export", "sunny", "--out", bundle).returncode == 0
    assert run_yoc("concepts", "import", bundle, "--name", "sunny2").returncode == 0
    (imported,) = [c for c in json.loads(run_yoc("concepts", "list", "--json").stdout)
                   if c["name"] == "sunny2"]
    assert imported["quality"] == quality and imported["last_trained"] == concept["last_trained"]


def test_verdicts() -> None:
    assert verdict({}) is None and verdict({"recognition": None}) is None
    assert verdict({"recognition": 0.95, "routing": 1.0}) == "good"
    assert verdict({"recognition": 0.7, "routing": 1.0}) == "fair"
    assert verdict({"recognition": 0.95, "routing": 0.5}) == "near chance"
