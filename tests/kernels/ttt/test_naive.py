"""The TTT references: against fla's reference and Triton kernel, chunk vs recurrent, state carry-over, TTT-MLP."""

import builtins

import pytest
import torch
import torch.nn.functional as F

from kernels.ttt import naive_chunk_ttt_linear, naive_chunk_ttt_mlp, naive_recurrent_ttt_linear
from kernels.utils import assert_close

B, H, D = 2, 2, 8
CS = 16


def make_inputs(t: int, dtype=torch.float32, d: int = D, eta_max: float = 0.3):
    q, k, v = (torch.randn(B, t, H, d, dtype=dtype) for _ in range(3))
    w = 1 + 0.3 * torch.randn(H, d, dtype=dtype)
    b = 0.3 * torch.randn(H, d, dtype=dtype)
    eta = eta_max * torch.rand(B, t, H, 1, dtype=dtype)
    return q, k, v, w, b, eta


def make_state(dtype=torch.float32, d: int = D):
    return 0.3 * torch.randn(B, H, d, d, dtype=dtype), 0.3 * torch.randn(B, H, 1, d, dtype=dtype)


def assert_all_close(names, ref, out, ratio):
    for name, r, o in zip(names, ref, out, strict=True):
        assert_close(name, r, o, ratio)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("t", [1, 15, 16, 17, 40])
def test_chunk_matches_fla_reference(t, with_state):
    from fla.ops.ttt.naive import chunk_ttt_linear_ref

    q, k, v, w, b, eta = make_inputs(t)
    h0, hb0 = make_state() if with_state else (None, None)
    kw = dict(initial_state=h0, initial_state_bias=hb0, output_final_state=True)
    # fla's reference scales q in place when it needs no padding or cast, so it gets copies
    ref = chunk_ttt_linear_ref(q.clone(), k.clone(), v.clone(), w, b, eta.clone(), mini_batch_size=CS, **kw)
    out = naive_chunk_ttt_linear(q, k, v, w, b, eta, chunk_size=CS, **kw)
    assert out[0].shape == (B, t, H, D) and out[1].shape == (B, H, D, D) and out[2].shape == (B, H, 1, D)
    assert_all_close(("o", "h", "hb"), ref, out, 1e-5)

    o, h, hb = naive_chunk_ttt_linear(q, k, v, w, b, eta, chunk_size=CS, initial_state=h0, initial_state_bias=hb0)
    assert h is None and hb is None
    assert torch.equal(o, out[0])


