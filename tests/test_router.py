"""The self-prompting router on the tiny checkpoint: prompt layout, one pass, the
choice read from group-first-token logits (steered through real head rows), the
no-concept BOI rule, --mode, and the log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from assistant_helpers import AUDIO_PLUGIN, final_hidden, install_plugin, steer, tiny_backbone
from PIL import Image

from yoc_assistant.assistant import PluginManager, Request, Router
from yoc_assistant.assistant.mentions import find_mentions, mentioned_names, split_mentions
from yoc_assistant.errors import UserInputError, YocError
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

GROUPS = {"generation": 16, "understanding": 16, "audio": 4}


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone()


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = install_plugin(tmp_path / "site", "yoc_audio_test", AUDIO_PLUGIN, "audio")
    monkeypatch.syspath_prepend(str(site))
    yield PluginManager()
    sys.modules.pop("yoc_audio_test", None)


@pytest.fixture
def bo(bb):
    vec = ConceptVectors.initialize(bb, "bo", GROUPS, seed=1)
    return vec, ConceptSet(bb, [vec])


def test_mentions() -> None:
    text = "is <bo> next to <Mug_2>? <bo> again, not <x y> or <<>>"
    assert [m.name for m in find_mentions(text)] == ["bo", "Mug_2", "bo"]
    assert mentioned_names(text) == ["bo", "Mug_2"]
    assert mentioned_names("<Bo> and <bo>") == ["Bo"]
    parts = split_mentions("<bo> on a <skate-board>!")
    assert [p if isinstance(p, str) else p.name for p in parts] == ["bo", " on a ", "skate-board", "!"]


def test_prompt_layout(bb, plugins, bo) -> None:
    _, concepts = bo
    router = Router(bb, plugins)
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    ids = router.build_prompt(Request("is <BO> red ?", images=[image]), concepts)
    personal = concepts.prompt_ids("bo")
    ident = concepts.identifier_id("bo")
    assert ids[0] == bb.special.bos and ids[-1] == bb.special.sep
    assert ids[1:1 + len(personal)] == personal
    rest = ids[1 + len(personal):]
    # The photo comes before the question, as `yoc eval` and the training data ask.
    assert rest[0] == bb.special.boi and rest[1 + bb.image_seq_length] == bb.special.eoi
    assert rest[1:1 + bb.image_seq_length] == bb.encode_images([image])[0].tolist()
    rest = rest[2 + bb.image_seq_length:]
    assert rest[:rest.index(ident)] == bb.tokenize("is ")
    assert rest.count(ident) == 1


def test_unknown_mention_stays_text(bb, plugins, bo) -> None:
    _, concepts = bo
    ids = Router(bb, plugins).build_prompt(Request("<bo> likes <cat>"), concepts)
    assert concepts.identifier_id("bo") in ids
    assert all(i < bb.vocab_size for i in ids if i != concepts.identifier_id("bo")
               and i not in concepts.prompt_ids("bo"))


@pytest.mark.parametrize("winner, modality", [("audio", "audio"), ("generation", "image"),
                                              ("understanding", "text")])
def test_concept_routing_follows_group_logits(bb, plugins, bo, winner, modality, tmp_path) -> None:
    vec, concepts = bo
    log_path = tmp_path / "router.jsonl"
    router = Router(bb, plugins, log_path=log_path)
    request = Request("<bo> please")
    prompt = router.build_prompt(request, concepts)
    hidden = final_hidden(bb, prompt, concepts.extra)
    for group in GROUPS:
        first = vec.group_slice(group).start
        vec.output_rows[first] = steer(hidden, 12.0 if group == winner else 0.0)
    decision = router.route(request, concepts)
    assert decision.modality == modality and decision.concept == "bo" and not decision.forced
    assert set(decision.probabilities) == {"text", "image", "audio"}
    assert sum(decision.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    expected = torch.softmax(torch.tensor([12.0, 0.0, 0.0]), 0)[0].item()
    assert decision.probabilities[modality] == pytest.approx(expected, abs=1e-3)
    assert decision.prompt_ids == prompt
    logged = json.loads(log_path.read_text().splitlines()[-1])
    assert logged["modality"] == modality and logged["concepts"] == ["bo"]
    assert modality in decision.explain()


def test_concept_without_a_plugin_group_is_ignored(bb, plugins) -> None:
    vec = ConceptVectors.initialize(bb, "mug", {"generation": 16, "understanding": 16}, seed=2)
    concepts = ConceptSet(bb, [vec])
    decision = Router(bb, plugins).route(Request("draw <mug>"), concepts)
    assert set(decision.probabilities) == {"text", "image"}  # mug has no audio group


def test_two_concepts_pick_the_strongest(bb, plugins) -> None:
    a = ConceptVectors.initialize(bb, "a", GROUPS, seed=3)
    b = ConceptVectors.initialize(bb, "b", GROUPS, seed=4)
    concepts = ConceptSet(bb, [a, b])
    router = Router(bb, plugins)
    request = Request("<a> and <b>")
    hidden = final_hidden(bb, router.build_prompt(request, concepts), concepts.extra)
    for vec in (a, b):
        for group in GROUPS:
            vec.output_rows[vec.group_slice(group).start] = steer(hidden, 0.0)
    b.output_rows[b.group_slice("generation").start] = steer(hidden, 10.0)
    a.output_rows[a.group_slice("understanding").start] = steer(hidden, 9.0)
    decision = router.route(request, concepts)
    assert (decision.modality, decision.concept) == ("image", "b")
    assert sum(decision.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_no_concept_routes_on_begin_image(bb, plugins) -> None:
    router = Router(bb, plugins)
    request = Request("a red boat")
    prompt = router.build_prompt(request)
    base = router.route(request)
    p_boi = torch.softmax(bb.next_token_logits(prompt), 0)[bb.special.boi].item()
    assert base.probabilities["image"] == pytest.approx(p_boi, abs=1e-6)
    assert base.probabilities["text"] == pytest.approx(1 - p_boi, abs=1e-6)
    assert "audio" not in base.probabilities  # no token of its own, text takes the rest
    assert base.modality == ("image" if p_boi > 0.5 else "text")
    # Make begin-image the model's clear choice by steering its head row, then restore.
    head = bb.model.lm_head.weight
    saved = head[bb.special.boi].detach().clone()
    try:
        with torch.no_grad():
            head[bb.special.boi] = steer(final_hidden(bb, prompt), 40.0)
        steered = router.route(request)
    finally:
        with torch.no_grad():
            head[bb.special.boi] = saved
    assert steered.modality == "image" and steered.probabilities["image"] > 0.99


def test_mode_override_skips_the_pass(bb, plugins, bo, monkeypatch: pytest.MonkeyPatch) -> None:
    _, concepts = bo

    def no_pass(*args, **kwargs):
        raise AssertionError("the router ran a forward pass despite --mode")

    monkeypatch.setattr(bb, "next_token_logits", no_pass)
    router = Router(bb, plugins)
    decision = router.route(Request("<bo> on a boat", mode="audio"), concepts)
    assert (decision.modality, decision.forced, decision.probabilities) == ("audio", True, {})
    assert decision.concept == "bo"
    with pytest.raises(UserInputError, match="unknown mode 'video'.*audio"):
        router.route(Request("a cat", mode="video"))


def test_no_plugins_is_a_clear_error(bb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_LOAD_PLUGINS", "")
    with pytest.raises(YocError, match="no modality plugins are loaded"):
        Router(bb, PluginManager()).route(Request("a cat"))
