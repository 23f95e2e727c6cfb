"""Instance judges: DINOv2 through transformers (a tiny random config here; the real
one only from a local folder or the HF cache) and the toy judge's failure notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoc_assistant.personalize.judge import (
    DinoJudge,
    JudgeUnavailable,
    ToyJudge,
    drawn_right,
    instance_similarity,
)


def _pil(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    folder = tmp_path_factory.mktemp("dino") / "tiny-dinov2"
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_dino_judge_embeds_and_scores_on_a_tiny_config(tiny_dino: Path) -> None:
    judge = DinoJudge.load(str(tiny_dino))
    emb = judge.embed([_pil(1), _pil(2), _pil(1)])
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(emb[0] @ emb[2]) == pytest.approx(1.0, abs=1e-5)  # same picture, same vector
    same = instance_similarity(judge, [_pil(1)], [_pil(1)])
    other = instance_similarity(judge, [_pil(1)], [_pil(7)])
    assert same == pytest.approx(1.0, abs=1e-5) and other < same


def test_missing_dino_is_a_clear_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(JudgeUnavailable, match="yoc pull"):
        DinoJudge.load("facebook/dinov2-small")


def test_damaged_toy_judge_is_a_clear_note(tmp_path: Path) -> None:
    with pytest.raises(JudgeUnavailable, match="no instance judge"):
        ToyJudge.load(tmp_path)
    (tmp_path / "judge_config.json").write_text("{not json")
    (tmp_path / "judge.safetensors").write_bytes(b"junk")
    with pytest.raises(JudgeUnavailable, match="unreadable"):
        ToyJudge.load(tmp_path)


def test_eval_reports_the_judge_or_says_why_not(tiny_dino: Path) -> None:
    from yoc_assistant.personalize.evaluate import _judge_scores

    report: dict = {"skipped": {}}
    _judge_scores(report, DinoJudge.load(str(tiny_dino)), None, [_pil(1), _pil(2)], [_pil(1)])
    assert 0.0 < report["dino"] <= 1.0
    missing: dict = {"skipped": {}}
    _judge_scores(missing, None, "no DINOv2 model here", [_pil(1)], [_pil(1)])
    assert missing["skipped"]["dino"] == "no DINOv2 model here" and "dino" not in missing


def test_drawn_right_needs_the_exact_instance() -> None:
    from yoc_assistant.toyworld import world
    from yoc_assistant.toyworld.common import JUDGE_DIR

    judge = ToyJudge.load(JUDGE_DIR)
    thing = world.Thing("heart", "blue", "striped", "mint")
    real = [world.render(s) for s in world.photos_of(thing, 4, seed=3)]
    assert drawn_right(judge, [world.render(s) for s in world.photos_of(thing, 4, seed=4)], real) >= 0.75
    other = world.same_named(thing)[1]
    assert drawn_right(judge, [world.render(s) for s in world.photos_of(other, 4, seed=5)], real) <= 0.25
