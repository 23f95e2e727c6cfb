"""The quality harness runs for any instance (not only the example), with every baseline,
negatives by kind, and mean ± sd over seeds."""

from __future__ import annotations

from yoc_assistant.toyworld import ablation, world


def test_harness_on_a_non_example_instance() -> None:
    args = ablation.parse_args(["--thing", "striped blue heart", "--instance", "mint", "--seeds", "0", "1",
                                "--variants", "text-prompt", "image-prompt", "full", "--steps", "3",
                                "--n-test", "8", "--pool", "30", "--images", "1"])
    report = ablation.run(args)
    assert [r["thing"] for r in report["runs"]] == ["striped blue heart, mint accent"] * 2
    full = report["summary"]["full"]
    assert full["recognition"]["n"] == 2 and full["recognition"]["sd"] >= 0
    for key in ("negative_same", "negative_near", "negative_far", "instance_similarity", "drawn_right",
                "clip_i", "qa", "routing_text", "routing_image"):
        assert key in full, key
    assert "routing_text" not in report["summary"]["text-prompt"]  # no concept, no router choice
    table = ablation.table({v: {k: (d["mean"], d["sd"], d["n"]) for k, d in row.items()}
                            for v, row in report["summary"].items()})
    assert "| image-prompt |" in table and " ± " in table


def test_half_the_negatives_are_the_same_named_thing() -> None:
    import numpy as np

    thing = world.Thing("cross", "yellow", "dotted", "ink")
    neg = ablation.negatives(thing, 40, np.random.default_rng(0))
    assert len(neg["same"]) == 20 and len(neg["near"]) + len(neg["far"]) == 20
    assert all(s.thing.kind() == thing.kind() and s.thing != thing for s in neg["same"])
    assert all(s.thing.distance(thing) == 1 for s in neg["near"])