@pytest.fixture
def fla_chunk_ttt_linear(monkeypatch):
    """fla's Triton ``chunk_ttt_linear``; under the CPU interpreter, with the two things the interpreter lacks.

    The interpreter cannot autotune (it has no driver to benchmark with), and its ``range`` yields Python ints
    where the kernels call ``.to(tl.int64)`` on the loop index.
    """
    import fla.modules.layernorm
    import fla.ops.ttt.chunk
    from triton.runtime.autotuner import Autotuner

    if not torch.cuda.is_available():
        import triton.language as tl

        for module in (fla.ops.ttt.chunk, fla.modules.layernorm):
            for name in dir(module):
                obj = getattr(module, name)
                while hasattr(obj, "fn"):
                    if isinstance(obj, Autotuner):
                        monkeypatch.setattr(obj, "configs", obj.configs[:1])
                    obj = obj.fn

        def tensor_range(*args):
            for i in builtins.range(*(int(a) if hasattr(a, "handle") else a for a in args)):
                yield tl.full((), i, tl.int32)

        monkeypatch.setattr(fla.ops.ttt.chunk, "range", tensor_range, raising=False)
    return fla.ops.ttt.chunk.chunk_ttt_linear


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("t", [16, 20])
def test_chunk_matches_fla_triton_kernel(t, fla_chunk_ttt_linear):
    """Forward and every gradient against the kernel itself, including a short last chunk.

    With a short last chunk fla's backward drops the phantom tokens that its forward adds to the final state
    bias: the gradient through ``hb`` is then not the derivative of fla's own forward (ours is). The two agree
    when the cotangent of ``hb`` is constant over ``V`` (a phantom's ``dl/dz`` sums to zero), so that case
    puts no weight on ``hb``.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs = [x.to(device).requires_grad_() for x in (*make_inputs(t), *make_state())]
    names = ("o", "h", "hb", "dq", "dk", "dv", "dw", "db", "deta", "dh0", "dhb0")
    weights = (1.0, 1.0, float(t % CS == 0))
    results = []
    for fn in (fla_chunk_ttt_linear, naive_chunk_ttt_linear):
        q, k, v, w, b, eta, h0, hb0 = inputs
        out = fn(q, k, v, w, b, eta, chunk_size=CS, initial_state=h0, initial_state_bias=hb0, output_final_state=True)
        loss = sum(
            c * (x * torch.linspace(-1, 1, x.numel(), device=device).view_as(x)).sum()
            for c, x in zip(weights, out, strict=True)
        )
        results.append((*out, *torch.autograd.grad(loss, inputs)))
    assert_all_close(names, results[0], results[1], 1e-5)


def run_with_grads(fn, inputs, chunk_size):
    q, k, v, w, b, eta, h0, hb0 = inputs
    kw = dict(chunk_size=chunk_size, initial_state=h0, initial_state_bias=hb0, output_final_state=True)
    out = fn(q, k, v, w, b, eta, **kw)
    gen = torch.Generator().manual_seed(7)
    loss = sum((x * torch.randn(x.shape, generator=gen, dtype=x.dtype)).sum() for x in out)
    return (*out, *torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("t", [1, 15, 16, 17, 33])
def test_chunk_matches_recurrent_fp64(t):
    inputs = [x.requires_grad_() for x in (*make_inputs(t, torch.float64), *make_state(torch.float64))]
    ref = run_with_grads(naive_recurrent_ttt_linear, inputs, CS)
    out = run_with_grads(naive_chunk_ttt_linear, inputs, CS)
    names = ("o", "h", "hb", "dq", "dk", "dv", "dw", "db", "deta", "dh0", "dhb0")
    assert_all_close(names, ref, out, 1e-10)


def test_chunk_matches_recurrent_without_state_small_chunks():
    q, k, v, w, b, eta = make_inputs(11, torch.float64)
    ref = naive_recurrent_ttt_linear(q, k, v, w, b, eta, scale=0.7, chunk_size=4, output_final_state=True)
    out = naive_chunk_ttt_linear(q, k, v, w, b, eta, scale=0.7, chunk_size=4, output_final_state=True)
    assert_all_close(("o", "h", "hb"), ref, out, 1e-10)


def test_short_last_chunk_is_padded_with_zero_tokens():
    """As fla, a short last chunk is completed with ``q = k = v = 0`` tokens at the last real token's ``eta``."""
    t = 20
    q, k, v, w, b, eta = make_inputs(t, torch.float64)
    h0, hb0 = make_state(torch.float64)
    kw = dict(chunk_size=CS, initial_state=h0, initial_state_bias=hb0, output_final_state=True)
    o, h, hb = naive_chunk_ttt_linear(q, k, v, w, b, eta, **kw)
    pad = CS - t % CS
    padded = [F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v)]
    eta_padded = torch.cat([eta, eta[:, -1:].expand(-1, pad, -1, -1)], dim=1)
    o_p, h_p, hb_p = naive_chunk_ttt_linear(*padded, w, b, eta_padded, **kw)
    assert_all_close(("o", "h", "hb"), (o_p[:, :t], h_p, hb_p), (o, h, hb), 1e-12)


