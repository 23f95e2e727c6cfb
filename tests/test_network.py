"""Network calls: embeddings and head with extra rows, the KV cache, padded batches."""

from __future__ import annotations

import pytest
import torch

from yoc_assistant.backbone import Backbone, ExtraTokens
from yoc_assistant.errors import UserInputError


def make_extra(bb: Backbone, rows: int = 3, seed: int = 0, grad: bool = False) -> ExtraTokens:
    gen = torch.Generator().manual_seed(seed)
    inp = torch.randn(rows, bb.hidden_size, generator=gen) * 0.1
    out = torch.randn(rows, bb.hidden_size, generator=gen) * 0.1
    return ExtraTokens(inp.requires_grad_(grad), out.requires_grad_(grad))


def test_embed_uses_table_below_vocab_and_extra_rows_above(bb: Backbone) -> None:
    extra = make_extra(bb)
    v = bb.vocab_size
    ids = torch.tensor([[3, v, 7, v + 2]])
    emb = bb.embed(ids, extra)
    table = bb.model.model.embed_tokens.weight
    assert emb.shape == (1, 4, bb.hidden_size)
    assert emb.dtype == table.dtype
    assert torch.equal(emb[0, 0], table[3])
    assert torch.equal(emb[0, 2], table[7])
    assert torch.equal(emb[0, 1], extra.input_rows[0])
    assert torch.equal(emb[0, 3], extra.input_rows[2])


def test_embed_is_differentiable_in_the_extra_rows_only_where_used(bb: Backbone) -> None:
    extra = make_extra(bb, grad=True)
    v = bb.vocab_size
    emb = bb.embed(torch.tensor([[1, v + 1, 2]]), extra)
    emb.sum().backward()
    grad = extra.input_rows.grad
    assert grad is not None
    assert torch.all(grad[1] == 1.0)
    assert torch.all(grad[0] == 0) and torch.all(grad[2] == 0)
    assert all(p.grad is None for p in bb.model.parameters())


def test_logits_append_the_extra_rows(bb: Backbone) -> None:
    extra = make_extra(bb, rows=4, grad=True)
    hidden = torch.randn(2, 5, bb.hidden_size)
    out = bb.logits(hidden, extra)
    assert out.shape == (2, 5, bb.vocab_size + 4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[..., : bb.vocab_size], bb.model.lm_head(hidden))
    torch.testing.assert_close(out[..., bb.vocab_size:], hidden @ extra.output_rows.T)
    out[..., bb.vocab_size + 2].sum().backward()
    assert extra.output_rows.grad is not None
    assert extra.output_rows.grad[2].abs().sum() > 0
    assert extra.output_rows.grad[[0, 1, 3]].abs().sum() == 0
    assert bb.logits(hidden).shape == (2, 5, bb.vocab_size)


def test_forward_ids_with_extra_equals_forward_embeds(bb: Backbone) -> None:
    extra = make_extra(bb)
    v = bb.vocab_size
    ids = torch.tensor([[bb.special.bos, 5, v, v + 1, 9]])
    with torch.no_grad():
        a, _ = bb.forward(ids, extra=extra)
        b, _ = bb.forward(embeds=bb.embed(ids, extra), extra=extra)
        c, _ = bb.forward(ids[:, :2], extra=extra)
    assert a.shape == (1, 5, v + len(extra))
    torch.testing.assert_close(a, b)
    # causal: the first positions do not see the extra rows that come later
    torch.testing.assert_close(a[:, :2], c, rtol=1e-4, atol=1e-5)


def test_extra_rows_change_the_output(bb: Backbone) -> None:
    v = bb.vocab_size
    ids = torch.tensor([[bb.special.bos, 5, v, 9]])
    with torch.no_grad():
        a, _ = bb.forward(ids, extra=make_extra(bb, seed=0))
        b, _ = bb.forward(ids, extra=make_extra(bb, seed=1))
    assert not torch.allclose(a[0, -1, :v], b[0, -1, :v])


@pytest.mark.parametrize("bad", [[-1], [10_000]])
def test_ids_out_of_range_are_refused(bb: Backbone, bad: list[int]) -> None:
    with pytest.raises(UserInputError, match="outside"):
        bb.embed(torch.tensor([[1, 2] + bad]))
    with pytest.raises(UserInputError, match="outside"):
        bb.forward(torch.tensor([[1] + bad]))


def test_extra_id_without_extra_rows_is_refused(bb: Backbone) -> None:
    with pytest.raises(UserInputError, match="0 extra row"):
        bb.embed(torch.tensor([[1, bb.vocab_size]]))
    extra = make_extra(bb, rows=2)
    with pytest.raises(UserInputError):
        bb.embed(torch.tensor([[1, bb.vocab_size + 2]]), extra)


