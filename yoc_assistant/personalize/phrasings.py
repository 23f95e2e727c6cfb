"""Wordings of the training prompts and answers: the phrasing bank. `{name}` marks where
the concept's identifier token goes (it is spliced in as an id, never spelled out as
text), `{place}` a place word.

Request phrasings come in two splits: the training split (the tuples without a
`HELD_OUT_` prefix) is what training data is made of; the `HELD_OUT_*` phrasings are
never trained on (neither by a concept's training nor by the toy backbone's
pretraining), so routing and recognition measured on them show whether the model
learnt the request's intent or memorised its wording."""

from __future__ import annotations

# "Is <name> in this photo?": 30 phrasings (the paper uses about 30).
RECOGNITION_QUESTIONS: tuple[str, ...] = (
    "Is {name} in this photo?",
    "Is {name} in this picture?",
    "Is {name} in this image?",
    "Can you see {name} in this photo?",
    "Can you find {name} in this image?",
    "Do you see {name} here?",
    "Does this photo show {name}?",
    "Does this picture include {name}?",
    "Is {name} visible in this image?",
    "Is {name} present in this photo?",
    "Is {name} shown in this picture?",
    "Is this {name}?",
    "Is there {name} in this photo?",
    "Does {name} appear in this image?",
    "Does {name} appear anywhere in this picture?",
    "Could this be {name}?",
    "Is {name} somewhere in this photo?",
    "Tell me if {name} is in this photo.",
    "Look at this photo: is {name} in it?",
    "Check this picture for {name}. Is {name} there?",
    "Would you say {name} is in this image?",
    "Am I looking at {name} in this photo?",
    "Is {name} captured in this shot?",
    "Is {name} one of the things in this photo?",
    "Does this image contain {name}?",
    "Is it {name} in this picture?",
    "Can {name} be seen in this image?",
    "Do you recognize {name} in this photo?",
    "Is {name} in the frame?",
    "Is {name} pictured here?",
)

# Answers begin with "Yes" / "No" so that evaluation can read the first token.
YES_ANSWERS: tuple[str, ...] = (
    "Yes, {name} is in this photo.",
    "Yes, I can see {name} here.",
    "Yes, this is {name}.",
    "Yes, {name} is in the picture.",
)
NO_ANSWERS: tuple[str, ...] = (
    "No, {name} is not in this photo.",
    "No, I cannot see {name} here.",
    "No, this is not {name}.",
    "No, {name} is not in the picture.",
)
YES_WORD = "Yes"
NO_WORD = "No"

GENERATION_PROMPTS: tuple[str, ...] = (
    "A photo of {name}.",
    "A picture of {name}.",
    "An image of {name}.",
    "Show me a photo of {name}.",
    "Draw {name}.",
    "Generate a picture of {name}.",
    "Draw a picture of {name}.",
    "Can you draw {name}?",
    "Make an image of {name}.",
    "Show me {name}.",
    "Paint {name}.",
    "Create a picture of {name}.",
    "I would like a photo of {name}.",
    "Please draw {name}.",
    "Give me an image of {name}.",
    "Generate an image of {name}.",
)
# The same requests with a place (a toy background, or any place a user names).
PLACE_GENERATION_PROMPTS: tuple[str, ...] = (
    "Draw {name} on {place}.",
    "A photo of {name} on {place}.",
    "Show me {name} on {place}.",
    "Make a picture of {name} on {place}.",
    "Paint {name} on {place}.",
    "Generate an image of {name} on {place}.",
)
# Places that fill `{place}` in training requests (toy backgrounds and everyday places).
PLACES: tuple[str, ...] = ("grass", "sand", "snow", "water", "stone", "wood", "the beach", "a table")
# More ways to ask for a picture: router targets only (they train the choice of the image
# group, not a drawing), so that courtesy words, commas and "could you" do not decide the route.
MORE_IMAGE_REQUESTS: tuple[str, ...] = (
    "Please show me a photo of {name}.",
    "Could you draw {name}?",
    "Can you make a photo of {name}?",
    "I want a photo of {name}.",
    "Draw {name}, please.",
    "Give me a drawing of {name}.",
    "Make me a picture of {name}.",
    "Paint a picture of {name}.",
    "Could you paint {name} on {place}?",
    "Show me {name} on {place}, please.",
    "A picture of {name} on {place}, please.",
    "Please make an image of {name} on {place}.",
    "I would like a picture of {name} on {place}.",
    "Can you draw {name} on {place} for me?",
)
HELD_OUT_GENERATION_PROMPTS: tuple[str, ...] = (
    "Could you make a picture of {name}?",
    "Sketch {name}.",
    "Let me see a photo of {name}.",
    "Draw me {name}.",
    "Can you show me a picture of {name}?",
    "Create an image of {name} on {place}.",
    "I want a drawing of {name}.",
    "Please paint a picture of {name} on {place}.",
    "Draw {name} on the {place}.",
    "Show me a picture of {name} on {place}, please.",
)
# Text requests never trained on (routing must send them to a text answer).
HELD_OUT_TEXT_REQUESTS: tuple[str, ...] = (
    "Is {name} in this photo or not?",
    "Can you tell me if {name} is here?",
    "Would {name} be in this image?",
    "What colour is {name}?",
    "What shape does {name} have?",
    "Tell me something about {name}.",
    "Do you think this is {name}?",
    "Which pattern does {name} have?",
)