def test_prefix_then_suffix_equals_whole():
    t = 40
    q, k, v, w, b, eta = make_inputs(t, torch.float64)
    h0, hb0 = make_state(torch.float64)
    kw = dict(chunk_size=CS, output_final_state=True)
    whole = naive_chunk_ttt_linear(q, k, v, w, b, eta, initial_state=h0, initial_state_bias=hb0, **kw)
    for split in (CS, 2 * CS):
        head, tail = ([x[:, :split] for x in (q, k, v, eta)], [x[:, split:] for x in (q, k, v, eta)])
        first = naive_chunk_ttt_linear(*head[:3], w, b, head[3], initial_state=h0, initial_state_bias=hb0, **kw)
        second = naive_chunk_ttt_linear(
            *tail[:3], w, b, tail[3], initial_state=first[1], initial_state_bias=first[2], **kw
        )
        assert_all_close(("o", "h", "hb"), whole, (torch.cat([first[0], second[0]], 1), *second[1:]), 1e-12)


def test_prefix_then_suffix_off_the_chunk_grid_differs():
    """Splitting inside a chunk moves the suffix's chunk boundaries and adds the prefix's phantom tokens."""
    t, split = 40, 20
    q, k, v, w, b, eta = make_inputs(t, torch.float64)
    h0, hb0 = make_state(torch.float64)
    kw = dict(chunk_size=CS, output_final_state=True)
    whole = naive_chunk_ttt_linear(q, k, v, w, b, eta, initial_state=h0, initial_state_bias=hb0, **kw)
    head, tail = ([x[:, :split] for x in (q, k, v, eta)], [x[:, split:] for x in (q, k, v, eta)])
    first = naive_chunk_ttt_linear(*head[:3], w, b, head[3], initial_state=h0, initial_state_bias=hb0, **kw)
    second = naive_chunk_ttt_linear(*tail[:3], w, b, tail[3], initial_state=first[1], initial_state_bias=first[2], **kw)
    assert_close("causal prefix", whole[0][:, :split], first[0], 1e-12)
    assert not torch.allclose(whole[0][:, split:], second[0])


def test_dtypes_and_float_eta():
    q, k, v, w, b, eta = make_inputs(17)
    h0, hb0 = make_state()
    kw = dict(chunk_size=CS, initial_state=h0, initial_state_bias=hb0, output_final_state=True)
    o, h, hb = naive_chunk_ttt_linear(q.bfloat16(), k.bfloat16(), v.bfloat16(), w, b, eta, **kw)
    assert o.dtype == torch.bfloat16 and h.dtype == hb.dtype == torch.float32
    full = naive_chunk_ttt_linear(q, k, v, w, b, torch.full_like(eta, 0.1), **kw)
    assert_all_close(("o", "h", "hb"), full, naive_chunk_ttt_linear(q, k, v, w, b, 0.1, **kw), 0)


def mlp_state(dtype=torch.float64, d: int = D, hidden: int = 4 * D):
    return (
        torch.randn(B, H, d, hidden, dtype=dtype) / d**0.5,
        0.1 * torch.randn(B, H, 1, hidden, dtype=dtype),
        torch.randn(B, H, hidden, d, dtype=dtype) / hidden**0.5,
        0.1 * torch.randn(B, H, 1, d, dtype=dtype),
    )


def mlp_f(params, x, w, b, eps=1e-6):
    """The inner model ``x + LN(gelu(x W1 + b1) W2 + b2)`` of one head on one token ``x [K]``."""
    w1, b1, w2, b2 = params
    y = F.gelu(x @ w1 + b1[0]) @ w2 + b2[0]
    return x + F.layer_norm(y, y.shape, eps=eps) * w + b


def mlp_loss(params, k, v, w, b):
    return 0.5 * (mlp_f(params, k, w, b) - v).pow(2).sum()


