"""The self-prompting router: one forward pass picks the modality that answers.

With concepts mentioned, the logits at the first answer position are read over
the first token of each group the mentioned concepts have (the model was trained
to emit its understanding group before a text answer, its generation group
before an image); the softmax over those logits gives one probability per
modality. Without a concept, a modality's `no_concept_token` (begin-image for
the image modality) is read from the full softmax and the remaining probability
goes to the text modality. `mode` skips the pass.

Prompt layout: BOS, each mentioned concept's personalized prompt, the attached
photos, the user's words, the separator (photo before question, as `yoc eval` and
the training data ask). A request for a description of a photo uses the backbone's
own captioning prompt when it names one (see `wordings`). Words the backbone's
tokenizer cannot spell are refused with a note before any forward pass.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.assistant.mentions import Mention, Mentions, parsed
from yoc_assistant.assistant.wordings import asks_for_description, unknown_words
from yoc_assistant.errors import UserInputError, YocError

if TYPE_CHECKING:
    from yoc_assistant.assistant.modality import Modality, Request
    from yoc_assistant.assistant.plugins import PluginManager
    from yoc_assistant.backbone import Backbone

log = logging.getLogger(__name__)

BIG_BACKBONE_HINT = ("for questions in your own words use the real backbone: `yoc pull`, "
                     "then YOC_BACKBONE=leloy/Anole-7b-v0.1-hf")


class UnknownWordsError(UserInputError):
    """The request has words the backbone has no token for; answering would be noise."""

    def __init__(self, backbone: Any, words: list[str]) -> None:
        shown = ", ".join(repr(w) for w in words[:8]) + (" …" if len(words) > 8 else "")
        super().__init__(f"{getattr(backbone, 'name', 'the backbone')} does not know the "
                         f"word{'s' if len(words) > 1 else ''} {shown}: a small backbone knows "
                         f"only the words it was trained on; {BIG_BACKBONE_HINT}")
        self.words = words


def prompt_text(backbone: Any, request: Request) -> str:
    """The words the backbone reads for `request`: the user's, or the backbone's own
    captioning prompt for a request to describe the attached photo."""
    caption = getattr(backbone, "caption_prompt", None)
    if caption and request.images and asks_for_description(request.mentions()):
        return caption
    return request.text


def prompt_mentions(backbone: Any, request: Request) -> Mentions:
    """The mentions of what the backbone reads (`prompt_text`): the request's own parse,
    or the captioning prompt's."""
    text = prompt_text(backbone, request)
    return request.mentions() if text == request.text else Mentions.of(text)


@dataclass
class RouteDecision:
    modality: str
    probabilities: dict[str, float]
    forced: bool
    concept: str | None = None  # the mentioned concept whose group won (None: no concept)
    prompt_ids: list[int] = field(default_factory=list, repr=False)
    # The routing pass (logits + KV cache of `prompt_ids`), handed to the responder so that
    # one request runs its prompt through the network once; None when --mode skipped it.
    prompt_pass: Any = field(default=None, repr=False)
    # Forced but scored (`route(..., score=True)`): what the model itself would have chosen.
    model_choice: str | None = None

    def explain(self) -> str:
        """One line for `--explain`: the choice and the probabilities."""
        how = "forced by --mode" if self.forced else "chosen by the model"
        if self.forced and self.model_choice is not None:
            how += f"; the model would choose {self.model_choice}"
        probs = ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.probabilities.items(),
                                                           key=lambda kv: -kv[1]))
        about = f" for <{self.concept}>" if self.concept else ""
        return f"route: {self.modality}{about} ({how}){'; p: ' + probs if probs else ''}"

    def to_json(self) -> dict[str, Any]:
        return {"modality": self.modality, "probabilities": self.probabilities,
                "forced": self.forced, "concept": self.concept}


def concept_groups(concepts: Any, name: str, group: str) -> list[int] | None:
    """The concept's ids of `group`, or None if it has no such group."""
    if concepts is None:
        return None
    try:
        ids = list(concepts.group_ids(name, group))
    except (KeyError, ValueError, LookupError, YocError):
        return None
    return ids or None


def concept_names(text: str | Mentions, concepts: Any) -> list[str]:
    """The loaded concepts `text` mentions, as the ConceptSet names them, in mention order
    (mentions match names ignoring case, as concept names are unique ignoring case)."""
    if concepts is None:
        return []
    loaded = {str(n).lower(): str(n) for n in concepts.names}
    return [loaded[m.lower()] for m in parsed(text).names if m.lower() in loaded]


def request_parts(text: str | Mentions, concepts: Any, images: list[Any] | None = None) -> list[Any]:
    """Prompt parts for `bb.prompt_ids`: the personalized prompt of each mentioned
    concept, the images, then the user text with every `<name>` replaced by its
    identifier token (a mention of a concept that is not loaded stays as text)."""
    mentions = parsed(text)
    names = concept_names(mentions, concepts)
    parts: list[Any] = [list(concepts.prompt_ids(name)) for name in names]
    parts.extend(images or [])
    canonical = {n.lower(): n for n in names}
    for piece in mentions.pieces():
        if isinstance(piece, Mention) and piece.name.lower() in canonical:
            parts.append([int(concepts.identifier_id(canonical[piece.name.lower()]))])
        elif isinstance(piece, Mention):
            parts.append(f"<{piece.name}>")
        else:
            parts.append(piece)
    return parts


