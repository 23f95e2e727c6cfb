"""One request runs its prompt through the network once: the router's pass (logits and
KV cache) is where the text answer continues from, with the same answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def image_only() -> PluginManager:
    import yoc_image

    plugins = PluginManager(load=False)
    plugins.register(yoc_image, "image")
    return plugins


def count_positions(bb, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:  # noqa: ANN001
    """(rows, tokens) of every run of the base transformer, call by call."""
    base = bb.model.model
    real = base.forward
    seen: list[tuple[int, int]] = []

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(tuple(kwargs["inputs_embeds"].shape[:2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "forward", counting)
    return seen


@pytest.mark.parametrize("decoding", ["sjd", "sequential"])
@pytest.mark.parametrize("cfg_scale", [3.0, 1.0])
def test_a_routed_drawing_runs_the_prompt_once(bb, tmp_path: Path, decoding: str,  # noqa: ANN001
                                               cfg_scale: float, monkeypatch: pytest.MonkeyPatch) -> None:
    with Library.open() as library:
        make_ready_concept(library, bb, "bo")
        assistant = Assistant(bb, library, image_only(), log_path=tmp_path / "router.jsonl")

        def ask(mode: str | None, out: str) -> tuple[list[tuple[int, int]], list[bytes]]:
            request = Request("draw <bo> .", mode=mode, seed=11, n=2, cfg_scale=cfg_scale,
                              decoding=decoding, out=tmp_path / out)
            with monkeypatch.context() as patch:
                seen = count_positions(bb, patch)
                response = assistant.respond(request)
            assert response.modality == "image" and response.forced == (mode is not None)
            return seen, [p.read_bytes() for p in response.image_paths]

        forced, forced_pictures = ask("image", "forced")  # no router pass: the prefill runs it all
        routed, routed_pictures = ask(None, "routed")
        prompt = assistant.router.build_prompt(Request("draw <bo> ."), assistant.load_concepts(["bo"]))
    assert routed[0] == (1, len(prompt))  # the router's pass
    # Drawing after routing costs what drawing alone costs: the prefill skipped the prompt.
    assert sum(r * t for r, t in routed) == sum(r * t for r, t in forced)
    assert not any(t >= len(prompt) for _, t in routed[1:])
    cond_rest = 16 + 1  # the concept's generation tokens and BOI, once for both pictures
    assert routed[1] == (1, cond_rest)
    cfg = cfg_scale != 1.0
    if cfg:
        assert routed[2] == (1, 2)  # [BOS, BOI] once, for CFG's two unconditional rows
    assert routed[3 if cfg else 2][0] == (4 if cfg else 2)  # then the image tokens, every row
    assert routed_pictures == forced_pictures  # the same pictures as without the router's pass


def test_a_forced_drawing_that_is_explained_runs_the_prompt_once(bb, tmp_path: Path,  # noqa: ANN001
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`yoc draw --explain`: the routing pass runs for its probabilities, the mode still
    wins, and the drawing continues from that pass (same pictures as unexplained)."""
    with Library.open() as library:
        make_ready_concept(library, bb, "bo")
        assistant = Assistant(bb, library, image_only(), log_path=tmp_path / "router.jsonl")

        def draw(score: bool, out: str) -> tuple[list[tuple[int, int]], list[bytes], Any]:
            request = Request("draw <bo> .", mode="image", seed=5, n=1, cfg_scale=1.0,
                              decoding="sequential", out=tmp_path / out)
            routes: list[Any] = []
            with monkeypatch.context() as patch:
                seen = count_positions(bb, patch)
                response = assistant.respond(request, score=score, on_route=routes.append)
            return seen, [p.read_bytes() for p in response.image_paths], routes[0]

        plain, plain_pictures, unscored = draw(False, "plain")
        explained, pictures, scored = draw(True, "explained")
        prompt = assistant.router.build_prompt(Request("draw <bo> ."), assistant.load_concepts(["bo"]))
    assert unscored.probabilities == {} and unscored.model_choice is None
    assert scored.forced and scored.modality == "image" and set(scored.probabilities) == {"image"}
    assert scored.model_choice == "image" and "the model would choose image" in scored.explain()
    assert [t for _, t in explained if t >= len(prompt)] == [len(prompt)]  # once, the routing pass
    assert sum(r * t for r, t in explained) == sum(r * t for r, t in plain)
    assert pictures == plain_pictures
