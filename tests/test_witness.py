"""The photo witness (`personalize.witness`): a yes/no about a photo is decided by the
concept's margin plus the mean margin of its photos, each asked under a fresh identifier;
only where the checkpoint says so, only for concepts with photos, only for requests with a
photo."""

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


def concepts(bb, reference: list[int] | None, *more: str,  # noqa: ANN001
             photos: dict[str, list[list[int]]] | None = None) -> ConceptSet:
    vecs = [ConceptVectors.initialize(bb, name, seed=k + 1) for k, name in enumerate(("sunny", *more))]
    if reference is not None:
        vecs = [ConceptVectors(v.name, v.groups, v.input_rows, v.output_rows, v.metadata, list(reference),
                               (photos or {}).get(v.name, [])) for v in vecs]
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
    sets = W.definitions(toy, cs, ["sunny", "other"])
    assert len(sets) == 1  # no training photos kept: the reference alone
    defined = sets[0]
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


def test_one_definition_per_training_photo(toy, rows) -> None:
    """A concept that keeps its training photos is defined by each in turn; a concept
    with fewer photos asked beside it starts its own again."""
    cs = concepts(toy, rows[0], "other", photos={"sunny": rows[:3], "other": [rows[5], rows[6]]})
    sets = W.definitions(toy, cs, ["sunny", "other"])
    assert [d.get("sunny").reference for d in sets] == rows[:3]
    assert [d.get("other").reference for d in sets] == [rows[5], rows[6], rows[5]]
    assert all(torch.equal(d.extra.input_rows, sets[0].extra.input_rows) for d in sets)  # one extra serves all
    assert W.photos_of(cs.get("sunny")) == rows[:3]
    assert W.photos_of(concepts(toy, rows[1]).get("sunny")) == [rows[1]]
    assert W.photos_of(concepts(toy, None).get("sunny")) == []


def test_the_witness_prompt_is_the_request_asked_of_the_definitions(toy, rows, photos) -> None:
    cs = concepts(toy, rows[0], "other")
    router = Router(toy, PluginManager())
    request = Request("Is <sunny> with <other> here? is it <sunny>?", images=[photos[3]])
    names = ["sunny", "other"]
    defined = W.definitions(toy, cs, names)[0]
    prompt = router.build_prompt(request, cs)
    assert W.swap_prompt(prompt, cs, defined, names) == router.build_prompt(request, defined)
    witness = W.for_request(toy, prompt, cs, names, has_photo=True)
    assert witness is not None and witness.weight == 1.0
    assert witness.prompts == [router.build_prompt(request, defined)]
    # with training photos: the request asked of each photo's definitions
    kept = concepts(toy, rows[0], "other", photos={"sunny": rows[:2]})
    witness = W.for_request(toy, router.build_prompt(request, kept), kept, names, has_photo=True)
    assert witness.prompts == [router.build_prompt(request, d) for d in W.definitions(toy, kept, names)]
    assert len(witness.prompts) == 2
    # the eval-side layout is the same prompt
    one = Request("Is <sunny> in this photo?", images=[photos[3]])
    single = W.definitions(toy, cs, ["sunny"])[0]
    assert W.recognition_prompt(toy, single, "sunny", rows[3], QUESTION) == router.build_prompt(one, single)


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
    defined = W.definitions(toy, cs, ["sunny"])[0]
    prompts = [W.recognition_prompt(toy, defined, "sunny", r, QUESTION) for r in rows]
    plain = selfcheck.yes_margins(toy, prompts, defined.extra)
    assert torch.allclose(W.recognition_margins(toy, cs, "sunny", rows, QUESTION, weight=2.0), 2.0 * plain)
    witness = W.Witness([prompts[1]], defined.extra, 0.5)
    assert witness.yes_no_bias(toy) == pytest.approx([0.5 * float(plain[1]), 0.0], abs=1e-4)


