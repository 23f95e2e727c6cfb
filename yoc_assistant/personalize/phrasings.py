"""Wordings of the training prompts and answers. `{name}` marks where the concept's
identifier token goes (it is spliced in as an id, never spelled out as text)."""

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
CAPTION_PROMPT = "Describe this photo in one sentence."
