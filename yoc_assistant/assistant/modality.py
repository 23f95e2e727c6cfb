"""What a plugin registers: a `Modality` (a way of answering), plus the request,
context and response objects it works with.

A modality owns one token group of every concept (text: "understanding", image:
"generation"; a third-party one names its own). Self-prompting: the model emits
the first token of a group to say which modality should answer; the responder
then forces that group and decodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.assistant.mentions import Mentions

if TYPE_CHECKING:
    from PIL import Image

    from yoc_assistant.assistant.router import RouteDecision
    from yoc_assistant.backbone import Backbone, ExtraTokens
    from yoc_assistant.personalize.data import BuildContext, Example

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

TextFn = Callable[[str], None]
ProgressFn = Callable[[int, int], None]


@dataclass
class Request:
    """One user turn. `text` may mention concepts as `<name>`; `images` are attached photos."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    mode: str | None = None  # force a modality by name (skips the routing pass)
    seed: int | None = None
    max_tokens: int = 256
    n: int = 1  # pictures to draw
    cfg_scale: float | None = None  # None: the backbone's own default
    temperature: float | None = None  # None: the modality's default
    decoding: str | None = None  # how pictures are drawn ("sjd" | "sequential"); None: the backbone's default
    candidates: int | None = None  # samples per picture the concepts' self-check picks from; None: the backbone's
    out: Path | None = None  # file or folder for what a modality writes
    _mentions: Mentions | None = field(default=None, init=False, repr=False, compare=False)

    def mentions(self) -> Mentions:
        """`text`'s concept mentions, parsed once: checking, loading, routing, the prompt and
        the log all read this parse (parsed again only if `text` is changed)."""
        if self._mentions is None or self._mentions.text != self.text:
            self._mentions = Mentions.of(self.text)
        return self._mentions


@dataclass
class Response:
    modality: str
    text: str = ""
    image_paths: list[Path] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    forced: bool = False
    files: list[Path] = field(default_factory=list)  # other outputs (a plugin's files)
    concept: str | None = None  # the concept whose group was forced


@dataclass
class RespondContext:
    """Everything a responder needs; built by the Assistant after routing."""

    backbone: Backbone
    prompt_ids: list[int]  # BOS + concept prompts + user text + images + separator
    concepts: Any  # personalize.ConceptSet of the mentioned concepts, or None
    concept: str | None  # the mentioned concept whose group to force (None: no concept)
    concept_names: list[str]
    decision: RouteDecision
    out: Path  # file or folder for what the modality writes (default: pictures_dir())
    on_text: TextFn | None = None
    on_progress: ProgressFn | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # for files written (PNG chunks)
    # The router's pass over `prompt_ids` (backbone.PromptPass: logits and KV cache), for a
    # modality with `uses_prompt_pass`; None when --mode skipped routing.
    prompt_pass: Any = None
    # The photo witness of a request about a photo (personalize.witness.Witness), or None.
    witness: Any = None

    @property
    def extra(self) -> ExtraTokens | None:
        return None if self.concepts is None else self.concepts.extra

    def concept_words(self) -> dict[int, str]:
        """Identifier id -> `<name>` for every mentioned concept: answers may name a concept
        (the training data's answers do: "Yes, <bo> is in this photo.")."""
        if self.concepts is None:
            return {}
        return {int(self.concepts.identifier_id(n)): f"<{n}>" for n in self.concepts.names}

    def group_ids(self, group: str) -> list[int]:
        """The chosen concept's token ids of `group`, or [] without a concept."""
        if self.concept is None or self.concepts is None:
            return []
        return list(self.concepts.group_ids(self.concept, group))

    def forced_prompt(self, group: str) -> list[int]:
        """The prompt followed by the group's tokens: the self-prompt the model was trained
        to emit before answering in this modality."""
        return list(self.prompt_ids) + self.group_ids(group)

    def yes_no_bias(self) -> Callable[[], list[float]] | None:
        """For `generate_text(decisive_ids=[Yes, No], decisive_bias=...)`: the photo
        witness's offsets, computed only if the answer starts with Yes or No
        (`personalize/witness.py`); None without a witness. `yoc eval` decides alike."""
        witness = self.witness
        if witness is None:
            return None
        return lambda: witness.yes_no_bias(self.backbone)

    def draw_images(self, prompt_ids: list[int], *, n: int, candidates: int | None = None,
                    **options: Any) -> Any:
        """`n` pictures after `prompt_ids` (backbone.GeneratedImages), continuing the router's
        pass: with concepts mentioned, each the best of `candidates` samples by the concepts'
        own "Is <name> in this photo?" (`personalize.selfcheck`; None: the backbone's
        recommended number); without, plain samples. `options`: `generate_images`' own."""
        from yoc_assistant.personalize.selfcheck import draw_for_concepts

        return draw_for_concepts(self.backbone, prompt_ids, self.concepts, self.concept_names, n=n,
                                 candidates=candidates, prefix=self.prompt_pass, **options)


