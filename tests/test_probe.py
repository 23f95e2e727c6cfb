"""The instance diagnostics run on the shipped toy backbone and report what they claim."""

from __future__ import annotations

import torch

from yoc_assistant.toyworld import probe


def test_linear_probe_reads_a_separable_feature_and_not_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=gen)
    x = torch.randn(400, 8, generator=gen)
    assert probe.linear_probe(torch.cat([x, torch.nn.functional.one_hot(y, 4).float()], 1), y, 300) > 0.95
    assert probe.linear_probe(x, y, 300) < 0.45


def test_token_stability_on_the_shipped_backbone() -> None:
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.toyworld.common import BACKBONE_DIR, JUDGE_DIR

    bb = Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")
    report = probe.token_stability(bb, ToyJudge.load(JUDGE_DIR), n=3)
    assert report["scenes"] == 3 and report["tokens"] == 64
    assert 0 < report["tokens_changed_mean"] <= 64 and 0 < report["pixels_changed_mean"] < 32 * 32
    assert 0 <= report["accent_read_after_round_trip"] <= 1
