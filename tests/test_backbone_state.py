"""A backbone's state is what its constructor declares: using it (text, pictures,
training, image-token ids) fills `bb.caches` and adds no attribute of its own."""

from __future__ import annotations

import inspect

from yoc_assistant import Backbone
from yoc_assistant.backbone.core import BackboneCaches


def test_using_a_backbone_adds_no_undeclared_state(bb: Backbone) -> None:
    declared = set(inspect.signature(Backbone.__init__).parameters) - {"self"} | {"caches"}
    ids = bb.prompt_ids(["a red boat"])
    bb.generate_text(ids, max_new_tokens=3, seed=0)
    drawn = bb.generate_images(ids, n=1, seed=0)
    bb.encode_images(drawn.images)
    bb.vq_id()
    hidden = bb.hidden_states(bb.embed(ids_tensor(ids)))
    assert hidden.shape[-1] == bb.hidden_size
    assert set(vars(bb)) == declared, set(vars(bb)) ^ declared
    assert isinstance(bb.caches, BackboneCaches)
    assert bb.caches.vq_id == bb.vq_id() and bb.caches.special_mask is not None
    assert bb.vq_decoder is bb.caches.vq_decoder is not None


def ids_tensor(ids: list[int]):  # noqa: ANN201 - a LongTensor [1, T]
    import torch

    return torch.tensor([ids])