@dataclass
class Modality:
    """Subclass and override `respond` (and `build_examples`, `no_concept_token` as needed).

    name: unique modality name (`--mode NAME`, `/NAME` in the chat app); group: the concept
    token group it owns; group_size: tokens in that group; description: one line for
    `yoc plugins`; example_requests: requests this modality should answer, `{name}` where
    a concept goes ("say {name}'s name out loud"): every concept trained while the plugin
    is installed learns to route them to this group, even without `build_examples`;
    fallback: answers a request without a concept that no modality's `no_concept_token`
    claims (the text modality sets it; without one, the first such modality does);
    aliases: more chat-app command names (`/draw` for the image modality);
    uses_prompt_pass: its responder continues from `ctx.prompt_pass` (the router's run of
    the prompt, with its KV cache; the text and image modalities do); otherwise the cache
    is freed before `respond` is called.
    """

    name: str
    group: str
    group_size: int
    description: str = ""
    example_requests: tuple[str, ...] = ()
    fallback: bool = False
    aliases: tuple[str, ...] = ()
    uses_prompt_pass: bool = False

    def build_examples(self, ctx: BuildContext) -> list[Example]:
        """Training examples for this modality's group (`yoc_assistant.plugin.Example`)."""
        return []

    def respond(self, request: Request, ctx: RespondContext) -> Response:
        raise NotImplementedError(f"modality {self.name!r} has no responder")

    def no_concept_token(self, backbone: Backbone) -> int | None:
        """Token whose probability says 'this modality' for a request without a concept
        (begin-image for images); None: this modality takes the remaining probability."""
        return None


def validation_problem(modality: object) -> str | None:
    """Why `modality` cannot be used, or None if it is fine."""
    if not isinstance(modality, Modality):
        return f"{modality!r} is not a yoc Modality"
    if not isinstance(modality.name, str) or not NAME_RE.match(modality.name):
        return f"modality name {modality.name!r} must be 1-64 letters, digits, '-' or '_'"
    if not isinstance(modality.group, str) or not NAME_RE.match(modality.group):
        return f"modality {modality.name!r}: group name {modality.group!r} is not valid"
    size = modality.group_size
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return f"modality {modality.name!r}: group size {size!r} must be a positive integer"
    requests = modality.example_requests
    if not isinstance(requests, (tuple, list)) or not all(isinstance(r, str) and r.strip() for r in requests):
        return f"modality {modality.name!r}: example_requests must be a tuple of non-empty strings"
    aliases = modality.aliases
    if not isinstance(aliases, (tuple, list)) or not all(isinstance(a, str) and NAME_RE.match(a) for a in aliases):
        return f"modality {modality.name!r}: aliases must be a tuple of names (letters, digits, '-', '_')"
    if not isinstance(modality.fallback, bool) or not isinstance(modality.uses_prompt_pass, bool):
        return f"modality {modality.name!r}: fallback and uses_prompt_pass must be True or False"
    if type(modality).respond is Modality.respond:
        return f"modality {modality.name!r} does not implement respond()"
    return None
