"""`yoc eval` measures what `yoc ask` answers: recognition is one prompt layout and one
decision (the text modality's greedy first token), so on the same photos the two say
the same yes/no, and yes/no answers through `ask` are greedy (repeatable whatever the seed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from assistant_helpers import make_ready_concept
from PIL import Image

from yoc_assistant.assistant import Assistant, PluginManager, Request
from yoc_assistant.library.core import Library
from yoc_assistant.personalize import evaluate as E
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "yoc_assistant" / "toyworld" / "weights" / "backbone"
SUNNY = ROOT / "concepts" / "sunny"


@pytest.fixture(scope="module")
def toy():
    from yoc_assistant.backbone import Backbone

    return Backbone.load(str(TOY), precision="fp32", device="cpu")


def _photos() -> tuple[list[Image.Image], list[Image.Image]]:
    pos = [Image.open(p).convert("RGB") for p in sorted(SUNNY.glob("photo-*.png"))]
    pos += [Image.open(p).convert("RGB") for p in sorted((SUNNY / "held-out").glob("*.png"))[:3]]
    neg = [Image.open(p).convert("RGB") for p in sorted((SUNNY / "others").glob("*.png"))]
    return pos, neg


def _briefly_trained(toy, photos, negatives, photo_words):
    import random

    from yoc_assistant.personalize.data import BuildContext, recognition_examples
    from yoc_assistant.personalize.trainer import TrainConfig, train_concept

    pos = [r.tolist() for r in toy.encode_images(photos)]
    neg = [r.tolist() for r in toy.encode_images(negatives[:3])]
    vec = ConceptVectors.initialize(toy, "sunny", seed=3, words=photo_words(toy, pos))
    ctx = BuildContext.from_concepts(toy, ConceptSet(toy, [vec]), "sunny", positives=pos, hard_negatives=neg,
                                     rng=random.Random(0))
    config = TrainConfig(max_steps=150, lr=2e-3, batch_size=4, precision="fp32", checkpoint_every=10**6)
    return train_concept(toy, vec, recognition_examples(ctx), config).vectors


@pytest.fixture(scope="module")
def trained(toy) -> ConceptVectors:
    """A concept trained a little (recognition only), so that it answers both yes and no
    (an all-"no" concept would agree trivially)."""
    from yoc_assistant.personalize.describe import photo_words

    pos, neg = _photos()
    return _briefly_trained(toy, pos[:5], neg, photo_words)


def _ask_and_eval(bb, vec: ConceptVectors, tmp_path: Path) -> tuple[list[bool], dict]:
    """(per photo: `yoc ask`'s yes, the same for both seeds; `yoc eval`'s recognition report)."""
    pos, neg = _photos()
    question = "Is {name} in this photo?"
    with Library.open() as lib:
        make_ready_concept(lib, bb, "sunny", seed=3)
        vec.save(lib.concept_dir("sunny") / "vectors.safetensors", bb)
        concepts = ConceptSet(bb, [vec])
        report = E.recognition_accuracy(bb, concepts, "sunny", pos, neg, question=question)
        assistant = Assistant(bb, lib, PluginManager(), log_path=tmp_path / "r.jsonl",
                              out_dir=tmp_path / "pics")
        asked = []
        for k, image in enumerate(pos + neg):
            for seed in (1, 2):  # sampled answers would differ between seeds; decisions may not
                text = assistant.respond(Request("Is <sunny> in this photo?", images=[image], mode="text",
                                                 seed=seed, max_tokens=12)).text
                asked.append((k, text.strip().lower().startswith("yes")))
    by_photo = {k: [y for j, y in asked if j == k] for k in range(len(pos + neg))}
    assert all(len(set(v)) == 1 for v in by_photo.values()), asked
    return [v[0] for v in by_photo.values()], report


def test_eval_and_ask_say_the_same_on_the_same_photos(toy, trained, tmp_path: Path) -> None:
    pos, neg = _photos()
    concepts = ConceptSet(toy, [trained])
    question = "Is {name} in this photo?"
    prompts = [E.forced_recognition_prompt(toy, concepts, "sunny", row.tolist(), question)
               for row in toy.encode_images(pos + neg)]
    evaluated = E.said_yes(toy, concepts, "sunny", prompts)
    asked, report = _ask_and_eval(toy, trained, tmp_path)
    assert asked == evaluated
    assert 0 < sum(evaluated) < len(evaluated), "the test needs both answers to mean anything"
    # and the accuracy `yoc eval` reports is computed from exactly these decisions
    assert report["positive"] == sum(evaluated[:len(pos)]) / len(pos)
    assert report["negative"] == sum(not y for y in evaluated[len(pos):]) / len(neg)


def _toy_with(tmp_path: Path, **settings: object):  # noqa: ANN202
    """The shipped toy backbone with other `yoc_*` settings in its config.json (a copy of
    links to its files)."""
    import json

    from yoc_assistant.backbone import Backbone

    folder = tmp_path / "toy"
    folder.mkdir()
    for f in TOY.iterdir():
        (folder / f.name).symlink_to(f)
    config = json.loads((TOY / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({**config, **settings}))
    return Backbone.load(str(folder), precision="fp32", device="cpu")


def test_eval_and_ask_agree_with_the_photo_witness(toy, trained, tmp_path: Path) -> None:
    """With a reference photo and a checkpoint that weighs the witness (here heavily, so
    that it changes answers), `yoc ask` and `yoc eval` still decide alike, and both
    decide by the summed margins (`personalize/witness.py`)."""
    import dataclasses

    from yoc_assistant.personalize.witness import recognition_margins

    heavy = _toy_with(tmp_path, yoc_photo_witness=3.0)
    pos, neg = _photos()
    rows = [r.tolist() for r in heavy.encode_images(pos + neg)]
    vec = dataclasses.replace(trained, reference=rows[0])
    concepts = ConceptSet(heavy, [vec])
    question = "Is {name} in this photo?"
    prompts = [E.forced_recognition_prompt(heavy, concepts, "sunny", r, question) for r in rows]
    margins = recognition_margins(heavy, concepts, "sunny", rows, question)
    assert margins is not None
    alone = E.said_yes(heavy, concepts, "sunny", prompts)
    witnessed = E.said_yes(heavy, concepts, "sunny", prompts, margins)
    assert alone != witnessed, "the witness should change an answer here, or the test shows nothing"
    asked, report = _ask_and_eval(heavy, vec, tmp_path)
    assert asked == witnessed
    assert report["positive"] == sum(witnessed[:len(pos)]) / len(pos)
    assert report["negative"] == sum(not y for y in witnessed[len(pos):]) / len(neg)


def test_eval_and_ask_agree_with_the_description_veto(toy, trained, tmp_path: Path) -> None:
    """A concept whose description says it is something else (here: a plain pink
    triangle, for an orange star) has its own photos vetoed; `yoc ask` and `yoc eval`
    veto alike, from the description the concept file keeps."""
    import dataclasses

    from yoc_assistant.personalize import witness as W

    bb = _toy_with(tmp_path, yoc_description_veto=0.0)
    pos, neg = _photos()
    rows = [r.tolist() for r in bb.encode_images(pos + neg)]
    plain = dataclasses.replace(trained, reference=rows[0], photos=rows[:5], metadata=dict(trained.metadata))
    vec = plain.clone()
    W.describe(vec, "colour: pink\nsunny is a plain pink triangle.\nsunny was a gift.")
    assert vec.metadata[W.DESCRIPTION] == "a plain pink triangle"
    question = "Is {name} in this photo?"
    concepts = ConceptSet(bb, [vec])
    prompts = [E.forced_recognition_prompt(bb, concepts, "sunny", r, question) for r in rows]
    vetoed = E.said_yes(bb, concepts, "sunny", prompts, W.recognition_margins(bb, concepts, "sunny", rows, question))
    unvetoed = E.said_yes(bb, ConceptSet(bb, [plain]), "sunny", prompts,
                          W.recognition_margins(bb, ConceptSet(bb, [plain]), "sunny", rows, question))
    assert sum(vetoed[:len(pos)]) < sum(unvetoed[:len(pos)]), "the wrong description should veto its own photos"
    assert all(u or not v for v, u in zip(vetoed, unvetoed, strict=True))  # a veto only ever says No
    asked, report = _ask_and_eval(bb, vec, tmp_path)
    assert asked == vetoed
    assert report["positive"] == sum(vetoed[:len(pos)]) / len(pos)
