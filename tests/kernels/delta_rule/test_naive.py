"""The delta-rule references: recurrent vs fla's references, chunk vs recurrent (values and gradients), streaming."""

import pytest
import torch
import torch.nn.functional as F
from fla.ops.delta_rule.naive import delta_rule_recurrence as fla_delta_rule
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule as fla_ref

from kernels.delta_rule import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

B, H, K, V = 2, 2, 8, 6
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def make_inputs(t: int, gated: bool, with_state: bool, dtype=torch.float64):
    q = torch.randn(B, t, H, K, dtype=dtype)
    k = F.normalize(torch.randn(B, t, H, K, dtype=dtype), dim=-1)
    v = torch.randn(B, t, H, V, dtype=dtype)
    beta = torch.randn(B, t, H, dtype=dtype).sigmoid()
    g = -F.softplus(torch.randn(B, t, H, dtype=dtype)) if gated else None
    h0 = torch.randn(B, H, K, V, dtype=dtype) if with_state else None
    return q, k, v, beta, g, h0


@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_recurrent_matches_fla(gated, with_state):
    q, k, v, beta, g, h0 = make_inputs(37, gated, with_state, dtype=torch.float32)
    o, ht = naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    g_ref = g if gated else torch.zeros_like(beta)
    o_ref, ht_ref = fla_ref(q, k, v, beta, g_ref, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ht, ht_ref, rtol=1e-5, atol=1e-5)
    if not gated:
        # fla's DeltaNet reference is a separate code path, in [B, H, T, D] layout.
        o_dn, ht_dn = fla_delta_rule(*(x.transpose(1, 2) for x in (q, k, v, beta)), initial_state=h0)
        torch.testing.assert_close(o, o_dn.transpose(1, 2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ht, ht_dn, rtol=1e-5, atol=1e-5)


def _values_and_grads(fn, inputs, do, dht, **kwargs):
    q, k, v, beta, g, h0 = inputs
    o, ht = fn(q, k, v, beta, g, initial_state=h0, output_final_state=True, **kwargs)
    leaves = [x for x in inputs if x is not None]
    grads = torch.autograd.grad((o * do).sum() + (ht * dht).sum(), leaves)
    return o, ht, grads


@pytest.mark.parametrize("with_state", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize("t", [1, 15, 63, 64, 65, 130])
def test_chunk_matches_recurrent(t, gated, with_state):
    inputs = [x.requires_grad_() if x is not None else None for x in make_inputs(t, gated, with_state)]
    do = torch.randn(B, t, H, V, dtype=torch.float64)
    dht = torch.randn(B, H, K, V, dtype=torch.float64)
    o_ref, ht_ref, grads_ref = _values_and_grads(naive_recurrent_gated_delta_rule, inputs, do, dht)
    o, ht, grads = _values_and_grads(naive_chunk_gated_delta_rule, inputs, do, dht, chunk_size=16)
    torch.testing.assert_close(o, o_ref, **EXACT)
    torch.testing.assert_close(ht, ht_ref, **EXACT)
    names = [n for n, x in zip(("q", "k", "v", "beta", "g", "h0"), inputs, strict=True) if x is not None]
    for name, grad, grad_ref in zip(names, grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, **EXACT, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_chunk_sizes(chunk_size):
    q, k, v, beta, g, h0 = make_inputs(40, gated=True, with_state=True)
    o_ref, ht_ref = naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    o, ht = naive_chunk_gated_delta_rule(
        q, k, v, beta, g, initial_state=h0, output_final_state=True, chunk_size=chunk_size
    )
    torch.testing.assert_close(o, o_ref, **EXACT)
    torch.testing.assert_close(ht, ht_ref, **EXACT)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize("split", [1, 16, 23, 49])
def test_prefix_then_suffix_equals_whole(split, gated):
    q, k, v, beta, g, h0 = make_inputs(50, gated, with_state=True)
    kw = {"output_final_state": True, "chunk_size": 16}
    o, ht = naive_chunk_gated_delta_rule(q, k, v, beta, g, initial_state=h0, **kw)

    def part(x, sl):
        return None if x is None else x[:, sl]

    first, second = slice(None, split), slice(split, None)
    o1, h1 = naive_chunk_gated_delta_rule(*(part(x, first) for x in (q, k, v, beta, g)), initial_state=h0, **kw)
    o2, h2 = naive_chunk_gated_delta_rule(*(part(x, second) for x in (q, k, v, beta, g)), initial_state=h1, **kw)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o, **EXACT)
    torch.testing.assert_close(h2, ht, **EXACT)


@pytest.mark.parametrize("fn", [naive_recurrent_gated_delta_rule, naive_chunk_gated_delta_rule])
def test_dtypes_scale_and_optional_state(fn):
    q, k, v, beta, g, h0 = make_inputs(20, gated=True, with_state=True, dtype=torch.float32)
    half = [x.bfloat16() for x in (q, k, v, beta, g)]
    o, ht = fn(*half, initial_state=h0, output_final_state=True)
    assert o.dtype == torch.bfloat16 and o.shape == (B, 20, H, V)
    assert ht.dtype == torch.float32 and ht.shape == (B, H, K, V)
    o_ref, ht_ref = fn(*(x.float() for x in half), initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref.bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(ht, ht_ref, rtol=0, atol=0)

    o_default, none = fn(q, k, v, beta, g)
    assert none is None
    o_explicit, _ = fn(q, k, v, beta, g, scale=K**-0.5)
    torch.testing.assert_close(o_default, o_explicit, rtol=0, atol=0)
    o_double, _ = fn(q, k, v, beta, g, scale=2 * K**-0.5)
    torch.testing.assert_close(o_double, 2 * o_default, rtol=1e-6, atol=1e-6)
