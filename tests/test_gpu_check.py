"""scripts/gpu-check's plumbing on the CPU: sections that would not fit are skipped and
say so, and the figures replace the block between the markers of the doc (once)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_with_no_time_skips_sections_and_replaces_the_block(tmp_path: Path) -> None:
    gpu_check = load_script()
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Perf\n\nbefore\n\n{gpu_check.BEGIN}\nold figures\n{gpu_check.END}\n\nafter\n")
    out = tmp_path / "figures.json"
    for _ in range(2):  # twice: the block is replaced, not appended
        assert gpu_check.main(["--dry-run", "--budget", "1", "--doc", str(doc), "--json", str(out)]) == 0
    text = doc.read_text()
    assert text.count(gpu_check.BEGIN) == 1 and text.count(gpu_check.END) == 1
    assert "old figures" not in text and text.startswith("# Perf\n\nbefore") and text.rstrip().endswith("after")
    assert "GPU check: CPU" in text and "(dry run)" in text
    report = json.loads(out.read_text())
    for name in ("pytest_gpu", "images_bf16", "training_bf16", "images_int8wo", "training_int8_nf4"):
        assert "skipped" in report[name], name
        assert f"- {name}: needs" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_real_run_refuses(tmp_path: Path) -> None:
    gpu_check = load_script()
    assert gpu_check.main(["--doc", str(tmp_path / "p.md")]) == 2
    assert not (tmp_path / "p.md").exists()
