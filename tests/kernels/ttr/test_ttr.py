"""The test-time-regression ops: each vectorised op vs its per-token specification (values and gradients, fp64),
RLS recurrent vs parallel, state carry, and the paper's identities (GD step = linear attention, ridge-free RLS =
least squares, QK-normalised softmax = Gaussian Nadaraya-Watson, Longhorn / NLMS / Leaky LMS as delta rules)."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from kernels.delta_rule import naive_recurrent_gated_delta_rule
from kernels.ttr import (
    NORMS,
    discounted_cumsum,
    gated_deltanet_to_leaky_lms,
    leaky_lms,
    leaky_lms_to_gated_deltanet,
    linear_attention,
    longhorn,
    longhorn_step_size,
    naive_longhorn,
    naive_nadaraya_watson,
    naive_nlms,
    naive_recurrent_linear_attention,
    naive_rls,
    naive_softmax_attention,
    nlms,
    nlms_step_size,
    rls_chunk,
    rls_parallel,
    rls_recurrent,
    softmax_attention,
)
from kernels.utils import assert_close

B, H, K, V = 2, 2, 6, 4
F64 = torch.float64
EXACT = 1e-10  # relative RMS between two fp64 computations of the same function


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def qkv(t, seed=0):
    return randn(B, t, H, K, seed=seed), randn(B, t, H, K, seed=seed + 1), randn(B, t, H, V, seed=seed + 2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation (milliseconds per small batched solve on a
    busy 2-core machine), so this module runs single-threaded and restores the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same(name, ref, out, ratio=EXACT):
    """Relative RMS, or equal to 1e-13 where the reference is itself rounding noise (e.g. the gradients of a
    normalised output at T=1 without a state: the output is v / ||v|| up to sign and eps, whatever q and k are)."""
    if (ref - out).abs().max() > 1e-13:
        assert_close(name, ref, out, ratio)


def spd_inverse(seed):
    """A well-conditioned RLS ``P_0``: the inverse of ``W W^T / K + 0.5 I``."""
    w = randn(B, H, K, K, seed=seed)
    return torch.linalg.inv(w @ w.transpose(-1, -2) / K + 0.5 * torch.eye(K, dtype=F64))


# name -> (vectorised op, its specification, extra arguments for T tokens, initial state)
def _rls_args(forget):
    return lambda t: {"ridge": 0.1, "forget": forget}


def _rls_state():
    return (randn(B, H, K, V, seed=7), spd_inverse(8))


def _mat_state():
    return randn(B, H, K, V, seed=7)


OPS = {
    **{
        f"linear_attention-{norm}": (linear_attention, naive_recurrent_linear_attention, lambda t, n=norm: {"norm": n})
        for norm in NORMS
    },
    **{
        f"{fn.__name__}-forget{forget}": (fn, naive_rls, _rls_args(forget))
        for fn in (rls_parallel, rls_recurrent, rls_chunk)
        for forget in (1.0, 0.9)
    },
    **{
        f"rls_chunk16-forget{forget}": (partial(rls_chunk, chunk_size=16), naive_rls, _rls_args(forget))
        for forget in (1.0, 0.9)
    },
    "nlms": (nlms, naive_nlms, lambda t: {"beta": 0.2 + 1.3 * randn(B, t, H, seed=5).sigmoid(), "eps": 1e-3}),
    "longhorn": (longhorn, naive_longhorn, lambda t: {"beta": F.softplus(randn(B, t, H, seed=5))}),
    "longhorn-per-channel": (longhorn, naive_longhorn, lambda t: {"beta": F.softplus(randn(B, t, H, V, seed=5))}),
}


def _state_for(name):
    return _rls_state() if name.startswith("rls") else _mat_state()


def _flat(state):
    return [] if state is None else list(state) if isinstance(state, tuple) else [state]


def run_with_grads(fn, inputs, kwargs, state):
    """Outputs, final state and the gradients of a random projection w.r.t. every tensor input."""
    y, final = fn(*inputs, **kwargs, initial_state=state, output_final_state=True)
    leaves = [*inputs, *(x for x in kwargs.values() if isinstance(x, torch.Tensor)), *_flat(state)]
    loss = (y * randn(*y.shape, seed=11)).sum()
    loss = loss + sum((s * randn(*s.shape, seed=12 + i)).sum() for i, s in enumerate(_flat(final)))
    grads = list(torch.autograd.grad(loss, leaves))
    if isinstance(state, tuple):
        # RLS's P_0 is symmetric: the ops agree on symmetric P_0 only, so only the symmetric part of dP_0 is defined
        grads[-1] = (grads[-1] + grads[-1].mT) / 2
    return [y, *_flat(final), *grads]


@pytest.mark.parametrize("with_state", [False, True], ids=["s0=0", "s0"])
@pytest.mark.parametrize("t", [1, 15, 63, 65])
@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_its_specification(name, t, with_state):
    fn, spec, make_kwargs = OPS[name]
    inputs = [x.requires_grad_() for x in qkv(t)]
    kwargs = {n: x.requires_grad_() if isinstance(x, torch.Tensor) else x for n, x in make_kwargs(t).items()}
    state = tuple(x.requires_grad_() for x in _flat(_state_for(name))) if with_state else None
    if state is not None and len(state) == 1:
        state = state[0]
    out = run_with_grads(fn, inputs, kwargs, state)
    ref = run_with_grads(spec, inputs, kwargs, state)
    for i, (a, b) in enumerate(zip(ref, out, strict=True)):
        same(f"{name} tensor {i}", a, b)


@pytest.mark.parametrize("form", ["parallel", "chunk"])
@pytest.mark.parametrize("with_state", [False, True], ids=["s0=0", "s0"])
@pytest.mark.parametrize("forget", [1.0, 0.9])
@pytest.mark.parametrize("t", [1, 15, 63, 65])
def test_rls_recurrent_equals_parallel(t, forget, with_state, form):
    """(a) Sherman-Morrison == (b) batched solves == chunkwise Woodbury, at the default ridge 1e-3, values and
    gradients."""
    inputs = [x.requires_grad_() for x in qkv(t, seed=3)]
    state = tuple(x.requires_grad_() for x in _rls_state()) if with_state else None
    kwargs = {"ridge": 1e-3, "forget": forget}
    ref = run_with_grads(rls_recurrent, inputs, kwargs, state)
    fn = rls_parallel if form == "parallel" else partial(rls_chunk, chunk_size=16)
    out = run_with_grads(fn, inputs, kwargs, state)
    for i, (a, b) in enumerate(zip(ref, out, strict=True)):
        same(f"rls tensor {i}", a, b, 1e-8)


def _cat_states(name, fn, kwargs, t, split, suffix_fn=None):
    q, k, v = qkv(t, seed=4)
    state = _state_for(name)

    def part(sl):
        return {n: x[:, sl] if isinstance(x, torch.Tensor) else x for n, x in kwargs.items()}

    whole, final = fn(q, k, v, **kwargs, initial_state=state, output_final_state=True)
    a, b = slice(None, split), slice(split, None)
    y1, s1 = fn(q[:, a], k[:, a], v[:, a], **part(a), initial_state=state, output_final_state=True)
    y2, s2 = (suffix_fn or fn)(q[:, b], k[:, b], v[:, b], **part(b), initial_state=s1, output_final_state=True)
    assert_close(f"{name} outputs", whole, torch.cat([y1, y2], 1), EXACT)
    for x, y in zip(_flat(final), _flat(s2), strict=True):
        assert_close(f"{name} state", x, y, EXACT)


@pytest.mark.parametrize("split", [1, 30, 64])
@pytest.mark.parametrize("name", [*OPS, "leaky_lms"])
def test_prefix_then_suffix_equals_whole(name, split):
    t = 65
    if name == "leaky_lms":
        fn = leaky_lms
        kwargs = {"beta": randn(B, t, H, seed=5).sigmoid(), "weight_decay": randn(B, t, H, seed=6).sigmoid()}
    else:
        fn, _, make_kwargs = OPS[name]
        kwargs = make_kwargs(t)
    _cat_states(name, fn, kwargs, t, split)


@pytest.mark.parametrize("forget", [1.0, 0.9])
def test_rls_prefill_in_parallel_then_decode_recurrently(forget):
    _cat_states("rls", rls_parallel, {"ridge": 0.1, "forget": forget}, 40, 33, suffix_fn=rls_recurrent)
    _cat_states("rls", rls_chunk, {"ridge": 0.1, "forget": forget}, 40, 33, suffix_fn=rls_recurrent)


def _tiny(t=4, b=1, h=1, k=3, v=2, seed=20):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, h, d, generator=g, dtype=F64, requires_grad=True) for d in (k, k, v)]


GRADCHECK = {
    "linear_attention-unit": lambda q, k, v, s: linear_attention(q, k, v, "unit", initial_state=s[0])[0],
    "linear_attention-layer": lambda q, k, v, s: linear_attention(q, k, v, "layer", initial_state=s[0])[0],
    "rls_recurrent": lambda q, k, v, s: rls_recurrent(q, k, v, 0.3, 0.8, initial_state=(s[0], s[1]))[0],
    "rls_parallel": lambda q, k, v, s: rls_parallel(q, k, v, 0.3, 0.8, initial_state=(s[0], s[1]))[0],
    "rls_chunk": lambda q, k, v, s: rls_chunk(q, k, v, 0.3, 0.8, initial_state=(s[0], s[1]), chunk_size=3)[0],
    "softmax_attention": lambda q, k, v, s: softmax_attention(q, k, v, qk_norm=True, bandwidth=0.8),
    "nlms": lambda q, k, v, s: nlms(q, k, v, s[2], 1e-2, initial_state=s[0])[0],
    "longhorn": lambda q, k, v, s: longhorn(q, k, v, s[2], initial_state=s[0])[0],
    "leaky_lms": lambda q, k, v, s: leaky_lms(q, k, v, s[2], s[2], initial_state=s[0])[0],
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    """Autograd through every op against finite differences, initial states and step sizes included."""
    q, k, v = _tiny()
    g = torch.Generator().manual_seed(21)
    s0 = torch.randn(1, 1, 3, 2, generator=g, dtype=F64)
    w = torch.randn(1, 1, 3, 3, generator=g, dtype=F64)
    p0 = torch.linalg.inv(w @ w.mT + torch.eye(3, dtype=F64))
    step = 0.2 + 0.6 * torch.rand(1, 4, 1, generator=g, dtype=F64)
    states = [x.requires_grad_() for x in (s0, p0, step)]
    fn = GRADCHECK[name]
    assert torch.autograd.gradcheck(lambda *x: fn(*x[:3], x[3:]), (q, k, v, *states))


# ---- linear attention (Vignette 1) ----


def test_linear_attention_is_one_gradient_step_from_zero():
    """One batch-GD step with step 1 from M = 0 on eq. "ols"'s loss gives M_t = V_t^T K_t."""
    q, k, v = qkv(9, seed=30)
    y, _ = linear_attention(q, k, v, norm="none")
    t = 6
    M = torch.zeros(B, H, V, K, dtype=F64, requires_grad=True)
    pred = torch.einsum("bhvk,bshk->bshv", M, k[:, : t + 1])
    (grad,) = torch.autograd.grad(0.5 * (v[:, : t + 1] - pred).pow(2).sum(), M)
    assert_close("GD step", torch.einsum("bhvk,bhk->bhv", -grad, q[:, t]), y[:, t], EXACT)