def test_the_witness_margin_is_the_mean_over_the_training_photos(toy, rows) -> None:
    kept = rows[:3]
    cs = concepts(toy, rows[0], photos={"sunny": kept})
    each = []
    for photo in kept:  # each photo's own definition, asked alone
        one = W.definitions(toy, concepts(toy, photo), ["sunny"])[0]
        prompts = [W.recognition_prompt(toy, one, "sunny", r, QUESTION) for r in rows]
        each.append(selfcheck.yes_margins(toy, prompts, one.extra))
    mean = torch.stack(each).mean(dim=0)
    assert not torch.allclose(mean, each[0], atol=1e-3)  # the photos answer differently
    assert torch.allclose(W.recognition_margins(toy, cs, "sunny", rows, QUESTION), mean, atol=1e-4)
    sets = W.definitions(toy, cs, ["sunny"])
    witness = W.Witness([W.recognition_prompt(toy, d, "sunny", rows[4], QUESTION) for d in sets], sets[0].extra, 1.0)
    assert witness.margin(toy) == pytest.approx(float(mean[4]), abs=1e-4)


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
    assert W.applied_weight(toy, concepts(toy, rows[0], photos={"sunny": rows[:2]}), ["sunny"]) == 1.0
    assert W.applied_weight(toy, without, ["sunny"]) == 0.0
    assert W.applied_weight(toy, with_ref, []) == 0.0


def test_yoc_train_keeps_every_training_photo_for_the_witness(tmp_path: Path, yoc_home: Path) -> None:
    """`yoc train` with a reference photo (the toy recipe) writes the first training photo
    as the reference and all of them as the witness's photos, in the same order."""
    from conftest import small_random_backbone
    from library_images import photos as make_photos

    from yoc_assistant.app.training import train_concept_job
    from yoc_assistant.library import Library
    from yoc_assistant.library.concepts import add_concept_from_paths
    from yoc_assistant.personalize import data
    from yoc_assistant.personalize.prepare import select_images
    from yoc_assistant.personalize.trainer import TrainConfig

    bb = small_random_backbone(tmp_path / "bb", 1)
    with Library.open() as lib:
        add_concept_from_paths(lib, make_photos(tmp_path / "bo", 4), "bo")
        lib.add_pool_images(make_photos(tmp_path / "pool", 8, start=100))
        config = TrainConfig(max_steps=1, batch_size=2, reference_photo=True)
        outcome = train_concept_job(lib, "bo", backbone=bb, config=config)
        job = select_images(lib, lib.require_concept("bo"), seed=config.seed)
        tokens = data.image_tokens(lib, bb, job.train_positives)
    saved = ConceptVectors.load(outcome.vectors_path, bb)
    assert len(job.train_positives) == 4  # every photo trains
    assert saved.photos == [list(tokens[s]) for s in job.train_positives]
    assert saved.reference == saved.photos[0]
    assert W.definitions(bb, ConceptSet(bb, [saved]), ["bo"]) is not None


# -- the description's veto --------------------------------------------------------------------
def test_a_description_is_the_definition_sentence_of_the_about_text() -> None:
    from yoc_assistant.personalize.data import definition_of

    about = "colour: orange\nshape: star\nsunny is a dotted orange star.\nsunny was a gift from my friend.\n"
    assert definition_of(about, "sunny") == "a dotted orange star"
    assert definition_of("He likes balls. <Bo> is my brown dachshund!", "bo") == "my brown dachshund"
    assert definition_of("bo: is a dog\n# bo is a comment", "bo") is None  # a fact and a comment
    assert definition_of("bo was a gift.", "bo") is None and definition_of(None, "bo") is None
    assert definition_of("bo is " + "very " * 40 + "old.", "bo") is None  # a paragraph, not a definition
    vec = ConceptVectors(name="sunny", groups={"g": 1}, input_rows=torch.zeros(2, 4), output_rows=torch.zeros(2, 4))
    W.describe(vec, about)
    assert vec.metadata[W.DESCRIPTION] == "a dotted orange star"
    W.describe(vec, "sunny was a gift.")
    assert W.DESCRIPTION not in vec.metadata


def test_the_veto_is_the_checkpoints(toy, tmp_path: Path) -> None:
    from yoc_assistant.backbone.loading import description_veto_of

    assert W.veto_of(toy) == 1.0  # the toy backbone's, measured (docs/toyworld.md)
    for value, expected in ((2.5, 2.5), (0, 0.0), (-1, None), ("1", None), (True, None), (None, None)):
        (tmp_path / "config.json").write_text(json.dumps({"yoc_description_veto": value}))
        assert description_veto_of(tmp_path) == expected, value


