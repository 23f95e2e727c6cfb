"""Concept vectors: the only thing yoc ever learns about a user's thing.

A concept is an identifier token `<name>` plus token groups (by default
"generation", k=16, owned by the image modality, and "understanding", h=16,
owned by the text modality; a plugin may register more). Each token has one
input row (spliced into the input embeddings) and one output row (appended to
the head), so a concept is two `[1 + sum(group sizes), hidden]` tensors.

Row layout (fixed, saved in the file): row 0 is the identifier, then each group's
rows in the order of `groups`.

`ConceptSet` lays several concepts side by side in one `ExtraTokens` so one prompt
can mention two of them: concept c's row r has id `vocab_size + offset(c) + r`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yoc_assistant.atomic import atomic_path
from yoc_assistant.errors import IncompatibleError, NotFoundError, UserInputError, short

if TYPE_CHECKING:
    from yoc_assistant.backbone.core import Backbone, ExtraTokens

FORMAT = "yoc-concept"
FORMAT_VERSION = 1
MAX_REFERENCE_TOKENS = 1 << 16  # a 512x512 Anole photo is 1024
MAX_WITNESS_PHOTOS = 64  # the photos a concept keeps for the photo witness (a user shows 3-5)
IDENTIFIER = "identifier"
GENERATION = "generation"
UNDERSTANDING = "understanding"
DEFAULT_GROUPS: dict[str, int] = {GENERATION: 16, UNDERSTANDING: 16}
# Noise added at initialization, as a fraction of the per-dimension spread of the
# backbone's rows: enough to tell group tokens apart, small enough to stay "a word".
INIT_NOISE = 0.1


def check_groups(groups: Mapping[str, int]) -> dict[str, int]:
    """Validate group names and sizes; return them as an ordered plain dict."""
    out: dict[str, int] = {}
    for name, size in groups.items():
        if not isinstance(name, str) or not name or name == IDENTIFIER or ":" in name:
            raise UserInputError(f"invalid token group name {name!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size > 4096:
            raise UserInputError(f"token group {name!r} has size {size!r}; it must be 1..4096")
        out[name] = size
    return out


def backbone_fields(bb: Backbone) -> dict[str, str]:
    """The backbone facts a concept file records and checks on load."""
    return {
        "backbone": str(bb.name),
        "backbone_source": str(bb.source),
        "backbone_fingerprint": str(bb.fingerprint),
        "hidden_size": str(int(bb.hidden_size)),
        "vocab_size": str(int(bb.vocab_size)),
    }


@dataclass
class ConceptVectors:
    """One concept's learned rows. `input_rows`/`output_rows`: float32 [rows, hidden]."""

    name: str
    groups: dict[str, int]
    input_rows: torch.Tensor
    output_rows: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)
    # Image-token ids of one of the concept's photos, shown in its prompt after its rows
    # (`ConceptSet.prompt_ids`); empty: rows only (the paper). See TrainConfig.reference_photo.
    reference: list[int] = field(default_factory=list)
    # Image-token ids of each of the concept's training photos, asked by the photo witness
    # (`personalize/witness.py`, which averages their answers); empty: the reference alone.
    photos: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.groups = check_groups(self.groups)
        want = (self.n_rows, int(self.input_rows.shape[-1]))
        for what, rows in (("input", self.input_rows), ("output", self.output_rows)):
            if rows.dim() != 2 or tuple(rows.shape) != want:
                raise UserInputError(
                    f"concept {self.name!r}: {what} rows have shape {tuple(rows.shape)}, "
                    f"groups {self.groups} need {want}"
                )

    # -- layout ---------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return 1 + sum(self.groups.values())

    @property
    def hidden_size(self) -> int:
        return int(self.input_rows.shape[-1])

    def group_slice(self, group: str) -> slice:
        """Rows of `group` inside this concept (row 0 is the identifier)."""
        start = 1
        for name, size in self.groups.items():
            if name == group:
                return slice(start, start + size)
            start += size
        raise NotFoundError(
            f"concept {self.name!r} has no token group {group!r} (it has: {', '.join(self.groups)})"
        )

    # -- creation -----------------------------------------------------------------------
    @classmethod
    def initialize(cls, bb: Backbone, name: str, groups: Mapping[str, int] | None = None, *,
                   seed: int = 0, words: Sequence[int] = ()) -> ConceptVectors:
        """Fresh rows: inputs near the mean text embedding, outputs near the mean head row,
        each with small seeded noise (so new tokens start as plausible words at a plausible logit).

        `words` (token ids, e.g. `describe.photo_words`): the last rows of every group start
        as these words' input embeddings instead, so the personalized prompt
        `<name> is <g..><u..>.` first reads as a description of the concept; training
        starts from what the backbone already sees in the photos."""
        groups = check_groups(dict(DEFAULT_GROUPS if groups is None else groups))
        n = 1 + sum(groups.values())
        emb_mean, emb_std = _row_stats(*_text_embedding_rows(bb))
        head_mean, head_std = _row_stats(bb.model.lm_head.weight)
        gen = torch.Generator().manual_seed(int(seed))
        noise_in = torch.randn(n, emb_mean.numel(), generator=gen)
        noise_out = torch.randn(n, head_mean.numel(), generator=gen)
        input_rows = emb_mean + INIT_NOISE * emb_std * noise_in
        output_rows = head_mean + INIT_NOISE * head_std * noise_out
        meta = backbone_fields(bb)
        meta["init_seed"] = str(int(seed))
        if words:
            ids = [int(w) for w in words]
            table = bb.model.get_input_embeddings().weight
            start = 1
            for size in groups.values():
                picked = ids[:size]
                rows = table[torch.tensor(picked, device=table.device)].detach().float().cpu()
                input_rows[start + size - len(picked):start + size] = rows
                start += size
            meta["init_words"] = " ".join(map(str, ids))
        return cls(name, groups, input_rows.contiguous(), output_rows.contiguous(), meta)

    def clone(self) -> ConceptVectors:
        return ConceptVectors(self.name, dict(self.groups), self.input_rows.detach().clone(),
                              self.output_rows.detach().clone(), dict(self.metadata), list(self.reference),
                              [list(p) for p in self.photos])

    def with_rows(self, input_rows: torch.Tensor, output_rows: torch.Tensor) -> ConceptVectors:
        """The same concept (name, groups, metadata, photos) with other rows."""
        return ConceptVectors(self.name, dict(self.groups), input_rows, output_rows, dict(self.metadata),
                              list(self.reference), [list(p) for p in self.photos])

    # -- files --------------------------------------------------------------------------
    def file_metadata(self, bb: Backbone | None = None) -> dict[str, str]:
        meta = {k: str(v) for k, v in self.metadata.items()}
        if bb is not None:
            meta.update(backbone_fields(bb))
        meta.update({
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "concept": self.name,
            "groups": json.dumps([[g, s] for g, s in self.groups.items()]),
            "hidden_size": str(self.hidden_size),
        })
        return meta

    def save(self, path: str | os.PathLike[str], bb: Backbone | None = None) -> Path:
        """Write atomically as safetensors (float32 rows + metadata). Returns the path."""
        from safetensors.torch import save_file

        for what, rows in (("input", self.input_rows), ("output", self.output_rows)):
            if not bool(torch.isfinite(rows).all()):
                raise UserInputError(f"concept {self.name!r}: {what} rows are not finite; not saved")
        tensors = {
            "input_rows": self.input_rows.detach().to("cpu", torch.float32).contiguous(),
            "output_rows": self.output_rows.detach().to("cpu", torch.float32).contiguous(),
        }
        if self.reference:
            tensors["reference"] = torch.tensor(self.reference, dtype=torch.int64)
        if self.photos:
            if len({len(p) for p in self.photos}) != 1 or len(self.photos) > MAX_WITNESS_PHOTOS:
                raise UserInputError(f"concept {self.name!r}: its witness photos must be 1..{MAX_WITNESS_PHOTOS} "
                                     "photos of one backbone (as many image tokens each); not saved")
            tensors["photos"] = torch.tensor(self.photos, dtype=torch.int64)
        target = Path(path)
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata=self.file_metadata(bb))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], backbone: Backbone | None = None) -> ConceptVectors:
        """Read a concept file; with `backbone`, refuse one made for another backbone."""
        target = Path(path)
        tensors, meta = read_concept_file(target)
        vectors = _from_file(target, tensors, meta)
        if backbone is not None:
            check_compatible(target, meta, backbone)
            image_ids = set(backbone.image_vocab.bpe_ids.tolist())
            if any(t not in image_ids for t in vectors.reference):
                raise UserInputError(f"{target}: its reference photo holds ids that are not this "
                                     f"backbone's image tokens (corrupt file)")
            if any(t not in image_ids for p in vectors.photos for t in p):
                raise UserInputError(f"{target}: its witness photos hold ids that are not this "
                                     f"backbone's image tokens (corrupt file)")
        return vectors


