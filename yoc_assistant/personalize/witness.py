"""The photo witness: a yes/no about a photo, seconded by the concept's own photos.

A concept trained with a reference photo (`TrainConfig.reference_photo`; its prompt is
`<x> is <rows> <photo> .`) answers "Is <x> in this photo?" from its rows and that photo
together. The backbone can also answer from a photo alone, untrained: asked under the
definition `<w> is <photo> .`, where `<w>` is a fresh identifier (the pretraining's
definition shape; the ablation harness's image-prompt variant). The two err
differently: on the toy backbone the photo alone rejects the same named thing with
another accent more often, the trained rows everything else, and the sum of their
Yes-over-No margins decides better than either (docs/toyworld.md, "The photo witness").
One photo is a noisy witness; the mean over every training photo the concept keeps
(`ConceptVectors.photos`) is a steadier one ("Every photo as witness").

So when a request about a photo is answered Yes or No, and every concept it mentions has
photos, the same prompt is run once more per photo with each concept's prompt replaced
by a definition (`swap_prompt`; no group is forced, a definition has no rows), and
`weight` times the mean of those prompts' margins is added to the Yes logit before the
decision (`backbone.generation.decide_first`). The prompts have one length and share one
batched pass. `yoc ask`'s text modality, `yoc eval`'s recognition
(`evaluate.recognition_accuracy`), the trainer's checkpoint choice and the self-check of
pictures all decide this way, so every figure describes what users get.

The description's veto: the photos and the rows both take a lookalike one named
attribute away (a striped *green* heart for a striped blue one) for the concept more
often than its words do. Where the checkpoint sets `yoc_description_veto` (the toy
backbone), a concept whose description says what it is ("sunny is a dotted orange
star.", kept as metadata `description` when it is trained, `describe`) has the same
request asked once more of `<w> is a dotted orange star .`; a margin of Yes over No of at
most minus that value makes the answer No whatever the photos say (`VETO`). The words
cannot overrule a No (they take the same named thing with another accent for the
concept: they *are* its description), only deny a Yes.

The weight is the checkpoint's (`yoc_photo_witness` in its config.json, measured on the
toy backbone), else 0: no witness on a backbone where it has not been measured (Anole).
The veto needs the witness: it applies where the witness does.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from yoc_assistant.personalize import data

# Definition rows start as a new concept's identifier does (ConceptVectors.initialize).
DEFINITION_SEED = 0
# Concept metadata: what the concept's description says it is (`data.definition_of`).
DESCRIPTION = "description"
# The Yes offset of a vetoed answer: no margin overcomes it (a decision, and the self-check
# ranks such a picture last).
VETO = -1.0e4


def weight_of(bb: Any) -> float:
    """The checkpoint's witness weight (config.json `yoc_photo_witness`), else 0."""
    from yoc_assistant.backbone.loading import photo_witness_of

    folder = getattr(bb, "checkpoint_dir", None)
    return 0.0 if folder is None else photo_witness_of(folder)


def applied_weight(bb: Any, concepts: Any, names: Sequence[str]) -> float:
    """The witness weight for questions about these concepts: the checkpoint's, or 0
    when one of them has no photo to ask."""
    weight = weight_of(bb)
    if weight <= 0 or concepts is None or not names:
        return 0.0
    return weight if all(photos_of(concepts.get(n)) for n in names) else 0.0


def veto_of(bb: Any) -> float | None:
    """The checkpoint's description veto (config.json `yoc_description_veto`), else None."""
    from yoc_assistant.backbone.loading import description_veto_of

    folder = getattr(bb, "checkpoint_dir", None)
    return None if folder is None else description_veto_of(folder)


def describe(vec: Any, about: str | None) -> None:
    """Keep in the concept's metadata what its description says it is ("sunny is a dotted
    orange star." -> "a dotted orange star"), the words of the veto; none: no veto."""
    words = data.definition_of(about, vec.name)
    if words:
        vec.metadata[DESCRIPTION] = words
    else:
        vec.metadata.pop(DESCRIPTION, None)


def _description(vec: Any) -> str | None:
    """The concept's kept description, or None (none kept: a file trained before
    descriptions were; or one that is not a definition's length)."""
    words = str(vec.metadata.get(DESCRIPTION, "")).strip()
    return words if words and len(words) <= data.MAX_DESCRIPTION else None


