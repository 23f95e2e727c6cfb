"""Campaign, category "models": CLIP weights are read exactly as checked, and damaged ones are a
note, never the end of training (issue 14, items 7 and 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from library_images import photos
from safetensors.torch import load_file

from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_paths
from yoc_assistant.personalize import retrieval

TOY_CLIP = retrieval.TOY_CLIP_DIR


def _clip_folder(tmp_path: Path, weights_name: str = "model.safetensors") -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    shutil.copy(TOY_CLIP / "open_clip_config.json", folder)
    shutil.copy(TOY_CLIP / "open_clip_model.safetensors", folder / weights_name)
    return folder


# -- item 7: the pickle next to the checked safetensors file is never what gets loaded -------------
def test_a_pickle_beside_the_safetensors_file_is_not_loaded(tmp_path: Path) -> None:
    folder = _clip_folder(tmp_path)
    checked = load_file(str(folder / "model.safetensors"))
    # open_clip prefers this name over model.safetensors; it holds other (zeroed) weights.
    torch.save({k: torch.zeros_like(v) for k, v in checked.items()}, folder / "open_clip_pytorch_model.bin")
    clip = retrieval.load_clip(retrieval.ClipSpec(str(folder)))
    loaded = clip.model.state_dict()
    key = next(k for k, v in checked.items() if v.abs().sum() > 0)
    assert torch.equal(loaded[key].float(), checked[key].float())


def test_only_a_pickle_is_refused(tmp_path: Path) -> None:
    folder = _clip_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "open_clip_pytorch_model.bin")
    assert "safetensors" in (retrieval.unavailable_reason(retrieval.ClipSpec(str(folder))) or "")


# -- item 14: damaged CLIP weights: a note, training goes on ----------------------------------------
def test_damaged_clip_weights_are_a_note_and_training_goes_on(tmp_path: Path, yoc_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import small_random_backbone

    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.personalize.trainer import TrainConfig

    bb = small_random_backbone(tmp_path / "bb", 1)  # draws, and tells Yes from No: an evaluator

    folder = _clip_folder(tmp_path, "open_clip_model.safetensors")
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    monkeypatch.setenv("YOC_CLIP_MODEL", str(folder))
    with Library.open() as lib:
        add_concept_from_paths(lib, photos(tmp_path / "bo", 4), "bo")  # 4: one is held out
        lib.add_pool_images(photos(tmp_path / "pool", 8, start=100))
        outcome = train_concept_job(lib, "bo", backbone=bb, config=TrainConfig(max_steps=1, batch_size=2))
        assert lib.require_concept("bo").status == "ready"
    assert any("CLIP-I skipped" in n and "could not be loaded" in n for n in outcome.notes), outcome.notes
