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
    # A backbone that knows nothing (random weights), and one step at a vanishing learning
    # rate from blank rows: the concept cannot answer better than chance.
    noise = {"YOC_BACKBONE": str(Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint")}
    assert run_yoc("add-concept", folder, "--name", "sunny", "--no-train", env=noise).returncode == 0
    done = run_yoc("train", "sunny", "--steps", "1", "--lr", "1e-9", "--blank-init", "--seed", "0", env=noise)
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("Quality of 'sunny':"))
    # Blank rows on random weights prefer one group for every request: right 5 or 6 times in 11.
    assert re.search(r"(recognition 0\.\d\d, )?routing 0\.[45]\d: near chance", line), line
    assert "unseen views of the training photos" in line  # every photo trained
    assert "answers little better than chance" in done.stderr and "yoc train sunny --steps" in done.stderr
    assert "yoc pool add" in done.stderr

    listed = run_yoc("concepts", env=noise)
    row = listed.stdout.splitlines()[1]
    assert row.startswith("sunny") and "ready" in row and "near chance" in row
    assert re.search(r"\b20\d\d-\d\d-\d\d \d\d:\d\d\b", row)  # TRAINED is filled in
    assert "answers little better than chance" in listed.stderr

    shown = run_yoc("concepts", "show", "sunny", env=noise).stdout
    assert "quality:  routing 0." in shown and "near chance: train longer" in shown
    assert "routing right for" in shown

    (concept,) = json.loads(run_yoc("concepts", "list", "--json", env=noise).stdout)
    quality = concept["quality"]
    assert quality["routing"] <= NEAR_CHANCE  # this tokenizer cannot say Yes apart from No
    assert quality["verdict"] == "near chance" and f"routing {quality['routing']:.2f}" in line
    from yoc_assistant.app.quality import IMAGE_REQUESTS, TEXT_REQUESTS

    assert quality["routed"] == len(TEXT_REQUESTS) + len(IMAGE_REQUESTS)

    # The quality travels with an exported concept, and the import has a TRAINED time.
    bundle = tmp_path / "sunny.yoc.zip"
    assert run_yoc("concepts", "export", "sunny", "--out", bundle, env=noise).returncode == 0
    assert run_yoc("concepts", "import", bundle, "--name", "sunny2", env=noise).returncode == 0
    (imported,) = [c for c in json.loads(run_yoc("concepts", "list", "--json", env=noise).stdout)
                   if c["name"] == "sunny2"]
    assert imported["quality"] == quality and imported["last_trained"] == concept["last_trained"]


def test_verdicts() -> None:
    assert verdict({}) is None and verdict({"recognition": None}) is None
    assert verdict({"recognition": 0.95, "routing": 1.0}) == "good"
    assert verdict({"recognition": 0.7, "routing": 1.0}) == "fair"
    assert verdict({"recognition": 0.95, "routing": 0.5}) == "near chance"
