"""Weight-only int8 (`int8wo`, torchao): int8 weights in the decoder, logits close to fp32."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_ANOLE_A

from yoc_assistant import Backbone
from yoc_assistant.backbone.quantize import is_weight_only_int8

CHECKPOINT = str(TINY_ANOLE_A / "checkpoint")


@pytest.fixture(scope="module")
def pair() -> tuple[Backbone, Backbone]:
    return (Backbone.load(CHECKPOINT, precision="fp32", device="cpu"),
            Backbone.load(CHECKPOINT, precision="int8wo", device="cpu"))


def test_decoder_linears_hold_int8_weights_and_no_float_copy(pair) -> None:
    full, q = pair
    linears = [m for m in q.model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(is_weight_only_int8(m.weight) for m in linears)
    # the head stays float (the image loop multiplies a view of its image rows)
    assert q.model.lm_head.weight.dtype == torch.float32 and not is_weight_only_int8(q.model.lm_head.weight)
    int8_bytes = sum(m.weight.qdata.numel() for m in linears)
    float_bytes = sum(m.weight.numel() * 4 for m in full.model.model.layers.modules()
                      if isinstance(m, torch.nn.Linear))
    assert int8_bytes * 4 == float_bytes
    assert q.precision == "int8wo" and q.dtype == torch.float32  # float32 activations on the CPU


def test_int8_weight_only_logits_are_close_to_fp32(pair) -> None:
    full, q = pair
    prompt = full.prompt_ids(["a small dog on a red boat"]) + [full.special.boi] + \
        full.image_vocab.bpe_ids[:20].tolist()
    with torch.no_grad():
        a, _ = full.forward(torch.tensor([prompt]))
        b, _ = q.forward(torch.tensor([prompt]))
    a, b = a[0], b[0]
    spread = float(a.std())
    # per-row int8 weights: the logits move by about a percent of their spread
    assert float((a - b).abs().max()) < 0.05 * spread
    torch.testing.assert_close(torch.softmax(b, -1), torch.softmax(a, -1), atol=2e-3, rtol=0)
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean()
    assert agree >= 0.9


@pytest.mark.parametrize("decoding", ["sequential", "sjd"])
def test_int8_weight_only_draws_and_answers(pair, decoding: str) -> None:
    _, q = pair
    prompt = q.prompt_ids(["a red boat"])
    out = q.generate_images(prompt, n=2, seed=3, decode=False, decoding=decoding)
    assert out.ids.shape == (2, q.image_seq_length) and bool(q.image_vocab.is_image(out.ids).all())
    text = q.generate_text(prompt, max_new_tokens=4, seed=1)
    assert 0 < len(text.ids) <= 4 or text.finish_reason != "length"


def test_a_synthetic_backbone_in_int8_weight_only() -> None:
    from yoc_assistant.backbone.synthetic import synthetic_backbone

    bb = synthetic_backbone("small", precision="int8wo", device="cpu")
    assert all(is_weight_only_int8(m.weight) for m in bb.model.model.layers.modules()
               if isinstance(m, torch.nn.Linear))
    ids = bb.generate_images(bb.prompt_ids(["x"]), decode=False, cfg_scale=1.0, decoding="sjd").ids
    assert ids.shape == (1, bb.image_seq_length)


def test_the_int8_weight_only_step_compiles_as_one_graph(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the image step is compiled (that is what makes int8wo fast); torchao's int8
    weights must trace without graph breaks (checked on the CPU with a recording backend)."""
    from test_fused import GraphRecorder

    from yoc_assistant.backbone.imagegen import sample_image_ids

    _, q = pair
    prompt = q.prompt_ids(["a red boat"]) + [q.special.boi]
    kw = dict(n=1, extra=None, cfg_scale=3.0, temperature=1.0, top_p=0.9, top_k=0, seeds=[2],
              on_progress=None, tokens=6, decoding="sequential")
    uncond = [q.special.bos, q.special.boi]
    want = sample_image_ids(q, prompt, uncond, compiled=False, **kw)
    recorder = GraphRecorder()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda fn, **_kw: real_compile(fn, backend=recorder, fullgraph=True, dynamic=False))
    torch._dynamo.reset()
    try:
        got = sample_image_ids(q, prompt, uncond, compiled=True, **kw)
    finally:
        torch._dynamo.reset()
        q.caches.image_engine = None
    assert torch.equal(got, want)
    assert recorder.graphs == 1
