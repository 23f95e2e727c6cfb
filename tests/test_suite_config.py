"""The suite's own configuration: `make test` must leave the quality gate out.

A marker that is only registered deselects nothing; this checks that the default run
really deselects the `slow` tests and that `-m slow` (what `make test-quality` runs)
still collects them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE = "tests/test_toyworld_quality.py"


def _collect(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args, GATE],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_default_run_deselects_the_quality_gate() -> None:
    out = _collect()
    assert "1 deselected" in out, out
    assert "test_example_concept_is_recognized_and_routes" not in out, out


def test_quality_target_collects_the_gate() -> None:
    out = _collect("-m", "slow")
    assert "test_example_concept_is_recognized_and_routes" in out, out
    assert "deselected" not in out, out