@pytest.mark.parametrize("norm", NORMS)
def test_output_norm_forms(norm):
    q, k, v = qkv(15, seed=31)
    y, _ = linear_attention(q, k, v, norm=norm, eps=0.0)
    raw, _ = linear_attention(q, k, v, norm="none")
    one = torch.ones_like(y[..., 0])
    if norm == "none":
        assert torch.equal(y, raw)
    elif norm == "unit":
        assert_close("unit", one, y.norm(dim=-1), EXACT)
        assert_close("direction", raw / raw.norm(dim=-1, keepdim=True), y, EXACT)
    elif norm == "rms":
        assert_close("rms", one, y.pow(2).mean(-1), EXACT)
        assert_close("direction", raw / raw.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True), EXACT)
    else:
        assert y.mean(-1).abs().max() < 1e-12
        assert_close("var", one, y.var(-1, unbiased=False), EXACT)
    with pytest.raises(ValueError):
        linear_attention(q, k, v, norm="group")


# ---- recursive least squares (Vignettes 1 and 2) ----


def test_rls_without_ridge_is_ordinary_least_squares():
    """Past ``t = K`` a vanishing ridge gives eq. "ols", ``M_t = V_t^T K_t (K_t^T K_t)^{-1}`` (least squares)."""
    q, k, v = qkv(20, seed=32)
    y, _ = rls_parallel(q, k, v, ridge=1e-10)
    for t in (K, 12, 19):
        X, Y = k[:, : t + 1].transpose(1, 2), v[:, : t + 1].transpose(1, 2)  # [B, H, t+1, K / V]
        S = torch.linalg.lstsq(X, Y).solution
        assert_close(f"ols t={t}", torch.einsum("bhk,bhkv->bhv", q[:, t], S), y[:, t], 1e-7)