def applied_veto(bb: Any, concepts: Any, names: Sequence[str]) -> float | None:
    """The veto threshold for questions about these concepts: the checkpoint's, or None
    when it sets none or one of them has no description."""
    veto = veto_of(bb)
    if veto is None or concepts is None or not names:
        return None
    return veto if all(_description(concepts.get(n)) for n in names) else None


def description_prompts(bb: Any, concepts: Any, names: Sequence[str], defined: Any) -> dict[str, list[int]] | None:
    """For each of `names`, its description as a definition under the fresh identifier
    (`<w> is a dotted orange star .`, the pretraining's words definition), or None when
    one of them has no description."""
    out = {}
    for name in names:
        words = _description(concepts.get(name))
        if words is None:
            return None
        out[name] = [defined.identifier_id(name), *bb.tokenize(" is"), *bb.tokenize(" " + words),
                     *bb.tokenize(".")]
    return out


def photos_of(vec: Any) -> list[list[int]]:
    """The photos a concept's witness asks: its training photos (`ConceptVectors.photos`),
    else its reference photo alone (concept files written before photos were kept)."""
    return [list(p) for p in vec.photos] or ([list(vec.reference)] if vec.reference else [])


def definitions(bb: Any, concepts: Any, names: Sequence[str]) -> list[Any] | None:
    """ConceptSets of definitions, one per witness photo: the k-th holds, for each of
    `names`, the same name with its k-th photo and no rows (prompt `<w> is <photo> .`, a
    fresh identifier; a concept with fewer photos starts its own again). None when `names`
    is empty or one of them has no photo (the witness would not know it). Every set has
    the same rows, so any one's `extra` serves the prompts of all."""
    from yoc_assistant.personalize.concept import ConceptSet

    if concepts is None or not names:
        return None
    photos = {name: photos_of(concepts.get(name)) for name in names}
    if not all(photos.values()):
        return None
    fresh = _fresh_identifier(bb)
    return [ConceptSet(bb, [dataclasses.replace(fresh, name=n, reference=photos[n][k % len(photos[n])])
                            for n in names])
            for k in range(max(len(p) for p in photos.values()))]


# backbone -> its untrained identifier row; the backbone's weights are frozen.
_FRESH: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _fresh_identifier(bb: Any) -> Any:
    """The row every definition starts from (`ConceptVectors.initialize` with no groups),
    made once per backbone: it reads the whole embedding table and head (65k x 4096 each
    on a 7B), and every ask, eval and self-check batch would otherwise read them again."""
    from yoc_assistant.personalize.concept import ConceptVectors

    if bb not in _FRESH:
        _FRESH[bb] = ConceptVectors.initialize(bb, "definition", {}, seed=DEFINITION_SEED)
    return _FRESH[bb]


def swap_prompt(prompt_ids: Sequence[int], concepts: Any, defined: Any, names: Sequence[str],
                replacements: dict[str, list[int]] | None = None) -> list[int]:
    """The request prompt (the router's: concept prompts, photos, text) with each named
    concept's prompt replaced by its definition (or by `replacements[name]`) and its
    identifier by the definition's."""
    out = [int(t) for t in prompt_ids]
    for name in names:
        own = list(concepts.prompt_ids(name))
        other = list(defined.prompt_ids(name) if replacements is None else replacements[name])
        at = next((i for i in range(len(out) - len(own) + 1) if out[i:i + len(own)] == own), None)
        if at is None:
            raise ValueError(f"the prompt does not hold concept {name!r}'s prompt")
        out[at:at + len(own)] = other
    ident = {int(concepts.identifier_id(n)): int(defined.identifier_id(n)) for n in names}
    return [ident.get(t, t) for t in out]


