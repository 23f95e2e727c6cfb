"""Training examples for a concept, with self-prompting targets.

Every example is a prompt followed by a target; the loss is on the target only
(`labels` is -100 over the prompt; `labels[t]` is the token expected at position t,
the usual causal shift is the trainer's). The target always starts with the token
group of the modality that answers, so at inference the model's own choice of group
says which modality answers:

* recognition: BOS + personalized prompt + image (BOI ids EOI) + "Is <name> in this
  photo?" (30 phrasings; the image before or after the question) + SEP
  -> understanding group + "Yes, ..."/"No, ..." + EOS.
  Positives are repeated to balance the (up to) 100 easy + 100 hard negatives.
* qa: BOS + personalized prompt + question + SEP -> understanding group + answer + EOS,
  from the user's description (`--about`, format in `parse_about`) and optional
  captions the backbone makes of the photos (`captions_from_backbone`).
* pair: recognition and "Which of <name> and <other> ...?" with a stand-in concept's
  prompt present too (`pair_examples`; the stand-ins are `prepare.stand_ins`).
* generation: BOS + personalized prompt + "A photo of <name>." + SEP
  -> generation tokens + BOI + image tokens + EOI + EOS.
  Real photos get all k generation tokens. Soft positives (most similar first) are
  split by rank into k-1 groups; group i (i = 1..k-1) gets the first i+1 tokens and
  the most similar group is group k-1. A soft positive's personalized prompt lists
  only the generation tokens its target uses, so prompt and target agree.
  (The authors' public code never assigned the generation target; here the target
  is built, and tested, explicitly.)

`<name>` is always the concept's identifier token (an id >= vocab_size), never text.
Decisive tokens (`make_example(decisive=)`: the first group token, a Yes/No, a fact's
answer words) weigh as much as the rest of their target in the loss.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize import phrasings as P

if TYPE_CHECKING:
    from PIL import Image

IGNORE = -100
GENERATION = "generation"
UNDERSTANDING = "understanding"
TASKS = ("recognition", "qa", "generation")


@dataclass
class Example:
    ids: list[int]
    labels: list[int]
    task: str
    # Loss weight of each position's label (None: all 1); see `make_example`'s `decisive`.
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels):
            raise ValueError(f"{self.task} example: {len(self.ids)} ids but {len(self.labels)} labels")
        if self.weights is not None and len(self.weights) != len(self.labels):
            raise ValueError(f"{self.task} example: {len(self.labels)} labels but {len(self.weights)} weights")

    @property
    def target(self) -> list[int]:
        """The supervised ids, in order."""
        return [t for t in self.labels if t != IGNORE]


def make_example(prompt: Sequence[int], target: Sequence[int], task: str,
                 decisive: Sequence[int] = ()) -> Example:
    """`decisive`: indices into `target` of the tokens that decide the answer (the first
    group token, which the router reads; the Yes/No of a recognition answer). Together
    they weigh as much as the rest of the target: every other target token follows from
    them under teacher forcing and is soon learnt, so with equal weights a one-token
    decision was 1/25 of its example's loss and the concept never fitted its own
    negatives (training photos vs hard negatives 0.75 after 1600 steps)."""
    target = list(target)
    weights = None
    picked = sorted({int(i) for i in decisive if 0 <= int(i) < len(target)})
    if picked and len(target) > len(picked):
        share = max(1.0, (len(target) - len(picked)) / len(picked))  # never less than the rest
        weights = [0.0] * len(prompt) + [share if i in picked else 1.0 for i in range(len(target))]
    return Example(list(prompt) + target, [IGNORE] * len(prompt) + target, task, weights)


@dataclass
class Other:
    """Another concept in a two-concept request: its identifier, its personalized prompt
    and a photo of it (image-token ids)."""

    identifier_id: int
    prompt_ids: list[int]
    image: list[int]


@dataclass
class BuildContext:
    """What the builders need: only ids, so any tokenizer / concept layout works.

    `prompt_ids`: the personalized prompt `<name> is <g1..gk><u1..uh>.` (no BOS).
    `groups`: token ids by group name ("generation", "understanding", plugin groups).
    Image lists hold image-token ids (no BOI/EOI); `soft_positives` most similar first.
    `about`: the user's description (see `parse_about`); `qa_pairs`: extra
    (question, answer) templates with `{name}` where the identifier goes.
    """

    backbone: Any
    name: str
    identifier_id: int
    prompt_ids: list[int]
    groups: dict[str, list[int]]
    positives: list[list[int]] = field(default_factory=list)
    easy_negatives: list[list[int]] = field(default_factory=list)
    hard_negatives: list[list[int]] = field(default_factory=list)
    soft_positives: list[list[int]] = field(default_factory=list)
    about: str | None = None
    qa_pairs: list[tuple[str, str]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    n_easy: int = 100
    n_hard: int = 100
    notes: list[str] = field(default_factory=list)
    # Other concepts whose prompts share some requests with this one (`pair_examples`);
    # their rows are in the same ConceptSet, frozen.
    others: list[Other] = field(default_factory=list)

    @classmethod
    def from_concepts(cls, backbone: Any, concepts: Any, name: str, **fields: Any) -> BuildContext:
        """From a ConceptSet: identifier, personalized prompt and every group of `name`."""
        vec = concepts.get(name)
        groups = {g: list(concepts.group_ids(name, g)) for g in vec.groups}
        return cls(backbone=backbone, name=name, identifier_id=concepts.identifier_id(name),
                   prompt_ids=list(concepts.prompt_ids(name)), groups=groups, **fields)

    def negatives(self) -> list[list[int]]:
        """The photos that are not the concept: easy, then hard (each list capped)."""
        return self.easy_negatives[: self.n_easy] + self.hard_negatives[: self.n_hard]

    def group(self, name: str) -> list[int]:
        if name not in self.groups:
            raise UserInputError(f"concept {self.name!r} has no {name!r} token group "
                                 f"(it has: {', '.join(self.groups) or 'none'})")
        return list(self.groups[name])


# --- small helpers ------------------------------------------------------------------


def text_ids(bb: Any, template: str, identifier_id: int) -> list[int]:
    """Tokenize `template`, with the identifier token wherever it says `{name}`."""
    out: list[int] = []
    for k, piece in enumerate(template.split("{name}")):
        if k:
            out.append(int(identifier_id))
        if piece:
            out.extend(bb.tokenize(piece))
    return out


def names_ids(bb: Any, template: str, names: dict[str, int]) -> list[int]:
    """Tokenize `template` with `{key}` -> the identifier `names[key]` (e.g. {a}, {b})."""
    out: list[int] = []
    for k, piece in enumerate(re.split(r"\{(" + "|".join(map(re.escape, names)) + r")\}", template)):
        if k % 2:
            out.append(int(names[piece]))
        elif piece:
            out.extend(bb.tokenize(piece))
    return out


def image_block(bb: Any, tokens: Sequence[int]) -> list[int]:
    return [int(bb.special.boi), *(int(t) for t in tokens), int(bb.special.eoi)]


def answer_first_token(bb: Any, yes: bool) -> int:
    """The first token of a Yes/No answer as the recognition data tokenizes it."""
    template = P.YES_ANSWERS[0] if yes else P.NO_ANSWERS[0]
    return text_ids(bb, template, -1)[0]


# --- recognition --------------------------------------------------------------------


def recognition_prompt(bb: Any, personal: Sequence[int], image: Sequence[int],
                       question: Sequence[int], image_first: bool = True) -> list[int]:
    parts = [list(personal), image_block(bb, image), list(question)]
    if not image_first:
        parts[1], parts[2] = parts[2], parts[1]
    return bb.prompt_ids(parts)


def recognition_examples(ctx: BuildContext, group: str = UNDERSTANDING) -> list[Example]:
    """Yes for the concept's photos, No for easy and hard negatives (see module doc)."""
    bb, tokens = ctx.backbone, ctx.group(group)
    negatives = ctx.negatives()
    if not ctx.positives:
        return []
    n_pos = max(len(negatives), len(ctx.positives))
    if not negatives:
        ctx.notes.append("recognition: no negative images (no pool), so only 'Yes' examples")
    labelled = [(ctx.positives[i % len(ctx.positives)], True) for i in range(n_pos)]
    labelled += [(img, False) for img in negatives]
    out = []
    for image, yes in labelled:
        question = text_ids(bb, ctx.rng.choice(P.RECOGNITION_QUESTIONS), ctx.identifier_id)
        prompt = recognition_prompt(bb, ctx.prompt_ids, image, question, ctx.rng.random() < 0.5)
        answer = ctx.rng.choice(P.YES_ANSWERS if yes else P.NO_ANSWERS)
        target = tokens + text_ids(bb, answer, ctx.identifier_id) + [int(bb.special.eos)]
        out.append(make_example(prompt, target, "recognition", decisive=(0, len(tokens))))
    return out