def test_rls_ridge_decays_with_the_forget_factor():
    """With forgetting the regulariser after t tokens is ``gamma^t * ridge * I`` (the exact-recursion choice)."""
    q, k, v = qkv(10, seed=33)
    gamma, ridge, t = 0.7, 0.5, 10
    y, (S, P) = rls_recurrent(q, k, v, ridge=ridge, forget=gamma, output_final_state=True)
    w = gamma ** torch.arange(t - 1, -1, -1, dtype=F64)
    A = torch.einsum("s,bshi,bshj->bhij", w, k, k) + gamma**t * ridge * torch.eye(K, dtype=F64)
    assert_close("P", torch.linalg.inv(A), P, EXACT)
    assert_close("S", torch.linalg.solve(A, torch.einsum("s,bshi,bshv->bhiv", w, k, v)), S, EXACT)
    assert_close("y", torch.einsum("bhk,bhkv->bhv", q[:, -1], S), y[:, -1], EXACT)


@pytest.mark.parametrize("with_x0", [False, True])
def test_discounted_cumsum_across_chunks(with_x0):
    x, x0 = randn(2, 11, 3, seed=34), randn(2, 3, seed=35) if with_x0 else None
    out = discounted_cumsum(x, 0.8, x0, chunk_size=4)
    ref, acc = [], torch.zeros(2, 3, dtype=F64) if x0 is None else x0
    for i in range(11):
        acc = 0.8 * acc + x[:, i]
        ref.append(acc)
    assert_close("cumsum", torch.stack(ref, 1), out, EXACT)


