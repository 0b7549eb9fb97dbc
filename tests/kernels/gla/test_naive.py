"""The torch gated-linear-attention twins: chunk vs the per-token recurrence, vs fla's reference, and Mamba's
selective scan as gated linear attention with ``V = 1``."""

import pytest
import torch
import torch.nn.functional as F
from fla.ops.gla.naive import naive_recurrent_gla as fla_recurrent_gla

from kernels.gla import naive_chunk_gla, naive_recurrent_gla, naive_selective_scan


def _inputs(B, T, H, K, V, per_key, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    shape = (B, T, H, K) if per_key else (B, T, H)
    log_decay = F.logsigmoid(torch.randn(*shape, generator=g, dtype=dtype) + 2)
    h0 = torch.randn(B, H, K, V, generator=g, dtype=dtype)
    return q, k, v, log_decay, h0


@pytest.mark.parametrize("per_key", [True, False])
def test_recurrent_matches_fla_reference(per_key):
    q, k, v, g, h0 = _inputs(2, 23, 3, 8, 5, per_key, dtype=torch.float32)
    o, ht = naive_recurrent_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    g_full = g if per_key else g[..., None].expand_as(q)
    o_ref, ht_ref = fla_recurrent_gla(q, k, v, g_full, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ht, ht_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("per_key", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_chunk_matches_recurrent_with_gradients(T, per_key, with_state):
    q, k, v, g, h0 = _inputs(2, T, 2, 4, 3, per_key)
    inputs = [q, k, v, g] + ([h0] if with_state else [])
    for t in inputs:
        t.requires_grad_(True)
    do = torch.randn(2, T, 2, 3, dtype=torch.float64)
    dht = torch.randn(2, 2, 4, 3, dtype=torch.float64)

    def run(fn, **kw):
        o, ht = fn(q, k, v, g, initial_state=h0 if with_state else None, output_final_state=True, **kw)
        grads = torch.autograd.grad((o * do).sum() + (ht * dht).sum(), inputs)
        return (o, ht, *grads)

    for ours, ref in zip(run(naive_chunk_gla, chunk_size=8), run(naive_recurrent_gla), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_chunk_prefix_then_suffix_equals_whole():
    q, k, v, g, h0 = _inputs(1, 37, 2, 4, 3, True)
    whole, ht = naive_chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    a, state = naive_chunk_gla(q[:, :13], k[:, :13], v[:, :13], g[:, :13], initial_state=h0, output_final_state=True)
    b, ht2 = naive_chunk_gla(q[:, 13:], k[:, 13:], v[:, 13:], g[:, 13:], initial_state=state, output_final_state=True)
    torch.testing.assert_close(torch.cat([a, b], 1), whole)
    torch.testing.assert_close(ht2, ht)


def test_selective_scan_is_gla_with_one_value_per_head():
    gen = torch.Generator().manual_seed(1)
    b, T, D, N = 2, 11, 6, 4
    x = torch.randn(b, T, D, generator=gen, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, T, D, generator=gen, dtype=torch.float64))
    A = -torch.rand(D, N, generator=gen, dtype=torch.float64) * 4
    B, C = (torch.randn(b, T, N, generator=gen, dtype=torch.float64) for _ in range(2))
    h0 = torch.randn(b, D, N, generator=gen, dtype=torch.float64)
    y, ht = naive_selective_scan(x, dt, A, B, C, h0, output_final_state=True)
    q = C[:, :, None].expand(b, T, D, N)
    k = (dt[..., None] * B[:, :, None]).expand(b, T, D, N)
    o, st = naive_recurrent_gla(
        q, k, x[..., None], dt[..., None] * A, scale=1.0, initial_state=h0[..., None], output_final_state=True
    )
    torch.testing.assert_close(y, o[..., 0])
    torch.testing.assert_close(ht, st[..., 0])
