"""The quality gate on the example concept: the shipped toy backbone must learn it, and
its own first answer token must route requests phrased in ways it was never trained on.

`python -m yoc_assistant.toyworld.ablation --quick` (the full variant, `yoc train`'s recipe,
no drawings; seeded, one thread, so the figures repeat) at two seeds: trained on the 5
photos of `concepts/sunny` (and their mirror images), the concept is asked "Is <sunny> in
this photo?" exactly as `yoc ask` asks it about 40 new photos of it and 40 negatives
(half of them the same dotted orange star with another accent), and held-out request
phrasings go through yoc's Router. The thresholds sit below the figures measured on the
shipped backbone (docs/toyworld.md) by about two seed-to-seed deviations, so the gate
fails on a real regression, not on noise.
"""

from __future__ import annotations

import pytest

MIN_RECOGNITION = 0.55
MIN_ROUTING = 0.6
SEEDS = ("0", "1")


@pytest.mark.slow
def test_example_concept_is_recognized_and_routes() -> None:
    from yoc_assistant.toyworld import ablation

    report = ablation.run(ablation.parse_args(["--quick", "--seeds", *SEEDS]))
    full = report["summary"]["full"]
    shown = "; ".join(f"seed {r['seed']}: {r['variants']['full']['recognition']:.3f}" for r in report["runs"])
    assert full["recognition"]["mean"] >= MIN_RECOGNITION, (
        f"the trained example concept is recognized with weighted accuracy "
        f"{full['recognition']['mean']:.3f} on average ({shown}); the gate is {MIN_RECOGNITION}")
    for key in ("routing_text", "routing_image"):
        assert full[key]["mean"] >= MIN_ROUTING, f"{key} {full[key]['mean']:.3f} < {MIN_ROUTING}"
