"""The quality gate of issue 6: the shipped toy backbone must learn the example concept.

A quick version of `python -m yoc_assistant.toyworld.ablation` (the full variant only,
fewer steps and test photos; seeded, one thread, so the figure repeats): trained on the
5 photos of `concepts/sunny`, the concept must be recognized in new photos of it and
told apart from lookalikes and other things with weighted accuracy >= 0.8.
"""

from __future__ import annotations

import pytest

MIN_RECOGNITION = 0.8


@pytest.mark.slow
def test_example_concept_is_recognized_in_new_photos() -> None:
    from yoc_assistant.toyworld import ablation

    report = ablation.run(ablation.parse_args(["--quick"]))
    full = report["variants"]["full"]
    assert full["recognition"] >= MIN_RECOGNITION, (
        f"the trained example concept is recognized with weighted accuracy "
        f"{full['recognition']:.3f} (positives {full['positive']:.3f}, negatives "
        f"{full['negative']:.3f}); the gate is {MIN_RECOGNITION}")
