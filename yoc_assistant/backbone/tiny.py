"""Tiny random Anole-format checkpoints: for tests, and the default when no model is installed.

The files are those of `leloy/Anole-7b-v0.1-hf` (config.json with vocabulary_map
and vq_config, model.safetensors with every tensor including the VQ decoder,
tokenizer.json, processor configs) at toy sizes. Special tokens sit at other ids
than the real model's on purpose, so code that hard-codes ids fails here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from yoc_assistant.backbone import vocab as V

PUNCTUATION = [".", ",", "?", "!", "'", ":", ";", "-", "(", ")"]
N_RESERVED = 4
DEFAULT_VQ: dict[str, Any] = {
    "resolution": 32, "base_channels": 32, "channel_multiplier": [1, 1, 2], "num_res_blocks": 1,
    "embed_dim": 8, "latent_channels": 16, "num_embeddings": 256, "attn_resolutions": [],
    "attn_type": "vanilla", "in_channels": 3, "out_channels": 3, "double_latent": False, "dropout": 0.0,
}


def image_token_name(code: int) -> str:
    """Codebook index -> IMGIMG name (digits written A..J, then `Z`), as in the real vocabulary."""
    return V.IMAGE_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def _text_tokens(words: Sequence[str] | None) -> list[str]:
    if words is None:
        from tokenizers.pre_tokenizers import ByteLevel

        return sorted(ByteLevel.alphabet())
    seen: dict[str, None] = {}
    for w in [*(w.lower() for w in words), *PUNCTUATION]:
        seen.setdefault(w, None)
    return list(seen)


def build_vocab(words: Sequence[str] | None, num_codes: int) -> dict[str, int]:
    """Text tokens, then specials, then image tokens, then spare reserved tokens."""
    names = _text_tokens(words)
    names += [
        "<unk>", V.BOS_TOKEN, V.EOS_TOKEN, V.PAD_TOKEN,
        *[f"<reserved{i:05d}>" for i in range(N_RESERVED)],
        V.EOI_TOKEN, V.BOI_TOKEN, V.SEP_TOKEN, V.IMAGE_PLACEHOLDER_TOKEN,
    ]
    names += [image_token_name(c) for c in range(num_codes)]
    names += [f"<reserved{9000 + i:05d}>" for i in range(N_RESERVED)]
    return {name: i for i, name in enumerate(names)}


def _tokenizer_json(vocab: dict[str, int], words: Sequence[str] | None) -> str:
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    n_text = len(_text_tokens(words))  # text tokens come first (build_vocab)
    if words is None:
        tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.WordLevel(vocab=dict(vocab), unk_token="<unk>"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    specials = sorted((i, n) for n, i in vocab.items() if i >= n_text and not n.startswith(V.IMAGE_PREFIX))
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for _, n in specials])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{V.BOS_TOKEN} $A", pair=f"{V.BOS_TOKEN} $A $B",
        special_tokens=[(V.BOS_TOKEN, vocab[V.BOS_TOKEN])],
    )
    for i, n in specials:  # added tokens must keep the ids we chose
        if tok.token_to_id(n) != i:
            raise AssertionError(f"tiny tokenizer: {n} got id {tok.token_to_id(n)}, wanted {i}")
    return tok.to_str(pretty=True)


def _init_vq(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random VQ weights that give varied images: unit-variance convs, jittered norms."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Conv2d):
            fan_in = sub.in_channels * sub.kernel_size[0] * sub.kernel_size[1]
            sub.weight.data = torch.randn(sub.weight.shape, generator=gen) / math.sqrt(fan_in)
            sub.bias.data = torch.randn(sub.bias.shape, generator=gen) * 0.05
        elif isinstance(sub, torch.nn.GroupNorm):
            sub.weight.data = 0.75 + 0.5 * torch.rand(sub.weight.shape, generator=gen)
            sub.bias.data = torch.randn(sub.bias.shape, generator=gen) * 0.1
        elif isinstance(sub, torch.nn.Embedding):
            sub.weight.data = torch.randn(sub.weight.shape, generator=gen)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_tiny_checkpoint(path: str | os.PathLike[str], *, hidden_size: int = 64, num_layers: int = 2,
                          num_heads: int = 4, intermediate_size: int = 128,
                          words: Sequence[str] | None = None, vq: dict[str, Any] | None = None,
                          image_size: int | None = None, seed: int = 0, decoder: bool = True,
                          max_position_embeddings: int = 4096) -> Path:
    """Write a complete random Anole-format HF checkpoint into `path`; return it.

    `words`: None for a byte-level tokenizer (any text), else a word-level vocabulary
    of these words plus punctuation. `vq` overrides DEFAULT_VQ keys; `image_size`
    sets vq resolution. `decoder=False` leaves out the VQ decoder tensors (a
    checkpoint that can read images but not draw them). Deterministic per seed.
    """
    from safetensors.torch import save_file
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    from yoc_assistant.backbone.vqgan import VQDecoder

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vq_cfg = {**DEFAULT_VQ, **(vq or {})}
    if image_size is not None:
        vq_cfg["resolution"] = int(image_size)
    grid = vq_cfg["resolution"] // 2 ** (len(vq_cfg["channel_multiplier"]) - 1)
    vocab = build_vocab(words, vq_cfg["num_embeddings"])
    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, vocabulary_map=vocab, vq_config=vq_cfg,
        bos_token_id=vocab[V.BOS_TOKEN], eos_token_id=vocab[V.EOS_TOKEN], pad_token_id=vocab[V.PAD_TOKEN],
        tie_word_embeddings=False,
    )
    config.boi_token_id = vocab[V.BOI_TOKEN]
    config.eoi_token_id = vocab[V.EOI_TOKEN]
    config.architectures = ["ChameleonForConditionalGeneration"]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ChameleonForConditionalGeneration(config)
        dec = VQDecoder(config.vq_config)
        gen = torch.Generator().manual_seed(seed + 1)
        _init_vq(model.model.vqmodel, gen)
        _init_vq(dec, gen)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if decoder:
        tensors.update({f"model.vqmodel.decoder.{k}": v.detach().contiguous().clone()
                        for k, v in dec.state_dict().items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(out))
    _write_processing_files(out, vocab, words, vq_cfg["resolution"], grid * grid)
    return out


def _write_processing_files(out: Path, vocab: dict[str, int], words: Sequence[str] | None,
                            resolution: int, seq_len: int) -> None:
    (out / "tokenizer.json").write_text(_tokenizer_json(vocab, words))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": V.BOS_TOKEN, "eos_token": V.EOS_TOKEN,
        "pad_token": V.PAD_TOKEN, "unk_token": "<unk>", "sep_token": V.SEP_TOKEN, "add_bos_token": True,
        "model_max_length": 1_000_000, "processor_class": "ChameleonProcessor",
    })
    _write_json(out / "special_tokens_map.json", {
        "bos_token": V.BOS_TOKEN, "eos_token": V.EOS_TOKEN, "pad_token": V.PAD_TOKEN,
        "unk_token": "<unk>", "sep_token": V.SEP_TOKEN,
    })
    _write_json(out / "preprocessor_config.json", {
        "image_processor_type": "ChameleonImageProcessor", "processor_class": "ChameleonProcessor",
        "do_resize": True, "size": {"shortest_edge": resolution}, "resample": 1,
        "do_center_crop": True, "crop_size": {"height": resolution, "width": resolution},
        "do_rescale": True, "rescale_factor": 0.0078, "do_normalize": True,
        "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0], "do_convert_rgb": True,
    })
    _write_json(out / "processor_config.json", {
        "image_seq_length": seq_len, "image_token": V.IMAGE_PLACEHOLDER_TOKEN,
        "processor_class": "ChameleonProcessor",
    })
    _write_json(out / "generation_config.json", {
        "bos_token_id": vocab[V.BOS_TOKEN], "eos_token_id": vocab[V.EOS_TOKEN],
        "pad_token_id": vocab[V.PAD_TOKEN],
    })
