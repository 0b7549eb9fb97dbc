"""Higher-order (p = 1) softmax attention: closed form vs block solve, limits, Triton forward and backward vs naive."""

import json

import pytest
import torch
import torch.nn.functional as F

from kernels.hosa import naive_hosa, naive_hosa_block, parallel_hosa
from kernels.utils import assert_close

H, K, V = 1, 12, 20  # K, V not powers of two: the kernels pad them to 16 and 32
RIDGE, ITERS = 1e-2, 16  # well conditioned for unit keys; CG in 12 dims has converged after 16 steps


@pytest.fixture(autouse=True)
def _nan_poisoned_empty(monkeypatch):
    """Every ``torch.empty(_like)`` starts as NaN, so an output element a kernel forgets to write shows."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(x):
        if x.is_floating_point():
            with torch.no_grad():
                x.fill_(float("nan"))
        return x

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(empty_like(*a, **kw)))


def make_inputs(t, b=1, h=H, k=K, v=V, dtype=torch.float32, device="cpu"):
    """QK-normalised queries and keys (the paper's setting for softmax as local regression), Gaussian values."""
    q = F.normalize(torch.randn(b, t, h, k, dtype=torch.float64), dim=-1)
    key = F.normalize(torch.randn(b, t, h, k, dtype=torch.float64), dim=-1)
    val = torch.randn(b, t, h, v, dtype=torch.float64)
    return tuple(x.to(device=device, dtype=dtype) for x in (q, key, val))


def reference(q, k, v, **kw):
    """``naive_hosa`` in fp64 on the same (possibly rounded) inputs."""
    return naive_hosa(q.double(), k.double(), v.double(), **kw)


# ---------------------------------------------------------------------------------------------------------------
# the torch references


@pytest.mark.parametrize("ridge", [1e-4, 1e-2, 1.0])
@pytest.mark.parametrize("t", [1, 5, 20])  # fewer, about as many, more keys than K = 6
def test_closed_form_matches_block_solve(t, ridge):
    q, k = torch.randn(2, t, 3, 6, dtype=torch.float64), torch.randn(2, t, 3, 6, dtype=torch.float64)
    v = torch.randn(2, t, 3, 4, dtype=torch.float64)
    y = naive_hosa(q, k, v, ridge=ridge, scale=0.8)
    y_block = naive_hosa_block(q, k, v, ridge=ridge, scale=0.8)
    torch.testing.assert_close(y, y_block, rtol=1e-9, atol=1e-9)


def test_first_token_returns_its_value():
    q, k, v = make_inputs(7, dtype=torch.float64)
    torch.testing.assert_close(naive_hosa(q, k, v)[:, 0], v[:, 0], rtol=1e-12, atol=1e-12)


def test_large_ridge_is_softmax_attention():
    q, k, v = make_inputs(33, b=2, dtype=torch.float64)
    y = naive_hosa(q, k, v, ridge=1e12)
    sdpa = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(y, sdpa, rtol=1e-9, atol=1e-9)


def test_exact_on_affine_data():
    """``v = A k + b``: once the prefix has ``K + 1`` keys in general position, ``y_t = A q_t + b`` (ridge -> 0)."""
    t, d = 24, 5
    q, k = torch.randn(2, t, H, d, dtype=torch.float64), torch.randn(2, t, H, d, dtype=torch.float64)
    A, b = torch.randn(H, 3, d, dtype=torch.float64), torch.randn(H, 3, dtype=torch.float64)
    v = torch.einsum("hvk,bthk->bthv", A, k) + b
    y = naive_hosa(q, k, v, ridge=1e-12)
    expected = torch.einsum("hvk,bthk->bthv", A, q) + b
    torch.testing.assert_close(y[:, d:], expected[:, d:], rtol=1e-6, atol=1e-6)
    # with a real ridge it is not exact, and p = 0 is far off
    assert (naive_hosa(q, k, v, ridge=1e9)[:, d:] - expected[:, d:]).abs().max() > 0.1


def test_naive_fp32_matches_fp64():
    q, k, v = make_inputs(40, dtype=torch.float64)
    y = naive_hosa(q.float(), k.float(), v.float(), ridge=1e-3)
    assert y.dtype == torch.float32
    assert_close("y", naive_hosa(q, k, v, ridge=1e-3), y, 1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Triton forward (interpreted on a CPU)


@pytest.mark.parametrize(
    "t, block_t, block_s",
    [(1, 16, 16), (15, 16, 16), (63, 16, 16), (65, 16, 32), (65, 32, 16)],
)
def test_forward_matches_naive(t, block_t, block_s):
    q, k, v = make_inputs(t)
    y = parallel_hosa(q, k, v, ridge=RIDGE, cg_iters=ITERS, block_t=block_t, block_s=block_s)
    assert y.shape == v.shape and y.dtype == v.dtype
    assert_close("y", reference(q, k, v, ridge=RIDGE), y, 1e-4)


def test_forward_batch_and_scale():
    q, k, v = make_inputs(21, b=2, h=3, v=K)
    y = parallel_hosa(q, k, v, ridge=0.05, scale=2.0, cg_iters=ITERS, block_t=16, block_s=16)
    assert_close("y", reference(q, k, v, ridge=0.05, scale=2.0), y, 1e-4)


def test_forward_sharp_softmax():
    """Logits up to +-40: the online max keeps exp finite; the covariances are tiny and the ridge dominates."""
    q, k, v = make_inputs(40)
    y = parallel_hosa(q, k, v, ridge=RIDGE, scale=40.0, cg_iters=ITERS, block_t=16, block_s=16)
    assert_close("y", reference(q, k, v, ridge=RIDGE, scale=40.0), y, 1e-4)


def test_forward_autotuned_blocks():
    q, k, v = make_inputs(70)
    y = parallel_hosa(q, k, v, ridge=RIDGE, cg_iters=ITERS)
    assert_close("y", reference(q, k, v, ridge=RIDGE), y, 1e-4)


def test_forward_fp16_inputs():
    q, k, v = make_inputs(33, dtype=torch.float16)
    y = parallel_hosa(q, k, v, ridge=RIDGE, cg_iters=ITERS, block_t=16, block_s=16)
    assert y.dtype == torch.float16
    assert_close("y", reference(q, k, v, ridge=RIDGE), y, 2e-3)


def test_noncontiguous_inputs():
    q, k, v = make_inputs(17, h=3)
    q, k, v = q[:, :, 1:], k[:, :, :2], v[:, :, ::2]
    y = parallel_hosa(q, k, v, ridge=RIDGE, cg_iters=ITERS, block_t=16, block_s=16)
    assert_close("y", reference(q, k, v, ridge=RIDGE), y, 1e-4)


def test_fewer_cg_iterations_are_less_accurate():
    """The error falls with ``cg_iters`` (so the solve, not the sweeps, sets it); 0 steps give softmax attention."""
    q, k, v = make_inputs(30, h=1, k=16, v=16)
    ref = reference(q, k, v, ridge=1e-3)
    errors = []
    for iters in (2, 6, 24):
        y = parallel_hosa(q, k, v, ridge=1e-3, cg_iters=iters, block_t=16, block_s=16)
        errors.append(((y.double() - ref).norm() / ref.norm()).item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4, errors
    y0 = parallel_hosa(q, k, v, ridge=1e-3, cg_iters=0, block_t=16, block_s=16)
    assert_close("p=0", reference(q, k, v, ridge=1e12), y0, 1e-5)


def test_argument_checks():
    q, k, v = make_inputs(4)
    with pytest.raises(ValueError, match="ridge"):
        parallel_hosa(q, k, v, ridge=0.0)
    with pytest.raises(ValueError, match="block"):
        parallel_hosa(q, k, v, block_t=24)
    with pytest.raises(ValueError, match="expected"):
        parallel_hosa(q, k[..., :-1], v)
    assert parallel_hosa(q[:, :0], k[:, :0], v[:, :0]).shape == (1, 0, H, V)


# ---------------------------------------------------------------------------------------------------------------
# Triton backward


def _grads(fn, q, k, v, do, **kw):
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    y = fn(*leaves, **kw)
    return y, torch.autograd.grad((y * do).sum(), leaves)


@pytest.mark.parametrize("t, block_t, block_s", [(1, 16, 16), (15, 16, 16), (65, 16, 32), (33, 32, 16)])
def test_backward_matches_naive(t, block_t, block_s):
    q, k, v = make_inputs(t)
    do = torch.randn_like(v)
    kw = {"ridge": RIDGE}
    _, grads_ref = _grads(reference, q, k, v, do.double(), **kw)
    _, grads = _grads(parallel_hosa, q, k, v, do, **kw, cg_iters=ITERS, block_t=block_t, block_s=block_s)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert g.dtype == torch.float32
        assert_close(f"d{name}", g_ref, g, 1e-4)


def test_backward_small_ridge_and_scale():
    q, k, v = make_inputs(24, h=1, k=16, v=16)
    do = torch.randn_like(v)
    kw = {"ridge": 1e-3, "scale": 3.0}
    _, grads_ref = _grads(reference, q, k, v, do.double(), **kw)
    _, grads = _grads(parallel_hosa, q, k, v, do, **kw, cg_iters=32, block_t=16, block_s=16)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close(f"d{name}", g_ref, g, 1e-3)


# ---------------------------------------------------------------------------------------------------------------
# the defaults, heavier cases, GPU


@pytest.mark.parametrize("t", [128, pytest.param(200, marks=pytest.mark.slow)])
def test_defaults_at_head_dim_64(t):
    """The default ridge and ``cg_iters`` at ``K = V = 64`` (README: the measurement behind them)."""
    q, k, v = make_inputs(t, h=1, k=64, v=64)
    do = torch.randn_like(v)
    y_ref, grads_ref = _grads(reference, q, k, v, do.double())
    y, grads = _grads(parallel_hosa, q, k, v, do, block_t=64, block_s=64)
    assert_close("y", y_ref, y, 1e-3)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close(f"d{name}", g_ref, g, 1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("input_precision", ["ieee", "tf32x3"])
def test_gpu_matches_naive(dtype, input_precision):
    q, k, v = make_inputs(1000, b=2, h=4, k=64, v=64, dtype=dtype, device="cuda")
    do = torch.randn_like(v)
    y_ref, grads_ref = _grads(reference, q, k, v, do.double())
    y, grads = _grads(parallel_hosa, q, k, v, do, input_precision=input_precision)
    tol = 1e-3 if dtype == torch.float32 else 1e-2
    assert_close("y", y_ref, y, tol)
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close(f"d{name}", g_ref, g, tol)


def test_benchmark_harness_writes_ratios_to_sdpa(tmp_path):
    from benchmarks.hosa_speed import main

    args = ["--seq-lens", "16", "--batch", "1", "--heads", "1", "--head-dim", "16", "--dtype", "fp32"]
    assert main([*args, "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "hosa_cpu.json").read_text())
    assert [r["method"] for r in record["results"]] == ["sdpa", "hosa", "hosa_naive"]
    assert all(r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 for r in record["results"])
    md = (tmp_path / "hosa_cpu.md").read_text()
    assert "| sdpa | 1 | 16 | 1 | 16 |" in md and "1.0x" in md and record["git"]
