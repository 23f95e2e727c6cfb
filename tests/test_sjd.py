"""Speculative Jacobi decoding: the acceptance rule keeps the sampler's distribution, the
cache rolls back rejected drafts, CFG/concept rows/seeds work as in the sequential loop."""

from __future__ import annotations

import math

import pytest
import torch
from test_generation import cfg_recompute, full_logits, make_extra

from yoc_assistant.backbone import Backbone, sjd
from yoc_assistant.backbone.imagegen import sample_image_ids
from yoc_assistant.backbone.sampling import filter_logits


# -- the rule on its own -----------------------------------------------------------------
def test_verify_gives_p_for_any_draft_distribution() -> None:
    """One position: drafts from q, the test and the residual draw together give p."""
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    q = torch.tensor([0.05, 0.05, 0.3, 0.3, 0.3])
    counts = torch.zeros(5)
    for _ in range(20000):
        x = sjd.draw(q, float(torch.rand(1, generator=gen)))
        out, _ = sjd.verify([x], q.unsqueeze(0), torch.stack([p, p]), torch.rand(2, generator=gen), bonus=False)
        counts[out[0]] += 1
    torch.testing.assert_close(counts / counts.sum(), p, atol=0.012, rtol=0)


def test_verify_takes_the_bonus_only_when_every_draft_passes() -> None:
    p = torch.eye(3)[[1, 2, 0]]  # position 0 -> token 1, 1 -> 2, bonus -> 0
    q = torch.eye(3)[[1, 2]]
    u = torch.full((3,), 0.5)
    assert sjd.verify([1, 2], q, p, u, bonus=True) == ([1, 2, 0], 2)
    assert sjd.verify([1, 2], q, p, u, bonus=False) == ([1, 2], 2)
    # draft 0 wrong: the residual of a point mass is p itself; nothing after is looked at
    assert sjd.verify([0, 2], torch.eye(3)[[0, 2]], p, u, bonus=True) == ([1], 0)


# -- the whole decoder against exact probabilities ---------------------------------------
def exact_paths(bb: Backbone, cond: list[int], uncond: list[int] | None, scale: float, temperature: float,
                top_k: int, depth: int) -> dict[tuple[int, ...], float]:
    """Probability of every sequence of the first `depth` image tokens (as image-vocab
    indices) under ordinary sampling, from full no-cache forwards."""
    img = bb.image_vocab.bpe_ids
    paths: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(depth):
        grown: dict[tuple[int, ...], float] = {}
        for path, prob in paths.items():
            tokens = [int(img[t]) for t in path]
            c = full_logits(bb, cond + tokens)[-1][img]
            mixed = c
            if uncond is not None:
                u = full_logits(bb, uncond + tokens)[-1][img]
                mixed = u + scale * (c - u)
            probs = torch.softmax(filter_logits(mixed / temperature, top_k, None), dim=-1)
            for tok in torch.nonzero(probs > 0).flatten().tolist():
                grown[path + (tok,)] = prob * float(probs[tok])
        paths = grown
    return paths


def chi_square_p_value(counts: dict[tuple[int, ...], int], probs: dict[tuple[int, ...], float]) -> float:
    """Pearson's test of observed counts against exact probabilities (cells pooled to
    expected >= 5); the p-value from the Wilson-Hilferty normal approximation."""
    total = sum(counts.values())
    assert set(counts) <= set(probs), "a sequence ordinary sampling can never draw"
    cells = sorted(probs, key=lambda k: probs[k])
    stat, dof, pool_obs, pool_exp = 0.0, -1, 0.0, 0.0
    for key in cells:
        pool_obs += counts.get(key, 0)
        pool_exp += probs[key] * total
        if pool_exp >= 5:
            stat += (pool_obs - pool_exp) ** 2 / pool_exp
            dof += 1
            pool_obs = pool_exp = 0.0
    if pool_exp > 0:
        stat += (pool_obs - pool_exp) ** 2 / pool_exp
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def sample_paths(bb: Backbone, cond: list[int], uncond: list[int] | None, *, decoding: str, scale: float,
                 draws: int, depth: int, seed0: int) -> dict[tuple[int, ...], int]:
    counts: dict[tuple[int, ...], int] = {}
    index = {int(b): i for i, b in enumerate(bb.image_vocab.bpe_ids)}
    for chunk in range(0, draws, 500):
        ids = sample_image_ids(bb, cond, uncond, n=500, extra=None, cfg_scale=scale, temperature=0.7,
                               top_p=1.0, top_k=3, seeds=list(range(seed0 + chunk, seed0 + chunk + 500)),
                               on_progress=None, tokens=depth, decoding=decoding, window=2)
        for row in ids.tolist():
            key = tuple(index[t] for t in row)
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("cfg", [True, False])
def test_sjd_draws_the_sequential_distribution(bb: Backbone, cfg: bool) -> None:
    """First three image tokens of 2,000 pictures against their exact probabilities: SJD
    passes the same test the sequential sampler passes (and a broken rule fails it, below)."""
    cond = bb.prompt_ids(["a red boat"]) + [bb.special.boi]
    uncond = [bb.special.bos, bb.special.boi] if cfg else None
    exact = exact_paths(bb, cond, uncond, 3.0, 0.7, 3, depth=3)
    for decoding in ("sequential", "sjd"):
        counts = sample_paths(bb, cond, uncond, decoding=decoding, scale=3.0, draws=2000, depth=3, seed0=1000)
        assert chi_square_p_value(counts, exact) > 0.001, decoding


