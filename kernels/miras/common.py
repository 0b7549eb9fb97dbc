"""What the Miras Triton kernels share: the codes of the biases and retentions, the device functions of the
linear memory's chunk step (``chunk.py``) that the MLP memory (``chunk_mlp.py``) and the decoding kernels
(``fused_recurrent*.py``) build on, the launch configurations and the gate layout every kernel reads."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.miras.decay import dot
from kernels.miras.spec import MemorySpec

BIAS_CODES = {
    "dot": 0,
    "l2": 1,
    "l1": 2,
    "lp": 3,
    "huber_coordinate": 4,
    "huber_head": 5,
    "huber_sign": 6,
    "huber_norm": 7,
    "robust": 8,
}
RETENTION_CODES = {"none": 0, "l2": 1, "lq": 2, "elastic": 3, "kl": 4}
KL_TANGENT = tl.constexpr(5)
"""The chunk kernels' ``RETENTION`` for ``kl`` with ``kl_read='tangent'`` (theirs is ``kl`` at ``RETENTION >= 4``)."""


def bias_code(spec: MemorySpec) -> int:
    """The kernel's ``psi`` for ``spec.bias`` (the Huber variants resolved to the branch they compute)."""
    if spec.bias != "huber":
        return BIAS_CODES[spec.bias]
    if spec.huber_mode == "norm":
        return BIAS_CODES["huber_norm"]
    if spec.huber_mode == "coordinate" or spec.huber_switch == "channel":
        return BIAS_CODES["huber_coordinate"] if spec.huber_l1 and spec.huber_l2 else _huber_branch(spec)
    return BIAS_CODES["huber_head"] if spec.huber_l1 and spec.huber_l2 else _huber_branch(spec)


def chunk_retention(spec: MemorySpec) -> int:
    """The chunk kernels' ``RETENTION``: :data:`RETENTION_CODES`, or :data:`KL_TANGENT` for Memora's tangent read."""
    if spec.retention == "kl" and spec.kl_read == "tangent":
        return KL_TANGENT.value
    return RETENTION_CODES[spec.retention]


def _huber_branch(spec: MemorySpec) -> int:
    return BIAS_CODES["l2"] if not spec.huber_l1 else BIAS_CODES["huber_sign"]


@triton.jit
def _rows(ptr, rows, cols, n_rows, n_cols, stride):
    """Rows ``rows``, columns ``cols`` of a row-major view with row stride ``stride``, as fp32 (0 outside)."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + tl.cast(rows[:, None], tl.int64) * stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, x, rows, cols, n_rows, n_cols, stride):
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    tl.store(ptr + tl.cast(rows[:, None], tl.int64) * stride + cols[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    return tl.where(x < 0, -1.0, 1.0) * (1.0 - e) / (1.0 + e)


@triton.jit
def _head_terms(r, d, V, eps):
    """``||r||`` with ``eps`` (per row) and the head's mean ``delta`` (per row)."""
    norm = tl.sqrt(tl.sum(r * r, 1) + eps)
    return norm, tl.sum(d, 1) / V


@triton.jit
def _psi(r, v, d, V, sharp, p, eps, BIAS: tl.constexpr):
    """``dl/dM(k)`` at the residual ``r = M(k) - v`` (``naive.bias_grad``; Eq. 8-17, Remark 5)."""
    if BIAS == 0:
        out = -v
    elif BIAS == 1:
        out = r
    else:
        t = _tanh(sharp * r)
        if BIAS == 2:
            out = t
        elif BIAS == 3:
            out = p * t * tl.exp(0.5 * (p - 1.0) * tl.log(r * r + eps))
        elif BIAS == 4:
            out = tl.where(tl.abs(r) <= d, r, d * t)
        elif BIAS == 6:
            out = d * t
        else:
            norm, dm = _head_terms(r, d, V, eps)
            if BIAS == 5:
                out = tl.where((norm <= dm)[:, None], r, d * t)
            elif BIAS == 7:
                out = tl.where((norm <= dm)[:, None], r, dm[:, None] * r / norm[:, None])
            else:
                out = r + dm[:, None] * r / norm[:, None]
    return out