# --- question answering ----------------------------------------------------------------

_FACT = re.compile(r"^\s*([^:.!?]{1,40}?)\s*:\s*(.+?)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def mark_name(text: str, name: str) -> str:
    """Occurrences of the concept's name (`bo`, `Bo`, `<bo>`) -> `{name}`."""
    pattern = re.compile(rf"<?\b{re.escape(name)}\b>?", re.IGNORECASE)
    return pattern.sub("{name}", text)


def parse_about(text: str | None, name: str) -> list[tuple[str, str]]:
    """(question, answer) templates from a description. Format, one item per line:

    * `key: value` (e.g. `breed: corgi`, `favourite toy: a red ball`) ->
      "What is <name>'s breed?" / "<name>'s breed is corgi." (3 question wordings);
    * any other line is free text, split into sentences; each sentence answers a
      "Tell me about <name>." style question, and all of them together answer one more.
    Blank lines and lines starting with `#` are ignored. The concept's name written
    in the text (`bo`, `<bo>`) becomes its identifier token.
    """
    pairs: list[tuple[str, str]] = []
    sentences: list[str] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fact = _FACT.match(line)
        if fact and not fact.group(1).strip().lower().startswith(("http", "note")):
            key, value = fact.group(1).strip(), mark_name(fact.group(2).rstrip("."), name)
            answer = P.FACT_ANSWER.replace("{key}", key).replace("{value}", value)
            pairs += [(q.replace("{key}", key), answer) for q in P.FACT_QUESTIONS]
            continue
        sentences += [mark_name(s.strip(), name) for s in _SENTENCE_END.split(line) if s.strip()]
    for k, sentence in enumerate(sentences):
        pairs.append((P.ABOUT_QUESTIONS[k % len(P.ABOUT_QUESTIONS)], sentence))
    if len(sentences) > 1:
        pairs.append((P.ABOUT_QUESTIONS[0], " ".join(sentences)))
    return pairs


MAX_DESCRIPTION = 120  # characters: a definition, not a paragraph


def definition_of(text: str | None, name: str) -> str | None:
    """What the description says the concept *is*: the rest of its first free-text
    sentence of the form "<name> is ..." ("sunny is a dotted orange star." -> "a dotted
    orange star"), else None. `key: value` lines are facts, not definitions."""
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _FACT.match(line):
            continue
        for sentence in _SENTENCE_END.split(line):
            found = re.match(r"^\{name\}\s+is\s+(.+?)\s*[.!]?$", mark_name(sentence.strip(), name))
            if found and "{name}" not in found.group(1) and len(found.group(1)) <= MAX_DESCRIPTION:
                return found.group(1)
    return None


def qa_examples(ctx: BuildContext, group: str = UNDERSTANDING) -> list[Example]:
    bb, tokens = ctx.backbone, ctx.group(group)
    out = []
    for question, answer in parse_about(ctx.about, ctx.name) + list(ctx.qa_pairs):
        prompt = bb.prompt_ids([list(ctx.prompt_ids), text_ids(bb, question, ctx.identifier_id)])
        words = text_ids(bb, answer, ctx.identifier_id)
        target = tokens + words + [int(bb.special.eos)]
        # A fact's deciding word may be anywhere in its answer: every answer token decides
        # (with the route token), against the group's other tokens, which follow from the
        # first. Unweighted, the facts lost to recognition's weighted Yes/No ("What is
        # <x>'s pattern?" -> "<x>'s colour is blue.").
        decisive = (0, *range(len(tokens), len(tokens) + len(words)))
        out.append(make_example(prompt, target, "qa", decisive=decisive))
    return out


PAIR_SHARE = 0.3  # pair examples per recognition example


def pair_examples(ctx: BuildContext, group: str = UNDERSTANDING) -> list[Example]:
    """Questions with another concept's prompt present (`ctx.others`): "Is <name> ...?",
    "Is <other> ...?" and "Which of <name> and <other> ...?" on the concept's photos, the
    other's photo and the negatives, both prompts in either order. A concept trained alone
    otherwise answers about whichever name was defined last ("No, <b> is not in this
    photo" for every photo). Yes/no and the answer's first word are decisive tokens."""
    bb, tokens = ctx.backbone, ctx.group(group)
    negatives = ctx.negatives()
    if not ctx.others or not ctx.positives:
        return []
    n = math.ceil(PAIR_SHARE * 2 * max(len(negatives), len(ctx.positives)))
    out = []
    for _ in range(n):
        other = ctx.rng.choice(ctx.others)
        r = ctx.rng.random()
        if r < 0.4 or not negatives:
            image, mine, theirs = ctx.rng.choice(ctx.positives), True, False
        elif r < 0.7:
            image, mine, theirs = other.image, False, True
        else:
            image, mine, theirs = ctx.rng.choice(negatives), False, False
        me_first = ctx.rng.random() < 0.5
        definitions = [*ctx.prompt_ids, *other.prompt_ids] if me_first else [*other.prompt_ids, *ctx.prompt_ids]
        kind = ctx.rng.random()
        if kind < 0.5:  # one of the two, by name
            asked, present = (ctx.identifier_id, mine) if kind < 0.3 else (other.identifier_id, theirs)
            question = text_ids(bb, ctx.rng.choice(P.RECOGNITION_QUESTIONS), asked)
            answer = text_ids(bb, ctx.rng.choice(P.YES_ANSWERS if present else P.NO_ANSWERS), asked)
        else:  # which of the two
            a, b = (ctx.identifier_id, other.identifier_id) if ctx.rng.random() < 0.5 else \
                (other.identifier_id, ctx.identifier_id)
            in_a, in_b = (mine, theirs) if a == ctx.identifier_id else (theirs, mine)
            key = "a" if in_a else "b" if in_b else "neither"
            question = names_ids(bb, ctx.rng.choice(P.PAIR_WHICH_QUESTIONS), {"a": a, "b": b})
            answer = names_ids(bb, P.PAIR_WHICH_ANSWERS[key], {"a": a, "b": b})
        prompt = recognition_prompt(bb, definitions, image, question, ctx.rng.random() < 0.5)
        target = tokens + answer + [int(bb.special.eos)]
        out.append(make_example(prompt, target, "pair", decisive=(0, len(tokens))))
    return out


def understanding_examples(ctx: BuildContext, group: str = UNDERSTANDING) -> list[Example]:
    """Everything the text modality trains its group on: recognition + QA (+ questions
    with another concept present, when the context has others)."""
    return recognition_examples(ctx, group) + qa_examples(ctx, group) + pair_examples(ctx, group)


# --- routing ------------------------------------------------------------------------------


ROUTING_REPEATS = 4  # each request is seen this often per epoch (few requests, one token each)


def routing_examples(ctx: BuildContext, group: str, requests: Sequence[str]) -> list[Example]:
    """Router targets for a modality from its example requests: BOS + personalized prompt +
    the request (`{name}` = the concept's identifier) + SEP -> the group's tokens. The
    first group token is what the router reads, so a modality with no training data of its
    own is still chosen for requests like these (task `<group>-requests`)."""
    bb, tokens = ctx.backbone, ctx.group(group)
    out = []
    for request in requests:
        prompt = bb.prompt_ids([list(ctx.prompt_ids), text_ids(bb, request, ctx.identifier_id)])
        out += [make_example(prompt, tokens, f"{group}-requests", decisive=(0,))] * ROUTING_REPEATS
    return out


def captions_from_backbone(bb: Any, images: Sequence[Sequence[int]], *, max_new_tokens: int = 40,
                           seed: int = 0) -> list[tuple[str, str]]:
    """Optional QA source: the frozen backbone (no concept) describes each photo;
    returns ("What does <name> look like?", caption) templates. Greedy, so repeatable."""
    pairs = []
    for k, image in enumerate(images):
        prompt = bb.prompt_ids([image_block(bb, image), P.CAPTION_PROMPT])
        text = bb.generate_text(prompt, max_new_tokens=max_new_tokens, temperature=0.0,
                                seed=seed + k).text.strip()
        if text:
            pairs.append((P.LOOK_QUESTIONS[k % len(P.LOOK_QUESTIONS)], text.replace("{", "(")))
    return pairs


# --- generation ---------------------------------------------------------------------


def soft_positive_groups(items: Sequence[Any], k: int) -> list[tuple[int, list[Any]]]:
    """Split `items` (most similar first) into k-1 rank groups -> [(n_tokens, items)].

    The j-th chunk (0-based, most similar first) is group i = k-1-j and gets i+1
    tokens: the most similar chunk gets k, the least similar gets 2. Chunk sizes
    differ by at most one (earlier chunks take the remainder); with fewer items than
    groups, the most similar groups get one item each and the rest stay empty.
    """
    n_groups = max(0, k - 1)
    if n_groups == 0 or not items:
        return []
    base, extra = divmod(len(items), n_groups)
    out, start = [], 0
    for j in range(n_groups):
        size = base + (1 if j < extra else 0)
        if size:
            out.append((k - j, list(items[start:start + size])))
        start += size
    return out


def generation_example(ctx: BuildContext, image: Sequence[int], n_tokens: int,
                       phrasing: str, group: str = GENERATION) -> Example:
    bb, tokens = ctx.backbone, ctx.group(group)
    dropped = set(tokens[n_tokens:])
    personal = [t for t in ctx.prompt_ids if t not in dropped]
    prompt = bb.prompt_ids([personal, text_ids(bb, phrasing, ctx.identifier_id)])
    target = tokens[:n_tokens] + image_block(bb, image) + [int(bb.special.eos)]
    # No decisive token here: its route token would weigh as much as the 66 image tokens;
    # the generation group's routing is taught by its request examples (`routing_examples`).
    return make_example(prompt, target, "generation")


def generation_examples(ctx: BuildContext, group: str = GENERATION) -> list[Example]:
    k = len(ctx.group(group))
    out = [generation_example(ctx, img, k, ctx.rng.choice(P.GENERATION_PROMPTS), group)
           for img in ctx.positives]
    for n_tokens, chunk in soft_positive_groups(ctx.soft_positives, k):
        out += [generation_example(ctx, img, n_tokens, ctx.rng.choice(P.GENERATION_PROMPTS), group)
                for img in chunk]
    return out


# --- everything -----------------------------------------------------------------------

BUILDERS: dict[str, Callable[[BuildContext], list[Example]]] = {
    "recognition": recognition_examples,
    "qa": qa_examples,
    "generation": generation_examples,
}


def _tasks(tasks: Iterable[str] | None) -> list[str]:
    if tasks is None:
        return list(TASKS)
    chosen: list[str] = []
    for task in tasks:
        if task not in BUILDERS:
            raise UserInputError(f"unknown task {task!r}: use {', '.join(BUILDERS)}")
        if task not in chosen:
            chosen.append(task)
    return chosen


MIN_TASK_SHARE = 0.25
# The facts get half the largest task's count: at a quarter, 4 of 12 concepts of new
# instances missed a fact they were trained on ("What is <x>'s colour?" -> "<x>'s pattern
# is dotted."; docs/toyworld.md, "The photo witness": QA 0.83 -> 1.00 on those four).
TASK_SHARES: dict[str, float] = {"qa": 0.5}


def balance_tasks(examples: Sequence[Example], min_share: float = MIN_TASK_SHARE,
                  shares: Mapping[str, float] | None = None) -> list[Example]:
    """Repeat the examples of small tasks until each has at least `min_share` (or its
    `shares[task]`, default `TASK_SHARES`) of the largest task's count. A dozen QA facts
    next to 400 recognition and 400 generation examples are otherwise seen a few times in
    a whole run, and the concept never learns its facts."""
    shares = TASK_SHARES if shares is None else shares
    by_task: dict[str, list[Example]] = {}
    for ex in examples:
        by_task.setdefault(ex.task, []).append(ex)
    if not by_task:
        return []
    largest = max(len(v) for v in by_task.values())
    out: list[Example] = []
    for task, items in by_task.items():
        target = math.ceil(shares.get(task, min_share) * largest)
        repeats = max(1, math.ceil(target / len(items)))
        out += items * repeats
    return out


def build_training_set(ctx: BuildContext, tasks: Iterable[str] | None = None) -> list[Example]:
    """Examples of the given tasks (default: all three, `TASKS`), small tasks repeated
    (`balance_tasks`): the training set of a concept without modality plugins."""
    out: list[Example] = []
    for task in _tasks(tasks):
        needed = GENERATION if task == "generation" else UNDERSTANDING
        if needed not in ctx.groups:
            ctx.notes.append(f"{task} examples skipped: the concept has no {needed!r} group")
            continue
        out += BUILDERS[task](ctx)
        if task == "recognition":
            out += pair_examples(ctx)
    return balance_tasks(out)


# --- image tokens, cached per image hash -------------------------------------------------


def image_tokens(library: Any, backbone: Any, sha256s: Sequence[str], *,
                 load_image: Callable[[str], Image.Image] | None = None, batch_size: int = 8,
                 on_progress: Callable[[int, int], None] | None = None) -> dict[str, list[int]]:
    """sha256 -> image-token ids; each image is VQ-encoded once, ever, per backbone."""
    from yoc_assistant.personalize.imagetokens import cached_image_tokens

    return cached_image_tokens(library, backbone, sha256s, load_image=load_image,
                               batch_size=batch_size, on_progress=on_progress)