def mlp_minibatch_spec(q, k, v, w, b, eta, params, chunk_size, scale):
    """TTT-MLP literally: per head and token, ``theta_t = theta_0 - eta_t sum_{s<=t} torch.func.grad(l)(theta_0)``."""
    grad = torch.func.grad(mlp_loss)
    t_len = q.shape[1]
    outs = [[None] * H for _ in range(B)]
    finals = [[None] * H for _ in range(B)]
    for i in range(B):
        for j in range(H):
            theta = tuple(p[i, j] for p in params)
            rows = []
            for start in range(0, t_len, chunk_size):
                theta0 = theta
                total = tuple(torch.zeros_like(p) for p in theta0)
                for t in range(start, min(start + chunk_size, t_len)):
                    g = grad(theta0, k[i, t, j], v[i, t, j], w[j], b[j])
                    total = tuple(a + c for a, c in zip(total, g, strict=True))
                    theta = tuple(p - eta[i, t, j] * a for p, a in zip(theta0, total, strict=True))
                    rows.append(mlp_f(theta, scale * q[i, t, j], w[j], b[j]))
            finals[i][j] = theta
            outs[i][j] = torch.stack(rows)
    final = tuple(torch.stack([torch.stack([finals[i][j][n] for j in range(H)]) for i in range(B)]) for n in range(4))
    return torch.stack([torch.stack(row, dim=1) for row in outs]), final


def test_mlp_chunk_size_one_is_per_token_sgd():
    q, k, v, w, b, eta = make_inputs(7, torch.float64)
    params = mlp_state()
    ref = mlp_minibatch_spec(q, k, v, w, b, eta, params, 1, 1.0)
    out = naive_chunk_ttt_mlp(q, k, v, w, b, eta, chunk_size=1, initial_state=params, output_final_state=True)
    assert_close("o", ref[0], out[0], 1e-10)
    assert_all_close(("W1", "b1", "W2", "b2"), ref[1], out[1], 1e-10)


def test_mlp_chunk_matches_minibatch_spec_with_grads():
    q, k, v, w, b, eta = make_inputs(10, torch.float64)
    inputs = [x.requires_grad_() for x in (q, k, v, w, b, eta, *mlp_state())]
    gen = torch.Generator().manual_seed(3)
    cotangents = None
    results = []
    for run in (
        lambda: mlp_minibatch_spec(*inputs[:6], inputs[6:], 4, 0.8),
        lambda: naive_chunk_ttt_mlp(*inputs[:6], 0.8, 1e-6, 4, tuple(inputs[6:]), True),
    ):
        o, final = run()
        outs = (o, *final)
        if cotangents is None:
            cotangents = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in outs]
        loss = sum((x * c).sum() for x, c in zip(outs, cotangents, strict=True))
        results.append((*outs, *torch.autograd.grad(loss, inputs)))
    names = ("o", "W1", "b1", "W2", "b2", "dq", "dk", "dv", "dw", "db", "deta", "dW1", "db1", "dW2", "db2")
    assert_all_close(names, results[0], results[1], 1e-10)


def test_mlp_prefix_then_suffix_equals_whole():
    t, split = 24, 8
    q, k, v, w, b, eta = make_inputs(t, torch.float64)
    params = mlp_state()
    kw = dict(chunk_size=4, output_final_state=True)
    whole = naive_chunk_ttt_mlp(q, k, v, w, b, eta, initial_state=params, **kw)
    head, tail = ([x[:, :split] for x in (q, k, v, eta)], [x[:, split:] for x in (q, k, v, eta)])
    first = naive_chunk_ttt_mlp(*head[:3], w, b, head[3], initial_state=params, **kw)
    second = naive_chunk_ttt_mlp(*tail[:3], w, b, tail[3], initial_state=first[1], **kw)
    assert_close("o", whole[0], torch.cat([first[0], second[0]], 1), 1e-12)
    assert_all_close(("W1", "b1", "W2", "b2"), whole[1], second[1], 1e-12)


def test_mlp_requires_initial_state():
    q, k, v, w, b, eta = make_inputs(4)
    with pytest.raises(ValueError, match="initial_state"):
        naive_chunk_ttt_mlp(q, k, v, w, b, eta)
