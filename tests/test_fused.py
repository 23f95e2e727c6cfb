"""The fused image decode step (one q/k/v matmul, one gate/up matmul per layer) against
the HF-module step: same logits, same seeded tokens, no second copy of the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from yoc_assistant.backbone import Backbone, ExtraTokens
from yoc_assistant.backbone import fused as fusing
from yoc_assistant.backbone.imagegen import ImageEngine, sample_image_ids

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"


def write_gqa_checkpoint(folder: Path) -> Path:
    """A tiny checkpoint with 2 kv heads for 4 query heads, and random (not 1/0) norms."""
    from safetensors.torch import load_file, save_file

    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(folder, num_heads=4, decoder=False, seed=5)
    config = json.loads((path / "config.json").read_text())
    config["num_key_value_heads"] = 2
    (path / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(path / "model.safetensors"))
    gen = torch.Generator().manual_seed(9)
    for name, t in list(tensors.items()):
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            tensors[name] = t[:32].clone()  # 2 kv heads x head_dim 16
        elif ".self_attn.k_norm." in name or ".self_attn.q_norm." in name:
            shape = (2 if "k_norm" in name else 4, 16)
            base = 1.0 if name.endswith("weight") else 0.0
            tensors[name] = base + 0.3 * torch.randn(shape, generator=gen)
        elif name.endswith("layernorm.weight") or name == "model.norm.weight":
            tensors[name] = 1.0 + 0.3 * torch.randn(t.shape, generator=gen)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return Backbone.load(str(CHECKPOINT), precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def gqa(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    bb = Backbone.load(str(write_gqa_checkpoint(tmp_path_factory.mktemp("gqa"))), precision="fp32",
                       device="cpu")
    attn = bb.model.model.layers[0].self_attn
    assert attn.num_key_value_heads == 2 and attn.num_heads == 4
    return bb


@pytest.fixture(params=["tiny", "gqa"])
def model(request: pytest.FixtureRequest) -> Backbone:
    return request.getfixturevalue(request.param)


def extra_rows(bb: Backbone) -> ExtraTokens:
    gen = torch.Generator().manual_seed(0)
    return ExtraTokens(torch.randn(2, bb.hidden_size, generator=gen) * 0.5,
                       torch.randn(2, bb.hidden_size, generator=gen) * 0.1)


def prompts(bb: Backbone, case: str) -> tuple[list[int], list[int] | None, ExtraTokens | None]:
    boi, bos = bb.special.boi, bb.special.bos
    cond = bb.prompt_ids(["a small dog on a red boat"]) + [boi]
    if case == "concept":  # concept rows in the prompt; the unconditional row is shorter
        cond = [bos, bb.vocab_size, 3, bb.vocab_size + 1, bb.special.sep, boi]
        return cond, [bos, boi], extra_rows(bb)
    return cond, ([bos, boi] if case == "cfg" else None), None


def forced_logits(bb: Backbone, fused: bool, rows: list[list[int]], tokens: list[int],
                  extra: ExtraTokens | None) -> torch.Tensor:
    """Image logits of every row at every step while feeding the same given tokens."""
    width = max(len(r) for r in rows)
    engine = ImageEngine(bb, len(rows), width + len(tokens) + 1, compiled=False, fused=fused)
    assert (engine.fused_layers is not None) == fused
    with torch.inference_mode():
        logits = [engine.image_logits(engine.prefill(rows, extra))]
        for i, tok in enumerate(tokens):
            engine.feed.fill_(tok)
            cur = torch.tensor(width + i, device=engine.device)
            logits.append(engine.image_logits(engine.hidden(engine.feed, cur)))
    return torch.stack(logits).float().cpu()


@pytest.mark.parametrize("case", ["cfg", "no-cfg", "concept"])
def test_fused_step_gives_the_same_logits_and_tokens(model: Backbone, case: str) -> None:
    cond, uncond, extra = prompts(model, case)
    kwargs: dict[str, Any] = dict(n=2, extra=extra, cfg_scale=1.0 if uncond is None else 3.0,
                                  temperature=1.0, top_p=0.9, top_k=0, seeds=[4, 5], on_progress=None,
                                  compiled=False, tokens=48)
    plain = sample_image_ids(model, cond, uncond, fused=False, **kwargs)
    fused = sample_image_ids(model, cond, uncond, fused=True, **kwargs)
    assert torch.equal(plain, fused)
    assert bool(model.image_vocab.is_image(fused).all())
    # Logits of every step, for prompts of different lengths (left padding) fed the same tokens.
    rows = [cond, cond] + ([uncond, uncond] if uncond is not None else [])
    want = forced_logits(model, False, rows, plain[0].tolist(), extra)
    got = forced_logits(model, True, rows, plain[0].tolist(), extra)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(want[1], want[2])  # the steps really moved on


def test_fusing_keeps_one_copy_of_the_weights(tmp_path: Path) -> None:
    bb = Backbone.load(str(write_gqa_checkpoint(tmp_path / "gqa")), precision="fp32", device="cpu")

    def stored_bytes() -> int:
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in bb.model.parameters()}
        return sum(storages.values())

    prompt = bb.prompt_ids(["a dog"])
    before_bytes, before_logits = stored_bytes(), bb.next_token_logits(prompt)
    layers = fusing.fuse(bb)
    assert fusing.fuse(bb) is layers  # built once
    assert stored_bytes() <= before_bytes
    for layer, f in zip(bb.model.model.layers, layers, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        row = f.qkv_weight.stride(0) * f.qkv_weight.element_size()
        assert f.qkv_split == (64, 32, 32)
        assert attn.q_proj.weight.data_ptr() == f.qkv_weight.data_ptr()
        assert attn.k_proj.weight.data_ptr() == f.qkv_weight.data_ptr() + 64 * row
        assert attn.v_proj.weight.data_ptr() == f.qkv_weight.data_ptr() + 96 * row
        assert mlp.gate_proj.weight.data_ptr() == f.gate_up_weight.data_ptr()
        assert mlp.up_proj.weight.data_ptr() == f.gate_up_weight.data_ptr() + f.intermediate * row
        assert not attn.q_proj.weight.requires_grad
    # the HF modules still compute the same thing, and autograd still runs through them
    assert torch.equal(bb.next_token_logits(prompt), before_logits)
    extra = ExtraTokens(torch.zeros(1, bb.hidden_size, requires_grad=True), torch.zeros(1, bb.hidden_size))
    logits, _ = bb.forward(torch.tensor([prompt + [bb.vocab_size]]), extra=extra)
    logits[0, -1, :8].sum().backward()
    assert extra.input_rows.grad is not None and bool(extra.input_rows.grad.abs().sum() > 0)


def test_moved_weights_are_fused_again(tiny: Backbone) -> None:
    layers = fusing.fuse(tiny)
    proj = tiny.model.model.layers[1].mlp.up_proj
    proj.weight = torch.nn.Parameter(proj.weight.detach().clone(), requires_grad=False)  # as .to() would
    again = fusing.fuse(tiny)
    assert again is not layers and fusing.fuse(tiny) is again
    assert proj.weight.data_ptr() == again[1].gate_up_weight[again[1].intermediate:].data_ptr()


def test_quantized_or_odd_layers_keep_the_hf_path(gqa: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fusing.fusable(gqa)
    monkeypatch.setattr(gqa, "precision", "int8")
    assert not fusing.fusable(gqa)
    cond, uncond, _ = prompts(gqa, "cfg")
    kwargs: dict[str, Any] = dict(n=1, extra=None, cfg_scale=3.0, temperature=1.0, top_p=0.9, top_k=0,
                                  seeds=[1], on_progress=None, compiled=False, tokens=4)
    sample_image_ids(gqa, cond, uncond, fused=True, **kwargs)
    assert gqa.caches.image_engine.fused_layers is None
    monkeypatch.setattr(gqa, "precision", "fp32")
    proj = gqa.model.model.layers[0].self_attn.v_proj
    proj.weight.requires_grad_(True)  # a backbone being trained is not fused
    try:
        assert not fusing.fusable(gqa)
    finally:
        proj.weight.requires_grad_(False)
    assert fusing.fusable(gqa)
    mlp = gqa.model.model.layers[1].mlp
    monkeypatch.setattr(mlp, "up_proj", torch.nn.Sequential(mlp.up_proj))
    assert not fusing.fusable(gqa)


def test_env_selects_the_fused_step(tiny: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOC_FUSED", raising=False)
    assert not fusing.fused_wanted(tiny)  # CPU default: the HF path
    monkeypatch.setenv("YOC_FUSED", "1")
    assert fusing.fused_wanted(tiny)
    monkeypatch.setenv("YOC_FUSED", "0")
    assert not fusing.fused_wanted(tiny)


class GraphRecorder:
    """A torch.compile backend that notes the graph's inputs, then runs it through AOT
    autograd's functionalization (how inductor sees in-place cache/buffer writes)."""

    def __init__(self, functionalize: bool = True) -> None:
        self.functionalize = functionalize
        self.graphs = 0
        self.moving: list[tuple[str, int]] = []  # inputs CUDA graphs would copy in on every replay

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        self.graphs += 1
        for node in gm.graph.find_nodes(op="placeholder"):
            value = node.meta.get("example_value")
            static = node.meta.get("tensor_dict", {}).get("_dynamo_static_input_type")
            if isinstance(value, torch.Tensor) and not static and not isinstance(value, torch.nn.Parameter):
                self.moving.append((node.name, value.numel()))
        if not self.functionalize:
            return gm.forward
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)


