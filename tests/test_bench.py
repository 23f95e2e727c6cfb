"""`yoc bench` on the tiny checkpoint: it runs, and its figures are there and sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from yoc_assistant.cli.bench import bench

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_json_has_every_figure() -> None:
    result = CliRunner().invoke(bench, [
        "--backbone", str(CHECKPOINT), "--precision", "fp32", "--device", "cpu", "--threads", "1",
        "--image-tokens", "6", "--text-tokens", "4", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["device"] == "cpu" and data["precision"] == "fp32"
    assert data["image_seq_length"] == 144 and data["compiled_step"] is False
    for key in ("image_cfg", "image_no_cfg"):
        fig = data[key]
        assert fig["tokens"] == 6
        assert fig["ms_per_token"] > 0 and fig["prefill_ms"] > 0
        # extrapolated to a whole image: prefill + 143 decode steps
        expected = fig["prefill_ms"] / 1000 + fig["ms_per_token"] / 1000 * 143
        assert fig["s_per_image"] == pytest.approx(expected, rel=0.01, abs=0.002)
    assert data["image_cfg"]["rows"] == 2 and data["image_no_cfg"]["rows"] == 1
    assert all(v > 0 for v in data["prefill_ms"].values()) and len(data["prefill_ms"]) == 2
    assert data["vq_decode_ms"] > 0
    assert 1 <= data["text"]["tokens"] <= 4 and data["text"]["tokens_per_s"] > 0
    assert data["peak_memory"]["mb"] > 10
    # both decode steps are timed on the CFG figure; the CPU default is the HF-module step
    assert data["fused_step"] is False
    cmp = data["step_compare"]
    assert cmp["unfused"]["ms_per_token"] == data["image_cfg"]["ms_per_token"]
    assert cmp["fused"]["ms_per_token"] > 0 and cmp["fused"]["s_per_image"] > 0
    assert cmp["speedup"] == pytest.approx(cmp["unfused"]["ms_per_token"] / cmp["fused"]["ms_per_token"],
                                           rel=0.01)
    # SJD, the sequential loop and transformers' generate() on the same CFG image, one run
    dec = data["decoding_compare"]
    assert dec["tokens"] == 6 and dec["sequential"]["seconds"] == data["image_cfg"]["seconds"]
    assert dec["generate"]["passes_per_token"] == 2.0 and dec["sequential"]["passes_per_token"] == 1.0
    assert 0 < dec["sjd"]["passes_per_token"] <= 1.0
    assert dec["sjd_vs_generate"] == pytest.approx(dec["sjd"]["seconds"] / dec["generate"]["seconds"], rel=0.01)
    assert dec["sjd_vs_sequential"] == pytest.approx(dec["sjd"]["seconds"] / dec["sequential"]["seconds"], rel=0.01)
    eight = data["eight_bit"]
    assert eight["precision"] == "int8wo" and eight["sequential"]["ms_per_token"] > 0


def test_bench_with_the_fused_step_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_FUSED", "1")
    result = CliRunner().invoke(bench, [
        "--backbone", str(CHECKPOINT), "--precision", "fp32", "--device", "cpu", "--threads", "1",
        "--image-tokens", "4", "--text-tokens", "2", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fused_step"] is True
    assert data["step_compare"]["fused"]["ms_per_token"] == data["image_cfg"]["ms_per_token"]


def test_bench_table() -> None:
    result = CliRunner().invoke(bench, [
        "--backbone", str(CHECKPOINT), "--precision", "fp32", "--device", "cpu", "--threads", "1",
        "--image-tokens", "4", "--text-tokens", "2", "--quiet"], env={"COLUMNS": "200"})  # no wrapping
    assert result.exit_code == 0, result.output
    for label in ("ms / image token", "s / image (144 tokens)", "tokens/s", "peak memory", "prefill",
                  "fused vs HF-module step", "HF modules", "passes / image", "SJD / sequential / generate()",
                  "int8wo"):
        assert label in result.stdout


def test_bench_missing_backbone_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, ["--backbone", str(tmp_path / "nope"), "--json"])
    assert result.exit_code != 0
    assert "nope" in str(result.exception)


def test_bench_synthetic_model_of_the_real_vocabulary() -> None:
    result = CliRunner().invoke(bench, [
        "--synthetic", "small", "--precision", "fp32", "--device", "cpu", "--threads", "1",
        "--image-tokens", "3", "--text-tokens", "2", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["image_seq_length"] == 1024 and data["vq_decode_ms"] is None
    assert data["backbone"].startswith("synthetic small")
    assert data["image_cfg"]["ms_per_token"] > 0
