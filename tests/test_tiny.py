"""The tiny random checkpoint writer and the default-backbone resolution."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoc_assistant.app import backbones as resolve
from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.backbone.tiny import write_tiny_checkpoint


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_round_trip_encode_decode(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "t", image_size=64, seed=5)
    bb = load_backbone(ckpt, precision="fp32", device="cpu")
    assert bb.image_size == 64 and bb.image_seq_length == (64 // 4) ** 2
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    ids = bb.encode_images([photo])
    assert ids.shape == (1, bb.image_seq_length) and bb.image_vocab.is_image(ids).all()
    (image,) = bb.decode_images(ids)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert np.asarray(image).std() > 1  # random weights still give a varied picture


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = _digest(write_tiny_checkpoint(tmp_path / "a", seed=7))
    b = _digest(write_tiny_checkpoint(tmp_path / "b", seed=7))
    c = _digest(write_tiny_checkpoint(tmp_path / "c", seed=8))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]


def test_global_rng_untouched(tmp_path: Path) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_checkpoint(tmp_path / "t")
    assert torch.equal(torch.rand(3), before)


def test_loads_with_upstream_transformers(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, ChameleonForConditionalGeneration

    ckpt = write_tiny_checkpoint(tmp_path / "t")
    model, info = ChameleonForConditionalGeneration.from_pretrained(str(ckpt), output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    assert tok.sep_token == "<reserved08706>"
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # BOS is prepended by default
    processor = AutoImageProcessor.from_pretrained(str(ckpt))
    pixels = processor(Image.new("RGB", (40, 40)), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 32, 32)
    tokens = model.model.get_image_tokens(pixels)
    assert tokens.shape == (1, 64)


def test_byte_level_tokenizer_handles_any_text(tmp_path: Path) -> None:
    bb = load_backbone(write_tiny_checkpoint(tmp_path / "t"), precision="fp32", device="cpu")
    text = "Ünïcode & emoji 🐶 <not special>"
    ids = bb.tokenize(text)
    assert bb.tokenizer.unk_token_id not in ids
    assert bb.detokenize(ids) == text


def test_word_level_tokenizer(tmp_path: Path) -> None:
    words = ["a", "red", "dog", "draw"]
    bb = load_backbone(write_tiny_checkpoint(tmp_path / "t", words=words), precision="fp32", device="cpu")
    vocab = bb.tokenizer.get_vocab()
    assert bb.tokenize("Draw a red dog.") == [vocab[w] for w in ["draw", "a", "red", "dog", "."]]
    assert bb.detokenize(bb.tokenize("draw a red dog.")) == "draw a red dog."
    assert bb.special.boi == vocab["<racm3:break>"]


def test_default_backbone_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_BACKBONE", "someone/model")
    assert resolve.default_backbone() == ("someone/model", False)


def test_default_backbone_tiny_random(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, yoc_home: Path) -> None:
    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    monkeypatch.setattr(resolve, "TOY_WEIGHTS", tmp_path / "no-toy")
    source, noise = resolve.default_backbone()
    assert noise is True
    assert Path(source) == yoc_home / "backbones" / "tiny-random"
    first = _digest(Path(source))
    assert resolve.default_backbone() == (source, True)  # written once, then reused
    assert _digest(Path(source)) == first
    assert not [p for p in (yoc_home / "backbones").iterdir() if p.name.startswith(".")]
    bb = load_backbone(source, precision="fp32", device="cpu")
    assert bb.vocab_size > 0


def test_default_backbone_prefers_toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("YOC_BACKBONE", raising=False)
    toy = write_tiny_checkpoint(tmp_path / "toy")
    monkeypatch.setattr(resolve, "TOY_WEIGHTS", toy)
    assert resolve.default_backbone() == (str(toy), False)


def test_configured_fingerprint_without_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "t", seed=2)
    monkeypatch.setenv("YOC_BACKBONE", str(ckpt))
    assert resolve.configured_fingerprint() == load_backbone(ckpt, precision="fp32", device="cpu").fingerprint
    monkeypatch.delenv("YOC_BACKBONE")
    monkeypatch.setattr(resolve, "TOY_WEIGHTS", tmp_path / "no-toy")
    assert resolve.configured_fingerprint() is None  # the tiny default is not written yet