@triton.jit
def _psi_vjp(r, d, dp, V, sharp, p, eps, BIAS: tl.constexpr):
    """``(dr, ddelta)`` of :func:`_psi` for the output gradient ``dp`` (the switches are piecewise constant)."""
    dd = tl.zeros_like(r)
    if BIAS == 0:
        dr = tl.zeros_like(r)
    elif BIAS == 1:
        dr = dp
    else:
        t = _tanh(sharp * r)
        dt = sharp * (1.0 - t * t)
        if BIAS == 2:
            dr = dp * dt
        elif BIAS == 3:
            s = r * r + eps
            u = tl.exp(0.5 * (p - 1.0) * tl.log(s))
            dr = dp * p * (dt * u + t * (p - 1.0) * r * u / s)
        elif BIAS == 4:
            small = tl.abs(r) <= d
            dr = tl.where(small, dp, dp * d * dt)
            dd = tl.where(small, 0.0, dp * t)
        elif BIAS == 6:
            dr = dp * d * dt
            dd = dp * t
        else:
            norm, dm = _head_terms(r, d, V, eps)
            rdp = tl.sum(r * dp, 1)
            shrink = dm[:, None] / norm[:, None] * (dp - r * (rdp / (norm * norm))[:, None])
            if BIAS == 5:
                small = (norm <= dm)[:, None]
                dr = tl.where(small, dp, dp * d * dt)
                dd = tl.where(small, 0.0, dp * t)
            elif BIAS == 7:
                small = (norm <= dm)[:, None]
                dr = tl.where(small, dp, shrink)
                dd = tl.where(small, 0.0, (rdp / norm)[:, None] / V + 0.0 * r)
            else:
                dr = dp + shrink
                dd = (rdp / norm)[:, None] / V + 0.0 * r
    return dr, dd


@triton.jit
def _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, BK: tl.constexpr):
    """``c = ||S||_q^-(q-2)`` per key row ``[BK]`` (one value repeated for the matrix scope) and ``sum |S|^q``."""
    if RETENTION == 2:
        a = tl.abs(S)
        powq = tl.where(a > 0, tl.exp(q_exp * tl.log(tl.maximum(a, 1e-38))), 0.0)
        if LQ_ROW:
            power = tl.sum(powq, 1)
        else:
            power = tl.zeros([BK], dtype=tl.float32) + tl.sum(tl.sum(powq, 1), 0)
        c = tl.exp(-(q_exp - 2.0) / q_exp * tl.log(tl.maximum(power, eps_q)))
    else:
        power = tl.zeros([BK], dtype=tl.float32) + 1.0
        c = tl.zeros([BK], dtype=tl.float32) + 1.0
    return c, power


@triton.jit
def _lq_grad(S, c, power, dc, q_exp, eps_q, LQ_ROW: tl.constexpr, BK: tl.constexpr):
    """``dc . dc/dS`` for the scale of :func:`_lq_scale`: ``dc/dS = -(q - 2) c |S|^(q-1) sign(S) / ||S||_q^q``
    (0 where the norm is clamped). ``dc`` is per row; the matrix scope has one ``c``, so its rows add up."""
    if not LQ_ROW:
        dc = tl.zeros([BK], dtype=tl.float32) + tl.sum(dc, 0)
    a = tl.abs(S)
    pow1 = tl.where(a > 0, tl.exp((q_exp - 1.0) * tl.log(tl.maximum(a, 1e-38))), 0.0)
    sign = tl.where(S > 0, 1.0, tl.where(S < 0, -1.0, 0.0))
    dpower = tl.where(power > eps_q, -(q_exp - 2.0) * c / tl.maximum(power, eps_q) * dc, 0.0)
    return dpower[:, None] * pow1 * sign


@triton.jit
def _simplex(L, rows, n_rows, cols, n_cols, scale):
    """``scale * softmax`` over the fan-in (axis 0) of the valid block of ``L`` (Eq. 21, 27); 0 on padding."""
    valid = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    e = tl.exp(tl.where(valid, L, float("-inf")) - tl.max(tl.where(valid, L, -1e30), 0)[None, :])
    return scale * e / tl.maximum(tl.sum(e, 0), 1e-30)[None, :]


@triton.jit
def _simplex_vjp(y, dy, scale):
    return y * (dy - tl.sum(y * dy, 0)[None, :] / scale)


@triton.jit
def _log_floor(W, floor):
    return tl.log(tl.maximum(W, floor))


@triton.jit
def _centre(x, cols, n):
    """``x [R, C]`` less its mean over the first ``n`` columns (a fan-in), 0 on the padding columns."""
    valid = (cols < n)[None, :]
    return tl.where(valid, x - (tl.sum(tl.where(valid, x, 0.0), 1) / n)[:, None], 0.0)