def read_concept_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a concept file, or a clear error naming the file."""
    from safetensors import safe_open

    if not path.exists():
        raise NotFoundError(f"concept file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as err:  # SafetensorError, OSError, bad JSON header...
        raise UserInputError(
            f"{path} is not a readable concept file (corrupt or truncated: {short(err)})"
        ) from err
    if meta.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a yoc concept file (format {short(meta.get('format'), 40)!r})")
    return tensors, meta


def _from_file(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> ConceptVectors:
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise UserInputError(f"{path}: format_version {meta.get('format_version')!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise IncompatibleError(
            f"{path} was written by a newer yoc (concept format {version}; this yoc reads up to "
            f"{FORMAT_VERSION}); upgrade yoc"
        )
    try:
        groups = {str(g): int(s) for g, s in json.loads(meta["groups"])}
        name = meta["concept"]
    except (KeyError, ValueError, TypeError, RecursionError) as err:
        raise UserInputError(f"{path}: concept metadata is damaged ({short(repr(err))})") from None
    if not {"input_rows", "output_rows"} <= set(tensors) <= {"input_rows", "output_rows", "reference", "photos"}:
        raise UserInputError(f"{path}: expected tensors input_rows and output_rows (and a reference "
                             f"photo, witness photos), found {len(tensors)}: {short(sorted(tensors)[:4], 120)}")
    reference = tensors.pop("reference", None)
    if reference is not None and (reference.dim() != 1 or reference.dtype != torch.int64 or
                                  reference.numel() > MAX_REFERENCE_TOKENS or bool((reference < 0).any())):
        raise UserInputError(f"{path}: the reference photo is not a list of image-token ids (corrupt file)")
    photos = tensors.pop("photos", None)
    if photos is not None and (photos.dim() != 2 or photos.dtype != torch.int64 or
                               not 1 <= photos.shape[0] <= MAX_WITNESS_PHOTOS or
                               photos.shape[1] > MAX_REFERENCE_TOKENS or bool((photos < 0).any())):
        raise UserInputError(f"{path}: the witness photos are not rows of image-token ids (corrupt file)")
    rows = {k: v.to(torch.float32) for k, v in tensors.items()}
    for key, value in rows.items():
        if not bool(torch.isfinite(value).all()):
            raise UserInputError(f"{path}: {key} holds NaN or infinite values (corrupt file)")
    try:
        vectors = ConceptVectors(name, groups, rows["input_rows"], rows["output_rows"], meta,
                                 [] if reference is None else [int(t) for t in reference.tolist()],
                                 [] if photos is None else [[int(t) for t in p] for p in photos.tolist()])
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from None
    if str(vectors.hidden_size) != meta.get("hidden_size", str(vectors.hidden_size)):
        raise UserInputError(f"{path}: rows have width {vectors.hidden_size}, metadata says {meta['hidden_size']}")
    return vectors


def check_compatible(path: Path, meta: Mapping[str, str], bb: Backbone) -> None:
    """IncompatibleError naming both backbones unless the file was made for `bb`."""
    theirs = meta.get("backbone", "?")
    same_hidden = meta.get("hidden_size") == str(int(bb.hidden_size))
    same_vocab = meta.get("vocab_size") == str(int(bb.vocab_size))
    same_print = meta.get("backbone_fingerprint") == str(bb.fingerprint)
    if not (same_hidden and same_vocab and same_print):
        why = []
        if not same_hidden:
            why.append(f"hidden size {meta.get('hidden_size')} vs {bb.hidden_size}")
        if not same_vocab:
            why.append(f"vocabulary {meta.get('vocab_size')} vs {bb.vocab_size} rows")
        if not why:
            why.append("a different tokenizer vocabulary")
        raise IncompatibleError(
            f"{path} was trained for backbone {theirs!r} "
            f"(fingerprint {str(meta.get('backbone_fingerprint', '?'))[:12]}), not for the loaded "
            f"backbone {bb.name!r} (fingerprint {str(bb.fingerprint)[:12]}): {', '.join(why)}. "
            f"Retrain the concept on this backbone (yoc train NAME)"
        )


def _text_embedding_rows(bb: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """(input-embedding table, mask of its non-image rows): image tokens are not words."""
    weight = bb.model.get_input_embeddings().weight
    keep = ~bb.image_vocab.mask(int(weight.shape[0]), device=weight.device)
    return weight, keep


def _row_stats(weight: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the kept rows, float32 on CPU (chunked: a 7B's
    head and embedding are 65k x 4096 each, no copy of them is made)."""
    w = weight.detach()
    total = torch.zeros(w.shape[-1], dtype=torch.float64)
    squares = torch.zeros(w.shape[-1], dtype=torch.float64)
    n = 0
    for start in range(0, w.shape[0], 8192):
        chunk = w[start:start + 8192]
        if keep is not None:
            chunk = chunk[keep[start:start + 8192]]
        chunk = chunk.to("cpu", torch.float64)
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
        n += int(chunk.shape[0])
    n = max(n, 1)
    mean = total / n
    var = (squares / n - mean * mean).clamp(min=0)
    return mean.float(), var.sqrt().float()


