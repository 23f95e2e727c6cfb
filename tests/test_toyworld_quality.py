"""The quality gate on the example concept: the shipped toy backbone must learn it, and
its own first answer token must route requests phrased in ways it was never trained on.

`python -m yoc_assistant.toyworld.ablation --quick` (the full variant, `yoc train`'s recipe,
no drawings; seeded, one thread, so the figures repeat) at two seeds, in two processes at
once: trained on the 5
photos of `concepts/sunny` (and their mirror images), the concept is asked "Is <sunny> in
this photo?" exactly as `yoc ask` asks it about 40 new photos of it and 40 negatives
(half of them the same dotted orange star with another accent), and held-out request
phrasings go through yoc's Router. The thresholds sit below the figures measured on the
shipped backbone (docs/toyworld.md) by about two seed-to-seed deviations, so the gate
fails on a real regression, not on noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MIN_RECOGNITION = 0.65
MIN_ROUTING = 0.8
SEEDS = ("0", "1")


def _run_seed(seed: str) -> subprocess.Popen[str]:
    """One seed in its own process (one thread each): the two seeds use both cores of a
    2-core CI machine, which keeps the gate near the time of one seed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOC_TOY_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "yoc_assistant.toyworld.ablation", "--quick",
                             "--seeds", seed, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


@pytest.mark.slow
def test_example_concept_is_recognized_and_routes() -> None:
    from yoc_assistant.toyworld import ablation

    jobs = [_run_seed(seed) for seed in SEEDS]
    runs = []
    for seed, job in zip(SEEDS, jobs, strict=True):
        out, err = job.communicate(timeout=900)
        assert job.returncode == 0, f"seed {seed}: the harness failed: {err[-2000:]}"
        runs += json.loads(out)["runs"]
    full = {k: mean for k, (mean, _sd, _n) in ablation.summarize(runs)["full"].items()}
    shown = "; ".join(f"seed {r['seed']}: {r['variants']['full']['recognition']:.3f}" for r in runs)
    assert full["recognition"] >= MIN_RECOGNITION, (
        f"the trained example concept is recognized with weighted accuracy "
        f"{full['recognition']:.3f} on average ({shown}); the gate is {MIN_RECOGNITION}")
    for key in ("routing_text", "routing_image"):
        assert full[key] >= MIN_ROUTING, f"{key} {full[key]:.3f} < {MIN_ROUTING}"