def test_rls_arguments_are_checked():
    q, k, v = qkv(3)
    for kwargs in ({"forget": 0.0}, {"forget": 1.5}, {"ridge": 0.0}):
        for fn in (rls_recurrent, rls_parallel, naive_rls):
            with pytest.raises(ValueError):
                fn(q, k, v, **kwargs)


# ---- softmax attention as Nadaraya-Watson (Vignette 4) ----


@pytest.mark.parametrize("h", [0.4, 1.3])
def test_qk_normalised_softmax_is_gaussian_nadaraya_watson(h):
    """exp(-||q - k||^2 / (2 h^2)) weights == softmax of unit-norm q.k with scale 1/h^2 (bandwidth B = 2 h^2)."""
    q, k, v = qkv(15, seed=36)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    nw = naive_nadaraya_watson(qn, kn, v, bandwidth=2 * h**2)
    assert_close("scale", nw, softmax_attention(q, k, v, qk_norm=True, scale=1 / h**2), EXACT)
    assert_close("bandwidth", nw, softmax_attention(q, k, v, qk_norm=True, bandwidth=2 * h**2), EXACT)
    # only the keys' norms matter: the query's norm is a common factor over keys
    assert_close("raw q", naive_nadaraya_watson(q, kn, v, 2 * h**2), softmax_attention(q, kn, v, scale=1 / h**2), EXACT)
    # raw keys of unequal norm are not a distance kernel: the identity must fail there
    assert (naive_nadaraya_watson(q, k, v, 2 * h**2) - softmax_attention(q, k, v, scale=1 / h**2)).abs().max() > 1e-3


