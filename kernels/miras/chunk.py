"""Triton chunk kernels of the Miras memories (section 5.4): forward and backward, varlen, initial/final state.

This transcribes ``naive_chunk_miras`` (``read='chunk'``) for the linear memory ``M(x) = x W``, ``W[K, V]``;
``chunk_mlp.py`` does the MLP memory on the same device functions (``common.py``), and :func:`chunk_miras` serves
both.
Per sequence, head and value block (:func:`value_block`) one program walks the chunks in order, holding its
columns of the chunk-start state ``S`` in fp32 registers. For a chunk of ``BT`` tokens, with
``g_i = sum_{m <= i} log alpha_m`` (channel-wise on the key axis) and the lq scale ``c = ||S||_q^-(q-2)`` (1 unless
``retention='lq'``)::

    R = (k * c) S - v,   P = psi(R)                           gradients at the chunk start (Eq. 28)
    A_ij = sum_f (q * c)_if (eta * k)_jf exp(g_if - g_jf),  j <= i
    o = (q * c * exp(g)) S - A P                              the dual read of every token (Eq. 29)
    S' = exp(g_last) S - (eta * k * exp(g_last - g))^T P      the chunk's end state

``psi`` is ``dl/dM(k)`` of the attentional bias (``naive.bias_grad``, Eq. 8-17). ``A`` and the decay-weighted
sums of the backward come from ``kernels.miras.decay`` (16-row blocks, never ``1 / exp(g)``), so any gate value
is safe. The forward stores every
chunk-start state (fp32); the backward walks the chunks in reverse, recomputes the chunk from its stored
state, and carries ``dS``. See ``kernels/miras/README.md`` for the derivation of each gradient.

Covered: every bias; for the linear memory retention ``none``, ``l2``, ``lq`` (both scopes), ``elastic`` and
``kl``, for the 2-layer MLP memory ``none``, ``l2``, ``lq`` and ``kl`` (Moneta, Yaad, Memora); ``algorithm='gd'``.
Memora's ``kl`` takes the exact step on each chunk's first token (the lag token, Eq. 30) and carries
``c Softmax(e^{g_last} log S - U)`` out of the chunk; the other rows read the weight-space steps
(``kl_read='linear'``) or the first-order softmax step (``'tangent'``: ``common._tangent_rows`` and centred
queries in ``A``). Anything else (momentum) raises ``NotImplementedError`` naming the field, and the layer stays
on the torch path.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.miras.chunk_linear import ChunkLinearFunction, covers
from kernels.miras.chunk_mlp import chunk_miras_mlp
from kernels.miras.common import (
    BIAS_CODES,
    KL_TANGENT,
    LAUNCH_CONFIGS,
    _centre,
    _chunk_inputs,
    _chunk_offsets,
    _log_floor,
    _lq_grad,
    _lq_scale,
    _or_dummy,
    _psi,
    _psi_vjp,
    _rows,
    _simplex,
    _simplex_vjp,
    _soft_threshold_tl,
    _store,
    _tangent_rows,
    _tangent_rows_dw,
    _tangent_rows_vjp,
    bias_code,
    chunk_retention,
    kernel_gates,
)
from kernels.miras.decay import check_chunk_size, dot, mix, mix_t, scores
from kernels.miras.naive import _initial, _lq_normalise
from kernels.miras.spec import MemorySpec
from kernels.utils import autotune


def check_supported(spec: MemorySpec, decoding: bool = True) -> None:
    """Raise ``NotImplementedError`` naming the field when ``spec`` is not on the Triton kernels: the chunk kernels
    and, with ``decoding``, the decoding ones (``fused_recurrent_miras``), which continue a chunk run and so must
    read as it does. Memora's tangent read (``kl_read='tangent'``) is on the chunk kernels only."""
    mlp = spec.arch == "mlp"
    for name, value, allowed in (
        ("retention", spec.retention, ("none", "l2", "lq", "kl") if mlp else ("none", "l2", "lq", "elastic", "kl")),
        ("algorithm", spec.algorithm, ("gd",)),
        ("read", spec.read, ("chunk",)),
        ("depth", spec.depth, (2,) if mlp else (spec.depth,)),
        ("residual_norm", spec.residual_norm, (True,) if mlp else (spec.residual_norm,)),
        ("kl_axis", spec.kl_axis, ("fan_in",) if spec.retention == "kl" else (spec.kl_axis,)),
        ("kl_lag", spec.kl_lag, (True,) if spec.retention == "kl" else (spec.kl_lag,)),
    ):
        if value not in allowed:
            raise NotImplementedError(
                f"memory.{name}={value!r} has no Triton chunk kernel yet; on the kernel: "
                + ", ".join(map(repr, allowed))
            )
    if decoding and spec.retention == "kl" and spec.kl_read != "linear":
        raise NotImplementedError(
            f"memory.kl_read={spec.kl_read!r} has no Triton decoding kernel (fused_recurrent_miras) yet; on the "
            "kernel: 'linear'"
        )