@pytest.mark.parametrize("case", ["cfg", "no-cfg"])
def test_fused_step_compiles_as_one_graph_with_static_weights(tiny: Backbone, case: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cond, uncond, _ = prompts(tiny, case)
    kwargs: dict[str, Any] = dict(n=1, extra=None, cfg_scale=1.0 if uncond is None else 3.0,
                                  temperature=1.0, top_p=0.9, top_k=0, seeds=[3], on_progress=None,
                                  fused=True, tokens=5)
    want = sample_image_ids(tiny, cond, uncond, compiled=False, **kwargs)
    recorder = GraphRecorder()
    real_compile = torch.compile

    def compile_eagerly(fn: Any, **_kw: Any) -> Any:
        return real_compile(fn, backend=recorder, fullgraph=True, dynamic=False)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    try:
        got = sample_image_ids(tiny, cond, uncond, compiled=True, **kwargs)
    finally:
        torch._dynamo.reset()
        tiny.caches.image_engine = None
    assert torch.equal(got, want)
    assert recorder.graphs == 1  # fullgraph: no breaks, no recompiles across steps
    width = len(tiny.image_vocab)
    # Only the per-step scalars and the noise row move; weights, cache and buffers stay put.
    assert all(numel <= width for _name, numel in recorder.moving), recorder.moving


def test_many_engine_shapes_stay_compiled(tiny: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = GraphRecorder(functionalize=False)
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **_kw: real_compile(fn, backend=recorder, dynamic=False))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)  # dynamo's default
    torch._dynamo.reset()
    try:
        for i in range(9):  # nine prompt lengths, nine cache capacities: nine compiles of one `_step`
            cond = [tiny.special.bos] + [5] * (64 * i + 3) + [tiny.special.boi]
            sample_image_ids(tiny, cond, None, n=1, extra=None, cfg_scale=1.0, temperature=1.0, top_p=0.9,
                             top_k=0, seeds=[3], on_progress=None, fused=True, tokens=2, compiled=True)
    finally:
        torch._dynamo.reset()
        tiny.caches.image_engine = None
    assert recorder.graphs == 9