@dataclass(frozen=True)
class TokenRef:
    """What an extra id stands for: `group` is "identifier" for the concept's own token."""

    concept: str
    group: str
    index: int

    @property
    def display(self) -> str:
        if self.group == IDENTIFIER:
            return f"<{self.concept}>"
        return f"<{self.concept}:{self.group}{self.index + 1}>"


class ConceptSet:
    """Several concepts laid side by side in one `ExtraTokens`.

    `extra` is built from the vectors' own tensors each time it is read, so when
    those tensors require grad (training) the gradients reach them.
    """

    def __init__(self, backbone: Backbone, concepts: Sequence[ConceptVectors] = ()) -> None:
        self.backbone = backbone
        self.concepts: list[ConceptVectors] = list(concepts)
        self._offsets: dict[str, int] = {}
        offset = 0
        for vec in self.concepts:
            if vec.name in self._offsets:
                raise UserInputError(f"concept {vec.name!r} is loaded twice")
            if vec.hidden_size != int(backbone.hidden_size):
                raise IncompatibleError(
                    f"concept {vec.name!r} has width {vec.hidden_size}; backbone {backbone.name!r} "
                    f"has hidden size {backbone.hidden_size}"
                )
            self._offsets[vec.name] = offset
            offset += vec.n_rows
        self.n_rows = offset
        self._reverse: dict[int, TokenRef] = {}
        for vec in self.concepts:
            base = int(backbone.vocab_size) + self._offsets[vec.name]
            self._reverse[base] = TokenRef(vec.name, IDENTIFIER, 0)
            for group in vec.groups:
                sl = vec.group_slice(group)
                for i in range(sl.stop - sl.start):
                    self._reverse[base + sl.start + i] = TokenRef(vec.name, group, i)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.concepts]

    def __contains__(self, name: object) -> bool:
        return name in self._offsets

    def __len__(self) -> int:
        return len(self.concepts)

    def get(self, name: str) -> ConceptVectors:
        for vec in self.concepts:
            if vec.name == name:
                return vec
        known = ", ".join(self.names) or "none"
        raise NotFoundError(f"concept {name!r} is not loaded (loaded: {known})")

    def _base(self, name: str) -> int:
        self.get(name)
        return int(self.backbone.vocab_size) + self._offsets[name]

    def identifier_id(self, name: str) -> int:
        return self._base(name)

    def group_ids(self, name: str, group: str) -> list[int]:
        sl = self.get(name).group_slice(group)
        base = self._base(name)
        return list(range(base + sl.start, base + sl.stop))

    def group_first_ids(self, name: str) -> dict[str, int]:
        return {g: self.group_ids(name, g)[0] for g in self.get(name).groups}

    def prompt_ids(self, name: str) -> list[int]:
        """The personalized prompt `<name> is <g1>..<gk><u1>..<uh>.` as ids (no BOS), with
        the concept's reference photo before the full stop when it has one."""
        vec = self.get(name)
        ids = [self.identifier_id(name)]
        ids += self.backbone.tokenize(" is")
        for group in vec.groups:
            ids += self.group_ids(name, group)
        if vec.reference:  # `<name> is <rows> <photo> .`: the pretraining's photo definitions
            special = self.backbone.special
            ids += [int(special.boi), *vec.reference, int(special.eoi)]
        ids += self.backbone.tokenize(".")
        return ids

    def lookup(self, token_id: int) -> TokenRef | None:
        """id -> (concept, group, index), or None for the checkpoint's own ids."""
        return self._reverse.get(int(token_id))

    def display(self, token_id: int) -> str | None:
        ref = self.lookup(token_id)
        return ref.display if ref is not None else None

    @property
    def extra(self) -> ExtraTokens:
        from yoc_assistant.backbone.core import ExtraTokens

        hidden = int(self.backbone.hidden_size)
        if not self.concepts:
            empty = torch.zeros(0, hidden)
            return ExtraTokens(empty, empty.clone())
        return ExtraTokens(torch.cat([v.input_rows for v in self.concepts], 0),
                           torch.cat([v.output_rows for v in self.concepts], 0))


def load_concepts(bb: Backbone, paths: Sequence[str | os.PathLike[str]]) -> ConceptSet:
    """Load several concept files for one backbone into a ConceptSet."""
    return ConceptSet(bb, [ConceptVectors.load(p, bb) for p in paths])
