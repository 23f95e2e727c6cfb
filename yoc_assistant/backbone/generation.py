"""Decoding: the router's one forward pass, constrained text, constrained images.

Text (spec §8, Meta's text rule): image tokens, BOI, EOI and special `<...>` tokens
are forbidden; EOS, the end-of-turn separator and the caller's `stop_ids` end the
answer; extra (concept) rows are forbidden unless the caller allows them.
Images (spec §7/§8): the prompt is made to end with BOI, exactly `image_seq_length`
image tokens are drawn from the image vocabulary only, with classifier-free guidance
against an unconditional prompt ([BOS, BOI] by default); EOI closes the block and is
never fed. The loop itself lives in `imagegen.py`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.backbone import network
from yoc_assistant.backbone.core import GeneratedImages, GeneratedText, PromptPass
from yoc_assistant.backbone.sampling import NoiseStream, check_options, select, warp
from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone, ExtraTokens


def prompt_tensor(bb: Backbone, prompt_ids: Sequence[int], extra: ExtraTokens | None,
                  what: str = "prompt") -> torch.Tensor:
    """Validate a prompt (non-empty, ids in [0, V+E)) and return it as a LongTensor [T]."""
    try:
        ids = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserInputError(f"{what} must be a list of token ids: {err}") from None
    if ids.dim() != 1 or ids.numel() == 0:
        raise UserInputError(f"{what} is empty: it needs at least one token id")
    network.check_ids(bb, ids, extra, what)
    return ids


def prefill(bb: Backbone, prompt_ids: Sequence[int], extra: ExtraTokens | None = None) -> PromptPass:
    """The prompt through the network once, with its KV cache (see `PromptPass`)."""
    ids = prompt_tensor(bb, prompt_ids, extra)
    with torch.inference_mode():
        logits, cache = network.forward(bb, ids.unsqueeze(0), extra=extra, use_cache=True)
    return PromptPass(ids.tolist(), extra, logits[0, -1].float().cpu(), cache)


def _same_rows(a: ExtraTokens | None, b: ExtraTokens | None) -> bool:
    """The same extra rows (a ConceptSet builds a new ExtraTokens on each access)."""
    if a is None or b is None:
        return a is b or (len(a or []) == 0 and len(b or []) == 0)
    return (a is b or (a.input_rows.shape == b.input_rows.shape
                       and torch.equal(a.input_rows.detach().cpu(), b.input_rows.detach().cpu())
                       and torch.equal(a.output_rows.detach().cpu(), b.output_rows.detach().cpu())))


def prefix_length(prefix: PromptPass | None, ids: Sequence[int], extra: ExtraTokens | None) -> int:
    """How many leading tokens of `ids` `prefix` has run: its length when it is a start of
    `ids` made with the same extra rows and still holds its cache, else 0 (run them all)."""
    if prefix is None or prefix.cache is None or not _same_rows(prefix.extra, extra):
        return 0
    known = list(prefix.ids)
    return len(known) if len(known) <= len(ids) and list(ids[:len(known)]) == known else 0


def _start(bb: Backbone, ids: torch.Tensor, extra: ExtraTokens | None,
           prefix: PromptPass | None) -> tuple[torch.Tensor, Any]:
    """(logits [1, T', V+E] whose last row predicts the token after `ids`, cache): from
    `prefix` when it is a start of `ids` made with the same extra rows, else a full prefill."""
    known = prefix_length(prefix, ids.tolist(), extra)
    if not known:
        return network.forward(bb, ids.unsqueeze(0), extra=extra, use_cache=True)
    assert prefix is not None
    cache = prefix.take_cache()
    rest = ids[known:]
    device = network.embedding_layer(bb).weight.device
    if rest.numel() == 0:
        return prefix.logits.view(1, 1, -1).to(device), cache
    return network.forward(bb, rest.unsqueeze(0).to(device), extra=extra, cache=cache, use_cache=True)


def next_token_logits(bb: Backbone, prompt_ids: Sequence[int],
                      extra: ExtraTokens | None = None) -> torch.Tensor:
    """Float32 logits [V+E] (on the CPU) for the token after the prompt: one pass, no cache."""
    ids = prompt_tensor(bb, prompt_ids, extra)
    with torch.inference_mode():
        logits, _ = network.forward(bb, ids.unsqueeze(0), extra=extra)
    return logits[0, -1].float().cpu()  # no cache kept: `prefill` keeps one


# -- text -------------------------------------------------------------------------------
def special_mask(bb: Backbone) -> torch.Tensor:
    """Bool [vocab_size]: image tokens and `<...>` special tokens (cached on the backbone)."""
    cached = bb.caches.special_mask
    if cached is not None:
        return cached
    mask = bb.image_vocab.mask(bb.vocab_size).clone()
    special = [t for t, tok in getattr(bb.tokenizer, "added_tokens_decoder", {}).items() if tok.special]
    # Chameleon's reserved tokens are named `<...>` whether or not the tokenizer flags them.
    special += [t for name, t in bb.tokenizer.get_vocab().items()
                if len(name) > 2 and name[0] == "<" and name[-1] == ">" and " " not in name]
    for tok in special:
        if 0 <= tok < bb.vocab_size:
            mask[tok] = True
    for tok in bb.special.ids():
        mask[tok] = True
    bb.caches.special_mask = mask
    return mask


def text_forbidden(bb: Backbone, extra: ExtraTokens | None, allowed: set[int]) -> torch.Tensor:
    """Bool [V+E], True where text decoding may not go."""
    rows = len(extra) if extra is not None else 0
    mask = torch.cat([special_mask(bb), torch.ones(rows, dtype=torch.bool)])
    keep = [t for t in allowed if 0 <= t < mask.numel()]
    if keep:
        mask[torch.tensor(keep)] = False
    return mask


_HOLD = ("\ufffd", "'")
# A word-level tokenizer splits "<bo>'s" into ' and s, and detokenizes them "' s"
# (after a word: "star ' s"); its own cleanup does not mend that.
_SPLIT_CLITIC = re.compile(r"(?<=[\w>]) ?' (s|t|d|m|re|ve|ll)\b")


def tidy_text(text: str) -> str:
    """Join English clitics a word-level detokenizer left apart: "<bo>' s" -> "<bo>'s"."""
    return _SPLIT_CLITIC.sub(r"'\1", text)


class TextStream:
    """Turns tokens into text pieces as they come.

    Decodes a small window (the previous piece's tokens plus the new ones) and emits
    only the growth, holding back while the text ends in an incomplete character
    (U+FFFD) or an apostrophe (the next word may join it: `<bo>'s`), so byte-level
    tokenizers and leading-space rules come out right.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], on_token: Callable[[str], None] | None):
        self.decode = decode
        self.on_token = on_token
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        self.emitted: list[str] = []

    def push(self, tok: int) -> None:
        self.ids.append(tok)
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(_HOLD) and after.startswith(before):
            self._emit(after[len(before):])
            self.prefix, self.read = self.read, len(self.ids)

    def finish(self) -> str:
        """The whole text; emits whatever was held back so the pieces join to it."""
        text = self.decode(self.ids)
        sent = "".join(self.emitted)
        if text.startswith(sent) and len(text) > len(sent):
            self._emit(text[len(sent):])
        return text

    def _emit(self, piece: str) -> None:
        self.emitted.append(piece)
        if self.on_token is not None:
            self.on_token(piece)


# A model that has lost its way repeats a short run of tokens until max_new_tokens
# (the toy backbone answered "' s ' s ' s …" for 256 tokens). A run of up to
# MAX_LOOP tokens seen LOOP_REPEATS times in a row (a single token: twice as often)
# ends the answer: no real sentence does that.
MAX_LOOP = 8
LOOP_REPEATS = 4


def repeating(ids: Sequence[int]) -> bool:
    """Whether `ids` ends in a short run of tokens repeated over and over."""
    for n in range(1, MAX_LOOP + 1):
        reps = 2 * LOOP_REPEATS if n == 1 else LOOP_REPEATS
        if len(ids) < n * reps:
            break
        tail = list(ids[-n:])
        if all(list(ids[len(ids) - n * (r + 1):len(ids) - n * r]) == tail for r in range(1, reps)):
            return True
    return False


def text_decoder(bb: Backbone, names: Mapping[int, str] | None) -> Callable[[Sequence[int]], str]:
    """ids -> text; extra ids (only present when allowed) render as `names[id]`."""
    vocab = int(bb.vocab_size)

    def decode(ids: Sequence[int]) -> str:
        # Runs of ordinary tokens are detokenized as a whole; a name between two runs gets
        # the spaces a word would have (a run's own leading space is lost when it is
        # detokenized alone), but none before punctuation.
        pieces: list[tuple[str, bool]] = []  # (text, is a name)
        run: list[int] = []
        for tok in ids:
            if tok < vocab:
                run.append(tok)
                continue
            if run:
                pieces.append((bb.detokenize(run), False))
                run = []
            pieces.append(((names or {}).get(tok, f"<extra:{tok - vocab}>"), True))
        if run:
            pieces.append((bb.detokenize(run), False))
        out = ""
        for k, (text, is_name) in enumerate(pieces):
            after_name = k > 0 and pieces[k - 1][1]
            if out and text and not out[-1].isspace() and not text[0].isspace() and \
                    (is_name or (after_name and (text[0].isalnum() or text[0] in "<("))):
                out += " "
            out += text
        return tidy_text(out)

    return decode


def generate_text(bb: Backbone, prompt_ids: Sequence[int], *, extra: ExtraTokens | None = None,
                  max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.9,
                  top_k: int = 0, seed: int | None = None, on_token: Callable[[str], None] | None = None,
                  stop_ids: Sequence[int] = (), allow_ids: Sequence[int] = (),
                  extra_names: Mapping[int, str] | None = None,
                  prefix: PromptPass | None = None,
                  decisive_ids: Sequence[int] = (),
                  decisive_bias: Callable[[], Sequence[float]] | None = None) -> GeneratedText:
    """Sample a text answer after the prompt (temperature 0 = greedy).

    With `decisive_ids` (e.g. the first tokens of "Yes" and "No"), the first token is
    the greedy choice, and when it is one of them the whole answer is greedy: a yes/no
    answer is a decision, and `yoc eval` scores exactly that choice
    (`text_decision`), so what it measures is what a user is told. `decisive_bias`
    (called only when that first token is decisive) returns one logit offset per
    decisive id, and the decision is then re-taken among the decisive ids alone
    (`decide_first`; the photo witness, `personalize/witness.py`).

    Stops on EOS ("eos"), on the end-of-turn separator or any of `stop_ids` ("stop"),
    when the answer has fallen into a loop ("repeat", see `repeating`), or after
    `max_new_tokens` ("length"); stop tokens are not part of the result.
    `allow_ids` lets extra (concept) ids into the answer, rendered via `extra_names`.
    `prefix` (a `prefill` of the prompt's start) saves running those tokens again.
    """
    ids = prompt_tensor(bb, prompt_ids, extra)
    check_options(temperature, top_p, top_k)
    if max_new_tokens < 1:
        raise UserInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = int(bb.special.eos)
    stops = {int(t) for t in stop_ids} | {int(bb.special.sep)}
    forbidden = text_forbidden(bb, extra, stops | {eos} | {int(t) for t in allow_ids})
    limit = forbidden.numel()
    greedy = temperature <= 0
    decisive = {int(t) for t in decisive_ids}
    noise = None if greedy else NoiseStream(secrets.randbits(31) if seed is None else seed, limit)
    stream = TextStream(text_decoder(bb, extra_names), on_token)
    reason = "length"
    device = network.embedding_layer(bb).weight.device
    forbidden = forbidden.to(device)
    with torch.inference_mode():
        logits, cache = _start(bb, ids, extra, prefix)
        for step in range(max_new_tokens):
            last = logits[0, -1].masked_fill(forbidden, float("-inf"))
            uniform = None if noise is None else noise.next().to(device)
            if step == 0 and decisive:
                bias = None
                if decisive_bias is not None and int(last.argmax()) in decisive:
                    bias = torch.tensor([list(decisive_bias())], dtype=torch.float32)
                tok = int(decide_first(last[None], decisive_ids, bias)[0])
                greedy = greedy or tok in decisive
            else:
                tok = int(select(warp(last, temperature, top_k, top_p), uniform, greedy))
            if tok == eos or tok in stops:
                reason = "eos" if tok == eos else "stop"
                break
            stream.push(tok)
            if repeating(stream.ids):
                reason = "repeat"
                break
            if step + 1 < max_new_tokens:
                feed = torch.tensor([[tok]], device=device)
                logits, cache = network.forward(bb, feed, extra=extra, cache=cache, use_cache=True)
    text = stream.finish()
    return GeneratedText(ids=list(stream.ids), text=text, finish_reason=reason)


def text_decision(bb: Backbone, logits: torch.Tensor, extra: ExtraTokens | None,
                  allow_ids: Sequence[int] = (), decisive_ids: Sequence[int] = (),
                  decisive_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The first token `generate_text(..., allow_ids=, decisive_ids=, decisive_bias=)`
    answers after prompts whose next-token logits are `logits` [N, V+E] -> LongTensor [N];
    `decisive_bias` [N, len(decisive_ids)]: each prompt's offsets (see `decide_first`)."""
    stops = {int(bb.special.sep), int(bb.special.eos)}
    forbidden = text_forbidden(bb, extra, stops | {int(t) for t in allow_ids}).to(logits.device)
    allowed = logits[:, : forbidden.numel()].masked_fill(forbidden, float("-inf"))
    return decide_first(allowed, decisive_ids, decisive_bias)


def decide_first(logits: torch.Tensor, decisive_ids: Sequence[int],
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """The first answer token after logits [N, V] (forbidden tokens already -inf): the
    greedy choice; where that is one of `decisive_ids` and `bias` [N, len(decisive_ids)]
    is given, the decisive id whose logit plus its offset is largest. So an offset can
    turn a Yes into a No, but never turn an answer that is not a decision into one."""
    first = logits.argmax(-1)
    if bias is None or not len(decisive_ids):
        return first
    ids = torch.tensor([int(t) for t in decisive_ids], device=logits.device)
    if bias.shape != (logits.shape[0], ids.numel()):
        raise ValueError(f"decisive_bias has shape {tuple(bias.shape)}; expected "
                         f"{(logits.shape[0], ids.numel())}")
    rescored = ids[(logits[:, ids].float() + bias.to(logits.device).float()).argmax(-1)]
    return torch.where(torch.isin(first, ids), rescored, first)


# -- images ------------------------------------------------------------------------------
def image_prompt(bb: Backbone, prompt_ids: Sequence[int], extra: ExtraTokens | None,
                 what: str) -> list[int]:
    """Validated prompt ids ending with BOI (appended when missing)."""
    ids = prompt_tensor(bb, prompt_ids, extra, what).tolist()
    boi = int(bb.special.boi)
    return ids if ids[-1] == boi else ids + [boi]


def generate_images(bb: Backbone, prompt_ids: Sequence[int], *, n: int = 1,
                    extra: ExtraTokens | None = None, cfg_scale: float = 3.0,
                    temperature: float = 1.0, top_p: float = 0.9, top_k: int = 0,
                    seed: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                    uncond_ids: Sequence[int] | None = None, decode: bool = True,
                    compiled: bool | None = None, decoding: str | None = None,
                    prefix: PromptPass | None = None) -> GeneratedImages:
    """Draw `n` images in one batch. Image i samples from its own stream seeded
    `seed + i` (recorded in `.seeds`), so any image can be redrawn alone.

    cfg_scale 1.0 turns guidance off (no unconditional rows). `uncond_ids` replaces
    the default unconditional prompt [BOS] (BOI is appended); it may not hold extra ids.
    `decoding`: "sjd" or "sequential" (None: `imagegen.DEFAULT_DECODING`); both draw from
    the same distribution, SJD with fewer forward passes (`.passes`). `prefix`: a `prefill`
    of the prompt's start (with the same `extra`), continued instead of run again.
    """
    from yoc_assistant.backbone.imagegen import DECODINGS, DEFAULT_DECODING, sample_image_ids
    from yoc_assistant.backbone.sjd import SJDStats

    decoding = DEFAULT_DECODING if decoding is None else decoding
    if decoding not in DECODINGS:
        raise UserInputError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    if not isinstance(n, int) or n < 1:
        raise UserInputError(f"n (number of images) must be a positive integer, got {n!r}")
    check_options(temperature, top_p, top_k)
    if not cfg_scale > 0:
        raise UserInputError(f"cfg_scale must be > 0 (1.0 = no guidance), got {cfg_scale}")
    prompt = image_prompt(bb, prompt_ids, extra, "prompt")
    uncond = None
    if cfg_scale != 1.0:
        base = [int(bb.special.bos)] if uncond_ids is None else list(uncond_ids)
        uncond = image_prompt(bb, base, None, "unconditional prompt")
    base_seed = secrets.randbits(31) if seed is None else int(seed)
    seeds = [base_seed + i for i in range(n)]
    stats = SJDStats()
    ids = sample_image_ids(bb, prompt, uncond, n=n, extra=extra, cfg_scale=float(cfg_scale),
                           temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                           seeds=seeds, on_progress=on_progress, compiled=compiled, decoding=decoding,
                           stats=stats, prefix=prefix)
    images = bb.decode_images(ids) if decode else []
    passes = stats.passes if decoding == "sjd" else int(ids.shape[1])
    return GeneratedImages(ids=ids, images=images, seeds=seeds, decoding=decoding, passes=passes)
