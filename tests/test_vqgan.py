"""Our VQGAN decoder against the reference outputs of transformers PR #32013."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.backbone.tiny import write_tiny_checkpoint
from yoc_assistant.backbone.vqgan import VQDecoder, decode_pixels
from yoc_assistant.errors import BackboneError, UserInputError

DATA = Path(__file__).parent / "data" / "tiny-anole-a"
PARAMS = Path(__file__).parent / "data" / "anole-vqvae-decoder-params.json"  # copy of shared/spec


@pytest.fixture(scope="module")
def bb():  # type: ignore[no-untyped-def]
    return load_backbone(DATA / "checkpoint", precision="bf16", device="cpu")


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(DATA / "expected_pixels.safetensors"))


def test_decoder_is_lazy(tmp_path: Path) -> None:
    fresh = load_backbone(DATA / "checkpoint", precision="fp32", device="cpu")
    assert fresh.vq_decoder is None  # text-only use builds nothing


def test_pixels_match_reference(bb, expected) -> None:  # type: ignore[no-untyped-def]
    got = decode_pixels(bb, expected["bpe_ids"])
    ref = expected["pixels"]
    assert got.shape == ref.shape
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    assert rel <= 1e-4


def test_images_match_reference_pngs(bb, expected) -> None:  # type: ignore[no-untyped-def]
    images = bb.decode_images(expected["bpe_ids"])
    assert len(images) == 3
    for i, image in enumerate(images):
        ref = np.asarray(Image.open(DATA / f"expected_{i}.png").convert("RGB")).astype(int)
        got = np.asarray(image).astype(int)
        assert image.mode == "RGB" and image.size == (bb.image_size, bb.image_size)
        assert np.abs(got - ref).max() <= 1


def test_tokens_json_agrees(bb) -> None:  # type: ignore[no-untyped-def]
    tokens = json.loads((DATA / "tokens.json").read_text())
    assert bb.image_vocab.to_codebook(tokens["bpe_ids"]).tolist() == tokens["codebook_ids"]
    assert bb.image_vocab.to_bpe(tokens["codebook_ids"]).tolist() == tokens["bpe_ids"]


def test_wrong_count_is_refused(bb, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match=r"exactly 144 .*\(1, 143\)"):
        bb.decode_images(expected["bpe_ids"][:1, :143])


def test_non_image_ids_are_refused(bb, expected) -> None:  # type: ignore[no-untyped-def]
    ids = expected["bpe_ids"][:1].clone()
    ids[0, 7] = bb.special.bos
    with pytest.raises(UserInputError, match="not image tokens"):
        bb.decode_images(ids)


def test_decoder_layout_matches_real_checkpoint_names() -> None:
    """With Anole's vq_config defaults the decoder has exactly the real checkpoint's tensors."""
    params = json.loads(PARAMS.read_text())
    real = {p["name"].removeprefix("model.vqmodel.decoder."): tuple(p["shape"])
            for p in params if p["name"].startswith("model.vqmodel.decoder.")}
    config = SimpleNamespace(channel_multiplier=[1, 1, 2, 2, 4], base_channels=128, num_res_blocks=2,
                             attn_resolutions=[], attn_type="vanilla", resolution=512,
                             latent_channels=256, out_channels=3, dropout=0.0)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in VQDecoder(config).state_dict().items()}
    assert shapes == real
    assert sum(int(np.prod(s)) for s in shapes.values()) == 39_294_851


def test_attn_resolutions_are_honoured(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "attn", vq={"attn_resolutions": [16]}, seed=1)
    names = load_file(str(ckpt / "model.safetensors")).keys()
    # resolution 32, 3 levels: latent 8, level 1 runs at 16 -> attention after each resnet there
    assert "model.vqmodel.decoder.up.1.attn.1.q.weight" in names
    assert not any(n.startswith("model.vqmodel.decoder.up.0.attn") for n in names)
    bb = load_backbone(ckpt, precision="fp32", device="cpu")
    codes = torch.randint(0, len(bb.image_vocab), (1, bb.image_seq_length), generator=torch.Generator().manual_seed(0))
    images = bb.decode_images(bb.image_vocab.to_bpe(codes))
    assert images[0].size == (32, 32)


def test_checkpoint_without_decoder(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "nodec", decoder=False)
    bb = load_backbone(ckpt, precision="fp32", device="cpu")
    assert bb.has_decoder is False
    assert bb.detokenize(bb.tokenize("hello")) == "hello"
    ids = bb.encode_images([Image.new("RGB", (40, 30), (200, 10, 10))])
    with pytest.raises(BackboneError, match="no VQ decoder"):
        bb.decode_images(ids)


def test_partial_decoder_is_refused(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "part")
    weights = load_file(str(ckpt / "model.safetensors"))
    del weights["model.vqmodel.decoder.norm_out.bias"]
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackboneError, match="decoder.norm_out.bias"):
        load_backbone(ckpt, precision="fp32", device="cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_decode_on_cuda_matches_reference(precision: str, expected) -> None:  # type: ignore[no-untyped-def]
    gpu = load_backbone(DATA / "checkpoint", precision=precision, device="cuda")
    got = decode_pixels(gpu, expected["bpe_ids"].cuda()).cpu()
    ref = expected["pixels"]
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-3  # TF32/cuDNN convolutions
    image = Image.open(DATA / "encode" / "gradient_150x97.png")
    cpu = load_backbone(DATA / "checkpoint", precision="fp32", device="cpu")
    assert torch.equal(gpu.encode_images([image]), cpu.encode_images([image]))
