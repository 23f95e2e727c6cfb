"""`Backbone`: one loaded checkpoint and everything the rest of yoc asks of it.

CONTRACT (other parts code against exactly this; keep it stable):

* Token ids: ids < `vocab_size` are the checkpoint's own; ids >= `vocab_size`
  address rows of an `ExtraTokens` (id - vocab_size = row). This is how learned
  concept tokens enter prompts, training and decoding without touching the model.
* `embed(ids, extra)` -> input embeddings; `logits(hidden, extra)` -> the head's
  logits with the extra rows' logits appended (no image-token masking: upstream's
  forward masks image tokens, so yoc calls `model.model` and the head itself).
* `forward(...)` runs the base transformer on ids or embeddings with a KV cache.
* Methods are thin: each delegates to the module that owns it (text.py,
  imaging.py, vqgan.py, network.py, generation.py, loading.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from PIL import Image

    from yoc_assistant.backbone.vocab import ImageVocab, SpecialTokens


@dataclass
class ExtraTokens:
    """Rows the checkpoint does not have. Row r is token id `vocab_size + r`.

    `input_rows` [E, H] are spliced into the input embeddings, `output_rows` [E, H]
    are appended to the head (logit = hidden @ output_rows.T). Either may require grad.
    """

    input_rows: torch.Tensor
    output_rows: torch.Tensor

    def __post_init__(self) -> None:
        if self.input_rows.shape != self.output_rows.shape:
            raise ValueError(
                f"ExtraTokens: input rows {tuple(self.input_rows.shape)} and output rows "
                f"{tuple(self.output_rows.shape)} differ"
            )

    def __len__(self) -> int:
        return int(self.input_rows.shape[0])


@dataclass
class GeneratedText:
    ids: list[int]
    text: str
    finish_reason: str  # "eos" | "length" | "stop" | "repeat"


@dataclass
class GeneratedImages:
    ids: torch.Tensor  # LongTensor [n, image_seq_length], image-token BPE ids
    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    decoding: str = "sequential"  # "sjd" | "sequential"
    passes: int = 0  # forward passes of the batch (the prefill counts as one)


@dataclass
class BackboneCaches:
    """What the backbone's modules compute once per loaded backbone and keep: declared
    here, each filled on first use by the module named (nothing else hangs state on it)."""

    special_mask: Any = None  # generation.py: bool mask of the special/image ids, per device
    image_head: Any = None  # imagegen.py: (image-token ids, their head rows)
    image_engine: Any = None  # imagegen.py: the image decoder and its static KV cache
    # imagegen.py: one image generation at a time per backbone (the engine is shared)
    image_lock: threading.Lock = field(default_factory=threading.Lock)
    fused_layers: Any = None  # fused.py: the decode step's fused layer weights
    vq_decoder: Any = None  # vqgan.py: the VQ decoder, built on the first decode
    vq_id: str | None = None  # `Backbone.vq_id()`: digest of the VQ encoder
    # app/backbones.py: CPU thread counts a training run may choose among by timing them
    # (personalize/threadpick.py); empty: it keeps torch's count.
    cpu_threads: tuple[int, ...] = ()


@dataclass
class PromptPass:
    """A prompt already run through the network (`Backbone.prefill`): the next-token
    logits and the KV cache. The router makes one; the responder continues from it
    (`generate_text(prefix=...)`, `generate_images(prefix=...)`) instead of running the
    prompt again. Used once: the cache grows as decoding goes on, so `take_cache()` hands
    it over and forgets it."""

    ids: list[int]
    extra: ExtraTokens | None
    logits: torch.Tensor  # float32 [V+E] on the CPU, for the token after `ids`
    cache: Any = field(default=None, repr=False)

    def take_cache(self) -> Any:
        cache, self.cache = self.cache, None
        return cache


ProgressFn = Callable[[int, int], None]  # (done, total)
TokenFn = Callable[[str], None]  # streamed text piece


class Backbone:
    """Load with `Backbone.load(...)` (or build one from parts: `backbone.synthetic`).

    model: transformers ChameleonForConditionalGeneration (frozen, eval mode)
    tokenizer: the checkpoint's tokenizer
    special: SpecialTokens (bos, eos, pad, boi, eoi, sep, image_placeholder) read from it
    image_vocab: ImageVocab (IMGIMG names <-> codebook indices)
    vocab_size: rows of the head / embedding (ids >= this address ExtraTokens)
    hidden_size, image_seq_length (tokens per image), image_size (pixels, square)
    source: what was loaded (path or hub id); name: a short display name
    precision: fp32 | bf16 | int8 | nf4; device: torch.device; dtype: compute dtype
    fingerprint: hex digest of the vocabulary and hidden size: concept files made
                 for another backbone are refused by comparing it
    has_decoder: whether the checkpoint carries VQ decoder weights
    cfg_scale: the guidance `generate_images` uses when given none
    checkpoint_dir: the checkpoint's folder (None when built in memory)
    image_processor: the checkpoint's image processor (None when built in memory)
    caches: `BackboneCaches`, what the modules compute once and keep
    caption_prompt: the prompt a small checkpoint was taught to describe a photo with
                    (config.json `yoc_caption_prompt`), or None: any wording works
    """

    model: Any
    tokenizer: Any
    special: SpecialTokens
    image_vocab: ImageVocab
    vocab_size: int
    hidden_size: int
    image_seq_length: int
    image_size: int
    source: str
    name: str
    precision: str
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    has_decoder: bool
    cfg_scale: float  # the checkpoint's default guidance (config.json `yoc_cfg_scale`, else 3.0)
    checkpoint_dir: Path | None
    caption_prompt: str | None  # config.json `yoc_caption_prompt`
    image_processor: Any
    caches: BackboneCaches

    def __init__(self, *, model: Any, tokenizer: Any, special: SpecialTokens, image_vocab: ImageVocab,
                 vocab_size: int, hidden_size: int, image_seq_length: int, image_size: int,
                 source: str, name: str, precision: str, device: torch.device, dtype: torch.dtype,
                 fingerprint: str, has_decoder: bool, cfg_scale: float = 3.0,
                 checkpoint_dir: Path | None = None, image_processor: Any = None,
                 caption_prompt: str | None = None) -> None:
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.special, self.image_vocab = special, image_vocab
        self.vocab_size, self.hidden_size = int(vocab_size), int(hidden_size)
        self.image_seq_length, self.image_size = int(image_seq_length), int(image_size)
        self.source, self.name = source, name
        self.precision, self.device, self.dtype = precision, device, dtype
        self.fingerprint, self.has_decoder = fingerprint, bool(has_decoder)
        self.cfg_scale, self.checkpoint_dir = float(cfg_scale), checkpoint_dir
        self.caption_prompt = caption_prompt
        self.caches = BackboneCaches()

    @property
    def vq_decoder(self) -> Any:
        """The VQ decoder once the first picture was decoded, else None."""
        return self.caches.vq_decoder

    # -- loading -----------------------------------------------------------------
    @classmethod
    def load(cls, source: str, precision: str = "bf16", device: str = "auto") -> Backbone:
        """Load a local HF directory or a hub id already in the local HF cache."""
        from yoc_assistant.backbone.loading import load_backbone

        return load_backbone(source, precision=precision, device=device)

    # -- text (backbone/text.py) ------------------------------------------------------
    def tokenize(self, text: str, *, bos: bool = False) -> list[int]:
        from yoc_assistant.backbone.text import tokenize

        return tokenize(self, text, bos=bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        from yoc_assistant.backbone.text import detokenize

        return detokenize(self, ids)

    def prompt_ids(self, parts: Sequence[str | Sequence[int] | Image.Image], *,
                   end_turn: bool = True) -> list[int]:
        """BOS, then each part (text tokenized; id lists as they are; an image as
        BOI + its image tokens + EOI), then the end-of-turn separator if `end_turn`."""
        from yoc_assistant.backbone.text import prompt_ids

        return prompt_ids(self, parts, end_turn=end_turn)

    # -- images (backbone/imaging.py, backbone/vqgan.py) --------------------------------
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """LongTensor [B, image_seq_length] of image-token BPE ids."""
        from yoc_assistant.backbone.imaging import encode_images

        return encode_images(self, images)

    def decode_images(self, ids: torch.Tensor) -> list[Image.Image]:
        """Image-token BPE ids [B, image_seq_length] -> RGB PIL images."""
        from yoc_assistant.backbone.vqgan import decode_images

        return decode_images(self, ids)

    # -- the network (backbone/network.py) -------------------------------------------
    def embed(self, ids: torch.Tensor, extra: ExtraTokens | None = None) -> torch.Tensor:
        from yoc_assistant.backbone.network import embed

        return embed(self, ids, extra)

    def logits(self, hidden: torch.Tensor, extra: ExtraTokens | None = None) -> torch.Tensor:
        from yoc_assistant.backbone.network import logits

        return logits(self, hidden, extra)

    def hidden_states(self, embeds: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                      share_prefix_of: torch.Tensor | None = None) -> torch.Tensor:
        """The base transformer's last hidden states [B, T, H] for input embeddings (from
        `embed`): what training and scoring put through `logits` at chosen positions.
        `share_prefix_of`: the rows' ids; when the rows are right-padded (the mask holds
        nothing else) the positions they all start with run once
        (`network.common_prefix`, `network.shared_prefix_hidden`)."""
        from yoc_assistant.backbone.network import (
            base_forward,
            common_prefix,
            right_padded,
            shared_prefix_hidden,
        )

        if share_prefix_of is not None and right_padded(attention_mask):
            lengths = None if attention_mask is None else attention_mask.sum(dim=1)
            prefix = common_prefix(share_prefix_of, lengths)
            if prefix:
                return shared_prefix_hidden(self, embeds, prefix)
        hidden, _ = base_forward(self, embeds, attention_mask=attention_mask)
        return hidden

    def vq_id(self) -> str:
        """Digest of the VQ encoder (weights, dtype) and image size: image tokens cached
        under it are this backbone's. Computed once."""
        if self.caches.vq_id is None:
            from yoc_assistant.backbone.imaging import vq_digest

            self.caches.vq_id = vq_digest(self)
        return self.caches.vq_id

    def forward(self, ids: torch.Tensor | None = None, *, embeds: torch.Tensor | None = None,
                extra: ExtraTokens | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None,
                use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Base transformer + head + extra rows. Returns (logits [B, T, V+E], cache)."""
        from yoc_assistant.backbone.network import forward

        return forward(self, ids, embeds=embeds, extra=extra, attention_mask=attention_mask,
                       position_ids=position_ids, cache=cache, use_cache=use_cache)

    # -- decoding (backbone/generation.py) ------------------------------------------
    def next_token_logits(self, prompt_ids: Sequence[int],
                          extra: ExtraTokens | None = None) -> torch.Tensor:
        from yoc_assistant.backbone.generation import next_token_logits

        return next_token_logits(self, prompt_ids, extra=extra)

    def prefill(self, prompt_ids: Sequence[int], extra: ExtraTokens | None = None) -> PromptPass:
        """Run the prompt once, keeping its KV cache: the next-token logits (what the router
        reads) and a start that `generate_text(prefix=)` continues from."""
        from yoc_assistant.backbone.generation import prefill

        return prefill(self, prompt_ids, extra=extra)

    def generate_text(self, prompt_ids: Sequence[int], *, extra: ExtraTokens | None = None,
                      max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.9,
                      top_k: int = 0, seed: int | None = None, on_token: TokenFn | None = None,
                      stop_ids: Sequence[int] = (), allow_ids: Sequence[int] = (),
                      extra_names: Mapping[int, str] | None = None,
                      prefix: PromptPass | None = None,
                      decisive_ids: Sequence[int] = (),
                      decisive_bias: Callable[[], Sequence[float]] | None = None) -> GeneratedText:
        """`allow_ids`: extra (concept) ids the answer may use, shown as `extra_names[id]`.
        `prefix`: a `prefill` of the prompt's start (with the same `extra`): decoding
        continues from its cache instead of running those tokens again. `decisive_ids`,
        `decisive_bias`: see `generation.generate_text` (yes/no answers decided greedily)."""
        from yoc_assistant.backbone.generation import generate_text

        return generate_text(self, prompt_ids, extra=extra, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                             on_token=on_token, stop_ids=stop_ids, allow_ids=allow_ids,
                             extra_names=extra_names, prefix=prefix, decisive_ids=decisive_ids,
                             decisive_bias=decisive_bias)

    def generate_images(self, prompt_ids: Sequence[int], *, n: int = 1,
                        extra: ExtraTokens | None = None, cfg_scale: float | None = None,
                        temperature: float = 1.0, top_p: float = 0.9, top_k: int = 0,
                        seed: int | None = None, on_progress: ProgressFn | None = None,
                        uncond_ids: Sequence[int] | None = None,
                        decode: bool = True, decoding: str | None = None,
                        prefix: PromptPass | None = None) -> GeneratedImages:
        """`cfg_scale` None: the checkpoint's own (`self.cfg_scale`); `decoding` None: the
        default ("sjd" or "sequential", `imagegen.DEFAULT_DECODING`). `prefix`: a `prefill`
        of the prompt's start (with the same `extra`), continued instead of run again."""
        from yoc_assistant.backbone.generation import generate_images

        return generate_images(self, prompt_ids, n=n, extra=extra,
                               cfg_scale=self.cfg_scale if cfg_scale is None else cfg_scale,
                               temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                               on_progress=on_progress, uncond_ids=uncond_ids, decode=decode,
                               decoding=decoding, prefix=prefix)
