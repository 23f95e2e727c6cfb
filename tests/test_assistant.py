"""The Assistant end to end on the tiny checkpoint: ready concepts from the library,
routing, the text and image responders (forced groups, PNG chunks), a third-party
modality reached by routing logits, errors, and the Conversation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from assistant_helpers import (
    AUDIO_PLUGIN,
    final_hidden,
    install_plugin,
    make_ready_concept,
    steer,
    tiny_backbone,
)
from PIL import Image

from yoc_assistant import __version__
from yoc_assistant.assistant import (
    Assistant,
    Conversation,
    Modality,
    PluginManager,
    Request,
    hookimpl,
)
from yoc_assistant.errors import NotFoundError, UserInputError, YocError
from yoc_assistant.library.core import Library
from yoc_assistant.personalize.concept import ConceptSet


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone()


@pytest.fixture
def library():
    with Library.open() as lib:
        yield lib


@pytest.fixture
def assistant(bb, library, tmp_path: Path):
    return Assistant(bb, library, PluginManager(), log_path=tmp_path / "router.jsonl",
                     out_dir=tmp_path / "pictures")


def test_text_answer_forces_the_understanding_group(bb, library, assistant) -> None:
    make_ready_concept(library, bb, "bo")
    pieces: list[str] = []
    response = assistant.respond(Request("is <bo> red ?", mode="text", seed=5, max_tokens=8),
                                 on_text=pieces.append)
    assert response.modality == "text" and response.forced and response.concept == "bo"
    assert "".join(pieces) == response.text and response.text
    # The same answer as decoding by hand after prompt + the concept's understanding tokens.
    concepts = assistant.load_concepts(["bo"])
    prompt = assistant.router.build_prompt(Request("is <bo> red ?"), concepts)
    ident = concepts.identifier_id("bo")
    from yoc_assistant.personalize.data import answer_first_token

    by_hand = bb.generate_text(prompt + concepts.group_ids("bo", "understanding"),
                               extra=concepts.extra, max_new_tokens=8, temperature=0.7, seed=5,
                               allow_ids=[ident], extra_names={ident: "<bo>"},
                               decisive_ids=[answer_first_token(bb, True), answer_first_token(bb, False)])
    assert response.text == by_hand.text


def test_image_answer_writes_pngs_with_chunks(bb, library, assistant, tmp_path: Path) -> None:
    make_ready_concept(library, bb, "bo")
    response = assistant.respond(Request("<bo> on a boat", mode="image", seed=7, n=2))
    assert response.modality == "image" and len(response.image_paths) == 2
    assert len(set(response.image_paths)) == 2
    concepts = assistant.load_concepts(["bo"])
    prompt = assistant.router.build_prompt(Request("<bo> on a boat"), concepts)
    by_hand = bb.generate_images(prompt + concepts.group_ids("bo", "generation"), n=2,
                                 extra=concepts.extra, seed=7, cfg_scale=3.0)
    for i, path in enumerate(response.image_paths):
        assert path.parent == tmp_path / "pictures" and path.suffix == ".png"
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (bb.image_size, bb.image_size)
            assert img.text["prompt"] == "<bo> on a boat"
            assert img.text["concepts"] == "bo"
            assert img.text["seed"] == str(7 + i)
            assert img.text["backbone"] == bb.name
            assert img.text["backbone_fingerprint"] == bb.fingerprint
            assert img.text["software"] == f"yoc {__version__}"
            assert img.tobytes() == by_hand.images[i].tobytes()
    again = assistant.respond(Request("<bo> on a boat", mode="image", seed=7))
    assert again.image_paths[0] not in response.image_paths  # never overwrites


def test_image_to_a_named_file(bb, assistant, tmp_path: Path) -> None:
    target = tmp_path / "out" / "boat.png"
    response = assistant.respond(Request("a boat", mode="image", seed=1, out=target))
    assert response.image_paths == [target] and target.is_file()
    several = assistant.respond(Request("a boat", mode="image", seed=1, n=2, out=target))
    assert [p.name for p in several.image_paths] == ["boat-1.png", "boat-2.png"]
    with pytest.raises(UserInputError, match="boat.jpg"):
        assistant.respond(Request("a boat", mode="image", out=tmp_path / "boat.jpg"))


def test_unknown_and_untrained_concepts(bb, library, assistant) -> None:
    make_ready_concept(library, bb, "bo")
    library.create_concept("mug")
    with pytest.raises(NotFoundError, match=r"unknown concept <cat>.*<bo>, <mug>"):
        assistant.respond(Request("where is <cat>?"))
    with pytest.raises(UserInputError, match=r"<mug> is not trained yet.*yoc train mug"):
        assistant.respond(Request("where is <mug>?"))
    no_library = Assistant(bb, None, PluginManager())
    with pytest.raises(NotFoundError, match="<bo>"):
        no_library.respond(Request("<bo>"))


def test_renamed_concept_answers_to_its_new_name(bb, library, assistant) -> None:
    make_ready_concept(library, bb, "bo")
    library.rename("bo", "Bobo")
    concepts = assistant.load_concepts(["bobo"])
    assert concepts.names == ["Bobo"]
    response = assistant.respond(Request("<bobo>?", mode="text", seed=1, max_tokens=3))
    assert response.concept == "Bobo"


def test_audio_plugin_reached_through_routing_logits(bb, library, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party modality with its own token group, no change to the core: the
    concept's audio group wins the router's softmax and the plugin writes its file."""
    site = install_plugin(tmp_path / "site", "yoc_audio_test", AUDIO_PLUGIN, "audio")
    monkeypatch.syspath_prepend(str(site))
    try:
        plugins = PluginManager()
        groups = plugins.group_sizes()
        assert groups["audio"] == 4
        vec = make_ready_concept(library, bb, "bo", groups)
        assistant = Assistant(bb, library, plugins, log_path=tmp_path / "r.jsonl",
                              out_dir=tmp_path / "out")
        request = Request("show me <bo>")
        concepts = ConceptSet(bb, [vec])
        hidden = final_hidden(bb, assistant.router.build_prompt(request, concepts), concepts.extra)
        for group in groups:
            vec.output_rows[vec.group_slice(group).start] = steer(hidden, 15.0 if group == "audio" else 0.0)
        vec.save(library.require_concept("bo").vectors_path, bb)
        assistant._cache.clear()
        response = assistant.respond(request)
    finally:
        sys.modules.pop("yoc_audio_test", None)
    assert response.modality == "audio" and not response.forced
    assert response.probabilities["audio"] > 0.99
    (written,) = response.files
    assert written.parent == tmp_path / "out" and written.suffix == ".wav"
    forced = ConceptSet(bb, [vec]).group_ids("bo", "audio")
    assert f"forced {forced}" in written.read_text()


