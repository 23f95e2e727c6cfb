"""Two concepts in one request: the prompt holds both concepts' prompts and identifiers
(the router's layout), answers are scored by what they name, pictures judged by halves."""

from __future__ import annotations

import numpy as np
from assistant_helpers import tiny_backbone
from PIL import Image

from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
from yoc_assistant.toyworld import pairs, world


def test_a_request_with_two_concepts_holds_both_prompts() -> None:
    bb = tiny_backbone()
    cs = ConceptSet(bb, [ConceptVectors.initialize(bb, "a", seed=1), ConceptVectors.initialize(bb, "b", seed=2)])
    image = world.render(world.random_scenes(1, seed=0)[0])
    prompt = pairs._prompt(bb, cs, "Are <a> and <b> both here?", image)
    for name in ("a", "b"):
        p = cs.prompt_ids(name)
        assert any(prompt[i:i + len(p)] == p for i in range(len(prompt))), name
        assert prompt.count(cs.identifier_id(name)) == 2  # in its own prompt and in the question
    assert prompt[-1] == bb.special.sep  # the router's prompt; the answer forces a group after it
    assert bb.special.boi in prompt


def test_which_answers_must_name_exactly_what_is_shown() -> None:
    right = pairs._names_right
    assert right("<a> is in this photo.", True, False)
    assert not right("<a> is in this photo.", False, True)
    assert not right("<a> and <b> ...", True, False)
    assert right("both are in this photo.", True, True)
    assert right("neither is in this photo.", False, False)
    assert not right("both are in this photo.", False, False)


def test_pictures_of_two_things_are_judged_by_halves() -> None:
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.toyworld.common import JUDGE_DIR

    a, b = world.Thing("square", "red", "plain", "cyan"), world.Thing("circle", "yellow", "striped", "ink")
    rng = np.random.default_rng(3)
    scene = world.random_pair_scene(rng, a, b)
    halves = pairs._halves(world.render(scene))
    assert all(isinstance(h, Image.Image) and h.size == (world.SIZE, world.SIZE) for h in halves)
    seen = ToyJudge.load(JUDGE_DIR).attributes(halves)
    assert {(x["shape"], x["colour"]) for x in seen} == {("square", "red"), ("circle", "yellow")}