def test_the_distribution_check_catches_a_rule_that_accepts_every_draft(
        bb: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    cond = bb.prompt_ids(["a red boat"]) + [bb.special.boi]
    uncond = [bb.special.bos, bb.special.boi]
    exact = exact_paths(bb, cond, uncond, 3.0, 0.7, 3, depth=3)

    def accept_all(drafts, q, p, u, bonus):
        return list(drafts) + ([sjd.draw(p[len(drafts)], float(u[-1]))] if bonus else []), len(drafts)

    monkeypatch.setattr(sjd, "verify", accept_all)
    counts = sample_paths(bb, cond, uncond, decoding="sjd", scale=3.0, draws=1000, depth=3, seed0=1000)
    bad = sum(n for key, n in counts.items() if key not in exact)
    assert bad > 0 or chi_square_p_value(counts, exact) < 0.001


# -- cache, CFG, concept rows, seeds ---------------------------------------------------
@pytest.mark.parametrize("case", ["cond-longer", "uncond-longer", "no-cfg", "concept"])
def test_every_accepted_token_saw_a_clean_cache(bb: Backbone, case: str) -> None:
    """The logits each token was accepted under equal a full no-cache recompute of the
    accepted sequence: rejected drafts' K/V never leak into later passes."""
    boi, bos = bb.special.boi, bb.special.bos
    extra = make_extra(bb) if case == "concept" else None
    cond = bb.prompt_ids(["a small dog on a red boat"]) + [boi]
    uncond: list[int] | None = [bos, boi]
    if case == "uncond-longer":
        cond = [bos, 7, boi]
        uncond = bb.prompt_ids(["the sky is blue and the river is green"]) + [boi]
    elif case == "no-cfg":
        uncond = None
    elif case == "concept":
        cond = [bos, bb.vocab_size, 3, bb.vocab_size + 1, bb.special.sep, boi]
    record: list[torch.Tensor] = []
    stats = sjd.SJDStats()
    ids = sample_image_ids(bb, cond, uncond, n=1, extra=extra, cfg_scale=2.5, temperature=0.7,
                           top_p=1.0, top_k=5, seeds=[4], on_progress=None, record=record,
                           decoding="sjd", window=6, stats=stats)
    total = bb.image_seq_length
    # Drafts were rejected (so stale K/V were in the cache) and several were accepted per pass.
    assert 0 < stats.accepted_drafts < total - 1
    assert stats.passes < total
    want = cfg_recompute(bb, cond, uncond, ids[0].tolist()[:-1], 2.5, extra)
    torch.testing.assert_close(record[0], want, rtol=1e-4, atol=1e-4)


def test_greedy_sjd_equals_greedy_sequential(bb: Backbone) -> None:
    prompt = bb.prompt_ids(["a dog on a boat"]) + [bb.special.boi]
    uncond = [bb.special.bos, bb.special.boi]
    kw = dict(n=2, extra=None, cfg_scale=3.0, temperature=0.0, top_p=1.0, top_k=0, seeds=[1, 2],
              on_progress=None)
    seq = sample_image_ids(bb, prompt, uncond, decoding="sequential", **kw)
    fast = sample_image_ids(bb, prompt, uncond, decoding="sjd", **kw)
    assert torch.equal(seq, fast)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_sjd_pictures_are_the_same_alone_or_batched_and_repeat_per_seed(bb: Backbone, cfg_scale: float) -> None:
    prompt = bb.prompt_ids(["a long prompt about a small dog on a boat"])
    both = bb.generate_images(prompt, n=3, seed=20, cfg_scale=cfg_scale, decode=False, decoding="sjd")
    alone = [bb.generate_images(prompt, n=1, seed=20 + i, cfg_scale=cfg_scale, decode=False,
                                decoding="sjd").ids for i in range(3)]
    assert torch.equal(both.ids, torch.cat(alone))
    assert len({tuple(r) for r in both.ids.tolist()}) == 3
    assert bool(bb.image_vocab.is_image(both.ids).all())


def test_concept_rows_steer_sjd_pictures(bb: Backbone) -> None:
    prompt = [bb.special.bos, bb.vocab_size, bb.vocab_size + 1, bb.special.sep]
    a = bb.generate_images(prompt, extra=make_extra(bb, seed=0), seed=2, decode=False, decoding="sjd")
    b = bb.generate_images(prompt, extra=make_extra(bb, seed=1), seed=2, decode=False, decoding="sjd")
    assert not torch.equal(a.ids, b.ids)


def test_sjd_progress_climbs_to_the_total(bb: Backbone) -> None:
    calls: list[tuple[int, int]] = []
    bb.generate_images(bb.prompt_ids(["a dog"]), seed=3, decode=False, decoding="sjd",
                       on_progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and done[-1] == bb.image_seq_length
    assert len(calls) < bb.image_seq_length  # several tokens per pass


def test_unknown_decoding_is_refused(bb: Backbone) -> None:
    from yoc_assistant.errors import UserInputError

    with pytest.raises(UserInputError, match="decoding"):
        bb.generate_images(bb.prompt_ids(["a dog"]), decode=False, decoding="fast")


@pytest.mark.gpu
def test_compiled_sjd_on_cuda_matches_eager() -> None:
    from conftest import TINY_ANOLE_A

    gpu = Backbone.load(str(TINY_ANOLE_A / "checkpoint"), precision="fp32", device="cuda")
    prompt = gpu.prompt_ids(["a dog on a boat"]) + [gpu.special.boi]
    uncond = [gpu.special.bos, gpu.special.boi]
    kw = dict(n=2, extra=None, cfg_scale=3.0, temperature=1.0, top_p=0.9, top_k=0, seeds=[9, 10],
              on_progress=None, decoding="sjd")
    eager = sample_image_ids(gpu, prompt, uncond, compiled=False, **kw)
    compiled = sample_image_ids(gpu, prompt, uncond, compiled=True, **kw)
    again = sample_image_ids(gpu, prompt, uncond, compiled=True, **kw)
    assert torch.equal(compiled, again)
    assert torch.equal(eager[:, :16], compiled[:, :16])  # float32 kernels may differ in the last bits


def test_padded_passes_of_the_compiled_path_give_the_same_pictures(bb: Backbone) -> None:
    """On CUDA each pass is padded to a multiple of 8 tokens (few compiled shapes); the pads
    come after every real token, so the pictures are those of the unpadded passes."""
    from yoc_assistant.backbone.imagegen import get_engine, sampling_knobs

    prompt = bb.prompt_ids(["a dog on a boat"]) + [bb.special.boi]
    rows = [prompt, prompt, [bb.special.bos, bb.special.boi], [bb.special.bos, bb.special.boi]]
    total = bb.image_seq_length
    engine = get_engine(bb, len(rows), len(prompt) + total + sjd.extra_capacity(6), compiled=False)
    knobs = sampling_knobs(engine.device, n=2, cfg=True, width=len(bb.image_vocab), cfg_scale=3.0,
                           temperature=1.0, top_p=0.9, top_k=0)
    plain, padded = sjd.SJDStats(), sjd.SJDStats()
    a = sjd.sample(engine, rows, total, n=2, extra=None, knobs=knobs, seeds=[3, 4], on_progress=None,
                   window=6, stats=plain)
    b = sjd.sample(engine, rows, total, n=2, extra=None, knobs=knobs, seeds=[3, 4], on_progress=None,
                   window=6, stats=padded, pass_fn=sjd.window_pass)
    assert torch.equal(a, b)
    assert all(w % sjd.WIDTH_BUCKET == 0 and w >= 7 for w in padded.widths)
    assert any(w % sjd.WIDTH_BUCKET for w in plain.widths)  # the padding did something


def test_the_sjd_pass_compiles_as_one_graph_for_a_lone_picture(bb: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    """What CUDA graphs need of the compiled pass (checked on the CPU with a recording
    backend): no graph breaks, one shape for a whole picture, and only the fed ids and the
    start slot move (weights, cache, masks' inputs stay put)."""
    from test_fused import GraphRecorder

    prompt = bb.prompt_ids(["a dog on a boat"]) + [bb.special.boi]
    uncond = [bb.special.bos, bb.special.boi]
    kw = dict(n=1, extra=None, cfg_scale=3.0, temperature=1.0, top_p=0.9, top_k=0, seeds=[5],
              on_progress=None, decoding="sjd", tokens=40, window=6)
    want = sample_image_ids(bb, prompt, uncond, compiled=False, **kw)
    recorder = GraphRecorder()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda fn, **_kw: real_compile(fn, backend=recorder, fullgraph=True, dynamic=False))
    torch._dynamo.reset()
    try:
        got = sample_image_ids(bb, prompt, uncond, compiled=True, **kw)
    finally:
        torch._dynamo.reset()
        bb.caches.image_engine = None
    assert torch.equal(got, want)
    assert recorder.graphs == 1
    widest = 2 * sjd.WIDTH_BUCKET * 2  # the fed ids: 2 rows x the padded width
    assert all(numel <= widest for _name, numel in recorder.moving), recorder.moving
