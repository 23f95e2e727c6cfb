"""The toy world's words and its pretraining tasks (text side).

Every task is a turn in Anole's format: BOS + prompt + `<reserved08706>` + answer
+ EOS, where a prompt or answer may hold a scene's image (BOI + tokens + EOI).
`make_example(task, pool, rng)` picks its scenes from a `ScenePool` and returns the
parts as text, `Photo(i)` markers (scene i of the pool) and `Name(k)` markers; the
training script turns them into ids through the backbone's own tokenizer.

No text ever names a thing's accent (the toy world's unnamed instance attribute):
captions and answers about a scene speak of its named attributes only, so a
same-named thing with another accent is "yes" to "is the red star in this photo ?".
Only a definition that holds a *photo* of the instance (`NAME is <photo> .`) tells
instances apart; then a same-named other instance is "no", and a picture asked of
NAME shows NAME's accent. That is the skill a personal concept's learned tokens need:
carry what a photo shows and words do not say.

The `named-*` tasks have the exact shape of personalization data (same wordings,
from `personalize.phrasings`): a definition `NAME is ... a dotted orange star .` in
front, questions that refer to the thing only by `NAME`, and answers that start after
a few `Filler` tokens. NAME and the fillers become fresh extra rows (ids past the
vocabulary, like a concept's tokens) drawn anew for every example. `named-pair`
defines two names and asks about both ("which of A and B is in this photo ?", "draw
A and B on grass ."), for requests that mention two concepts. A big language
model reads a definition in its prompt and ignores odd tokens without being taught;
a 2 M-parameter model pretrained only on captions never learns to, and then a
concept's learned prompt (`<sunny> is <g1..gk><u1..uh>.`) has no way to reach the
answer: the trained concept stayed at chance even on its own training photos.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from yoc_assistant.toyworld import world


@dataclass(frozen=True)
class Photo:
    """Scene `index` of the pool, as BOI + its image tokens + EOI."""

    index: int


@dataclass(frozen=True)
class Name:
    """The example's k-th name: one fresh extra row (a stand-in for a concept's identifier)."""

    k: int = 0


NAME = Name(0)


@dataclass(frozen=True)
class Filler:
    """`n` fresh extra rows: stand-ins for a concept's learned tokens (never a target)."""

    n: int


BASE_TASKS = ("caption", "generate", "recognize", "exists", "qa", "unconditional")
NAMED_TASKS = ("named-recognize", "named-generate", "named-qa", "named-pair", "named-instance")
TASKS = BASE_TASKS + NAMED_TASKS
MAX_PREFIX_FILLERS = 32  # a concept's prompt holds 16 + 16 group tokens by default
MAX_ANSWER_FILLERS = 16  # its answers start with one group (16 tokens)
PAIRS = 0.25  # the share of two-object scenes in captioning, drawing and recognition

_TEMPLATE_WORDS = """
a an the on in of is it this that photo picture image describe what which where colour color
shape pattern does have has yes no not there draw show me make size big small thing object
""".split()
# Words other parts of yoc put in prompts (personalized prompts, recognition and QA
# templates, a concept's facts, the phrasing bank); `tests` check the bank is covered.
_GENERAL_WORDS = """
i you my your we our he she they his her its their and or but with without for to at by from
as be are was were am been can could will would should do did done who whom whose why how
name called named here now today very also just only one two three some any all every each
like likes love loves look looks see seen find found know knows about please answer question
tell say says said sure maybe toy toys friend home play plays playing sits sitting standing
lying near next top under behind front left right middle center up down new old little large
favourite favorite call calls belongs belong owned own owns keep kept gift gave got bought
sky beach park room table bed garden street library book skateboard hat
anywhere appear cannot captured check contain frame generate if include looking pictured present
recognize s shot shown somewhere things visible breed
both neither create drawing give let paint sketch something think want
""".split()
# Recognition wordings, the same shapes as the personalization data's (`{x}` = 'the red star').
_RECOGNITION = (
    ("is {x} in this photo ?", "yes , {x} is in this photo .", "no , {x} is not in this photo ."),
    ("is {x} in this picture ?", "yes , {x} is in the picture .", "no , {x} is not in the picture ."),
    ("can you see {x} in this photo ?", "yes , i can see {x} here .", "no , i cannot see {x} here ."),
    ("do you see {x} here ?", "yes , i can see {x} here .", "no , i cannot see {x} here ."),
    ("is this {x} ?", "yes , this is {x} .", "no , this is not {x} ."),
    ("does this photo show {x} ?", "yes , {x} is in this photo .", "no , {x} is not in this photo ."),
)