@dataclass
class Witness:
    """One request's witness: its prompt once per witness photo, and the weight of the
    mean margin; with a veto, the prompt asked of the descriptions and how clearly they
    must say No."""

    prompts: list[list[int]]
    extra: Any  # the definitions' ExtraTokens
    weight: float
    veto_prompt: list[int] | None = None
    veto_at: float = 0.0
    _margin: float | None = field(default=None, repr=False)
    _vetoed: bool | None = field(default=None, repr=False)

    def vetoed(self, bb: Any) -> bool:
        """Whether the descriptions say No by at least `veto_at` (one pass, computed once)."""
        if self.veto_prompt is None:
            return False
        if self._vetoed is None:
            from yoc_assistant.personalize.selfcheck import yes_margins

            self._vetoed = float(yes_margins(bb, [self.veto_prompt], self.extra)[0]) <= -self.veto_at
        return self._vetoed

    def margin(self, bb: Any) -> float:
        """logit(Yes) - logit(No) after the witness prompts, averaged over the photos (one
        batched pass, computed once)."""
        if self._margin is None:
            from yoc_assistant.personalize.selfcheck import yes_margins

            self._margin = float(yes_margins(bb, self.prompts, self.extra).mean())
        return self._margin

    def yes_no_bias(self, bb: Any) -> list[float]:
        """Offsets for the decisive ids [Yes, No] (`generate_text(decisive_bias=)`)."""
        return [VETO if self.vetoed(bb) else self.weight * self.margin(bb), 0.0]


def for_request(bb: Any, prompt_ids: Sequence[int], concepts: Any, names: Sequence[str],
                has_photo: bool, weight: float | None = None) -> Witness | None:
    """The witness of a routed request (its prompt without forced groups), or None: no
    photo in the request, a zero weight, or a mentioned concept without photos."""
    weight = weight_of(bb) if weight is None else float(weight)
    if not has_photo or weight <= 0:
        return None
    defined = definitions(bb, concepts, names)
    if defined is None:
        return None
    witness = Witness([swap_prompt(prompt_ids, concepts, d, names) for d in defined], defined[0].extra, weight)
    veto = applied_veto(bb, concepts, names)
    if veto is not None:
        described = description_prompts(bb, concepts, names, defined[0])
        witness.veto_prompt = swap_prompt(prompt_ids, concepts, defined[0], names, described)
        witness.veto_at = veto
    return witness


def recognition_prompt(bb: Any, defined: Any, name: str, image: Sequence[int], question: str,
                       definition: Sequence[int] | None = None) -> list[int]:
    """The witness prompt of "Is <name> in this photo?" about `image`, laid out as
    `evaluate.forced_recognition_prompt` lays out the concept's (without the group);
    `definition`: another definition of the name than its photo's (the description's)."""
    q = data.text_ids(bb, question, defined.identifier_id(name))
    prefix = defined.prompt_ids(name) if definition is None else list(definition)
    return data.recognition_prompt(bb, prefix, image, q, image_first=True)


def recognition_margins(bb: Any, concepts: Any, name: str, images: Sequence[Sequence[int]],
                        question: str, weight: float | None = None) -> torch.Tensor | None:
    """`weight` x the witness margin [N] (the mean over the concept's witness photos) for
    the question about each image (image-token lists), VETO where the concept's
    description says No clearly enough, or None when there is no witness (zero weight, no
    photo)."""
    from yoc_assistant.personalize.selfcheck import yes_margins

    weight = weight_of(bb) if weight is None else float(weight)
    defined = definitions(bb, concepts, [name]) if weight > 0 else None
    if defined is None or not images:
        return None
    # photo by photo, so that a batch shares its definition's positions (`_last_logits`)
    prompts = [recognition_prompt(bb, d, name, im, question) for d in defined for im in images]
    margins = yes_margins(bb, prompts, defined[0].extra).view(len(defined), len(images))
    out = weight * margins.mean(dim=0)
    veto = applied_veto(bb, concepts, [name])
    if veto is not None:
        described = description_prompts(bb, concepts, [name], defined[0])
        said = yes_margins(bb, [recognition_prompt(bb, defined[0], name, im, question, described[name])
                                for im in images], defined[0].extra)
        out = torch.where(said <= -veto, torch.full_like(out, VETO), out)
    return out


def yes_no_bias(margins: torch.Tensor | None) -> torch.Tensor | None:
    """[N] weighted witness margins -> [N, 2] offsets for the decisive ids [Yes, No]."""
    if margins is None:
        return None
    return torch.stack([margins.float(), torch.zeros_like(margins, dtype=torch.float32)], dim=1)