# QA from "key: value" facts: questions and the answer template.
FACT_QUESTIONS: tuple[str, ...] = (
    "What is {name}'s {key}?",
    "Tell me {name}'s {key}.",
    "Do you know {name}'s {key}?",
)
FACT_ANSWER = "{name}'s {key} is {value}."
# QA from free sentences about the concept.
ABOUT_QUESTIONS: tuple[str, ...] = (
    "Tell me about {name}.",
    "What do you know about {name}?",
    "Can you describe {name}?",
    "Who or what is {name}?",
)
LOOK_QUESTIONS: tuple[str, ...] = (
    "What does {name} look like?",
    "Describe how {name} looks.",
)
# Questions about one attribute, in more forms than QA trains (router targets only): a
# concept that saw only "What is <x>'s colour?" routed "What colour is <x>?" to a picture.
ATTRIBUTE_QUESTIONS: tuple[str, ...] = (
    "Which {key} is {name}?",
    "What is the {key} of {name}?",
    "Can you tell me {name}'s {key}?",
    "Please tell me {name}'s {key}.",
    "I want to know {name}'s {key}.",
    "How would you describe {name}'s {key}?",
    "Describe {name}'s {key}.",
)
ATTRIBUTE_KEYS: tuple[str, ...] = ("colour", "shape", "pattern", "size", "name")
# Other things people ask about a concept, without a photo.
MORE_TEXT_REQUESTS: tuple[str, ...] = (
    "What is {name}?",
    "Who is {name}?",
    "What is {name} like?",
    "How big is {name}?",
    "Is {name} big or small?",
    "Does {name} have a pattern?",
    "Tell me what {name} looks like.",
    "Do you know what {name} looks like?",
    "Can you say what {name} is?",
    "What can you tell me about {name}?",
)
# The first-party modalities' example requests (router targets; the training split only).
TEXT_REQUESTS: tuple[str, ...] = (
    *ABOUT_QUESTIONS, *LOOK_QUESTIONS,
    *(q.replace("{key}", key) for q in FACT_QUESTIONS for key in ("colour", "shape", "name")),
    *(q.replace("{key}", key) for q in ATTRIBUTE_QUESTIONS for key in ATTRIBUTE_KEYS),
    *MORE_TEXT_REQUESTS,
)
IMAGE_REQUESTS: tuple[str, ...] = GENERATION_PROMPTS + tuple(
    p.replace("{place}", PLACES[k % len(PLACES)])
    for k, p in enumerate(PLACE_GENERATION_PROMPTS + MORE_IMAGE_REQUESTS))
CAPTION_PROMPT = "Describe this photo in one sentence."

# Two concepts in one request (`{a}`, `{b}`).
PAIR_BOTH_QUESTIONS: tuple[str, ...] = (
    "Are {a} and {b} both here?",
    "Are {a} and {b} both in this photo?",
    "Can you see both {a} and {b} in this picture?",
)
PAIR_BOTH_YES = "Yes, {a} and {b} are both here."
PAIR_BOTH_NO = "No, {a} and {b} are not both here."
PAIR_WHICH_QUESTIONS: tuple[str, ...] = (
    "Which of {a} and {b} is in this photo?",
    "Which of {a} and {b} can you see here?",
)
PAIR_WHICH_ANSWERS: dict[str, str] = {
    "a": "{a} is in this photo.",
    "b": "{b} is in this photo.",
    "both": "Both are in this photo.",
    "neither": "Neither is in this photo.",
}
PAIR_GENERATION_PROMPTS: tuple[str, ...] = (
    "Draw {a} and {b}.",
    "A photo of {a} and {b}.",
    "Draw {a} and {b} on {place}.",
    "Show me {a} and {b} on {place}.",
)


def words_of(template: str) -> list[str]:
    """The plain words of a phrasing (placeholders and punctuation dropped), lower case."""
    import re

    return re.findall(r"[a-z]+", re.sub(r"\{[a-z]+\}", " ", template.lower()))


def all_phrasings() -> list[str]:
    """Every template of the bank (both splits): the words a backbone should know."""
    out: list[str] = []
    for key, value in globals().items():
        if not key.isupper():
            continue
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            out += value
        elif isinstance(value, dict):
            out += [v for v in value.values() if isinstance(v, str)]
        elif isinstance(value, str) and "{" in value:
            out.append(value)
    return out
