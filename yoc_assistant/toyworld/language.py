"""The toy world's words and its pretraining tasks (text side).

Every task is a turn in Anole's format: BOS + prompt + `<reserved08706>` + answer
+ EOS, where a prompt or answer may hold a scene's image (BOI + tokens + EOI).
`make_example(task, scene, rng)` returns the parts as text and the `IMAGE` marker;
the training script turns them into ids through the backbone's own tokenizer.

The `named-*` tasks have the exact shape of personalization data (same wordings,
from `personalize.phrasings`): a definition `NAME is ... a dotted orange star .` in
front, questions that refer to the thing only by `NAME`, and answers that start after
a few `Filler` tokens. NAME and the fillers become fresh extra rows (ids past the
vocabulary, like a concept's tokens) drawn anew for every example. A big language
model reads a definition in its prompt and ignores odd tokens without being taught;
a 2 M-parameter model pretrained only on captions never learns to, and then a
concept's learned prompt (`<sunny> is <g1..gk><u1..uh>.`) has no way to reach the
answer: the trained concept stayed at chance even on its own training photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yoc_assistant.toyworld import world

IMAGE = object()  # marks where the scene's image goes
NAME = object()  # marks where the example's name token (a fresh extra row) goes


@dataclass(frozen=True)
class Filler:
    """`n` fresh extra rows: stand-ins for a concept's learned tokens (never a target)."""

    n: int


BASE_TASKS = ("caption", "generate", "recognize", "exists", "qa")
NAMED_TASKS = ("named-recognize", "named-generate", "named-qa")
TASKS = BASE_TASKS + NAMED_TASKS
MAX_PREFIX_FILLERS = 32  # a concept's prompt holds 16 + 16 group tokens by default
MAX_ANSWER_FILLERS = 16  # its answers start with one group (16 tokens)

_TEMPLATE_WORDS = """
a an the on in of is it this that photo picture image describe what which where colour color
shape pattern does have has yes no not there draw show me make size big small thing object
""".split()
# Words other parts of yoc put in prompts (personalized prompts, recognition and QA
# templates, a concept's facts); untrained here, but better a row than <unk>.
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
    prompt: list  # str | IMAGE
    answer: list  # str | IMAGE


def _caption(scene: world.Scene, rng: np.random.Generator) -> Example:
    question = ["describe this photo .", "what is in this photo ?", "what is this ?"][int(rng.integers(3))]
    return Example("caption", [IMAGE, question], [scene.caption() + " ."])


def _generate(scene: world.Scene, rng: np.random.Generator) -> Example:
    cap = scene.caption()
    choice = int(rng.integers(3))
    prompt = [cap + " .", "a photo of " + cap + " .", "draw " + cap + " ."][choice]
    return Example("generate", [prompt], [IMAGE])


def _asked_thing(scene: world.Scene, rng: np.random.Generator) -> tuple[world.Thing, bool]:
    """Half the time the thing in the scene, else a lookalike (hard) or a random thing (easy)."""
    r = rng.random()
    if r < 0.5:
        return scene.thing, True
    if r < 0.8:
        options = world.lookalikes(scene.thing, 1 if r < 0.7 else 2)
        return options[int(rng.integers(len(options)))], False
    while True:
        other = world.ALL_THINGS[int(rng.integers(len(world.ALL_THINGS)))]
        if other != scene.thing:
            return other, False


def _recognize(scene: world.Scene, rng: np.random.Generator) -> Example:
    thing, present = _asked_thing(scene, rng)
    x = "the " + thing.describe()
    question, yes, no = _RECOGNITION[int(rng.integers(len(_RECOGNITION)))]
    answer = (yes if present else no).replace("{x}", x)
    prompt = [IMAGE, question.replace("{x}", x)]
    if rng.random() < 0.3:  # personalization puts the image before or after the question
        prompt.reverse()
    return Example("recognize", prompt, [answer])


def _exists(scene: world.Scene, rng: np.random.Generator) -> Example:
    """'is there a red star ?' about one or two attributes."""
    thing, _ = _asked_thing(scene, rng)
    keep = [a for a in world.ATTRIBUTES if rng.random() < 0.6] or ["shape"]
    words = []
    if "pattern" in keep:
        words.append(thing.pattern)
    if "colour" in keep:
        words.append(thing.colour)
    words.append(thing.shape if "shape" in keep else "thing")
    present = all(getattr(thing, a) == getattr(scene.thing, a) for a in keep)
    return Example("exists", [IMAGE, f"is there a {' '.join(words)} ?"], ["yes ." if present else "no ."])


def _qa(scene: world.Scene, rng: np.random.Generator) -> Example:
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
    return Example("qa", [IMAGE, q], [a])


# -- named tasks: personalization's shape, with a definition instead of learned tokens ----------

def _named(template: str) -> list:
    """'Is {name} in this photo?' -> ['Is', NAME, 'in this photo?'] (empty pieces dropped)."""
    out: list = []
    for k, piece in enumerate(template.split("{name}")):
        if k:
            out.append(NAME)
        if piece.strip():
            out.append(piece.strip())
    return out


def _definition(thing: world.Thing, rng: np.random.Generator) -> list:
    """NAME is <fillers> a dotted orange star <fillers> ."""
    a, b = (int(v) for v in rng.multinomial(int(rng.integers(MAX_PREFIX_FILLERS + 1)), [0.5, 0.5]))
    return [NAME, "is", Filler(a), f"a {thing.describe()}", Filler(b), "."]


def _answer(parts: list, rng: np.random.Generator) -> list:
    return [Filler(int(rng.integers(MAX_ANSWER_FILLERS + 1))), *parts]


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _named_recognize(scene: world.Scene, rng: np.random.Generator) -> Example:
    from yoc_assistant.personalize import phrasings as P

    thing, present = _asked_thing(scene, rng)
    question = _named(_pick(P.RECOGNITION_QUESTIONS, rng))
    body = [IMAGE, *question] if rng.random() < 0.5 else [*question, IMAGE]
    answer = _named(_pick(P.YES_ANSWERS if present else P.NO_ANSWERS, rng))
    return Example("named-recognize", _definition(thing, rng) + body, _answer(answer, rng))


def _named_generate(scene: world.Scene, rng: np.random.Generator) -> Example:
    from yoc_assistant.personalize import phrasings as P

    prompt = _definition(scene.thing, rng) + _named(_pick(P.GENERATION_PROMPTS, rng))
    return Example("named-generate", prompt, _answer([IMAGE], rng))


def _named_qa(scene: world.Scene, rng: np.random.Generator) -> Example:
    from yoc_assistant.personalize import phrasings as P

    t = scene.thing
    key = world.ATTRIBUTES[int(rng.integers(len(world.ATTRIBUTES)))]
    if rng.random() < 0.25:
        question, answer = _pick(P.ABOUT_QUESTIONS, rng), f"{{name}} is a {t.describe()}."
    else:
        question = _pick(P.FACT_QUESTIONS, rng).replace("{key}", key)
        answer = P.FACT_ANSWER.replace("{key}", key).replace("{value}", getattr(t, key))
    return Example("named-qa", _definition(t, rng) + _named(question), _answer(_named(answer), rng))


_MAKERS = {"caption": _caption, "generate": _generate, "recognize": _recognize, "exists": _exists,
           "qa": _qa, "named-recognize": _named_recognize, "named-generate": _named_generate,
           "named-qa": _named_qa}


def make_example(task: str, scene: world.Scene, rng: np.random.Generator) -> Example:
    return _MAKERS[task](scene, rng)
