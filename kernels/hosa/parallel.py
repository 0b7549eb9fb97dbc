"""Higher-order (p = 1) softmax attention in Triton: flash-style sweeps and a matrix-free conjugate-gradient solve.

Per query ``t`` (one row of a query block) and head, with ``w_ts = softmax_s(scale * q_t . k_s)`` over ``s <= t``::

    y_t = vbar_t + S_vk (S_kk + ridge I)^{-1} (q_t - kbar_t)                    (see ``naive.py``)

Nothing of size ``T x T`` or ``K x K`` per query is ever formed. A program owns ``BT`` queries of one
``(batch, head)`` and sweeps over the key blocks ``s < min(t0 + BT, T)``:

1. ``_stats_sweep``: online softmax (row max ``m``, normaliser ``l``; kept as ``lse = m + log l``) with the
   running ``kbar`` and ``vbar`` (one sweep, as the FlashAttention forward).
2. ``_cg_solve``: ``cg_iters`` conjugate-gradient steps on ``(S_kk + ridge I) z = q - kbar``. Each product
   ``S_kk x`` is one sweep that recomputes ``w_ts = exp(scale q_t . k_s - lse_t)`` and uses the centred form::

       c_ts = k_s . x_t - kbar_t . x_t,     S_kk x_t = sum_s w_ts c_ts k_s - kbar_t sum_s w_ts c_ts

   (the second sum is zero in exact arithmetic; keeping it makes the product the exactly centred one).
3. ``_output_sweep``: ``y_t = vbar_t + sum_s w_ts c_ts v_s - vbar_t sum_s w_ts c_ts`` with ``c`` taken at ``z``.

The backward is the implicit-function gradient of the exact solution (README), computed the same way: per query
block a sweep for ``h = S_uk`` with ``u_ts = dy_t . v_s``, a second CG solve ``(S_kk + ridge I) zeta = h`` and a
sweep for ``dq``; per key block a sweep over the query blocks for ``dk`` and ``dv``.

All accumulation is fp32; 16-bit inputs are loaded as they are and widened in registers.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from kernels.hosa.naive import DEFAULT_RIDGE
from kernels.utils import autotune

DEFAULT_CG_ITERS = 32
"""Conjugate-gradient steps per solve (README: measured error against the exact solve)."""

INPUT_PRECISIONS = ("ieee", "tf32x3", "tf32")


# ---------------------------------------------------------------------------------------------------------------
# shared device functions


@triton.jit
def _load_rows(ptr, rows, cols, n_rows, n_cols, stride):
    """Rows ``rows`` and columns ``cols`` of a row-major ``[n_rows, n_cols]`` view (row stride ``stride``), fp32,
    zero outside."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    offs = tl.cast(rows[:, None], tl.int64) * stride + cols[None, :]
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, rows, cols, n_rows, n_cols, stride):
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    offs = tl.cast(rows[:, None], tl.int64) * stride + cols[None, :]
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _probs(q, k, lse, rows, cols, T, scale, PREC: tl.constexpr):
    """Normalised softmax weights ``w_ts`` of a ``[BT, BS]`` tile: 0 above the diagonal and on padding rows."""
    sc = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
    valid = (cols[None, :] <= rows[:, None]) & (rows[:, None] < T)
    return tl.exp(tl.where(valid, sc - lse[:, None], float("-inf")))