@pytest.mark.gpu
def test_fused_matches_unfused_on_cuda() -> None:
    gpu = Backbone.load(str(CHECKPOINT), precision="fp32", device="cuda")
    cond, uncond, _ = prompts(gpu, "cfg")
    kwargs: dict[str, Any] = dict(n=2, extra=None, cfg_scale=3.0, temperature=1.0, top_p=0.9, top_k=0,
                                  seeds=[9, 10], on_progress=None, compiled=True)
    plain = sample_image_ids(gpu, cond, uncond, fused=False, **kwargs)
    fused = sample_image_ids(gpu, cond, uncond, fused=True, **kwargs)
    again = sample_image_ids(gpu, cond, uncond, fused=True, **kwargs)
    assert torch.equal(fused, again)
    assert torch.equal(plain[:, :16], fused[:, :16])  # fp32 kernels may differ in the last bits
    half = Backbone.load(str(CHECKPOINT), precision="bf16", device="cuda")
    rows = [cond, uncond]
    tokens = plain[0, :32].tolist()
    want = forced_logits(half, False, rows, tokens, None)
    got = forced_logits(half, True, rows, tokens, None)
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)
    first = sample_image_ids(half, cond, uncond, fused=True, **kwargs)
    assert torch.equal(first, sample_image_ids(half, cond, uncond, fused=True, **kwargs))
    assert bool(half.image_vocab.is_image(first).all())


def test_fused_step_in_bf16_is_within_rounding_of_the_hf_step() -> None:
    half = Backbone.load(str(CHECKPOINT), precision="bf16", device="cpu")
    cond, uncond, _ = prompts(half, "cfg")
    tokens = half.image_vocab.bpe_ids[torch.arange(0, 40, 3)].tolist()
    want = forced_logits(half, False, [cond, uncond], tokens, None)
    got = forced_logits(half, True, [cond, uncond], tokens, None)
    assert want.dtype == torch.float32 and half.model.lm_head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0.01, atol=0.01)