@triton.jit
def _tangent_rows(read, W, fade, floor, scale):
    """The retention part of Memora's tangent read (``MemorySpec.kl_read='tangent'``) for gates on the rows (the
    fan-in) of ``W [F, C]``: ``read W'`` with ``W' = W + W * (d - <W / c, d>)``, ``d = fade log W``, that is
    ``read W + (read fade) (W log W) - (read W) * (fade (W log W)) / c``; ``read, fade = b - 1 [R, F]``."""
    WL = W * _log_floor(W, floor)
    a = dot(read, W)
    return a + dot(read * fade, WL) - a * dot(fade, WL) / scale


@triton.jit
def _tangent_rows_vjp(dz, read, W, fade, floor, scale):
    """``(dread, dfade)`` of :func:`_tangent_rows` for the output gradient ``dz [R, C]``."""
    WL = W * _log_floor(W, floor)
    dzWL = dot(dz, tl.trans(WL))
    dread = dot(dz * (1.0 - dot(fade, WL) / scale), tl.trans(W)) + dzWL * fade
    return dread, dzWL * read - dot(dz * dot(read, W) / scale, tl.trans(WL))


@triton.jit
def _tangent_rows_dw(dz, read, W, fade, floor, scale):
    """``dW`` of :func:`_tangent_rows` for the output gradient ``dz [R, C]`` (``W log W`` has the derivative
    ``log W + 1`` above the floor, ``log floor`` below it)."""
    logW = _log_floor(W, floor)
    WL = W * logW
    a = dot(read, W)
    dWL = dot(tl.trans(read * fade), dz) - dot(tl.trans(fade), dz * a / scale)
    da = dz * (1.0 - dot(fade, WL) / scale)
    return dot(tl.trans(read), da) + dWL * (logW + tl.where(W > floor, 1.0, 0.0))


@triton.jit
def _soft_threshold_tl(x, gamma):
    return tl.where(x > gamma, x - gamma, tl.where(x < -gamma, x + gamma, 0.0))


@triton.jit
def _chunk_inputs(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    rows,
    offs_k,
    offs_v,
    T,
    K,
    V,
    sk,
    sv,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    BT: tl.constexpr,
):
    """Load one chunk and form the cumulative log decay ``g`` and its last row ``g_last``."""
    q = _rows(q_ptr, rows, offs_k, T, K, sk)
    k = _rows(k_ptr, rows, offs_k, T, K, sk)
    v = _rows(v_ptr, rows, offs_v, T, V, sv)
    eta = _rows(eta_ptr, rows, offs_k, T, K, sk)
    if HAS_ALPHA:
        g = tl.cumsum(_rows(la_ptr, rows, offs_k, T, K, sk), 0)
    else:
        g = tl.zeros_like(q)
    if HAS_DELTA:
        d = _rows(d_ptr, rows, offs_v, T, V, sv)
    else:
        d = tl.zeros_like(v)
    last = (tl.arange(0, BT) == BT - 1)[:, None]
    g_last = tl.sum(tl.where(last, g, 0.0), 0)
    return q, k, v, eta, g, g_last, d


LAUNCH_CONFIGS = [triton.Config({}, num_warps=w, num_stages=s) for w, s in ((4, 2), (8, 2), (4, 1), (8, 1), (2, 2))]
"""Warps and pipeline stages the chunk kernels' autotuner tries on a GPU; the interpreter keeps the first.
Every config overwrites the same outputs from unchanged inputs, so the tuning runs leave no trace."""


def _chunk_offsets(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """First chunk index of every packed sequence."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    counts = (lengths + chunk_size - 1) // chunk_size
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)


def _or_dummy(dummy: torch.Tensor, *tensors):
    """Absent optional tensors as ``dummy`` (the kernels never touch them: their flags are off)."""
    return tuple(dummy if t is None else t for t in tensors)


def channelwise(g: torch.Tensor | None, d: int) -> torch.Tensor | None:
    """A per-head gate ``[B, T, H]`` or a channel-wise one ``[B, T, H, D]`` as a contiguous ``[B, T, H, d]``."""
    if g is None:
        return None
    if g.dim() == 3:
        g = g.unsqueeze(-1)
    if g.shape[-1] not in (1, d):
        raise ValueError(f"a channel-wise gate needs {d} channels, got {g.shape[-1]}")
    return g.expand(*g.shape[:3], d).contiguous()


def kernel_gates(spec: MemorySpec, eta, alpha, delta, K: int, V: int) -> tuple:
    """The gates as every kernel reads them: ``eta [.., K]``, ``log alpha [.., K]`` in fp32 (None without retention)
    and ``delta [.., V]`` (None unless the bias reads it)."""
    log_alpha = None
    if spec.retention != "none":
        log_alpha = channelwise(alpha, K).float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return channelwise(eta, K), log_alpha, channelwise(delta, V) if spec.needs_delta else None