def max_head_dim(spec: MemorySpec) -> int:
    """Widest head (padded to a power of two) whose forward and backward programs fit the 227 KB of shared memory
    an sm_90 block may use, from the ahead-of-time compile in ``reports/benchmarks/miras_resources_sm_90a.md``
    (chunk 64). At 128 the linear memory fits when its value axis splits (:func:`value_block`); whole 128-column
    heads (lq, the norm-based biases) need 384 KB in the backward. The MLP memories need at most 160 KB with the
    32-column tiles of ``chunk_mlp.tile_e``.
    """
    if spec.arch == "mlp" or value_block(spec, 128, 128) < 128:
        return 128
    return 64


def check_head_dim(spec: MemorySpec, head_dim: int) -> None:
    """Raise ``NotImplementedError`` when heads of ``head_dim`` are too wide for the GPU programs of ``spec``."""
    padded, widest = max(16, triton.next_power_of_2(head_dim)), max_head_dim(spec)
    if padded > widest:
        raise NotImplementedError(
            f"head_dim={head_dim} (padded to {padded}) is wider than the {widest} the Triton kernels fit in a GPU "
            f"block's shared memory for memory.arch={spec.arch!r}, memory.retention={spec.retention!r}, "
            f"memory.bias={spec.bias!r}"
        )


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    h0_ptr,
    o_ptr,
    hs_ptr,
    ht_ptr,
    cu_ptr,
    chunk_ptr,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    sharp,
    p,
    eps,
    q_exp,
    eps_q,
    gamma,
    floor,
    scale,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    HAS_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_n, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    TANGENT: tl.constexpr = RETENTION == KL_TANGENT
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
        first_chunk = tl.load(chunk_ptr + i_n).to(tl.int64)
    else:
        bos = tl.cast(i_n, tl.int64) * T
        first_chunk = tl.cast(i_n, tl.int64) * tl.cdiv(T, BT)
    sk, sv = H * K, H * V
    base_k, base_v = bos * sk + i_h * K, bos * sv + i_h * V
    offs_k, offs_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    lag = (tl.arange(0, BT) == 0)[:, None]
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        S = _rows(h0_ptr + state, offs_k, offs_v, K, V, V)
    for it in range(tl.cdiv(T, BT)):
        _store(hs_ptr + ((first_chunk + it) * H + i_h) * K * V, S, offs_k, offs_v, K, V, V)
        rows = it * BT + tl.arange(0, BT)
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base_k,
            k_ptr + base_k,
            v_ptr + base_v,
            eta_ptr + base_k,
            la_ptr + base_k,
            d_ptr + base_v,
            rows,
            offs_k,
            offs_v,
            T,
            K,
            V,
            sk,
            sv,
            HAS_ALPHA,
            HAS_DELTA,
            BT,
        )
        if RETENTION >= 4:
            la0 = tl.sum(tl.where(lag, g, 0.0), 0)
            k0, v0, eta0 = tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, eta, 0.0)
            P0 = _psi(dot(k0, S) - v0, v0, tl.where(lag, d, 0.0), V, sharp, p, eps, BIAS)
            L0 = tl.exp(la0)[:, None] * _log_floor(S, floor) - dot(tl.trans(eta0 * k0), P0)
            S = _simplex(L0, offs_k, K, offs_v, V, scale)
            o_lag = dot(tl.where(lag, q, 0.0), S)
            eta = tl.where(lag, 0.0, eta)
            g = g - la0[None, :]
            g_last = g_last - la0
        c, _ = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        qc, ek = q * c[None, :], eta * k
        r = dot(k * c[None, :], S) - v
        P = _psi(r, v, d, V, sharp, p, eps, BIAS)
        if TANGENT:
            A = scores(_centre(q, offs_k, K) * (scale / K), ek, g, BT, BK)
            o = _tangent_rows(q, S, tl.exp(g) - 1.0, floor, scale) - dot(A, P)
        else:
            A = scores(qc, ek, g, BT, BK)
            o = dot(qc * tl.exp(g), S) - dot(A, P)
        if RETENTION >= 4:
            o = tl.where(lag, o_lag, o)
        _store(o_ptr + base_v, o, rows, offs_v, T, V, sv)
        kb = ek * tl.exp(g_last[None, :] - g)
        if RETENTION >= 4:
            S = _simplex(
                tl.exp(g_last)[:, None] * _log_floor(S, floor) - dot(tl.trans(kb), P), offs_k, K, offs_v, V, scale
            )
        else:
            S = tl.exp(g_last)[:, None] * S - dot(tl.trans(kb), P)
        if RETENTION == 3:
            S = _soft_threshold_tl(S, gamma)
    if STORE_HT:
        _store(ht_ptr + state, S, offs_k, offs_v, K, V, V)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    do_ptr,
    dht_ptr,
    cu_ptr,
    chunk_ptr,
    dq_ptr,
    dk_ptr,
    dv_ptr,
    deta_ptr,
    dla_ptr,
    dd_ptr,
    dh0_ptr,
    T,
    key_block,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    sharp,
    p,
    eps,
    q_exp,
    eps_q,
    gamma,
    floor,
    scale,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    HAS_H0: tl.constexpr,
    HAS_DHT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_n, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    TANGENT: tl.constexpr = RETENTION == KL_TANGENT
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
        first_chunk = tl.load(chunk_ptr + i_n).to(tl.int64)
    else:
        bos = tl.cast(i_n, tl.int64) * T
        first_chunk = tl.cast(i_n, tl.int64) * tl.cdiv(T, BT)
    sk, sv = H * K, H * V
    base_k, base_v = bos * sk + i_h * K, bos * sv + i_h * V
    # key-side gradients are this value block's share; the blocks' shares are added up after the launch
    part = base_k + tl.cast(i_v, tl.int64) * key_block
    offs_k, offs_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    i = tl.arange(0, BT)
    causal = i[None, :] <= i[:, None]
    last = (i == BT - 1)[:, None]
    lag = (i == 0)[:, None]
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dS = _rows(dht_ptr + state, offs_k, offs_v, K, V, V)
    n_chunks = tl.cdiv(T, BT)
    for back in range(n_chunks):
        it = n_chunks - 1 - back
        S = _rows(hs_ptr + ((first_chunk + it) * H + i_h) * K * V, offs_k, offs_v, K, V, V)
        rows = it * BT + tl.arange(0, BT)
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base_k,
            k_ptr + base_k,
            v_ptr + base_v,
            eta_ptr + base_k,
            la_ptr + base_k,
            d_ptr + base_v,
            rows,
            offs_k,
            offs_v,
            T,
            K,
            V,
            sk,
            sv,
            HAS_ALPHA,
            HAS_DELTA,
            BT,
        )
        do = _rows(do_ptr + base_v, rows, offs_v, T, V, sv)
        if RETENTION >= 4:
            S_start = S
            la0 = tl.sum(tl.where(lag, g, 0.0), 0)
            k0, v0, d0 = tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, d, 0.0)
            eta0, q0 = tl.where(lag, eta, 0.0), tl.where(lag, q, 0.0)
            r0 = dot(k0, S) - v0
            P0 = _psi(r0, v0, d0, V, sharp, p, eps, BIAS)
            S = _simplex(
                tl.exp(la0)[:, None] * _log_floor(S, floor) - dot(tl.trans(eta0 * k0), P0),
                offs_k,
                K,
                offs_v,
                V,
                scale,
            )
            eta = tl.where(lag, 0.0, eta)
            g = g - la0[None, :]
            g_last = g_last - la0
            do_lag = tl.where(lag, do, 0.0)
            do = tl.where(lag, 0.0, do)
        c, power = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        qc, kc, ek = q * c[None, :], k * c[None, :], eta * k
        r = dot(kc, S) - v
        P = _psi(r, v, d, V, sharp, p, eps, BIAS)
        if TANGENT:
            # the write part of the tangent read: centred queries at the fan-in mean c / K
            qc = _centre(q, offs_k, K) * (scale / K)
        A = scores(qc, ek, g, BT, BK)
        eg = tl.exp(g)
        kb = ek * tl.exp(g_last[None, :] - g)
        decay_last = tl.exp(g_last)
        if RETENTION == 3:
            end = decay_last[:, None] * S - dot(tl.trans(kb), P)
            dS = tl.where(tl.abs(end) > gamma, dS, 0.0)
        if RETENTION >= 4:
            logS = _log_floor(S, floor)
            dU = _simplex_vjp(
                _simplex(decay_last[:, None] * logS - dot(tl.trans(kb), P), offs_k, K, offs_v, V, scale), dS, scale
            )
            carry = tl.where(S > floor, decay_last[:, None] * dU / tl.maximum(S, floor), 0.0)
            dg_last = decay_last * tl.sum(logS * dU, 1)
        else:
            dU = dS
            carry = decay_last[:, None] * dS
            dg_last = decay_last * tl.sum(S * dS, 1)

        dP = -dot(tl.trans(A), do) - dot(kb, dU)
        dr, dd = _psi_vjp(r, d, dP, V, sharp, p, eps, BIAS)
        if BIAS == 0:
            dv = -dP
        else:
            dv = -dr
        dA = tl.where(causal, -dot(do, tl.trans(P)), 0.0)
        dkb = -dot(P, tl.trans(dU))

        mA, mA_t = mix(dA, ek, g, BT, BK), mix_t(dA, qc, g, BT, BK)
        if TANGENT:
            dqc, dfade = _tangent_rows_vjp(do, q, S, eg - 1.0, floor, scale)
            dS_prev = carry + _tangent_rows_dw(do, q, S, eg - 1.0, floor, scale) + dot(tl.trans(kc), dr)
            dqc += _centre(mA, offs_k, K) * (scale / K)
            dg = dfade * eg + qc * mA - ek * mA_t - dkb * kb
        else:
            dqb = dot(do, tl.trans(S))
            dS_prev = carry + dot(tl.trans(qc * eg), do) + dot(tl.trans(kc), dr)
            dqc = dqb * eg + mA
            dg = dqb * qc * eg + qc * mA - ek * mA_t - dkb * kb
        dkc = dot(dr, tl.trans(S))
        dek = mA_t + dkb * tl.exp(g_last[None, :] - g)
        dg_last += tl.sum(dkb * kb, 0)
        dg = dg + tl.where(last, dg_last[None, :], 0.0)
        if RETENTION == 2:
            dS_prev += _lq_grad(S, c, power, tl.sum(dqc * q, 0) + tl.sum(dkc * k, 0), q_exp, eps_q, LQ_ROW, BK)
        dq = dqc * c[None, :]
        dk = dkc * c[None, :] + dek * eta
        deta = dek * k
        dla = tl.sum(dg, 0)[None, :] - tl.cumsum(dg, 0) + dg
        if RETENTION >= 4:
            # the lag token: its read q_0 W_lag, then its exact step from the chunk start (Eq. 30)
            dS_prev += dot(tl.trans(q0), do_lag)
            dq += dot(do_lag, tl.trans(S))
            dL = _simplex_vjp(S, dS_prev, scale)
            a0 = tl.exp(la0)
            dek0 = -dot(P0, tl.trans(dL))
            dP0 = -dot(eta0 * k0, dL)
            dr0, dd0 = _psi_vjp(r0, d0, dP0, V, sharp, p, eps, BIAS)
            if BIAS == 0:
                dv += -dP0
            else:
                dv += -dr0
            dd += dd0
            dk += dot(dr0, tl.trans(S_start)) + dek0 * eta0
            deta = tl.where(lag, dek0 * k0, deta)
            dla = tl.where(lag, (a0 * tl.sum(dL * _log_floor(S_start, floor), 1))[None, :], dla)
            dS_prev = tl.where(S_start > floor, a0[:, None] * dL / tl.maximum(S_start, floor), 0.0)
            dS_prev += dot(tl.trans(k0), dr0)
        dS = dS_prev

        _store(dq_ptr + part, dq, rows, offs_k, T, K, sk)
        _store(dk_ptr + part, dk, rows, offs_k, T, K, sk)
        _store(dv_ptr + base_v, dv, rows, offs_v, T, V, sv)
        _store(deta_ptr + part, deta, rows, offs_k, T, K, sk)
        if HAS_ALPHA:
            _store(dla_ptr + part, dla, rows, offs_k, T, K, sk)
        if HAS_DELTA:
            _store(dd_ptr + base_v, dd, rows, offs_v, T, V, sv)
    if HAS_H0:
        _store(dh0_ptr + state, dS, offs_k, offs_v, K, V, V)