class _Crashing(Modality):
    def respond(self, request, ctx):
        raise ZeroDivisionError("plugin bug")


class _CrashPlugin:
    @hookimpl
    def yoc_modalities(self):
        return [_Crashing(name="crash", group="crash", group_size=1)]


def test_a_crashing_responder_is_a_clear_error(bb, tmp_path: Path) -> None:
    plugins = PluginManager()
    plugins.register(_CrashPlugin(), "crash")
    assistant = Assistant(bb, None, plugins, log_path=tmp_path / "r.jsonl")
    with pytest.raises(YocError, match="'crash' modality failed: ZeroDivisionError: plugin bug"):
        assistant.respond(Request("a cat", mode="crash"))


def test_conversation_keeps_turns(bb, assistant) -> None:
    chat = Conversation(assistant)
    first = chat.ask(Request("a red boat", mode="text", seed=1, max_tokens=3))
    assert first.response is not None and first.response.modality == "text"
    with pytest.raises(NotFoundError):
        chat.ask("and <nobody>?")
    assert chat.turns[-1].error and "nobody" in chat.turns[-1].error
    chat.turns.pop()
    retried = chat.retry()
    assert retried.request.text == "a red boat" and retried.request.seed is None
    assert [t["modality"] for t in chat.to_json()] == ["text", "text"]


def test_text_answers_may_name_the_concept(bb, library, assistant) -> None:
    """The training answers say "Yes, <bo> is in this photo.": the identifier may be
    generated, and it is shown as <bo>."""
    vec = make_ready_concept(library, bb, "bo")
    concepts = assistant.load_concepts(["bo"])
    prompt = assistant.router.build_prompt(Request("is <bo> red ?"), concepts)
    hidden = final_hidden(bb, prompt + concepts.group_ids("bo", "understanding"), concepts.extra)
    vec.output_rows[0] = steer(hidden, 1e3)  # the identifier: by far the likeliest first word
    vec.save(library.concept_dir("bo") / "vectors.safetensors", bb)
    pieces: list[str] = []
    response = assistant.respond(Request("is <bo> red ?", mode="text", temperature=0.0, max_tokens=1),
                                 on_text=pieces.append)
    assert response.text == "<bo>" and pieces == ["<bo>"]
