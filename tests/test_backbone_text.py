"""tokenize / detokenize / prompt_ids (Anole's turn format, spec §9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.errors import UserInputError

DATA = Path(__file__).parent / "data" / "tiny-anole-a"


@pytest.fixture(scope="module")
def bb():  # type: ignore[no-untyped-def]
    return load_backbone(DATA / "checkpoint", precision="fp32", device="cpu")


def test_tokenize_adds_nothing_unless_asked(bb) -> None:  # type: ignore[no-untyped-def]
    vocab = bb.tokenizer.get_vocab()
    ids = bb.tokenize("a photo of a cat")
    assert ids == [vocab[w] for w in ["a", "photo", "of", "a", "cat"]]
    assert bb.tokenize("a photo of a cat", bos=True) == [bb.special.bos, *ids]
    assert bb.tokenize("") == []


def test_detokenize_skips_special_image_and_extra_ids(bb) -> None:  # type: ignore[no-untyped-def]
    ids = bb.tokenize("a red dog")
    image_id = int(bb.image_vocab.to_bpe([5])[0])
    mixed = [bb.special.bos, *ids[:2], image_id, bb.vocab_size + 1, ids[2], bb.special.eos]
    assert bb.detokenize(mixed) == "a red dog"


def test_prompt_ids_text(bb) -> None:  # type: ignore[no-untyped-def]
    ids = bb.prompt_ids(["draw a cat"])
    assert ids == [bb.special.bos, *bb.tokenize("draw a cat"), bb.special.sep]
    assert bb.prompt_ids(["draw a cat"], end_turn=False) == ids[:-1]
    extra = [bb.vocab_size, bb.vocab_size + 1]
    assert bb.prompt_ids(["a", extra, "cat"]) == [
        bb.special.bos, *bb.tokenize("a"), *extra, *bb.tokenize("cat"), bb.special.sep]


def test_prompt_ids_image_matches_upstream_processor(bb) -> None:  # type: ignore[no-untyped-def]
    expected = json.loads((DATA / "encode" / "expected_encode.json").read_text())
    example = expected["processor_example"]
    image = Image.open(DATA / "encode" / expected["images"][0]["file"])
    before, after = example["text"].split("<image>")
    ids = bb.prompt_ids([before.strip(), image, after.strip()])
    # the upstream processor leaves placeholders; they are replaced by the image's ids
    upstream = list(example["input_ids"])
    placeholder = [i for i, t in enumerate(upstream) if t == bb.special.image_placeholder]
    image_ids = expected["images"][0]["pil"]["bpe_ids"]
    for pos, tok in zip(placeholder, image_ids, strict=True):
        upstream[pos] = tok
    assert ids == upstream


def test_prompt_ids_rejects_other_parts(bb) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="part 1"):
        bb.prompt_ids(["a", 3.5])
    with pytest.raises(UserInputError):
        bb.prompt_ids([[1, -2]])
