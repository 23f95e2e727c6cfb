"""Evaluation on a tiny random backbone: numbers in range, fast paths equal slow ones,
clear errors for bad QA files, and `yoc eval` end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize import evaluate as E
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
from yoc_assistant.personalize.retrieval import ClipSpec, load_clip
from yoc_assistant.personalize.tinyclip import write_tiny_clip


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("bb") / "tiny", seed=0)


@pytest.fixture(scope="module")
def bb(tiny_path: Path):
    from yoc_assistant import Backbone

    return Backbone.load(str(tiny_path), precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def concepts(bb) -> ConceptSet:
    return ConceptSet(bb, [ConceptVectors.initialize(bb, "mug", seed=1),
                           ConceptVectors.initialize(bb, "bo", seed=2)])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _pil(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (40, 44, 3), dtype=np.uint8))


def _tokens(bb, seed: int) -> list[int]:
    rng = random.Random(seed)
    ids = bb.image_vocab.bpe_ids.tolist()
    return [rng.choice(ids) for _ in range(bb.image_seq_length)]


def test_recognition_accuracy_in_range_and_equal_to_the_one_pass_path(bb, concepts) -> None:
    pos = [_tokens(bb, i) for i in range(2)] + [_pil(7)]
    neg = [_tokens(bb, 100 + i) for i in range(3)]
    out = E.recognition_accuracy(bb, concepts, "bo", pos, neg)
    assert out["n_positive"] == 3 and out["n_negative"] == 3
    for key in ("positive", "negative", "weighted"):
        assert 0.0 <= out[key] <= 1.0
    assert out["weighted"] == pytest.approx((out["positive"] + out["negative"]) / 2)
    # the batched last-position path decides exactly as the text modality's decoding does
    from yoc_assistant.personalize import data

    yes, no = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    images = E._as_tokens(bb, pos + neg)
    said = []
    ident = concepts.identifier_id("bo")
    for im in images:
        out1 = bb.generate_text(E.forced_recognition_prompt(bb, concepts, "bo", im), extra=concepts.extra,
                                max_new_tokens=1, seed=0, allow_ids=[ident], decisive_ids=[yes, no])
        said.append(out1.ids[:1] == [yes])
    assert out["positive"] == sum(said[:3]) / 3
    assert out["negative"] == sum(not s for s in said[3:]) / 3
    fast = E._last_logits(bb, [E.forced_recognition_prompt(bb, concepts, "bo", images[0])], concepts.extra)[0]
    slow = bb.next_token_logits(E.forced_recognition_prompt(bb, concepts, "bo", images[0]), extra=concepts.extra)
    assert torch.allclose(fast, slow, atol=1e-4)
    # a batch of rows that share the concept's prompt runs it once: the same logits
    prompts = [E.forced_recognition_prompt(bb, concepts, "bo", im) for im in images]
    batched = E._last_logits(bb, prompts, concepts.extra)
    for prompt, row in zip(prompts, batched, strict=True):
        assert torch.allclose(row, bb.next_token_logits(prompt, extra=concepts.extra), atol=1e-4)


def test_recognition_prompt_forces_the_understanding_group(bb, concepts) -> None:
    prompt = E.forced_recognition_prompt(bb, concepts, "bo", _tokens(bb, 0))
    und = concepts.group_ids("bo", "understanding")
    assert prompt[-len(und):] == und and prompt[-len(und) - 1] == bb.special.sep
    one_side = E.recognition_accuracy(bb, concepts, "bo", [_tokens(bb, 0)], [])
    assert one_side["negative"] is None and one_side["weighted"] == one_side["positive"]


def test_clip_i(clip_dir: Path) -> None:
    clip = load_clip(ClipSpec(str(clip_dir)))
    a, b, c = _pil(1), _pil(2), _pil(3)
    assert E.clip_i(clip, [a], [a]) == pytest.approx(1.0, abs=1e-5)
    value = E.clip_i(clip, [a, b], [c])
    assert -1.0 <= value < 1.0
    embs = clip.embed_images([c])
    assert E.clip_i(clip, [a, b], embs) == pytest.approx(value, abs=1e-6)
    with pytest.raises(UserInputError):
        E.clip_i(clip, [], [a])


def _write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ([], "non-empty list"),
    ([{"question": "Q?", "options": {"A": "x", "B": "y"}}], "'answer' None"),
    ([{"question": "Q?", "options": {"A": "x"}, "answer": "A"}], "at least two"),
    ([{"question": "", "options": {"A": "x", "B": "y"}, "answer": "A"}], "'question'"),
    ([{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "C"}], "not one of the options"),
    ([{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "A", "image": "no.png"}], "does not exist"),
    (["just a string"], "expected an object"),
])
def test_malformed_qa_file_names_the_file(tmp_path: Path, content, message: str) -> None:
    path = _write(tmp_path / "qa.json", content)
    with pytest.raises(UserInputError, match=message) as err:
        E.load_qa(path)
    assert str(path) in str(err.value)


def test_qa_file_formats_and_missing_file(tmp_path: Path) -> None:
    _pil(0).save(tmp_path / "1.png")
    ours = E.load_qa(_write(tmp_path / "a.json", [
        {"question": "What colour is <bo>?", "options": {"A": "brown", "B": "white"}, "answer": "A",
         "image": "1.png"}]))
    assert ours[0].image == tmp_path / "1.png" and ours[0].options["B"] == "white"
    yollava = E.load_qa(_write(tmp_path / "b.json", {
        "1.png": {"question": "Is bo a dog?", "option": {"A": "Yes", "B": "No"}, "correct_answer": "B"}}))
    assert yollava[0].answer == "B" and yollava[0].image == tmp_path / "1.png"
    with pytest.raises(UserInputError, match="does not exist"):
        E.load_qa(tmp_path / "missing.json")


def test_qa_accuracy_picks_one_option(bb, concepts, tmp_path: Path) -> None:
    _pil(0).save(tmp_path / "1.png")
    item = {"question": "What colour is <bo>?", "options": {"A": "brown", "B": "white"}, "image": "1.png"}
    items = E.load_qa(_write(tmp_path / "qa.json", [{**item, "answer": "A"}, {**item, "answer": "B"},
                                                     {**item, "answer": "A", "image": None}]))
    out = E.qa_accuracy(bb, concepts, "bo", items[:2])
    assert out == {"accuracy": 0.5, "n": 2}  # same question, answers A then B: exactly one right
    assert 0.0 <= E.qa_accuracy(bb, concepts, "bo", items)["accuracy"] <= 1.0


def test_face_similarity_is_skipped_with_a_reason() -> None:
    import importlib.util

    reason = E.face_unavailable_reason()
    if importlib.util.find_spec("insightface") is None:
        assert "insightface is not installed" in reason
    else:
        assert reason is None or "buffalo_l" in reason


def test_evaluate_concept_report(bb, concepts, clip_dir: Path) -> None:
    clip = load_clip(ClipSpec(str(clip_dir)))
    report = E.evaluate_concept(bb, concepts, "bo", positives=[_pil(1), _pil(2)], negatives=[_pil(3)],
                                real=[_pil(1), _pil(2)], clip=clip, n_images=1, seed=0)
    assert 0.0 <= report["recognition"]["weighted"] <= 1.0
    assert -1.0 <= report["clip_i"] <= 1.0 and report["n_generated"] == 1
    assert report["draw_candidates"] == 1 and not report["notes"]  # this checkpoint recommends no check
    assert "qa" in report["skipped"]
    no_clip = E.evaluate_concept(bb, concepts, "bo", positives=[_pil(1)], negatives=[], real=[_pil(1)],
                                 clip=None, clip_note="CLIP x is not in the local HF cache")
    assert no_clip["skipped"]["clip_i"].startswith("CLIP x") and "clip_i" not in no_clip


# --- the command -----------------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from yoc_assistant.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_yoc_eval_json_and_table(bb, tiny_path: Path, clip_dir: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from yoc_assistant.library import Library

    monkeypatch.setenv("YOC_BACKBONE", str(tiny_path))
    monkeypatch.setenv("YOC_DEVICE", "cpu")
    monkeypatch.setenv("YOC_CLIP_MODEL", str(clip_dir))
    lib = Library.open()
    lib.create_concept("bo")
    for i in range(3):
        _pil(i).save(tmp_path / f"p{i}.png")
    lib.add_images("bo", sorted(tmp_path.glob("p*.png")))
    code, _, err = _run(["eval", "bo"], capsys)
    assert code == 2 and "yoc train bo" in err  # not trained yet
    vec = ConceptVectors.initialize(bb, "bo")
    vec.save(tmp_path / "bo.safetensors", bb)
    lib.set_vectors("bo", tmp_path / "bo.safetensors")

    _write(tmp_path / "bad.json", "[{]")
    code, _, err = _run(["eval", "bo", "--qa", str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "bad.json" in err and "Traceback" not in err

    _write(tmp_path / "qa.json", [{"question": "Is <bo> brown?", "options": {"A": "yes", "B": "no"},
                                   "answer": "A"}])
    code, out, err = _run(["eval", "bo", "--json", "--images", "1", "--qa", str(tmp_path / "qa.json")], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["recognition"]["n_positive"] == 3 and report["recognition"]["n_negative"] == 0
    assert 0.0 <= report["recognition"]["positive"] <= 1.0
    assert -1.0 <= report["clip_i"] <= 1.0 and report["qa"]["n"] == 1
    assert any("training photos" in n for n in report["notes"])

    code, out, _ = _run(["eval", "bo", "--images", "1", "--quiet"], capsys)
    assert code == 0 and "recognition, weighted" in out and "CLIP-I" in out
