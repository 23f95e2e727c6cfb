"""A random-weight backbone of a real model's shape, built in memory, for speed checks.

Timing does not depend on the weights' values, so `yoc bench --synthetic anole-7b`
measures what Anole-7b would cost on this machine without its 14 GB download. The
vocabulary has Anole's layout (65,536 ids; image tokens at 4..8195; special tokens
at their real ids) with made-up names for the text tokens. Its output is noise and it
has no VQ decoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from yoc_assistant.errors import UserInputError

# name -> (hidden, layers, heads, intermediate, vocab, image tokens, image side)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "anole-7b": (4096, 32, 32, 11008, 65536, 8192, 512),
    "small": (256, 2, 4, 512, 65536, 8192, 512),  # real vocabulary, tiny body: a CPU check
}
SPECIAL = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<eoss>": 8196, "<racm3:break>": 8197,
           "<reserved08706>": 8710, "<image>": 8711}


def _vocabulary(size: int, image_tokens: int) -> dict[str, int]:
    from yoc_assistant.backbone.tiny import image_token_name

    vocab = dict(SPECIAL)
    for code in range(image_tokens):
        vocab[image_token_name(code)] = 4 + code
    taken = set(vocab.values())
    vocab.update({f"w{i}": i for i in range(size) if i not in taken})
    return vocab


def _tokenizer(vocab: dict[str, int]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(list(SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", sep_token="<reserved08706>")


def synthetic_backbone(shape: str = "anole-7b", precision: str = "bf16", device: str = "auto") -> Any:
    """A `Backbone` with random weights of the named shape (see SHAPES)."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.backbone.loading import fingerprint, pick_device
    from yoc_assistant.backbone.quantize import (
        WEIGHT_ONLY_PRECISIONS,
        compute_dtype,
        quantize_weight_only,
    )
    from yoc_assistant.backbone.vocab import ImageVocab, special_tokens

    if shape not in SHAPES:
        raise UserInputError(f"unknown synthetic shape {shape!r}: use one of {', '.join(SHAPES)}")
    if precision not in ("bf16", "fp32", *WEIGHT_ONLY_PRECISIONS):
        raise UserInputError(f"a synthetic backbone is bf16, fp32 or int8wo, not {precision}")
    hidden, layers, heads, inter, size, n_img, side = SHAPES[shape]
    dev = pick_device(device)
    dtype = compute_dtype(precision, dev)
    vocab = _vocabulary(size, n_img)
    config = ChameleonConfig(vocab_size=size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads,
                             intermediate_size=inter, vocabulary_map=vocab, bos_token_id=0,
                             eos_token_id=2, pad_token_id=1)
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = ChameleonForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval().requires_grad_(False)
    if precision in WEIGHT_ONLY_PRECISIONS:
        quantize_weight_only(model)
    tokenizer = _tokenizer(vocab)
    grid = side // 16
    label = f"synthetic {shape} (random weights)"
    return Backbone(model=model, tokenizer=tokenizer, special=special_tokens(tokenizer, vocab),
                    image_vocab=ImageVocab(vocab, size), vocab_size=size, hidden_size=hidden,
                    image_seq_length=grid * grid, image_size=side, source=label, name=label,
                    precision=precision, device=dev, dtype=dtype,
                    fingerprint=fingerprint(vocab, hidden, size), has_decoder=False)


def write_synthetic_checkpoint(shape: str, folder: str | os.PathLike[str], device: str = "auto") -> Path:
    """Write a random bf16 model of the named shape as a loadable checkpoint folder (so that
    `Backbone.load(folder, precision="int8" | "nf4")` quantizes it with bitsandbytes, as a
    real checkpoint would be). No VQ decoder: it cannot draw pictures."""
    import json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    bb = synthetic_backbone(shape, precision="bf16", device=device)
    bb.model.save_pretrained(str(out))
    bb.tokenizer.save_pretrained(str(out))
    side = int(bb.image_size)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ChameleonImageProcessor", "processor_class": "ChameleonProcessor",
        "do_resize": True, "size": {"shortest_edge": side}, "resample": 1, "do_center_crop": True,
        "crop_size": {"height": side, "width": side}, "do_rescale": True, "rescale_factor": 0.0078,
        "do_normalize": True, "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0],
        "do_convert_rgb": True}))
    (out / "processor_config.json").write_text(json.dumps({
        "image_seq_length": int(bb.image_seq_length), "image_token": "<image>",
        "processor_class": "ChameleonProcessor"}))
    return out