class ChunkMirasFunction(torch.autograd.Function):
    """Triton forward and backward of the linear Miras memory (inputs ``[B, T, H, D]``, gates expanded)."""

    @staticmethod
    def forward(ctx, q, k, v, eta, log_alpha, delta, h0, spec, chunk_size, cu_seqlens, output_final_state):
        B, T, H, K = q.shape
        V = v.shape[-1]
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        offsets = None if cu_seqlens is None else _chunk_offsets(cu_seqlens, chunk_size)
        n_chunks = B * triton.cdiv(T, chunk_size) if offsets is None else int(offsets[-1])
        o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
        hs = torch.empty(n_chunks, H, K, V, device=q.device, dtype=torch.float32)
        ht = torch.empty(N, H, K, V, device=q.device, dtype=torch.float32) if output_final_state else None
        scalars = _scalars(spec, K)
        meta = _meta(spec, chunk_size, K, V, log_alpha, delta)
        _fwd_kernel[program_grid(spec, N, H, K, V)](
            q,
            k,
            v,
            eta,
            *_or_dummy(hs, log_alpha, delta, h0),
            o,
            hs,
            *_or_dummy(hs, ht, cu_seqlens, offsets),
            T,
            H,
            K,
            V,
            *scalars,
            **meta,
            HAS_H0=h0 is not None,
            STORE_HT=output_final_state,
            IS_VARLEN=cu_seqlens is not None,
        )
        ctx.save_for_backward(q, k, v, eta, log_alpha, delta, h0, hs, cu_seqlens, offsets)
        ctx.spec, ctx.chunk_size = spec, chunk_size
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, eta, log_alpha, delta, h0, hs, cu_seqlens, offsets = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        f32 = dict(dtype=torch.float32, device=q.device)
        meta = _meta(ctx.spec, ctx.chunk_size, K, V, log_alpha, delta)
        NV = program_grid(ctx.spec, N, H, K, V)[-1]
        dq, dk, deta = (torch.empty(NV, *q.shape, **f32) for _ in range(3))
        dv = torch.empty(v.shape, **f32)
        dla = torch.empty(NV, *q.shape, **f32) if log_alpha is not None else None
        dd = torch.empty(v.shape, **f32) if delta is not None else None
        dh0 = torch.empty(h0.shape, **f32) if h0 is not None else None
        _bwd_kernel[(N, H, NV)](
            q,
            k,
            v,
            eta,
            *_or_dummy(hs, log_alpha, delta),
            hs,
            do.contiguous(),
            *_or_dummy(hs, dht, cu_seqlens, offsets),
            dq,
            dk,
            dv,
            deta,
            *_or_dummy(hs, dla, dd, dh0),
            T,
            q.numel(),
            H,
            K,
            V,
            *_scalars(ctx.spec, K),
            **meta,
            HAS_H0=h0 is not None,
            HAS_DHT=dht is not None,
            IS_VARLEN=cu_seqlens is not None,
        )
        dq, dk, deta, dla = (None if g is None else g.sum(0) for g in (dq, dk, deta, dla))
        cast = lambda g, like: None if g is None else g.to(like.dtype)  # noqa: E731
        return (
            cast(dq, q),
            cast(dk, k),
            cast(dv, v),
            cast(deta, eta),
            cast(dla, log_alpha),
            cast(dd, delta),
            cast(dh0, h0),
            None,
            None,
            None,
            None,
        )


