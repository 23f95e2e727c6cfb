"""The photo witness (`personalize.witness`): a yes/no about a photo is decided by the
concept's margin plus its reference photo's, asked under a fresh identifier; only where the
checkpoint says so, only for concepts with a reference photo, only for requests with a photo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from yoc_assistant.assistant import PluginManager, Request
from yoc_assistant.assistant.router import Router
from yoc_assistant.backbone.generation import decide_first
from yoc_assistant.backbone.loading import photo_witness_of
from yoc_assistant.personalize import evaluate as E
from yoc_assistant.personalize import selfcheck
from yoc_assistant.personalize import witness as W
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

TOY = Path(__file__).resolve().parent.parent / "yoc_assistant" / "toyworld" / "weights" / "backbone"
SUNNY = Path(__file__).resolve().parent.parent / "concepts" / "sunny"
QUESTION = "Is {name} in this photo?"


@pytest.fixture(scope="module")
def toy():
    from yoc_assistant.backbone import Backbone

    return Backbone.load(str(TOY), precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    images = [Image.open(p).convert("RGB") for p in sorted(SUNNY.glob("photo-*.png"))]
    return images + [Image.open(p).convert("RGB") for p in sorted((SUNNY / "others").glob("*.png"))]


@pytest.fixture(scope="module")
def rows(toy, photos) -> list[list[int]]:
    return [r.tolist() for r in toy.encode_images(photos)]


def concepts(bb, reference: list[int] | None, *more: str) -> ConceptSet:  # noqa: ANN001
    vecs = [ConceptVectors.initialize(bb, name, seed=k + 1) for k, name in enumerate(("sunny", *more))]
    if reference is not None:
        vecs = [ConceptVectors(v.name, v.groups, v.input_rows, v.output_rows, v.metadata, list(reference))
                for v in vecs]
    return ConceptSet(bb, vecs)


def test_decide_first_rescores_decisions_only() -> None:
    yes, no, other = 1, 2, 3
    logits = torch.full((3, 5), -5.0)
    logits[0, yes], logits[0, no] = 2.0, 1.0  # a Yes by 1 nat; the offset turns it to No
    logits[1, other], logits[1, yes] = 3.0, 1.0  # not a decision: no offset makes it one
    logits[2, no], logits[2, yes] = 2.0, 0.0  # a No that a small offset leaves alone
    bias = torch.tensor([[-1.5, 0.0], [10.0, 0.0], [1.0, 0.0]])
    assert decide_first(logits, [yes, no], bias).tolist() == [no, other, no]
    assert decide_first(logits, [yes, no]).tolist() == [yes, other, no]
    with pytest.raises(ValueError, match="shape"):
        decide_first(logits, [yes, no], torch.zeros(3, 3))


def test_the_weight_is_the_checkpoints(toy, tmp_path: Path) -> None:
    assert W.weight_of(toy) == 1.0  # the toy backbone's, measured (docs/toyworld.md)
    for value, expected in ((2.5, 2.5), (0, 0.0), (-1, 0.0), ("1", 0.0), (True, 0.0), (None, 0.0)):
        (tmp_path / "config.json").write_text(json.dumps({"yoc_photo_witness": value}))
        assert photo_witness_of(tmp_path) == expected, value
    (tmp_path / "config.json").write_text("{}")
    assert photo_witness_of(tmp_path) == 0.0


def test_a_definition_is_the_reference_photo_under_a_fresh_identifier(toy, rows) -> None:
    cs = concepts(toy, rows[0], "other")
    defined = W.definitions(toy, cs, ["sunny", "other"])
    for name in ("sunny", "other"):
        vec = defined.get(name)
        assert vec.n_rows == 1 and vec.groups == {} and vec.reference == rows[0]
        ident = defined.identifier_id(name)
        assert defined.prompt_ids(name) == [ident, *toy.tokenize(" is"), int(toy.special.boi), *rows[0],
                                            int(toy.special.eoi), *toy.tokenize(".")]
    # untrained: every definition starts from the same row, not from the concept's own
    first, second = defined.extra.input_rows
    assert torch.equal(first, second)
    assert not torch.equal(first, cs.get("sunny").input_rows[0])
    assert W.definitions(toy, concepts(toy, None), ["sunny"]) is None  # no reference photo
    assert W.definitions(toy, cs, []) is None


def test_the_witness_prompt_is_the_request_asked_of_the_definitions(toy, rows, photos) -> None:
    cs = concepts(toy, rows[0], "other")
    router = Router(toy, PluginManager())
    request = Request("Is <sunny> with <other> here? is it <sunny>?", images=[photos[3]])
    names = ["sunny", "other"]
    defined = W.definitions(toy, cs, names)
    prompt = router.build_prompt(request, cs)
    assert W.swap_prompt(prompt, cs, defined, names) == router.build_prompt(request, defined)
    witness = W.for_request(toy, prompt, cs, names, has_photo=True)
    assert witness is not None and witness.weight == 1.0
    assert witness.prompt_ids == router.build_prompt(request, defined)
    # the eval-side layout is the same prompt
    one = Request("Is <sunny> in this photo?", images=[photos[3]])
    assert W.recognition_prompt(toy, W.definitions(toy, cs, ["sunny"]), "sunny", rows[3], QUESTION) == \
        router.build_prompt(one, W.definitions(toy, cs, ["sunny"]))


def test_no_witness_without_a_photo_a_reference_or_a_weight(toy, rows, photos) -> None:
    with_ref, without = concepts(toy, rows[0]), concepts(toy, None)
    prompt = Router(toy, PluginManager()).build_prompt(Request("Is <sunny> here?", images=[photos[2]]), with_ref)
    assert W.for_request(toy, prompt, with_ref, ["sunny"], has_photo=False) is None
    assert W.for_request(toy, prompt, with_ref, ["sunny"], has_photo=True, weight=0.0) is None
    assert W.for_request(toy, prompt, without, ["sunny"], has_photo=True) is None
    assert W.recognition_margins(toy, without, "sunny", rows, QUESTION) is None
    assert W.recognition_margins(toy, with_ref, "sunny", rows, QUESTION, weight=0.0) is None


def test_the_witness_margin_is_the_definition_prompts_yes_over_no(toy, rows) -> None:
    cs = concepts(toy, rows[0])
    defined = W.definitions(toy, cs, ["sunny"])
    prompts = [W.recognition_prompt(toy, defined, "sunny", r, QUESTION) for r in rows]
    plain = selfcheck.yes_margins(toy, prompts, defined.extra)
    assert torch.allclose(W.recognition_margins(toy, cs, "sunny", rows, QUESTION, weight=2.0), 2.0 * plain)
    witness = W.Witness(prompts[1], defined.extra, 0.5)
    assert witness.yes_no_bias(toy) == pytest.approx([0.5 * float(plain[1]), 0.0], abs=1e-4)


def test_said_yes_and_the_self_check_add_the_witness(toy, rows) -> None:
    from yoc_assistant.backbone.generation import text_decision
    from yoc_assistant.personalize.data import answer_first_token

    cs = concepts(toy, rows[0])
    prompts = [E.forced_recognition_prompt(toy, cs, "sunny", r, QUESTION) for r in rows]
    logits = E._last_logits(toy, prompts, cs.extra)
    yes, no = answer_first_token(toy, True), answer_first_token(toy, False)
    first = text_decision(toy, logits, cs.extra, [cs.identifier_id("sunny")])
    # the witness counts only where the answer starts with Yes or No (the answers of a
    # trained concept; tests/test_eval_ask_agreement.py has one whose answers it changes)
    margins = W.recognition_margins(toy, cs, "sunny", rows, QUESTION)
    decided = [(bool(logits[k, yes] + margins[k] > logits[k, no]) if int(first[k]) in (yes, no)
                else int(first[k]) == yes) for k in range(len(rows))]
    assert E.said_yes(toy, cs, "sunny", prompts, margins) == decided
    concept_margin = logits[:, yes] - logits[:, no]
    scores = selfcheck.concept_check(toy, cs, ["sunny"])(torch.tensor(rows))
    assert torch.allclose(scores, concept_margin + margins, atol=1e-4)


def test_the_applied_weight_needs_every_reference(toy, rows) -> None:
    with_ref, without = concepts(toy, rows[0], "other"), concepts(toy, None, "other")
    assert W.applied_weight(toy, with_ref, ["sunny", "other"]) == 1.0
    assert W.applied_weight(toy, without, ["sunny"]) == 0.0
    assert W.applied_weight(toy, with_ref, []) == 0.0