def vocabulary() -> list[str]:
    """All words of the toy tokenizer (punctuation is added by the tokenizer writer)."""
    words = [*world.SIZES, *world.COLOURS, *world.PATTERNS, *world.SHAPES, *world.BACKGROUNDS,
             *_TEMPLATE_WORDS, *_GENERAL_WORDS]
    return list(dict.fromkeys(words))


@dataclass
class Example:
    task: str
    prompt: list  # str | Photo | Name | Filler
    answer: list  # str | Photo | Name | Filler


class ScenePool:
    """The scenes examples are made of: single-object photos indexed by instance (so a
    definition can show *another* photo of the same instance), and two-object photos."""

    def __init__(self, scenes: list[world.Scene]) -> None:
        self.scenes = scenes
        self.singles = [i for i, s in enumerate(scenes) if s.other is None]
        self.pairs = [i for i, s in enumerate(scenes) if s.other is not None]
        self._by_thing: dict[world.Thing, list[int]] = {}
        for i in self.singles:
            self._by_thing.setdefault(scenes[i].thing, []).append(i)

    def single(self, rng: np.random.Generator) -> int:
        return self.singles[int(rng.integers(len(self.singles)))]

    def pair(self, rng: np.random.Generator) -> int:
        return self.pairs[int(rng.integers(len(self.pairs)))] if self.pairs else self.single(rng)

    def any(self, rng: np.random.Generator, pairs: float) -> int:
        return self.pair(rng) if pairs and rng.random() < pairs else self.single(rng)

    def of(self, thing: world.Thing, rng: np.random.Generator, exclude: int = -1) -> int | None:
        """Another single photo of this instance, or None when the pool has none."""
        options = [i for i in self._by_thing.get(thing, ()) if i != exclude]
        return options[int(rng.integers(len(options)))] if options else None


