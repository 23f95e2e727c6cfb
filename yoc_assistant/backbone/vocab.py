"""Special tokens and the image-token vocabulary, read from the checkpoint's tokenizer.

Ids are never hard-coded: the real Anole checkpoint and the test checkpoints put
the same tokens at different ids on purpose. Image tokens are the vocabulary
entries named `IMGIMG...`; their codebook index is written in the name (spec §6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from yoc_assistant.errors import BackboneError, UserInputError

IMAGE_PREFIX = "IMGIMG"
# Token strings of the Chameleon tokenizer (spec §6).
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
BOI_TOKEN = "<racm3:break>"
EOI_TOKEN = "<eoss>"
SEP_TOKEN = "<reserved08706>"
IMAGE_PLACEHOLDER_TOKEN = "<image>"


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    pad: int
    boi: int
    eoi: int
    sep: int
    image_placeholder: int

    def ids(self) -> set[int]:
        return {self.bos, self.eos, self.pad, self.boi, self.eoi, self.sep, self.image_placeholder}


def special_tokens(tokenizer: object, vocab: Mapping[str, int] | None = None) -> SpecialTokens:
    """Read the special ids from the tokenizer (its own bos/eos/pad/sep first, then by name)."""
    vocab = dict(vocab if vocab is not None else tokenizer.get_vocab())  # type: ignore[attr-defined]

    def find(attr: str | None, name: str) -> int:
        if attr is not None:
            tok_id = getattr(tokenizer, attr, None)
            if isinstance(tok_id, int):
                return tok_id
        if name not in vocab:
            raise BackboneError(f"the tokenizer has no {name!r} token: not a Chameleon/Anole tokenizer")
        return int(vocab[name])

    return SpecialTokens(
        bos=find("bos_token_id", BOS_TOKEN),
        eos=find("eos_token_id", EOS_TOKEN),
        pad=find("pad_token_id", PAD_TOKEN),
        boi=find(None, BOI_TOKEN),
        eoi=find(None, EOI_TOKEN),
        sep=find("sep_token_id", SEP_TOKEN),
        image_placeholder=find(None, IMAGE_PLACEHOLDER_TOKEN),
    )


def codebook_index(name: str) -> int:
    """`IMGIMGFDZ` -> 53: drop the prefix and the last character, letters A..J are digits."""
    body = name[len(IMAGE_PREFIX):-1]
    digits = "".join(str(ord(c) - ord("A")) if "A" <= c <= "J" else c for c in body)
    if not digits.isdigit():
        raise BackboneError(f"image token {name!r} does not name a codebook index")
    return int(digits)


class ImageVocab:
    """BPE id <-> VQ codebook index, built from the IMGIMG token names."""

    def __init__(self, vocab: Mapping[str, int], vocab_size: int) -> None:
        pairs = sorted((int(i), codebook_index(n)) for n, i in vocab.items() if n.startswith(IMAGE_PREFIX))
        if not pairs:
            raise BackboneError("the tokenizer has no IMGIMG image tokens: not a Chameleon/Anole tokenizer")
        self.vocab_size = int(vocab_size)
        bpe = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        code = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        if int(bpe.max()) >= self.vocab_size:
            raise BackboneError(f"image token id {int(bpe.max())} is outside the model's {vocab_size} rows")
        self.size = len(pairs)
        if int(code.max()) + 1 != self.size or len(set(code.tolist())) != self.size:
            raise BackboneError("the IMGIMG tokens do not cover codebook indices 0..N-1 exactly once")
        # Dense tables; -1 marks "not an image token".
        self.bpe_to_code = torch.full((self.vocab_size,), -1, dtype=torch.long)
        self.bpe_to_code[bpe] = code
        self.code_to_bpe = torch.empty(self.size, dtype=torch.long)
        self.code_to_bpe[code] = bpe
        self.bpe_ids = bpe  # sorted ascending
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(bpe_to_code, code_to_bpe) on `device`, copied once (decoding asks every step)."""
        if device not in self._on:
            self._on[device] = (self.bpe_to_code.to(device), self.code_to_bpe.to(device))
        return self._on[device]

    def __len__(self) -> int:
        return self.size

    def is_image(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Bool mask, same shape as `ids`; ids outside 0..vocab_size-1 are not image tokens."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        inside = (ids >= 0) & (ids < self.vocab_size)
        table = self._tables(ids.device)[0]
        return inside & (table[ids.clamp(0, self.vocab_size - 1)] >= 0)

    def mask(self, size: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool [size] over the vocabulary (size >= vocab_size, e.g. with extra rows), True at image ids."""
        size = self.vocab_size if size is None else int(size)
        out = torch.zeros(size, dtype=torch.bool, device=device)
        keep = self.bpe_ids[self.bpe_ids < size]
        out[keep.to(out.device)] = True
        return out

    def to_codebook(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        ok = self.is_image(ids)
        if not bool(ok.all()):
            bad = ids[~ok].unique()[:5].tolist()
            raise UserInputError(
                f"{int((~ok).sum())} id(s) are not image tokens (e.g. {bad}); image tokens are "
                f"{self.size} ids between {int(self.bpe_ids[0])} and {int(self.bpe_ids[-1])}"
            )
        return self._tables(ids.device)[0][ids]

    def to_bpe(self, codebook_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        codes = torch.as_tensor(codebook_ids, dtype=torch.long)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.size):
            raise UserInputError(f"codebook index out of range 0..{self.size - 1}")
        return self._tables(codes.device)[1][codes]