class Router:
    def __init__(self, backbone: Backbone, plugins: PluginManager,
                 log_path: Path | None = None) -> None:
        self.backbone = backbone
        self.plugins = plugins
        self.log_path = log_path

    def build_prompt(self, request: Request, concepts: Any = None) -> list[int]:
        """BOS + concept prompts + images + user text (mentions -> identifiers) + separator."""
        parts = request_parts(prompt_mentions(self.backbone, request), concepts, list(request.images))
        return list(self.backbone.prompt_ids(parts, end_turn=True))

    def check_words(self, request: Request) -> None:
        """Refuse words the backbone cannot read (UnknownWordsError), before any pass."""
        words = unknown_words(self.backbone, prompt_mentions(self.backbone, request))
        if words:
            raise UnknownWordsError(self.backbone, words)

    def route(self, request: Request, concepts: Any = None,
              prompt_ids: list[int] | None = None, *, score: bool = False) -> RouteDecision:
        """Pick the modality for `request`; `concepts` is the ConceptSet of its mentions.
        With `request.mode` the routing pass is skipped, unless `score`: then it runs (its
        probabilities are shown, its pass is handed to the responder) and the mode wins."""
        modalities = self.plugins.get_modalities()
        if not modalities:
            raise YocError("no modality plugins are loaded: install plugins/yoc-text and "
                           "plugins/yoc-image (see `yoc plugins`), or check YOC_LOAD_PLUGINS")
        names = concept_names(request.mentions(), concepts)
        if prompt_ids is None:
            self.check_words(request)
            prompt_ids = self.build_prompt(request, concepts)
        if request.mode:
            chosen = self.plugins.modality(request.mode)
            concept = next((n for n in names if concept_groups(concepts, n, chosen.group)), None)
            decision = RouteDecision(chosen.name, {}, True, concept)
            if score:
                scored = self._decide(modalities, prompt_ids, concepts, names)
                decision.probabilities, decision.prompt_pass = scored.probabilities, scored.prompt_pass
                decision.model_choice = scored.modality
        else:
            decision = self._decide(modalities, prompt_ids, concepts, names)
        decision.prompt_ids = prompt_ids
        self._log(request, names, decision)
        return decision

    def _decide(self, modalities: list[Modality], prompt_ids: list[int], concepts: Any,
                names: list[str]) -> RouteDecision:
        candidates = [(m.name, n, ids[0]) for n in names for m in modalities
                      if (ids := concept_groups(concepts, n, m.group))]
        extra = concepts.extra if concepts is not None else None
        prompt_pass = self.backbone.prefill(prompt_ids, extra=extra)
        logits = prompt_pass.logits.float().reshape(-1)
        decision = self._choose(modalities, logits, candidates)
        decision.prompt_pass = prompt_pass
        return decision

    def _choose(self, modalities: list[Modality], logits: Any,
                candidates: list[tuple[str, str, int]]) -> RouteDecision:
        import torch

        if candidates:
            probs = torch.softmax(logits[[c[2] for c in candidates]], dim=0).tolist()
            per_modality: dict[str, float] = {}
            for (modality, _, _), p in zip(candidates, probs, strict=True):
                per_modality[modality] = per_modality.get(modality, 0.0) + p
            best = max(per_modality, key=per_modality.__getitem__)
            concept = max((c for c in zip(candidates, probs, strict=True) if c[0][0] == best),
                          key=lambda c: c[1])[0][1]
            return RouteDecision(best, per_modality, False, concept)
        return self._decide_without_concept(modalities, logits)

    def _decide_without_concept(self, modalities: list[Modality], logits: Any) -> RouteDecision:
        import torch

        full = torch.softmax(logits, dim=0)
        per_modality: dict[str, float] = {}
        for m in modalities:
            token = m.no_concept_token(self.backbone)
            if token is not None:
                per_modality[m.name] = float(full[int(token)])
        rest = [m for m in modalities if m.name not in per_modality]
        if rest:
            fallback = next((m for m in rest if m.fallback), rest[0])
            per_modality[fallback.name] = max(0.0, 1.0 - sum(per_modality.values()))
        best = max(per_modality, key=per_modality.__getitem__)
        return RouteDecision(best, per_modality, False, None)

    def _log(self, request: Request, names: list[str], decision: RouteDecision) -> None:
        log.info("%s", decision.explain())
        if self.log_path is None:
            return
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "text": request.text,
                "images": len(request.images), "concepts": names, **decision.to_json()}
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # One write of one line: a kill leaves at most a partial last line.
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError as err:
            log.warning("could not write the router log %s: %s", self.log_path, err)


def default_log_path() -> Path:
    from yoc_assistant.library import paths

    return paths.logs_dir() / "router.jsonl"
