"""Concept rows started from the words of the backbone's descriptions of the photos."""

from __future__ import annotations

import torch

from yoc_assistant import Backbone
from yoc_assistant.personalize import describe
from yoc_assistant.personalize.concept import ConceptVectors


def test_shared_words_keep_what_most_captions_say_in_order() -> None:
    captions = [[1, 5, 6, 7, 2], [1, 5, 6, 8, 3], [1, 9, 6, 7, 4]]
    assert describe.shared_words(captions) == [1, 5, 6, 7]  # 2, 3, 4, 8, 9: one caption each
    assert describe.shared_words(captions, min_share=1.0) == [1, 6]
    assert describe.shared_words(captions, limit=2) == [1, 5]
    assert describe.shared_words([]) == []


def test_words_fill_the_last_rows_of_every_group(bb: Backbone) -> None:
    words = bb.tokenize("a red dog")
    groups = {"generation": 4, "understanding": 6}
    blank = ConceptVectors.initialize(bb, "bo", groups, seed=3)
    vec = ConceptVectors.initialize(bb, "bo", groups, seed=3, words=words)
    table = bb.model.get_input_embeddings().weight.detach().float()
    n = len(words)
    for group in groups:
        rows = vec.input_rows[vec.group_slice(group)]
        assert torch.equal(rows[-n:], table[words])
        assert torch.equal(rows[:-n], blank.input_rows[vec.group_slice(group)][:-n])
    assert torch.equal(vec.input_rows[0], blank.input_rows[0])  # the identifier stays blank
    assert torch.equal(vec.output_rows, blank.output_rows)
    long = ConceptVectors.initialize(bb, "bo", {"generation": 2}, seed=3, words=words)
    assert torch.equal(long.input_rows[1:3], table[words[:2]])  # the first words that fit


def test_photo_words_are_words_not_image_or_special_tokens(bb: Backbone) -> None:
    from PIL import Image

    photos = [Image.new("RGB", (64, 64), c) for c in ("red", "red", "blue")]
    images = [row.tolist() for row in bb.encode_images(photos)]
    words = describe.photo_words(bb, images, max_new_tokens=8)
    assert len(words) <= describe.MAX_WORDS
    for token in words:
        assert token < bb.vocab_size and token not in bb.special.ids()
        assert not bool(bb.image_vocab.is_image([token])[0])
