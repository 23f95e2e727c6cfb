"""Pixels in and out of the VQ-VAE (spec §5): pre-processing, encoding, post-processing.

Pre-processing follows HF's ChameleonImageProcessor (PIL backend): transparency
composited onto white, shortest edge resized with LANCZOS, centre crop, then
x * 0.0078 - 1. Encoding uses upstream's VQ encoder; the codebook indices are
mapped to BPE ids through our ImageVocab (built from the tokenizer's names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from PIL import Image

    from yoc_assistant.backbone.core import Backbone

RESCALE = 0.0078  # HF's stand-in for 1/127.5, kept for parity with the checkpoint's processor


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of `image`; any transparency is composited onto white (as upstream does)."""
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _check_images(images: Sequence[Any]) -> list[Image.Image]:
    from PIL import Image as PILImage

    if isinstance(images, PILImage.Image):
        images = [images]
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, PILImage.Image):
            raise UserInputError(f"image {i} is a {type(image).__name__}, not a PIL image")
        if image.width < 1 or image.height < 1:
            raise UserInputError(f"image {i} is empty ({image.width}x{image.height})")
        out.append(image)
    if not out:
        raise UserInputError("no images given")
    return out


def _resize_crop(image: Image.Image, size: int) -> Image.Image:
    from PIL import Image as PILImage

    w, h = image.size
    if w <= h:  # long edge = floor(size * long / short), as HF computes it
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    image = image.resize((new_w, new_h), resample=PILImage.Resampling.LANCZOS)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image.crop((left, top, left + size, top + size))


def preprocess(bb: Backbone | int, images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> FloatTensor [B, 3, S, S] in the encoder's input range (spec §5.1)."""
    size = bb if isinstance(bb, int) else bb.image_size
    batch = []
    for image in _check_images(images):
        square = _resize_crop(to_rgb(image), size)
        array = np.asarray(square, dtype=np.float32) * np.float32(RESCALE) - np.float32(1.0)
        batch.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
    return torch.stack(batch)


@torch.no_grad()
def encode_pixels(bb: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """Pre-processed pixels [B, 3, S, S] -> image-token BPE ids [B, image_seq_length]."""
    vq = bb.model.model.vqmodel
    dev = next(vq.parameters()).device
    out = vq.encode(pixels.to(device=dev, dtype=torch.float32), return_dict=True)
    codes = out.image_tokens.view(pixels.shape[0], -1).cpu()
    return bb.image_vocab.to_bpe(codes)


def encode_images(bb: Backbone, images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> LongTensor [B, image_seq_length] of image-token BPE ids (CPU)."""
    return encode_pixels(bb, preprocess(bb, images))


def postprocess(pixels: torch.Tensor) -> list[Image.Image]:
    """Decoder output [B, 3, H, W] -> RGB PIL images: (x + 1) / 0.0078, clip, truncate (spec §5.2)."""
    from PIL import Image as PILImage

    values = ((pixels.detach().float().cpu() + 1.0) * (1.0 / RESCALE)).clamp(0, 255).to(torch.uint8)
    return [PILImage.fromarray(v.permute(1, 2, 0).contiguous().numpy()) for v in values]


def vq_digest(bb: Backbone) -> str:
    """Digest of the VQ encoder (weights, dtype) and image size (`Backbone.vq_id()` keeps it)."""
    import hashlib

    digest = hashlib.sha256(f"size={bb.image_size};seq={bb.image_seq_length}".encode())
    vq = getattr(getattr(bb.model, "model", bb.model), "vqmodel", None)
    if vq is not None:
        for name, tensor in sorted(vq.state_dict().items()):
            if ".decoder." in f".{name}":
                continue  # decoding does not change the tokens
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            try:
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            except (RuntimeError, TypeError):  # an exotic (quantized) dtype: its values will do
                digest.update(repr(flat.float().sum().item()).encode())
    return f"{bb.fingerprint[:16]}-vq{digest.hexdigest()[:16]}"