def test_softmax_default_is_the_papers_bandwidth():
    """B = 2 sqrt(K) is the standard scale 1/sqrt(K)."""
    q, k, v = qkv(15, seed=37)
    y = softmax_attention(q, k, v, qk_norm=True)
    assert_close(
        "B", naive_nadaraya_watson(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, 2 * math.sqrt(K)), y, EXACT
    )
    assert_close("scale", softmax_attention(q, k, v, qk_norm=True, scale=K**-0.5), y, EXACT)
    with pytest.raises(ValueError):
        softmax_attention(q, k, v, scale=1.0, bandwidth=2.0)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("t", [1, 15, 63, 65])
def test_softmax_matches_its_per_query_loop(t, qk_norm):
    inputs = [x.requires_grad_() for x in qkv(t, seed=38)]
    outs = []
    for fn in (naive_softmax_attention, softmax_attention):
        y = fn(*inputs, scale=0.9, qk_norm=qk_norm)
        outs.append([y, *torch.autograd.grad((y * randn(*y.shape, seed=39)).sum(), inputs)])
    for i, (a, b) in enumerate(zip(*outs, strict=True)):
        assert_close(f"softmax tensor {i}", a, b, EXACT)


# ---- SGD memories (Vignette 3) ----


def _delta_rule(q, k, v, beta, state, g=None):
    return naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=1.0, initial_state=state, output_final_state=True)


def test_longhorn_is_a_delta_rule_with_an_adaptive_step():
    q, k, v = qkv(33, seed=40)
    delta, s0 = F.softplus(randn(B, 33, H, seed=41)), _mat_state()
    y, s = longhorn(q, k, v, delta, initial_state=s0, output_final_state=True)
    y_ref, s_ref = _delta_rule(q, k, v, delta / (1 + delta * k.pow(2).sum(-1)), s0)
    assert_close("y", y_ref, y, EXACT)
    assert_close("state", s_ref, s, EXACT)
    assert_close("step", delta / (1 + delta * k.pow(2).sum(-1)), longhorn_step_size(k, delta), EXACT)


def test_longhorn_update_minimises_its_proximal_objective():
    q, k, v = qkv(1, seed=42)
    delta, s0 = F.softplus(randn(B, 1, H, V, seed=43)), _mat_state()
    _, s1 = longhorn(q, k, v, delta, initial_state=s0, output_final_state=True)
    S = s1.clone().requires_grad_()
    fit = (v[:, 0] - torch.einsum("bhk,bhkv->bhv", k[:, 0], S)).pow(2)
    objective = 0.5 * (S - s0).pow(2).sum() + 0.5 * (delta[:, 0] * fit).sum()
    (grad,) = torch.autograd.grad(objective, S)
    assert grad.abs().max() < 1e-12


def test_nlms_is_a_delta_rule_and_the_limit_of_longhorn():
    q, k, v = qkv(33, seed=44)
    mu, s0 = 0.2 + randn(B, 33, H, seed=45).sigmoid(), _mat_state()
    y, s = nlms(q, k, v, mu, eps=1e-3, initial_state=s0, output_final_state=True)
    step = mu / (1e-3 + k.pow(2).sum(-1))
    y_ref, s_ref = _delta_rule(q, k, v, step, s0)
    assert_close("y", y_ref, y, EXACT)
    assert_close("state", s_ref, s, EXACT)
    assert_close("step", step, nlms_step_size(k, mu, eps=1e-3), EXACT)
    # beta = 1: Longhorn with delta = 1 / eps
    y_lh, _ = longhorn(q, k, v, 1e3, initial_state=s0)
    assert_close("longhorn", y_lh, nlms(q, k, v, 1.0, eps=1e-3, initial_state=s0)[0], EXACT)


