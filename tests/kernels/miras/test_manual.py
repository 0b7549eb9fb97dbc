"""The hand-written chunk VJP of the MLP memory (``tests/kernels/miras/manual.py``) against torch autograd through
``naive_chunk_miras`` in fp64: outputs, final state and the gradients of every input and of the initial state."""

import pytest
import torch
import torch.nn.functional as F

from kernels.miras import MEMORA, MONETA, YAAD, MemorySpec, naive_chunk_miras, weight_shapes
from kernels.miras.naive import _chunk_dual
from kernels.utils import assert_close
from tests.kernels.miras.manual import chunk_backward, chunk_forward, manual_chunk_miras

B, H, D = 2, 2, 4
RATIO = 1e-10
GRAD_NAMES = ["dq", "dk", "dv", "deta", "dalpha", "ddelta", "dW1", "dW2"]


def mlp(bias="l2", retention="l2", **kw) -> MemorySpec:
    return MemorySpec(bias=bias, retention=retention, p=3.0, q=4.0 if retention == "lq" else 2.0, **kw)


BIASES = {
    "dot": mlp("dot"),
    "l2": mlp("l2"),
    "l1": mlp("l1"),
    "lp": mlp("lp"),
    "huber-mixture": mlp("huber"),
    "huber-channel-switch": mlp("huber", huber_switch="channel"),
    "huber-coordinate": mlp("huber", huber_mode="coordinate"),
    "huber-norm": mlp("huber", huber_mode="norm"),
    "huber-no-l1": mlp("huber", huber_l1=False),
    "huber-no-l2": mlp("huber", huber_l2=False),
    "robust": mlp("robust"),
}
RETENTIONS = {
    "none": mlp(retention="none"),
    "lq-matrix": mlp(retention="lq"),
    "lq-row": mlp(retention="lq", lq_scope="row"),
}
PRESETS = {
    "moneta": MONETA,
    "yaad": YAAD,
    "memora-l2": MEMORA.replace(retention="l2"),
    "yaad-silu": YAAD.replace(activation="silu"),
}
SPECS = {**BIASES, **RETENTIONS, **PRESETS}


