"""The phrasing bank: a training split and a held-out split that no training data uses."""

from __future__ import annotations

import random

from yoc_assistant.personalize import phrasings as P

HELD_OUT = (*P.HELD_OUT_GENERATION_PROMPTS, *P.HELD_OUT_TEXT_REQUESTS)
TRAINING = (*P.RECOGNITION_QUESTIONS, *P.GENERATION_PROMPTS, *P.PLACE_GENERATION_PROMPTS, *P.IMAGE_REQUESTS,
            *P.TEXT_REQUESTS, *P.FACT_QUESTIONS, *P.ABOUT_QUESTIONS, *P.LOOK_QUESTIONS)


def _norm(text: str) -> str:
    return " ".join(P.words_of(text.replace("{place}", "")))


def test_held_out_phrasings_are_never_training_phrasings() -> None:
    train = {_norm(t) for t in TRAINING}
    for t in HELD_OUT:
        assert "{name}" in t
        assert _norm(t) not in train, t
    assert len(P.HELD_OUT_GENERATION_PROMPTS) >= 8 and len(P.HELD_OUT_TEXT_REQUESTS) >= 8


def test_first_party_modalities_declare_training_requests_only() -> None:
    from yoc_image import yoc_modalities as image_modalities
    from yoc_text import yoc_modalities as text_modalities

    [text], [image] = text_modalities(), image_modalities()
    assert text.example_requests and image.example_requests
    held = {_norm(t) for t in HELD_OUT}
    for request in (*text.example_requests, *image.example_requests):
        assert "{name}" in request and "{place}" not in request
        assert _norm(request) not in held, request


def test_training_data_uses_only_the_training_split(tmp_path) -> None:
    """Every request text in a concept's training examples is a training phrasing."""
    from assistant_helpers import tiny_backbone

    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors
    from yoc_assistant.personalize.data import BuildContext, build_training_set, routing_examples

    bb = tiny_backbone()
    cs = ConceptSet(bb, [ConceptVectors.initialize(bb, "bo", seed=0)])
    rng = random.Random(0)
    image = [int(t) for t in bb.image_vocab.bpe_ids[: bb.image_seq_length].tolist()]
    ctx = BuildContext.from_concepts(bb, cs, "bo", positives=[image] * 3, easy_negatives=[image],
                                     hard_negatives=[image], soft_positives=[image] * 4,
                                     about="colour: red", rng=rng)
    examples = build_training_set(ctx) + routing_examples(ctx, "generation", P.IMAGE_REQUESTS)
    texts = {bb.detokenize([t for t, lab in zip(ex.ids, ex.labels, strict=True) if lab == -100]).strip()
             for ex in examples}
    held = [" ".join(P.words_of(t)) for t in HELD_OUT]
    for text in texts:
        words = " ".join(P.words_of(text))
        assert not any(h and h in words for h in held), text