def _pick(options: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _caption(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.any(rng, PAIRS)
    question = _pick(("describe this photo .", "what is in this photo ?", "what is this ?"), rng)
    return Example("caption", [Photo(i), question], [pool.scenes[i].caption() + " ."])


def _generate(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.any(rng, PAIRS)
    cap = pool.scenes[i].caption()
    prompt = _pick((cap + " .", "a photo of " + cap + " .", "draw " + cap + " ."), rng)
    return Example("generate", [prompt], [Photo(i)])


def _unconditional(pool: ScenePool, rng: np.random.Generator) -> Example:
    """A photo after no prompt at all: the model's image prior, which classifier-free
    guidance subtracts (its unconditional branch is [BOS, BOI], as Meta's and Anole's)."""
    return Example("unconditional", [], [Photo(pool.any(rng, PAIRS))])


def _negative(thing: world.Thing, rng: np.random.Generator, same_named: float = 0.0) -> world.Thing:
    """A thing that is not `thing`: another accent of it (the share `same_named`), a
    lookalike one or two named attributes away, or a random thing."""
    r = rng.random()
    if r < same_named:
        return _pick(world.same_named(thing), rng)  # type: ignore[arg-type]
    r = (r - same_named) / max(1e-9, 1 - same_named)
    if r < 0.75:
        options = world.lookalikes(thing, 1 if r < 0.55 else 2)
        return options[int(rng.integers(len(options)))]
    while True:
        other = world.ALL_THINGS[int(rng.integers(len(world.ALL_THINGS)))]
        if other.kind() != thing.kind():
            return other


def _asked_kind(scene: world.Scene, rng: np.random.Generator) -> tuple[world.Thing, bool]:
    """Half the time a thing in the scene, else a lookalike (hard) or a random thing (easy);
    by named attributes only (the words cannot say the accent)."""
    shown = scene.things()[int(rng.integers(len(scene.things())))]
    if rng.random() < 0.5:
        return shown, True
    while True:
        other = _negative(shown, rng)
        if not scene.shows_kind(other):
            return other, False


def _recognize(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.any(rng, PAIRS)
    thing, present = _asked_kind(pool.scenes[i], rng)
    x = "the " + thing.describe()
    question, yes, no = _RECOGNITION[int(rng.integers(len(_RECOGNITION)))]
    answer = (yes if present else no).replace("{x}", x)
    prompt = [Photo(i), question.replace("{x}", x)]
    if rng.random() < 0.3:  # personalization puts the image before or after the question
        prompt.reverse()
    return Example("recognize", prompt, [answer])


def _exists(pool: ScenePool, rng: np.random.Generator) -> Example:
    """'is there a red star ?' about one or two attributes."""
    i = pool.single(rng)
    scene = pool.scenes[i]
    thing, _ = _asked_kind(scene, rng)
    keep = [a for a in world.ATTRIBUTES if rng.random() < 0.6] or ["shape"]
    words = []
    if "pattern" in keep:
        words.append(thing.pattern)
    if "colour" in keep:
        words.append(thing.colour)
    words.append(thing.shape if "shape" in keep else "thing")
    present = all(getattr(thing, a) == getattr(scene.thing, a) for a in keep)
    return Example("exists", [Photo(i), f"is there a {' '.join(words)} ?"], ["yes ." if present else "no ."])


def _qa(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.single(rng)
    scene = pool.scenes[i]
    t = scene.thing
    pairs = [
        (f"what colour is the {t.shape} ?", f"{t.colour} ."),
        ("what colour is it ?", f"{t.colour} ."),
        ("what shape is it ?", f"a {t.shape} ."),
        ("what pattern does it have ?", f"{t.pattern} ."),
        ("what is it on ?", f"{scene.background} ."),
        ("is it big or small ?", f"{scene.size} ."),
        ("what does it look like ?", f"it is a {t.describe()} ."),
    ]
    q, a = pairs[int(rng.integers(len(pairs)))]
    return Example("qa", [Photo(i), q], [a])


# -- named tasks: personalization's shape, with a definition instead of learned tokens ----------

def _named(template: str, names: dict[str, Name] | None = None, **words: str) -> list:
    """'Is {name} in this photo?' -> ['Is', Name(0), 'in this photo?'] (empty pieces
    dropped); `names` maps other placeholders ('a', 'b') to names, `words` fills
    placeholders with text ('place')."""
    names = {"name": NAME, **(names or {})}
    for key, value in words.items():
        template = template.replace("{" + key + "}", value)
    out: list = []
    pieces = re.split(r"\{(" + "|".join(names) + r")\}", template)
    for k, piece in enumerate(pieces):
        if k % 2:
            out.append(names[piece])
        elif piece.strip():
            out.append(piece.strip())
    return out


def _definition(thing: world.Thing, pool: ScenePool, rng: np.random.Generator, name: Name = NAME,
                photo: float = 0.5, exclude: int = -1) -> tuple[list, bool]:
    """NAME is <fillers> a dotted orange star <fillers> . -- or, with probability
    `photo`, a photo of the instance in place of (or after) the words. Returns the
    parts and whether the definition shows the instance (then the accent counts)."""
    a, b = (int(v) for v in rng.multinomial(int(rng.integers(MAX_PREFIX_FILLERS + 1)), [0.5, 0.5]))
    ref = pool.of(thing, rng, exclude) if rng.random() < photo else None
    if ref is None:
        return [name, "is", Filler(a), f"a {thing.describe()}", Filler(b), "."], False
    words = [f"a {thing.describe()}"] if rng.random() < 0.4 else []
    return [name, "is", Filler(a), *words, Photo(ref), Filler(b), "."], True


def _answer(parts: list, rng: np.random.Generator) -> list:
    return [Filler(int(rng.integers(MAX_ANSWER_FILLERS + 1))), *parts]


def _asked_instance(scene: world.Scene, rng: np.random.Generator, by_photo: bool) -> tuple[world.Thing, bool]:
    """The defined thing for a question about `scene`: one it shows (half the time), else
    a thing it does not show: with a photo definition, half of those are another accent
    of a shown thing (only the accent says no); by words, a different named thing."""
    shown = scene.things()[int(rng.integers(len(scene.things())))]
    if rng.random() < 0.5:
        return shown, True
    while True:
        other = _negative(shown, rng, same_named=0.5 if by_photo else 0.0)
        if not (scene.shows(other) if by_photo else scene.shows_kind(other)):
            return other, False


def _recognition_turn(task: str, definition: list, photo: int, present: bool,
                      rng: np.random.Generator) -> Example:
    """"Is NAME in this photo?" after NAME's definition, the photo before or after the
    question, answered yes or no (the rng is drawn in this order by every named task)."""
    from yoc_assistant.personalize import phrasings as P

    question = _named(_pick(P.RECOGNITION_QUESTIONS, rng))
    body = [Photo(photo), *question] if rng.random() < 0.5 else [*question, Photo(photo)]
    answer = _named(_pick(P.YES_ANSWERS if present else P.NO_ANSWERS, rng))
    return Example(task, definition + body, _answer(answer, rng))


def _named_recognize(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.any(rng, 0.2)
    by_photo = rng.random() < 0.6
    thing, present = _asked_instance(pool.scenes[i], rng, by_photo)
    definition, by_photo = _definition(thing, pool, rng, photo=1.0 if by_photo else 0.0, exclude=i)
    if not by_photo and not present and pool.scenes[i].shows_kind(thing):
        present = True  # no photo of that instance in the pool: words cannot tell accents apart
    return _recognition_turn("named-recognize", definition, i, present, rng)


# `named-instance`'s negatives: the share of another accent, then of a lookalike of another
# colour; the rest are lookalikes of another shape or pattern. Colour lookalikes got their
# own share from backbone v11 on: they were the weakest negatives (on v7, a concept
# rejected them 0.43-0.60, its words 0.71-1.0, a photo definition alone 0.20-0.29), the
# backbone comparing photos by accent more than by body colour. (v8-v10 drew 0.5 other
# accents and 0.5 lookalikes of any attribute.)
INSTANCE_NEGATIVES = (0.4, 0.3)


def _named_instance(pool: ScenePool, rng: np.random.Generator) -> Example:
    """The instance skill alone: NAME is defined by a photo, and the question's photo shows
    either that instance (another scene of it), the same named thing with another accent,
    or a lookalike one named attribute away with the same accent (a half, then the
    negatives' shares in `INSTANCE_NEGATIVES`). Only the accent, or only one named
    attribute, tells them apart, so the answer must come from comparing the two photos in
    full; in `named-recognize` such pairs are 15% of the examples, too thin a signal for
    the 4-layer model to learn the comparison from. (With same-named negatives alone, v7
    and v8 learnt to compare the accent only: a photo definition rejected 0.84 of the
    other accents but 0.36-0.44 of the lookalikes.)"""
    for _ in range(100):
        i = pool.any(rng, 0.2)
        scene = pool.scenes[i]
        shown = scene.things()[int(rng.integers(len(scene.things())))]
        r = rng.random()
        present = r < 0.5
        thing = shown
        if not present:
            u = 2 * r - 1  # uniform over the negatives
            same, colour = INSTANCE_NEGATIVES
            if u < same:
                options = [t for t in world.same_named(shown) if not scene.shows(t)]
            else:
                other_colour = u < same + colour
                near = [t for t in world.lookalikes(shown, 1) if not scene.shows_kind(t)]
                options = [t for t in near if (t.colour != shown.colour) == other_colour] or near
            thing = options[int(rng.integers(len(options)))]
        definition, by_photo = _definition(thing, pool, rng, photo=1.0, exclude=i)
        if by_photo:
            break
    else:  # no other photo of it in the pool: words cannot tell accents apart
        present = pool.scenes[i].shows_kind(thing)
    return _recognition_turn("named-instance", definition, i, present, rng)


def _generation_request(rng: np.random.Generator, place: str, names: dict[str, Name] | None = None,
                        pair: bool = False) -> list:
    from yoc_assistant.personalize import phrasings as P

    if pair:
        return _named(_pick(P.PAIR_GENERATION_PROMPTS, rng), names, place=place)
    bank = P.PLACE_GENERATION_PROMPTS if rng.random() < 0.5 else P.GENERATION_PROMPTS
    return _named(_pick(bank, rng), names, place=place)


def _named_generate(pool: ScenePool, rng: np.random.Generator) -> Example:
    i = pool.single(rng)
    scene = pool.scenes[i]
    definition, _ = _definition(scene.thing, pool, rng, photo=0.6, exclude=i)
    prompt = definition + _generation_request(rng, scene.background)
    return Example("named-generate", prompt, _answer([Photo(i)], rng))


def _named_qa(pool: ScenePool, rng: np.random.Generator) -> Example:
    from yoc_assistant.personalize import phrasings as P

    t = pool.scenes[pool.single(rng)].thing
    definition, _ = _definition(t, pool, rng, photo=0.4)
    key = world.ATTRIBUTES[int(rng.integers(len(world.ATTRIBUTES)))]
    if rng.random() < 0.25:
        question, answer = _pick(P.ABOUT_QUESTIONS, rng), f"{{name}} is a {t.describe()}."
    else:
        question = _pick(P.FACT_QUESTIONS, rng).replace("{key}", key)
        answer = P.FACT_ANSWER.replace("{key}", key).replace("{value}", getattr(t, key))
    return Example("named-qa", definition + _named(question), _answer(_named(answer), rng))


def _named_pair(pool: ScenePool, rng: np.random.Generator) -> Example:
    """Two names defined; a question about one or both of them, or a picture of both."""
    from yoc_assistant.personalize import phrasings as P

    names = {"a": Name(0), "b": Name(1)}
    if rng.random() < 0.25:  # a picture of both: the pair scene's two things
        i = pool.pair(rng)
        scene = pool.scenes[i]
        da, _ = _definition(scene.thing, pool, rng, Name(0), photo=0.6)
        db, _ = _definition(scene.other or scene.thing, pool, rng, Name(1), photo=0.6)
        prompt = [*da, *db, *_generation_request(rng, scene.background, names, pair=True)]
        return Example("named-pair", prompt, _answer([Photo(i)], rng))
    i = pool.any(rng, 0.5)
    scene = pool.scenes[i]
    by_photo = rng.random() < 0.6
    (a, a_in), (b, b_in) = _asked_instance(scene, rng, by_photo), _asked_instance(scene, rng, by_photo)
    while b.kind() == a.kind():
        b, b_in = _asked_instance(scene, rng, by_photo)
    da, pa = _definition(a, pool, rng, Name(0), photo=1.0 if by_photo else 0.0, exclude=i)
    db, pb = _definition(b, pool, rng, Name(1), photo=1.0 if by_photo else 0.0, exclude=i)
    a_in = a_in or (not pa and scene.shows_kind(a))
    b_in = b_in or (not pb and scene.shows_kind(b))
    r = rng.random()
    if r < 0.35:  # "is A in this photo ?" with B's definition there too
        first = rng.random() < 0.5
        name, present = (Name(0), a_in) if first else (Name(1), b_in)
        question = _named(_pick(P.RECOGNITION_QUESTIONS, rng), {"name": name})
        answer = _named(_pick(P.YES_ANSWERS if present else P.NO_ANSWERS, rng), {"name": name})
    elif r < 0.65:
        question = _named(_pick(P.PAIR_BOTH_QUESTIONS, rng), names)
        answer = _named(P.PAIR_BOTH_YES if a_in and b_in else P.PAIR_BOTH_NO, names)
    else:
        key = "both" if a_in and b_in else "a" if a_in else "b" if b_in else "neither"
        question = _named(_pick(P.PAIR_WHICH_QUESTIONS, rng), names)
        answer = _named(P.PAIR_WHICH_ANSWERS[key], names)
    body = [Photo(i), *question] if rng.random() < 0.5 else [*question, Photo(i)]
    return Example("named-pair", [*da, *db, *body], _answer(answer, rng))


_MAKERS = {"caption": _caption, "generate": _generate, "recognize": _recognize, "exists": _exists,
           "qa": _qa, "unconditional": _unconditional, "named-recognize": _named_recognize,
           "named-generate": _named_generate, "named-qa": _named_qa, "named-pair": _named_pair, "named-instance": _named_instance}


def make_example(task: str, pool: ScenePool, rng: np.random.Generator) -> Example:
    return _MAKERS[task](pool, rng)
