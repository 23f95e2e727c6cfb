"""The quality gate of issue 6: the shipped toy backbone must learn the example concept.

`python -m yoc_assistant.toyworld.ablation --quick` (the full variant as measured in
docs/toyworld.md, without its drawings; seeded, one thread, so the figure repeats) at
two seeds: trained on the 5 photos of `concepts/sunny` (and their mirror images), the
concept must be recognized in 40 new photos of it and told apart from 20 lookalikes
one attribute away and 20 other things with weighted accuracy >= 0.8 on average.
Two seeds (two test sets, two trainings), because one answer of 80 moves one run by
0.0125 and the measured runs sit at 0.80-0.85.
"""

from __future__ import annotations

import pytest

MIN_RECOGNITION = 0.8
SEEDS = (0, 1)


@pytest.mark.slow
def test_example_concept_is_recognized_in_new_photos() -> None:
    from yoc_assistant.toyworld import ablation

    runs = [ablation.run(ablation.parse_args(["--quick", "--seed", str(s)]))["variants"]["full"]
            for s in SEEDS]
    mean = sum(r["recognition"] for r in runs) / len(runs)
    shown = "; ".join(f"seed {s}: {r['recognition']:.3f} (positives {r['positive']:.3f}, "
                      f"negatives {r['negative']:.3f})" for s, r in zip(SEEDS, runs, strict=True))
    assert mean >= MIN_RECOGNITION, (
        f"the trained example concept is recognized with weighted accuracy {mean:.3f} "
        f"on average ({shown}); the gate is {MIN_RECOGNITION}")