def test_nlms_interpolates_each_new_pair():
    """beta = 1, eps = 0: M_t k_t = v_t after every update (the projection / Kaczmarz step)."""
    q, k, v = qkv(12, seed=46)
    S = _mat_state()
    for t in range(12):
        _, S = nlms(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], 1.0, eps=0.0, initial_state=S, output_final_state=True
        )
        assert_close(f"t={t}", v[:, t], torch.einsum("bhk,bhkv->bhv", k[:, t], S), EXACT)
    y, _ = nlms(q, k, v, 1.0, eps=0.0)
    assert_close("kkt", naive_nlms(q, k, v, 1.0, eps=0.0)[0], y, EXACT)


def test_leaky_lms_is_gated_deltanet_reparameterised():
    """Leaky LMS (beta, lambda, v) == Gated DeltaNet (eta = beta / alpha, alpha = 1 - beta lambda, v' = alpha v)."""
    t = 33
    q, k, v = qkv(t, seed=47)
    k = F.normalize(k, dim=-1)
    beta, lam, s0 = randn(B, t, H, seed=48).sigmoid(), randn(B, t, H, seed=49).sigmoid(), _mat_state()
    y, s = leaky_lms(q, k, v, beta, lam, initial_state=s0, output_final_state=True)
    v_gdn, eta, g = leaky_lms_to_gated_deltanet(v, beta, lam)
    y_ref, s_ref = _delta_rule(q, k, v_gdn, eta, s0, g)
    assert_close("y", y_ref, y, EXACT)
    assert_close("state", s_ref, s, EXACT)
    # the inverse map, from Gated DeltaNet's own parameters
    eta2, g2 = randn(B, t, H, seed=50).sigmoid(), -F.softplus(randn(B, t, H, seed=51))
    y_gdn, _ = _delta_rule(q, k, v, eta2, s0, g2)
    v3, beta3, lam3 = gated_deltanet_to_leaky_lms(v, eta2, g2)
    assert_close("inverse", y_gdn, leaky_lms(q, k, v3, beta3, lam3, initial_state=s0)[0], EXACT)
    for a, b in zip((v, beta, lam), gated_deltanet_to_leaky_lms(v_gdn, eta, g), strict=True):
        assert_close("round trip", a, b, EXACT)


# ---- dtypes ----

FP32_CALLS = {
    "linear_attention": lambda q, k, v: linear_attention(q, k, v, output_final_state=True),
    "rls_recurrent": lambda q, k, v: rls_recurrent(q, k, v, output_final_state=True),
    "rls_parallel": lambda q, k, v: rls_parallel(q, k, v, forget=0.9, output_final_state=True),
    "softmax_attention": lambda q, k, v: (softmax_attention(q, k, v), None),
    "nlms": lambda q, k, v: nlms(q, k, v, output_final_state=True),
    "longhorn": lambda q, k, v: longhorn(q, k, v, 0.5, output_final_state=True),
    "leaky_lms": lambda q, k, v: leaky_lms(q, k, v, 0.5, 0.1, output_final_state=True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", list(FP32_CALLS))
def test_dtypes_are_preserved(name, dtype):
    q, k, v = (x.to(dtype) for x in qkv(7, seed=52))
    y, state = FP32_CALLS[name](q, k, v)
    assert y.dtype == dtype and y.shape == (B, 7, H, V)
    for s in _flat(state):
        assert s.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype) and s.shape[:2] == (B, H)


@pytest.mark.parametrize("name", list(FP32_CALLS))
def test_empty_sequences(name):
    q, k, v = qkv(0)
    y, state = FP32_CALLS[name](q, k, v)
    assert y.shape == (B, 0, H, V)
    for s in _flat(state):
        assert s.shape[:2] == (B, H) and torch.isfinite(s).all()
