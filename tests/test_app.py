"""The application layer's run-time policy: one rule for `auto`, one plan for every entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoc_assistant.app import backbones
from yoc_assistant.app.backbones import (
    NOISE_WARNING,
    PRECISION_CHOICES,
    plan_backbone,
    precision_rule,
)
from yoc_assistant.errors import UserInputError

GB = 1_000_000_000
ANOLE = 14_100_000_000


def test_auto_is_fp32_off_the_gpu_and_knows_training_memory() -> None:
    assert precision_rule("cpu", purpose="training", weight_bytes_bf16=ANOLE, free_bytes=None) == "fp32"
    # A 24 GB card holds a 7B in bf16 to answer, not to train (activations ~1.6x the weights).
    assert precision_rule("cuda", purpose="inference", weight_bytes_bf16=ANOLE, free_bytes=24 * GB) == "bf16"
    assert precision_rule("cuda", purpose="training", weight_bytes_bf16=ANOLE, free_bytes=20 * GB) == "int8"
    assert precision_rule("cuda", purpose="training", weight_bytes_bf16=ANOLE, free_bytes=40 * GB) == "bf16"
    # An unknown size is taken for Anole's; no answer from the driver is the safe choice.
    assert precision_rule("cuda", purpose="training", weight_bytes_bf16=None, free_bytes=20 * GB) == "int8"
    assert precision_rule("cuda", purpose="inference", weight_bytes_bf16=ANOLE, free_bytes=None) == "int8"


def test_the_precision_list_is_the_backbones() -> None:
    from yoc_assistant.backbone.loading import PRECISIONS

    assert PRECISION_CHOICES == ("auto", *PRECISIONS)
    with pytest.raises(UserInputError, match="fp16"):
        backbones.auto_precision("fp16", "cpu", purpose="training")
    assert backbones.auto_precision("nf4", "cpu", purpose="training") == "nf4"


def test_plan_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import TINY_ANOLE_A

    monkeypatch.setenv("YOC_BACKBONE", str(TINY_ANOLE_A / "checkpoint"))
    monkeypatch.setenv("YOC_DEVICE", "cpu")
    plan = plan_backbone("training")
    assert (plan.device, plan.precision, plan.is_noise, plan.notes) == ("cpu", "fp32", False, ())
    assert plan.source == str(TINY_ANOLE_A / "checkpoint")
    with pytest.raises(UserInputError, match="unknown device"):
        plan_backbone("inference", device="tpu")


def test_the_noise_backbone_plan_carries_the_warning(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    monkeypatch.setattr(backbones, "TOY_WEIGHTS", tmp_path / "no-toy")
    plan = plan_backbone("inference", device="cpu")
    assert plan.is_noise and plan.notes == (NOISE_WARNING,)
    seen: list[str] = []
    bb = backbones.open_backbone("inference", device="cpu", on_note=seen.append)
    assert seen == [NOISE_WARNING] and bb.precision == "fp32"


def test_bad_yoc_threads_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant import settings

    monkeypatch.setenv("YOC_THREADS", "0")
    with pytest.raises(UserInputError, match="YOC_THREADS must be a whole number >= 1, not '0'"):
        settings.threads()