def make_inputs(T, gates="channel", n=B):
    """Unit ``q, k`` as the layer gives them; ``delta`` wide enough that both Huber branches occur."""
    q = F.normalize(torch.randn(n, T, H, D, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(n, T, H, D, dtype=torch.float64), dim=-1)
    v = torch.randn(n, T, H, D, dtype=torch.float64)
    shapes = {"channel": [(n, T, H, D)] * 3, "head": [(n, T, H)] * 3, "mixed": [(n, T, H), (n, T, H, D), (n, T, H)]}
    s_eta, s_alpha, s_delta = shapes[gates]
    eta = 0.5 * torch.rand(s_eta, dtype=torch.float64)
    alpha = 0.7 + 0.3 * torch.rand(s_alpha, dtype=torch.float64)
    delta = 0.5 + 2.5 * torch.rand(s_delta, dtype=torch.float64)
    return [x.requires_grad_() for x in (q, k, v, eta, alpha, delta)]


def make_state(spec, n=B):
    """``(key, (W_1, W_2))``: ``N(0, 1 / fan_in)`` weights (the accumulators for lq)."""
    key = "accumulator" if spec.retention == "lq" else "weights"
    shapes = weight_shapes(spec, D, D)
    return key, tuple((fi**-0.5 * torch.randn(n, H, fi, fo, dtype=torch.float64)).requires_grad_() for fi, fo in shapes)


def run(fn, inputs, state, spec, chunk_size):
    """Output, final weights (flat) and the gradients of a fixed random projection of both."""
    key, weights = state if state is not None else (None, ())
    o, final = fn(*inputs[:5], spec, inputs[5], None if state is None else {key: weights}, True, chunk_size)
    flat = torch.cat([w.flatten() for w in final["weights"]])
    gen = torch.Generator().manual_seed(7)
    do = torch.randn(o.shape, generator=gen, dtype=o.dtype)
    dw = torch.randn(flat.shape, generator=gen, dtype=flat.dtype)
    wrt = [*inputs, *weights]
    grads = torch.autograd.grad((o * do).sum() + (flat * dw).sum(), wrt, allow_unused=True)
    return o, flat, [torch.zeros_like(x) if g is None else g for g, x in zip(grads, wrt, strict=True)]


def compare(spec, T=9, gates="channel", with_state=True, chunk_size=4):
    torch.manual_seed(0)
    inputs = make_inputs(T, gates)
    state = make_state(spec) if with_state else None
    ref = run(naive_chunk_miras, inputs, state, spec, chunk_size)
    out = run(manual_chunk_miras, inputs, state, spec, chunk_size)
    assert_close("o", ref[0], out[0], RATIO)
    assert_close("final state", ref[1], out[1], RATIO)
    for name, r, x in zip(GRAD_NAMES, ref[2], out[2], strict=False):
        assert_close(name, r, x, RATIO)


@pytest.mark.parametrize("gates", ["channel", "head"])
@pytest.mark.parametrize("name", list(SPECS))
def test_matches_autograd_through_naive(name, gates):
    compare(SPECS[name], gates=gates)


@pytest.mark.parametrize("name", ["l2", "lq-row", "moneta", "yaad"])
def test_zero_initial_state(name):
    compare(SPECS[name], with_state=False)


@pytest.mark.parametrize("chunk_size", [4, 8])
@pytest.mark.parametrize("T", [1, 5, 16])
def test_lengths(T, chunk_size):
    compare(YAAD, T=T, gates="head", chunk_size=chunk_size)


def test_mixed_gate_shapes():
    """Per-head ``eta`` and ``delta`` with a channel-wise ``alpha``."""
    compare(YAAD, gates="mixed")


def test_huber_inputs_take_both_branches():
    """The Huber tests mean something only if the head switch ``||r|| <= mean delta`` goes both ways."""
    torch.manual_seed(0)
    inputs = [x.detach().transpose(1, 2) for x in make_inputs(9)]
    weights = tuple(w.detach() for w in make_state(YAAD)[1])
    cache = chunk_forward(weights, *inputs[:5], inputs[5], YAAD)[2]
    small = (cache.y - cache.v).norm(dim=-1) <= cache.delta.mean(-1)
    assert small.any() and not small.all()


@pytest.mark.parametrize("gates", ["channel", "head"])
@pytest.mark.parametrize("name", ["moneta", "yaad", "lq-row", "none"])
def test_single_chunk_vjp_without_autograd(name, gates):
    """``chunk_forward`` is ``_chunk_dual``; ``chunk_backward``, run with autograd off, is its VJP."""
    spec = SPECS[name]
    torch.manual_seed(1)
    q, k, v, eta, alpha, delta = (x.transpose(1, 2) for x in make_inputs(6, gates))
    alpha = None if spec.retention == "none" else alpha
    weights = make_state(spec)[1]
    ref_o, ref_state, _ = _chunk_dual(weights, None, q, k, v, eta, alpha, delta, spec)
    do, d1, d2 = (torch.randn_like(x) for x in (ref_o, *ref_state))
    wrt = [*weights, q, k, v, eta, alpha, delta]
    used = [x for x in wrt if x is not None]
    loss = (ref_o * do).sum() + (ref_state[0] * d1).sum() + (ref_state[1] * d2).sum()
    ref_grads = torch.autograd.grad(loss, used, allow_unused=True)
    with torch.no_grad():
        detached = [None if x is None else x.detach() for x in (q, k, v, eta, alpha, delta)]
        o, state, cache = chunk_forward(tuple(w.detach() for w in weights), *detached, spec)
        d_weights, *grads = chunk_backward(cache, do, (d1, d2))
    assert_close("o", ref_o, o, RATIO)
    for name_, r, x in zip(["W1'", "W2'"], ref_state, state, strict=True):
        assert_close(name_, r, x, RATIO)
    names = [n for n, x in zip(GRAD_NAMES[6:] + GRAD_NAMES[:6], wrt, strict=True) if x is not None]
    outs = [g for g, x in zip([*d_weights, *grads], wrt, strict=True) if x is not None]
    for name_, r, x, like in zip(names, ref_grads, outs, used, strict=True):
        zero = torch.zeros_like(like)
        assert_close(name_, zero if r is None else r, zero if x is None else x, RATIO)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(retention="kl"), "retention"),
        (dict(retention="elastic"), "retention"),
        (dict(algorithm="momentum"), "algorithm"),
        (dict(arch="linear"), "arch"),
        (dict(depth=3), "depth"),
        (dict(read="token"), "read"),
    ],
)
def test_unsupported_specs_name_the_field(change, field):
    inputs = make_inputs(3)
    with pytest.raises(NotImplementedError, match=f"memory.{field}="):
        manual_chunk_miras(*inputs[:5], YAAD.replace(**change), inputs[5])
