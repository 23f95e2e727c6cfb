"""The quality harness runs for any instance (not only the example), with every baseline,
negatives by kind, and mean ± sd over seeds."""

from __future__ import annotations

from yoc_assistant.toyworld import ablation, world


def test_harness_on_a_non_example_instance(tmp_path) -> None:  # noqa: ANN001
    args = ablation.parse_args(["--thing", "striped blue heart", "--instance", "mint", "--seeds", "0", "1",
                                "--variants", "text-prompt", "image-prompt", "full", "--steps", "3",
                                "--n-test", "8", "--pool", "30", "--images", "1",
                                "--save-concepts", str(tmp_path / "concepts")])
    report = ablation.run(args)
    assert [r["thing"] for r in report["runs"]] == ["striped blue heart, mint accent"] * 2
    full = report["summary"]["full"]
    assert full["recognition"]["n"] == 2 and full["recognition"]["sd"] >= 0
    for key in ("negative_same", "negative_near", "negative_far", "instance_similarity", "drawn_right",
                "clip_i", "qa", "routing_text", "routing_image",
                "instance_similarity_unchecked", "clip_i_unchecked"):  # drawn as yoc draw draws, and plain
        assert key in full, key
    assert report["settings"]["candidates"] > 1  # the shipped backbone's self-check default
    assert "routing_text" not in report["summary"]["text-prompt"]  # no concept, no router choice
    # the full variant answers with the photo witness (the toy backbone weighs it) and says
    # what the concept alone answered; the baselines have no reference photo to witness
    assert "recognition_unwitnessed" in full and "negative_same_unwitnessed" in full
    assert "recognition_unwitnessed" not in report["summary"]["image-prompt"]
    saved = sorted(p.name for p in (tmp_path / "concepts").iterdir())
    assert saved == [f"striped-blue-heart-mint-accent-seed{s}-full.safetensors" for s in (0, 1)]
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


def test_variants_train_on_what_yoc_train_trains_on() -> None:
    """The harness's training set is the product's: every installed modality's examples and
    its router targets (measured without them, routing described another product)."""
    from yoc_assistant.app.plugins import load_plugins
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip
    from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR

    bb = Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")
    thing = world.Thing("heart", "blue", "striped", "mint")
    bench = ablation.make_bench(bb, load_clip(ClipSpec(str(CLIP_DIR))), thing, n_test=2, n_pool=30, seed=0,
                                hard_negatives="after-soft")
    vec, examples, stand_ins = ablation.variant_examples(bb, "full", bench, ablation.default_recipe(bb), 0)
    modalities = load_plugins().get_modalities()
    assert dict(vec.groups) == {m.group: m.group_size for m in modalities}
    tasks = {ex.task for ex in examples}
    for m in modalities:
        if m.example_requests:
            assert f"{m.group}-requests" in tasks, tasks
    assert {"recognition", "generation", "pair"} <= tasks
    routed = [sum(ex.task == f"{m.group}-requests" for ex in examples) for m in modalities if m.example_requests]
    assert len(set(routed)) == 1, routed  # as many router targets for every modality
    _, shared, _ = ablation.variant_examples(bb, "shared-prompt", bench, ablation.default_recipe(bb), 0)
    from yoc_assistant.personalize.concept import ConceptSet

    cs = ConceptSet(bb, [vec])
    groups = {t for g in vec.groups for t in cs.group_ids(ablation.NAME, g)}
    assert shared and all(any(lab != -100 for lab in ex.labels) for ex in shared)  # trainable
    assert not any(t in groups for ex in shared for t in ex.labels)  # no self-prompting targets
    assert not any(ex.task.endswith("-requests") for ex in shared)
    assert stand_ins and all(s.groups == vec.groups for s in stand_ins)
