"""Pre-processing and VQ encoding reproduce upstream transformers' reference outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from yoc_assistant.backbone.imaging import postprocess, preprocess, to_rgb
from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.errors import UserInputError

DATA = Path(__file__).parent / "data" / "tiny-anole-a"
EXPECTED = json.loads((DATA / "encode" / "expected_encode.json").read_text())
FILES = [item["file"] for item in EXPECTED["images"]]


@pytest.fixture(scope="module")
def bb():  # type: ignore[no-untyped-def]
    return load_backbone(DATA / "checkpoint", precision="bf16", device="cpu")


def _image(name: str) -> Image.Image:
    return Image.open(DATA / "encode" / name)


@pytest.mark.parametrize("name", FILES)
def test_preprocess_matches_reference(bb, name: str) -> None:  # type: ignore[no-untyped-def]
    reference = load_file(str(DATA / "encode" / "encode_pixel_values.safetensors"))
    got = preprocess(bb, [_image(name)])
    assert got.shape == (1, 3, bb.image_size, bb.image_size) and got.dtype == torch.float32
    ref = reference[f"{Path(name).stem}.pil"]
    assert torch.allclose(got[0], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FILES)
def test_encode_matches_upstream(bb, name: str) -> None:  # type: ignore[no-untyped-def]
    item = next(i for i in EXPECTED["images"] if i["file"] == name)
    ids = bb.encode_images([_image(name)])
    assert ids.dtype == torch.long and ids.shape == (1, bb.image_seq_length)
    assert ids[0].tolist() == item["pil"]["bpe_ids"]
    assert ids[0].tolist() == item["torchvision"]["bpe_ids"]


def test_encode_batch_equals_single(bb) -> None:  # type: ignore[no-untyped-def]
    images = [_image(name) for name in FILES]
    batch = bb.encode_images(images)
    assert batch.shape == (2, bb.image_seq_length)
    for row, image in zip(batch, images, strict=True):
        assert torch.equal(row, bb.encode_images([image])[0])
    assert bb.image_vocab.is_image(batch).all()


def test_transparency_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (10, 200, 30, 0))
    assert np.asarray(to_rgb(clear)).tolist() == np.full((4, 4, 3), 255).tolist()
    opaque = Image.new("RGBA", (4, 4), (10, 200, 30, 255))
    assert np.asarray(to_rgb(opaque))[0, 0].tolist() == [10, 200, 30]
    grey = Image.new("L", (4, 4), 77)
    assert np.asarray(to_rgb(grey))[0, 0].tolist() == [77, 77, 77]


def test_non_image_input_is_named(bb) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="image 1 is a str"):
        bb.encode_images([_image(FILES[0]), "photo.png"])
    with pytest.raises(UserInputError, match="no images"):
        bb.encode_images([])


def test_postprocess_range_and_truncation() -> None:
    pixels = torch.tensor([-2.0, -1.0, 0.0, 0.5, 0.989, 3.0]).view(1, 3, 1, 2)
    image = postprocess(pixels)[0]
    assert image.mode == "RGB" and image.size == (2, 1)
    values = np.asarray(image).transpose(2, 0, 1).reshape(-1).tolist()
    expected = [int(min(max((v + 1) / 0.0078, 0), 255)) for v in [-2.0, -1.0, 0.0, 0.5, 0.989, 3.0]]
    assert values == expected