def _scalars(spec: MemorySpec, K: int) -> tuple[float, ...]:
    """The kernels' float arguments; Memora's simplex scale ``c`` is ``kl_scale`` or ``sqrt(K)`` (the fan-in)."""
    scale = spec.kl_scale if spec.kl_scale is not None else math.sqrt(K)
    return (
        spec.sign_sharpness,
        spec.p,
        spec.eps,
        spec.q,
        spec.eps**spec.q,
        spec.elastic_threshold,
        spec.kl_floor,
        scale,
    )


VALUE_BLOCK = 64
"""Widest value block of the linear memory's programs (:func:`value_block`)."""


def value_block(spec: MemorySpec, K: int, V: int) -> int:
    """Value columns per program (padded): ``BK x BV <= 4096`` state elements, at most :data:`VALUE_BLOCK` (64 at
    ``K = 64``; 32 at 128, where whole 128-column heads needed 384 KB of shared memory in the backward and 64-column
    blocks 256 KB with kl, 32-column ones 192 KB: sm_90a, ``python -m benchmarks.miras_resources``). Every column of
    ``S`` evolves on its own except under the lq scale (a norm over ``S``) and the biases that take the norm of the
    residual (Huber's head switch and norm form, the robust bias): those keep the whole ``V`` in one program. The
    programs' key-side gradients add up."""
    padded, BK = max(16, triton.next_power_of_2(V)), max(16, triton.next_power_of_2(K))
    whole_rows = spec.retention == "lq" or bias_code(spec) in (BIAS_CODES["huber_head"], BIAS_CODES["huber_norm"],
                                                               BIAS_CODES["robust"])  # fmt: skip
    return padded if whole_rows else min(padded, VALUE_BLOCK, max(16, 4096 // BK))


def program_grid(spec: MemorySpec, N: int, H: int, K: int, V: int) -> tuple[int, ...]:
    """The programs of a chunk kernel for ``N`` sequences of ``H`` heads: one per (sequence, head) for the MLP
    memory, times the value blocks (:func:`value_block`) for the linear memory. Each walks all its chunks."""
    if spec.arch == "mlp":
        return (N, H)
    return (N, H, triton.cdiv(V, value_block(spec, K, V)))


def _meta(spec: MemorySpec, chunk_size: int, K: int, V: int, log_alpha, delta) -> dict:
    return dict(
        BT=chunk_size,
        BK=max(16, triton.next_power_of_2(K)),
        BV=value_block(spec, K, V),
        BIAS=bias_code(spec),
        RETENTION=chunk_retention(spec),
        LQ_ROW=spec.lq_scope == "row",
        HAS_ALPHA=log_alpha is not None,
        HAS_DELTA=delta is not None,
    )


def chunk_miras(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None,
    spec: MemorySpec,
    delta: torch.Tensor | None = None,
    initial_state=None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict | None]:
    """The chunkwise Miras memory on Triton (Eq. 28-29); the same function as :func:`naive_chunk_miras`.

    Args:
        q, k: ``[B, T, H, K]`` queries and keys; v: ``[B, T, H, V]`` values (fp32, fp16 or bf16).
        eta, alpha: learning rate and retention gate, ``[B, T, H]`` or channel-wise ``[B, T, H, K]``
            (``alpha`` may be None for ``retention='none'``).
        spec: the memory (see :func:`check_supported`).
        delta: Huber threshold / robust radius ``[B, T, H]`` or ``[B, T, H, V]`` when ``spec.needs_delta``.
        initial_state: as :func:`naive_chunk_miras` (``[N, H, K, V]`` per sequence with ``cu_seqlens``).
        output_final_state: also return the final state dict (fp32).
        cu_seqlens: ``[N + 1]`` offsets of ``N`` sequences packed into a batch of one; chunks restart at
            every sequence.
        chunk_size: tokens per chunk: 16, 32 or 64 (``kernels.miras.decay``).

    Returns:
        ``o [B, T, H, V]`` in ``q``'s dtype and the final state dict (or None).
    """
    check_supported(spec, decoding=False)
    check_chunk_size(chunk_size)
    if spec.needs_delta and delta is None:
        raise ValueError(f"memory.bias={spec.bias!r} needs delta (the Huber threshold or robust radius)")
    if spec.retention != "none" and alpha is None:
        raise ValueError(f"memory.retention={spec.retention!r} needs alpha (the retention gate)")
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError(f"cu_seqlens needs a batch of one packed sequence, got batch {q.shape[0]}")
    if spec.arch == "mlp":
        return chunk_miras_mlp(
            q, k, v, eta, alpha, spec, delta, initial_state, output_final_state, cu_seqlens, chunk_size
        )
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    h0 = None
    if initial_state is not None or spec.retention == "kl":
        # Memora starts from the uniform simplex, not from zeros: the first lag step takes its gradient there
        h0 = _initial(initial_state, spec, N, H, K, V, q.float())[0][0].float().contiguous()
    args = (q.contiguous(), k.contiguous(), v.contiguous(), *kernel_gates(spec, eta, alpha, delta, K, V), h0, spec,
            chunk_size, None if cu_seqlens is None else cu_seqlens.to(torch.int32), output_final_state)  # fmt: skip
    # retention none / l2 / elastic: the chunk-parallel kernels of chunk_linear.py
    if covers(spec):
        o, ht = ChunkLinearFunction.apply(*args, value_block(spec, K, V))
    else:
        o, ht = ChunkMirasFunction.apply(*args)
    if not output_final_state:
        return o, None
    final = {"weights": (_lq_normalise(ht, spec),) if spec.retention == "lq" else (ht,)}
    if spec.retention == "lq":
        final["accumulator"] = (ht,)
    return o, final


__all__ = ["ChunkMirasFunction", "check_head_dim", "check_supported", "chunk_miras", "max_head_dim", "value_block"]
