"""One request runs its prompt through the network once: the router's pass (logits and
KV cache) is where the text answer continues from, with the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from assistant_helpers import make_ready_concept, tiny_backbone

from yoc_assistant.assistant import Assistant, PluginManager, Request
from yoc_assistant.library.core import Library


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone()


def count_base_passes(bb, monkeypatch: pytest.MonkeyPatch) -> list[int]:  # noqa: ANN001
    """Sequence lengths the base transformer is run on, call by call."""
    base = bb.model.model
    real = base.forward
    seen: list[int] = []

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(int(kwargs["inputs_embeds"].shape[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "forward", counting)
    return seen


def text_only() -> PluginManager:
    import yoc_text

    plugins = PluginManager(load=False)
    plugins.register(yoc_text, "text")
    return plugins


def test_a_routed_text_answer_runs_the_prompt_once(bb, tmp_path: Path,  # noqa: ANN001
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with Library.open() as library:
        make_ready_concept(library, bb, "bo")
        assistant = Assistant(bb, library, text_only(), log_path=tmp_path / "router.jsonl")
        request = Request("is <bo> red ?", seed=3, max_tokens=6, temperature=0.0)
        forced = assistant.respond(Request(request.text, mode="text", seed=3, max_tokens=6,
                                           temperature=0.0))
        seen = count_base_passes(bb, monkeypatch)
        routed = assistant.respond(request)
        concepts = assistant.load_concepts(["bo"])
        prompt_len = len(assistant.router.build_prompt(request, concepts))
        group = len(concepts.group_ids("bo", "understanding"))
    assert routed.modality == "text" and not routed.forced
    assert [n for n in seen if n >= prompt_len] == [prompt_len]  # the router's pass only
    assert seen[1] == group  # then the concept's understanding tokens, in one pass
    assert all(n == 1 for n in seen[2:])  # then one token at a time
    assert routed.text == forced.text  # the same greedy answer as a full prefill gives


def test_a_prefix_that_does_not_match_is_not_used(bb) -> None:  # noqa: ANN001
    ids = bb.prompt_ids(["a red boat"])
    other = bb.prefill(bb.prompt_ids(["a blue boat"]))
    plain = bb.generate_text(ids, max_new_tokens=4, temperature=0.0)
    assert bb.generate_text(ids, max_new_tokens=4, temperature=0.0, prefix=other).ids == plain.ids
    assert other.cache is not None  # untouched: it was not this prompt's
    same = bb.prefill(ids)
    assert bb.generate_text(ids, max_new_tokens=4, temperature=0.0, prefix=same).ids == plain.ids
    assert same.cache is None  # handed over once