@triton.jit
def _stats_sweep(
    q,
    k_ptr,
    v_ptr,
    rows,
    offs_k,
    offs_v,
    hi,
    T,
    K,
    V,
    stride_k,
    stride_v,
    scale,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    """One sweep of online softmax: ``lse``, ``kbar = sum w k`` and ``vbar = sum w v`` of the query block."""
    m = tl.full([BT], -1e30, dtype=tl.float32)
    l = tl.zeros([BT], dtype=tl.float32)
    k_acc = tl.zeros([BT, BK], dtype=tl.float32)
    v_acc = tl.zeros([BT, BV], dtype=tl.float32)
    for s0 in range(0, hi, BS):
        cols = s0 + tl.arange(0, BS)
        k = _load_rows(k_ptr, cols, offs_k, T, K, stride_k)
        v = _load_rows(v_ptr, cols, offs_v, T, V, stride_v)
        sc = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
        valid = (cols[None, :] <= rows[:, None]) & (rows[:, None] < T)
        sc = tl.where(valid, sc, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(sc - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        k_acc = k_acc * alpha[:, None] + tl.dot(p, k, input_precision=PREC)
        v_acc = v_acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        m = m_new
    has_keys = l > 0  # false only on padding rows
    l_safe = tl.where(has_keys, l, 1.0)
    lse = tl.where(has_keys, m + tl.log(l_safe), 0.0)
    return lse, k_acc / l_safe[:, None], v_acc / l_safe[:, None]


@triton.jit
def _cov_matvec(
    q,
    kbar,
    x,
    lse,
    k_ptr,
    rows,
    offs_k,
    hi,
    T,
    K,
    stride_k,
    scale,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    PREC: tl.constexpr,
):
    """``S_kk x`` for every row of the block, ``S_kk = sum_s w_ts (k_s - kbar_t)(k_s - kbar_t)^T``: one sweep."""
    a = tl.sum(kbar * x, 1)
    acc = tl.zeros([BT, BK], dtype=tl.float32)
    tot = tl.zeros([BT], dtype=tl.float32)
    for s0 in range(0, hi, BS):
        cols = s0 + tl.arange(0, BS)
        k = _load_rows(k_ptr, cols, offs_k, T, K, stride_k)
        w = _probs(q, k, lse, rows, cols, T, scale, PREC)
        wc = w * (tl.dot(x, tl.trans(k), input_precision=PREC) - a[:, None])
        acc += tl.dot(wc, k, input_precision=PREC)
        tot += tl.sum(wc, 1)
    return acc - kbar * tot[:, None]


@triton.jit
def _cg_solve(
    q,
    kbar,
    b,
    lse,
    k_ptr,
    rows,
    offs_k,
    hi,
    T,
    K,
    stride_k,
    scale,
    ridge,
    cg_iters,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    PREC: tl.constexpr,
):
    """``cg_iters`` conjugate-gradient steps from 0 on ``(S_kk + ridge I) x = b``, all rows of the block in
    lockstep (each row its own step sizes)."""
    x = tl.zeros([BT, BK], dtype=tl.float32)
    r = b
    p = b
    rr = tl.sum(r * r, 1)
    for _ in range(cg_iters):
        Ap = _cov_matvec(q, kbar, p, lse, k_ptr, rows, offs_k, hi, T, K, stride_k, scale, BT, BS, BK, PREC)
        Ap += ridge * p
        pAp = tl.sum(p * Ap, 1)
        alpha = tl.where(pAp > 0, rr / tl.where(pAp > 0, pAp, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * Ap
        rr_new = tl.sum(r * r, 1)
        beta = tl.where(rr > 0, rr_new / tl.where(rr > 0, rr, 1.0), 0.0)
        p = r + beta[:, None] * p
        rr = rr_new
    return x


# ---------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _hosa_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    y_ptr,
    lse_ptr,
    kbar_ptr,
    z_ptr,
    T,
    H,
    K,
    V,
    scale,
    ridge,
    cg_iters,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    i_t = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b = tl.cast(i_bh // H, tl.int64)
    i_h = tl.cast(i_bh % H, tl.int64)
    # [B, T, H, D] tensors: element (b, t, h, d) at ((b T + t) H + h) D + d
    q_ptr += (i_b * T * H + i_h) * K
    k_ptr += (i_b * T * H + i_h) * K
    kbar_ptr += (i_b * T * H + i_h) * K
    z_ptr += (i_b * T * H + i_h) * K
    v_ptr += (i_b * T * H + i_h) * V
    y_ptr += (i_b * T * H + i_h) * V
    lse_ptr += tl.cast(i_bh, tl.int64) * T  # [B, H, T]

    rows = i_t * BT + tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    hi = tl.minimum((i_t + 1) * BT, T)
    q = _load_rows(q_ptr, rows, offs_k, T, K, H * K)

    lse, kbar, vbar = _stats_sweep(
        q, k_ptr, v_ptr, rows, offs_k, offs_v, hi, T, K, V, H * K, H * V, scale, BT, BS, BK, BV, PREC
    )
    z = _cg_solve(
        q, kbar, q - kbar, lse, k_ptr, rows, offs_k, hi, T, K, H * K, scale, ridge, cg_iters, BT, BS, BK, PREC
    )

    # y = vbar + sum_s w_ts (v_s - vbar_t) c_ts,  c_ts = (k_s - kbar_t) . z_t
    a = tl.sum(kbar * z, 1)
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    tot = tl.zeros([BT], dtype=tl.float32)
    for s0 in range(0, hi, BS):
        cols = s0 + tl.arange(0, BS)
        k = _load_rows(k_ptr, cols, offs_k, T, K, H * K)
        v = _load_rows(v_ptr, cols, offs_v, T, V, H * V)
        w = _probs(q, k, lse, rows, cols, T, scale, PREC)
        wc = w * (tl.dot(z, tl.trans(k), input_precision=PREC) - a[:, None])
        acc += tl.dot(wc, v, input_precision=PREC)
        tot += tl.sum(wc, 1)
    y = vbar + acc - vbar * tot[:, None]

    _store_rows(y_ptr, y, rows, offs_v, T, V, H * V)
    _store_rows(kbar_ptr, kbar, rows, offs_k, T, K, H * K)
    _store_rows(z_ptr, z, rows, offs_k, T, K, H * K)
    tl.store(lse_ptr + rows, lse, mask=rows < T)


# ---------------------------------------------------------------------------------------------------------------
# backward
#
# With u_ts = dy_t . v_s, ubar = sum w u, h = sum w (u - ubar)(k - kbar), zeta = (S_kk + ridge I)^{-1} h,
# c_ts = (k_s - kbar_t) . z_t, xi_ts = (k_s - kbar_t) . zeta_t, D_t = ubar_t + ridge zeta_t . z_t:
#   dv_s = sum_t w_ts (1 + c_ts) dy_t
#   ds_ts = w_ts ((u_ts - xi_ts)(1 + c_ts) - ubar_t c_ts - D_t)                 (gradient of the scores)
#   dq_t = zeta_t + scale sum_s ds_ts k_s
#   dk_s = sum_t w_ts ((u_ts - ubar_t - xi_ts) z_t - (1 + c_ts) zeta_t) + scale sum_t ds_ts q_t


@triton.jit
def _hosa_bwd_query_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    dy_ptr,
    lse_ptr,
    kbar_ptr,
    z_ptr,
    dq_ptr,
    zeta_ptr,
    ubar_ptr,
    delta_ptr,
    T,
    H,
    K,
    V,
    scale,
    ridge,
    cg_iters,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    i_t = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b = tl.cast(i_bh // H, tl.int64)
    i_h = tl.cast(i_bh % H, tl.int64)
    q_ptr += (i_b * T * H + i_h) * K
    k_ptr += (i_b * T * H + i_h) * K
    kbar_ptr += (i_b * T * H + i_h) * K
    z_ptr += (i_b * T * H + i_h) * K
    dq_ptr += (i_b * T * H + i_h) * K
    zeta_ptr += (i_b * T * H + i_h) * K
    v_ptr += (i_b * T * H + i_h) * V
    dy_ptr += (i_b * T * H + i_h) * V
    lse_ptr += tl.cast(i_bh, tl.int64) * T
    ubar_ptr += tl.cast(i_bh, tl.int64) * T
    delta_ptr += tl.cast(i_bh, tl.int64) * T

    rows = i_t * BT + tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    hi = tl.minimum((i_t + 1) * BT, T)
    q = _load_rows(q_ptr, rows, offs_k, T, K, H * K)
    kbar = _load_rows(kbar_ptr, rows, offs_k, T, K, H * K)
    z = _load_rows(z_ptr, rows, offs_k, T, K, H * K)
    dy = _load_rows(dy_ptr, rows, offs_v, T, V, H * V)
    lse = tl.load(lse_ptr + rows, mask=rows < T, other=0.0)

    # h = sum_s w_ts u_ts k_s - ubar_t kbar_t
    h = tl.zeros([BT, BK], dtype=tl.float32)
    ubar = tl.zeros([BT], dtype=tl.float32)
    for s0 in range(0, hi, BS):
        cols = s0 + tl.arange(0, BS)
        k = _load_rows(k_ptr, cols, offs_k, T, K, H * K)
        v = _load_rows(v_ptr, cols, offs_v, T, V, H * V)
        w = _probs(q, k, lse, rows, cols, T, scale, PREC)
        wu = w * tl.dot(dy, tl.trans(v), input_precision=PREC)
        h += tl.dot(wu, k, input_precision=PREC)
        ubar += tl.sum(wu, 1)
    h -= ubar[:, None] * kbar

    zeta = _cg_solve(q, kbar, h, lse, k_ptr, rows, offs_k, hi, T, K, H * K, scale, ridge, cg_iters, BT, BS, BK, PREC)
    delta = ubar + ridge * tl.sum(zeta * z, 1)

    a_z = tl.sum(kbar * z, 1)
    a_zeta = tl.sum(kbar * zeta, 1)
    dq = tl.zeros([BT, BK], dtype=tl.float32)
    for s0 in range(0, hi, BS):
        cols = s0 + tl.arange(0, BS)
        k = _load_rows(k_ptr, cols, offs_k, T, K, H * K)
        v = _load_rows(v_ptr, cols, offs_v, T, V, H * V)
        w = _probs(q, k, lse, rows, cols, T, scale, PREC)
        u = tl.dot(dy, tl.trans(v), input_precision=PREC)
        c = tl.dot(z, tl.trans(k), input_precision=PREC) - a_z[:, None]
        xi = tl.dot(zeta, tl.trans(k), input_precision=PREC) - a_zeta[:, None]
        ds = w * ((u - xi) * (1.0 + c) - ubar[:, None] * c - delta[:, None])
        dq += tl.dot(ds, k, input_precision=PREC)
    dq = zeta + scale * dq

    _store_rows(dq_ptr, dq, rows, offs_k, T, K, H * K)
    _store_rows(zeta_ptr, zeta, rows, offs_k, T, K, H * K)
    tl.store(ubar_ptr + rows, ubar, mask=rows < T)
    tl.store(delta_ptr + rows, delta, mask=rows < T)


@triton.jit
def _hosa_bwd_key_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    dy_ptr,
    lse_ptr,
    kbar_ptr,
    z_ptr,
    zeta_ptr,
    ubar_ptr,
    delta_ptr,
    dk_ptr,
    dv_ptr,
    T,
    H,
    K,
    V,
    scale,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b = tl.cast(i_bh // H, tl.int64)
    i_h = tl.cast(i_bh % H, tl.int64)
    q_ptr += (i_b * T * H + i_h) * K
    k_ptr += (i_b * T * H + i_h) * K
    kbar_ptr += (i_b * T * H + i_h) * K
    z_ptr += (i_b * T * H + i_h) * K
    zeta_ptr += (i_b * T * H + i_h) * K
    dk_ptr += (i_b * T * H + i_h) * K
    v_ptr += (i_b * T * H + i_h) * V
    dy_ptr += (i_b * T * H + i_h) * V
    dv_ptr += (i_b * T * H + i_h) * V
    lse_ptr += tl.cast(i_bh, tl.int64) * T
    ubar_ptr += tl.cast(i_bh, tl.int64) * T
    delta_ptr += tl.cast(i_bh, tl.int64) * T

    s0 = i_s * BS
    cols = s0 + tl.arange(0, BS)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    k = _load_rows(k_ptr, cols, offs_k, T, K, H * K)
    v = _load_rows(v_ptr, cols, offs_v, T, V, H * V)
    dk = tl.zeros([BS, BK], dtype=tl.float32)
    dv = tl.zeros([BS, BV], dtype=tl.float32)
    for t0 in range(s0, T, BT):
        rows = t0 + tl.arange(0, BT)
        q = _load_rows(q_ptr, rows, offs_k, T, K, H * K)
        kbar = _load_rows(kbar_ptr, rows, offs_k, T, K, H * K)
        z = _load_rows(z_ptr, rows, offs_k, T, K, H * K)
        zeta = _load_rows(zeta_ptr, rows, offs_k, T, K, H * K)
        dy = _load_rows(dy_ptr, rows, offs_v, T, V, H * V)
        lse = tl.load(lse_ptr + rows, mask=rows < T, other=0.0)
        ubar = tl.load(ubar_ptr + rows, mask=rows < T, other=0.0)
        delta = tl.load(delta_ptr + rows, mask=rows < T, other=0.0)

        w = _probs(q, k, lse, rows, cols, T, scale, PREC)
        u = tl.dot(dy, tl.trans(v), input_precision=PREC)
        c = tl.dot(z, tl.trans(k), input_precision=PREC) - tl.sum(kbar * z, 1)[:, None]
        xi = tl.dot(zeta, tl.trans(k), input_precision=PREC) - tl.sum(kbar * zeta, 1)[:, None]
        w1c = w * (1.0 + c)
        ds = w * ((u - xi) * (1.0 + c) - ubar[:, None] * c - delta[:, None])
        dv += tl.dot(tl.trans(w1c), dy, input_precision=PREC)
        dk += tl.dot(tl.trans(w * (u - ubar[:, None] - xi)), z, input_precision=PREC)
        dk -= tl.dot(tl.trans(w1c), zeta, input_precision=PREC)
        dk += scale * tl.dot(tl.trans(ds), q, input_precision=PREC)

    _store_rows(dk_ptr, dk, cols, offs_k, T, K, H * K)
    _store_rows(dv_ptr, dv, cols, offs_v, T, V, H * V)


# ---------------------------------------------------------------------------------------------------------------
# launch


def _configs():
    # the first one is what the interpreter keeps
    return [
        triton.Config({"BT": 64, "BS": 64}, num_warps=4, num_stages=2),
        triton.Config({"BT": 64, "BS": 32}, num_warps=4, num_stages=2),
        triton.Config({"BT": 32, "BS": 64}, num_warps=4, num_stages=2),
        triton.Config({"BT": 64, "BS": 64}, num_warps=8, num_stages=2),
        triton.Config({"BT": 128, "BS": 64}, num_warps=8, num_stages=2),
        triton.Config({"BT": 32, "BS": 32}, num_warps=4, num_stages=3),
    ]


_KEY = ["BK", "BV", "PREC"]
_tuned = {
    kernel: autotune(_configs(), key=_KEY)(kernel)
    for kernel in (_hosa_fwd_kernel, _hosa_bwd_query_kernel, _hosa_bwd_key_kernel)
}


def _width(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _launch(kernel, blocks: tuple[int | None, int | None], n_rows_of, T: int, BH: int, *args, **meta):
    """Run ``kernel`` with the given ``(BT, BS)`` or, when both are None, through its autotuner."""
    BT, BS = blocks
    if BT is None and BS is None:
        _tuned[kernel][lambda m: (triton.cdiv(T, m[n_rows_of]), BH)](*args, **meta)
    else:
        BT, BS = BT or 64, BS or 64
        n = {"BT": BT, "BS": BS}[n_rows_of]
        kernel[(triton.cdiv(T, n), BH)](*args, **meta, BT=BT, BS=BS, num_warps=4)


def _on_device(x: torch.Tensor):
    """Launch on ``x``'s GPU, not the current one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _check_blocks(*blocks: int | None) -> None:
    for b in blocks:
        if b is not None and (b < 16 or b & (b - 1)):
            raise ValueError(f"block sizes must be powers of two >= 16, got {b}")


def hosa_fwd(q, k, v, ridge, scale, cg_iters, block_t=None, block_s=None, input_precision="ieee"):
    """Forward launch. Returns ``y [B, T, H, V]`` (``v``'s dtype) and the fp32 residuals ``lse [B, H, T]``,
    ``kbar [B, T, H, K]`` and ``z [B, T, H, K]`` that the backward needs."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    y = torch.empty(B, T, H, V, dtype=v.dtype, device=v.device)
    lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)
    kbar = torch.empty(B, T, H, K, dtype=torch.float32, device=q.device)
    z = torch.empty_like(kbar)
    meta = {"BK": _width(K), "BV": _width(V), "PREC": input_precision}
    args = (q, k, v, y, lse, kbar, z, T, H, K, V, scale, ridge, cg_iters)
    with _on_device(q):
        _launch(_hosa_fwd_kernel, (block_t, block_s), "BT", T, B * H, *args, **meta)
    return y, lse, kbar, z


def hosa_bwd(q, k, v, dy, lse, kbar, z, ridge, scale, cg_iters, block_t=None, block_s=None, input_precision="ieee"):
    """Backward launches: ``dq, dk, dv`` in the dtypes of ``q, k, v``."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    meta = {"BK": _width(K), "BV": _width(V), "PREC": input_precision}
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    zeta = torch.empty_like(kbar)
    ubar, delta = torch.empty_like(lse), torch.empty_like(lse)
    query_args = (q, k, v, dy, lse, kbar, z, dq, zeta, ubar, delta, T, H, K, V, scale, ridge, cg_iters)
    key_args = (q, k, v, dy, lse, kbar, z, zeta, ubar, delta, dk, dv, T, H, K, V, scale)
    with _on_device(q):
        # the key kernel reads zeta, ubar and delta, which the query kernel writes
        _launch(_hosa_bwd_query_kernel, (block_t, block_s), "BT", T, B * H, *query_args, **meta)
        _launch(_hosa_bwd_key_kernel, (block_t, block_s), "BS", T, B * H, *key_args, **meta)
    return dq, dk, dv


class ParallelHOSAFunction(torch.autograd.Function):
    """Autograd wrapper: Triton forward, implicit-function Triton backward (a second CG solve per query)."""

    @staticmethod
    def forward(ctx, q, k, v, ridge, scale, cg_iters, block_t, block_s, input_precision):
        q, k, v = (x.contiguous() for x in (q, k, v))
        y, lse, kbar, z = hosa_fwd(q, k, v, ridge, scale, cg_iters, block_t, block_s, input_precision)
        ctx.save_for_backward(q, k, v, lse, kbar, z)
        ctx.args = (ridge, scale, cg_iters, block_t, block_s, input_precision)
        return y

    @staticmethod
    def backward(ctx, dy):
        q, k, v, lse, kbar, z = ctx.saved_tensors
        ridge, scale, cg_iters, block_t, block_s, input_precision = ctx.args
        dq, dk, dv = hosa_bwd(
            q, k, v, dy.contiguous(), lse, kbar, z, ridge, scale, cg_iters, block_t, block_s, input_precision
        )
        return dq, dk, dv, None, None, None, None, None, None


def parallel_hosa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = DEFAULT_RIDGE,
    scale: float | None = None,
    cg_iters: int = DEFAULT_CG_ITERS,
    block_t: int | None = None,
    block_s: int | None = None,
    input_precision: str = "ieee",
) -> torch.Tensor:
    """Higher-order (p = 1, local-linear) causal softmax attention, Triton forward and backward.

    ``y_t = vbar_t + S_vk (S_kk + ridge I)^{-1} (q_t - kbar_t)`` with softmax weights
    ``softmax_s(scale * q_t . k_s)``, ``s <= t`` (:func:`kernels.hosa.naive.naive_hosa` is the reference).

    Args:
        q: queries ``[B, T, H, K]`` (fp32, fp16 or bf16); the fit is evaluated at ``q`` itself.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        ridge: ``lambda > 0`` on the slope; bounds the CG condition number by
            ``1 + lambda_max(S_kk) / ridge``.
        scale: softmax temperature, ``K ** -0.5`` when None.
        cg_iters: conjugate-gradient steps of each solve (one forward solve, one more in the backward).
        block_t: queries per program (power of two >= 16); with ``block_s`` None for both, autotuned on GPU.
        block_s: keys per sweep step (power of two >= 16).
        input_precision: ``tl.dot`` precision of the fp32 products on a GPU: ``"ieee"`` (fp32, the default),
            ``"tf32x3"`` (near-fp32 on tensor cores) or ``"tf32"`` (10-bit mantissas inside every product, the
            CG vectors included: fast, but it bounds the accuracy of the solve). Ignored by the interpreter.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype.
    """
    if q.shape != k.shape or q.dim() != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"expected q, k [B, T, H, K] and v [B, T, H, V], got {q.shape}, {k.shape}, {v.shape}")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0 (the system is singular for prefixes of <= K keys), got {ridge}")
    if cg_iters < 0:
        raise ValueError(f"cg_iters must be >= 0, got {cg_iters}")
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision must be one of {INPUT_PRECISIONS}, got {input_precision!r}")
    _check_blocks(block_t, block_s)
    B, T, H, K = k.shape
    if T == 0:
        return v.new_zeros(B, 0, H, v.shape[-1])
    scale = K**-0.5 if scale is None else float(scale)
    return ParallelHOSAFunction.apply(q, k, v, float(ridge), scale, int(cg_iters), block_t, block_s, input_precision)