def _described(bb, rows, words: str = "a dotted orange star") -> ConceptSet:  # noqa: ANN001
    cs = concepts(bb, rows[0], photos={"sunny": rows[:3]})
    cs.get("sunny").metadata[W.DESCRIPTION] = words
    return cs


def test_the_veto_prompt_is_the_request_asked_of_the_description(toy, rows, photos) -> None:
    cs = _described(toy, rows)
    router = Router(toy, PluginManager())
    prompt = router.build_prompt(Request("Is <sunny> here?", images=[photos[4]]), cs)
    witness = W.for_request(toy, prompt, cs, ["sunny"], has_photo=True)
    defined = W.definitions(toy, cs, ["sunny"])[0]
    words = [defined.identifier_id("sunny"), *toy.tokenize(" is"), *toy.tokenize(" a dotted orange star"),
             *toy.tokenize(".")]
    assert W.description_prompts(toy, cs, ["sunny"], defined) == {"sunny": words}
    own = cs.prompt_ids("sunny")
    at = next(i for i in range(len(prompt)) if prompt[i:i + len(own)] == own)
    assert witness.veto_prompt == prompt[:at] + words + prompt[at + len(own):]
    assert witness.veto_at == 1.0
    # no description, or a checkpoint without a veto: no veto prompt
    assert W.for_request(toy, prompt, concepts(toy, rows[0]), ["sunny"], has_photo=True).veto_prompt is None


def test_a_veto_answers_no_whatever_the_photos_say(toy, rows) -> None:
    cs = _described(toy, rows)
    defined = W.definitions(toy, cs, ["sunny"])[0]
    words = W.description_prompts(toy, cs, ["sunny"], defined)["sunny"]
    prompt = W.recognition_prompt(toy, defined, "sunny", rows[4], QUESTION, words)
    said = float(selfcheck.yes_margins(toy, [prompt], defined.extra)[0])
    photo_prompts = [W.recognition_prompt(toy, d, "sunny", rows[4], QUESTION) for d in W.definitions(toy, cs, ["sunny"])]
    # vetoed when the description's margin is at most -veto_at
    strict = W.Witness(photo_prompts, defined.extra, 1.0, prompt, veto_at=-said - 0.5)
    lenient = W.Witness(photo_prompts, defined.extra, 1.0, prompt, veto_at=-said + 0.5)
    assert strict.vetoed(toy) and strict.yes_no_bias(toy) == [W.VETO, 0.0]
    assert not lenient.vetoed(toy) and lenient.yes_no_bias(toy)[0] == pytest.approx(lenient.margin(toy))


def test_recognition_margins_veto_where_the_description_says_no(toy, rows) -> None:
    cs = _described(toy, rows)
    defined = W.definitions(toy, cs, ["sunny"])[0]
    words = W.description_prompts(toy, cs, ["sunny"], defined)["sunny"]
    said = selfcheck.yes_margins(toy, [W.recognition_prompt(toy, defined, "sunny", r, QUESTION, words) for r in rows],
                                 defined.extra)
    unvetoed = concepts(toy, rows[0], photos={"sunny": rows[:3]})
    plain = W.recognition_margins(toy, unvetoed, "sunny", rows, QUESTION)
    got = W.recognition_margins(toy, cs, "sunny", rows, QUESTION)
    expected = torch.where(said <= -1.0, torch.full_like(plain, W.VETO), plain)
    assert torch.allclose(got, expected)
    assert 0 < int((got == W.VETO).sum()) < len(rows), "the example photos should be vetoed in part"


def test_yoc_eval_reports_the_witness_and_the_veto_it_applied(toy, rows) -> None:
    described, plain = _described(toy, rows), concepts(toy, rows[0], photos={"sunny": rows[:3]})
    for cs, vetoed in ((described, True), (plain, False)):
        report = E.evaluate_concept(toy, cs, "sunny", positives=rows[:2], negatives=rows[7:9], real=[], n_images=0)
        assert report["photo_witness"] == 1.0
        assert ("description_veto" in report) is vetoed
        assert any("description" in n for n in report["notes"]) is vetoed
