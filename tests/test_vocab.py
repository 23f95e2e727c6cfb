"""Special tokens and image vocabulary are read from the tokenizer, never hard-coded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.backbone.tiny import image_token_name, write_tiny_checkpoint
from yoc_assistant.backbone.vocab import ImageVocab, codebook_index
from yoc_assistant.errors import BackboneError, UserInputError

FIXTURE = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"
# The real Anole ids (spec §6); the test checkpoints deliberately use others.
REAL = {"bos": 0, "pad": 1, "eos": 2, "eoi": 8196, "boi": 8197, "sep": 8710, "image_placeholder": 8711}


@pytest.fixture(scope="module")
def bb():  # type: ignore[no-untyped-def]
    return load_backbone(FIXTURE, precision="fp32", device="cpu")


def _fixture_vocab() -> dict[str, int]:
    return json.loads((FIXTURE / "tokenizer.json").read_text())["model"]["vocab"]


def test_special_ids_come_from_the_tokenizer(bb) -> None:  # type: ignore[no-untyped-def]
    vocab = _fixture_vocab()
    special = bb.special
    assert special.bos == vocab["<s>"] and special.eos == vocab["</s>"] and special.pad == vocab["<pad>"]
    assert special.boi == vocab["<racm3:break>"] and special.eoi == vocab["<eoss>"]
    assert special.sep == vocab["<reserved08706>"] and special.image_placeholder == vocab["<image>"]
    for name, real_id in REAL.items():
        assert getattr(special, name) != real_id, name  # would pass by accident with hard-coded ids


def test_tiny_checkpoint_specials_differ_too(tmp_path: Path) -> None:
    tiny = load_backbone(write_tiny_checkpoint(tmp_path / "t"), precision="fp32", device="cpu")
    vocab = tiny.tokenizer.get_vocab()
    assert tiny.special.boi == vocab["<racm3:break>"] != REAL["boi"]
    assert tiny.special.bos == vocab["<s>"] != REAL["bos"]
    assert len(tiny.image_vocab) == tiny.model.config.vq_config.num_embeddings


def test_codebook_index_from_name() -> None:
    assert codebook_index("IMGIMGFDZ") == 53
    assert codebook_index("IMGIMGAZ") == 0
    assert codebook_index(image_token_name(8191)) == 8191
    with pytest.raises(BackboneError):
        codebook_index("IMGIMGxyZ")


def test_image_vocab_tables_follow_names(bb) -> None:  # type: ignore[no-untyped-def]
    vocab = _fixture_vocab()
    iv = bb.image_vocab
    assert len(iv) == 300
    for name, idx in vocab.items():
        if name.startswith("IMGIMG"):
            assert int(iv.to_codebook([idx])[0]) == codebook_index(name)
            assert int(iv.to_bpe([codebook_index(name)])[0]) == idx
    codes = torch.arange(300)
    assert torch.equal(iv.to_codebook(iv.to_bpe(codes)), codes)


def test_mapping_is_by_name_not_offset() -> None:
    # shuffled ids: a table built from an offset would get these wrong
    vocab = {"<s>": 0, "IMGIMGCZ": 1, "IMGIMGAZ": 5, "IMGIMGBZ": 3, "x": 2, "y": 4}
    iv = ImageVocab(vocab, vocab_size=8)
    assert iv.to_codebook([1, 5, 3]).tolist() == [2, 0, 1]
    assert iv.to_bpe([0, 1, 2]).tolist() == [5, 3, 1]
    assert iv.mask().tolist() == [False, True, False, True, False, True, False, False]
    assert iv.mask(10).shape == (10,) and not iv.mask(10)[8:].any()
    assert iv.is_image(torch.tensor([[1, 2], [9, -1]])).tolist() == [[True, False], [False, False]]


def test_to_codebook_rejects_non_image_ids(bb) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="not image tokens"):
        bb.image_vocab.to_codebook([bb.special.bos, 70])
    with pytest.raises(UserInputError):
        bb.image_vocab.to_codebook([bb.vocab_size + 3])
    with pytest.raises(UserInputError):
        bb.image_vocab.to_bpe([300])


def test_incomplete_codebook_is_refused() -> None:
    with pytest.raises(BackboneError, match="codebook"):
        ImageVocab({"IMGIMGAZ": 1, "IMGIMGCZ": 2}, vocab_size=4)
    with pytest.raises(BackboneError, match="IMGIMG"):
        ImageVocab({"a": 0}, vocab_size=4)