def test_kv_cache_decode_equals_full_recompute(bb: Backbone) -> None:
    extra = make_extra(bb)
    v = bb.vocab_size
    seq = torch.tensor([[bb.special.bos, 4, v + 2, 17, 30, bb.special.sep, bb.special.boi, 70, 90, 120]])
    with torch.no_grad():
        full, _ = bb.forward(seq, extra=extra)
        logits, cache = bb.forward(seq[:, :6], extra=extra, use_cache=True)
        steps = [logits[:, -1]]
        for t in range(6, seq.shape[1]):
            logits, cache = bb.forward(seq[:, t:t + 1], extra=extra, cache=cache, use_cache=True)
            steps.append(logits[:, -1])
    got = torch.stack(steps[:-1], dim=1)
    torch.testing.assert_close(got, full[:, 5:-1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(steps[-1], full[:, -1], rtol=1e-4, atol=1e-4)


def test_left_padded_batch_with_mask_and_positions_equals_single_rows(bb: Backbone) -> None:
    pad = bb.special.pad
    rows = [[bb.special.bos, 4, 5, 6, 7, 8], [bb.special.bos, 9, 10]]
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch, _ = bb.forward(ids, attention_mask=mask, position_ids=positions)
        for i, r in enumerate(rows):
            alone, _ = bb.forward(torch.tensor([r]))
            torch.testing.assert_close(batch[i, width - len(r):], alone[0], rtol=1e-4, atol=1e-4)


def test_common_prefix_counts_what_every_row_shares() -> None:
    from yoc_assistant.backbone.network import common_prefix

    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 7, 8, 1, 2], [5, 6, 7, 8, 9, 3]])
    assert common_prefix(ids) == 4
    assert common_prefix(ids[:1]) == 0  # one row: nothing to share
    # Rows no longer than the shared part keep one position of their own.
    same = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 0]])
    assert common_prefix(same, torch.tensor([4, 5])) == 3
    # Too little to save: one position of 4 rows of 10 (3 saved, under a tenth of 40).
    few = torch.tensor([[5, k, 2, 3, 4, 5, 6, 7, 8, 9] for k in range(4)])
    assert common_prefix(few) == 0
    assert common_prefix(few[:, :5]) == 1  # 3 of 20 saved: worth it


def test_only_right_padding_counts_as_rows_that_may_share_a_start() -> None:
    from yoc_assistant.backbone.network import right_padded

    assert right_padded(None)
    assert right_padded(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    assert not right_padded(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))  # left padding
    assert not right_padded(torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]))


def _shared_rows(bb: Backbone, extra: ExtraTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded rows that start with the same 7 ids (concept rows among them)."""
    v, pad = bb.vocab_size, int(getattr(bb.special, "pad", 0))
    head = [int(bb.special.bos), v, v + 1, v + 2, 11, 12, 13]
    rows = [head + [20, 21, 22, 23], head + [30, 31], head + [40, 41, 42]]
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows])


def test_a_shared_prefix_runs_once_and_gives_the_full_rows_values_and_gradients(bb: Backbone) -> None:
    from yoc_assistant.backbone.network import common_prefix

    extra = make_extra(bb, grad=True)
    ids, lengths = _shared_rows(bb, extra)
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    prefix = common_prefix(ids, lengths)
    assert prefix == 7

    def run(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        extra.input_rows.grad = None
        hidden = bb.hidden_states(bb.embed(ids, extra), attention_mask=mask,
                                  share_prefix_of=ids if shared else None)
        (hidden * mask[..., None]).pow(2).sum().backward()  # pads carry no loss, as in training
        return hidden.detach()[mask.bool()], extra.input_rows.grad.clone()

    plain, plain_grad = run(False)
    calls: list[int] = []
    hook = bb.model.model.layers[0].register_forward_hook(lambda m, a, o: calls.append(a[0].shape[:2]))
    try:
        shared, shared_grad = run(True)
    finally:
        hook.remove()
    assert [tuple(c) for c in calls] == [(1, 7), (3, ids.shape[1] - 7)]  # the prefix ran once
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    # float rounding only: the sum over rows happens in another order
    assert float((shared_grad - plain_grad).norm() / plain_grad.norm()) < 1e-4
    assert plain_grad.abs().sum() > 0


def test_a_shared_prefix_falls_back_to_the_full_rows_under_checkpointing(bb: Backbone) -> None:
    from yoc_assistant.personalize.trainer import set_checkpointing

    extra = make_extra(bb)
    ids, _ = _shared_rows(bb, extra)
    with torch.no_grad():
        plain = bb.hidden_states(bb.embed(ids, extra))
    set_checkpointing(bb.model.model, True)
    bb.model.train()
    calls: list[int] = []
    hook = bb.model.model.layers[0].register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            shared = bb.hidden_states(bb.embed(ids, extra), share_prefix_of=ids)
    finally:
        hook.remove()
        set_checkpointing(bb.model.model, False)
        bb.model.eval()
    assert calls == [3]  # one pass over the full rows: checkpointed layers drop a cache
    torch.testing.assert_close(shared, plain)


@pytest.mark.gpu
def test_a_shared_prefix_gives_the_full_rows_values_on_cuda() -> None:
    from conftest import TINY_ANOLE_A

    for precision in ("fp32", "bf16"):
        gpu = Backbone.load(str(TINY_ANOLE_A / "checkpoint"), precision=precision, device="cuda")
        cpu_rows = make_extra(gpu)
        extra = ExtraTokens(cpu_rows.input_rows.to("cuda", gpu.dtype), cpu_rows.output_rows.to("cuda", gpu.dtype))
        ids, lengths = _shared_rows(gpu, extra)
        ids = ids.to("cuda")
        mask = (torch.arange(ids.shape[1], device="cuda") < lengths.to("cuda")[:, None])
        with torch.no_grad():
            plain = gpu.hidden_states(gpu.embed(ids, extra)).float()[mask]
            shared = gpu.hidden_states(gpu.embed(ids, extra), share_prefix_of=ids).float()[mask]
        tol = 1e-4 if precision == "fp32" else 3e-2
        torch.testing.assert_close(shared, plain, rtol=tol, atol=tol)
