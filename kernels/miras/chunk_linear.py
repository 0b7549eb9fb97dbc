"""Chunk-parallel Triton kernels of the linear Miras memory ``M(x) = x W``, ``W[K, V]`` (Eq. 28-29): every bias,
retention ``none``, ``l2``, ``lq``, ``elastic`` and ``kl`` (Memora, both reads).

This transcribes ``naive_chunk_miras`` (``read='chunk'``), split as flash-linear-attention splits its chunked
delta rule: only the state recurrence runs chunk by chunk, in a light pass per (sequence, head, value block);
everything inside a chunk that the carried state does not feed back into runs in programs over (global chunk,
head, value block). With ``g`` the within-chunk cumulative log decay (channel-wise on the key axis), the lq scale
``c = ||S_c||_q^-(q-2)`` (1 unless ``retention='lq'``), ``kb = eta k e^{g_last - g}`` and
``A = scores(q c, eta k)`` (``kernels.miras.decay``)::

    forward   state pass    S_c stored;  R = (k c) S_c - v,  P = psi(R) stored;  S_{c+1} = e^{g_last} S_c - kb^T P
              output        o = (q c e^g) S_c - A P                                        (chunk-parallel)
    backward  read          dPa = -A^T do                                                  (chunk-parallel)
              state pass    dS'_c stored;  dP = dPa - kb dS'_c,  dR = psi'(R)^T dP,  dv, ddelta stored;
                            dS'_{c-1} = e^{g_last} dS'_c + (q c e^g)^T do + (k c)^T dR;  dS'_{-1} = dh0
              gradients     dq, dk, deta, dlog alpha from S_c, dS'_c, P and dR             (chunk-parallel)

``dS'_c`` is the gradient of the loss w.r.t. the end state of chunk ``c``. As in the delta rule the gradient at
the chunk start, ``P = psi(k S_c - v)``, depends on the state (non-linearly through ``common._psi`` for the l1,
lp, Huber and robust biases), so both state passes form ``R`` from the carried state. The chunk-parallel kernels
address chunks by their global index (``hs[i_c]``); with ``cu_seqlens`` a per-chunk sequence index maps it back
(chunks restart at every sequence, as ``common._chunk_offsets`` counts them).

The retentions enter the state passes alone, plus what each chunk reads of its start state:

- ``elastic`` soft-thresholds each chunk's end state (Eq. 22); the backward masks ``dS'_c`` where that end state
  lay inside ``[-gamma, gamma]``.
- ``lq`` scales keys and queries by ``c`` of the chunk-start state (a norm over its rows or all of it, so the
  value axis stays whole: ``chunk.value_block``). Every kernel recomputes ``c`` from the ``S_c`` it loads. The
  state pass adds ``dc . dc/dS`` to ``dS'``; the query half of ``dc``, ``sum_i (dq c)_i q_i``, comes from the read
  kernel (it needs no carried gradient), the key half from ``dR`` in the pass.
- ``kl`` (Memora, Eq. 27, 30-32) takes the exact step on each chunk's first token (the lag token) from ``S_c`` to
  ``S_lag = c Softmax(e^{alpha_0} log S_c - eta_0 k_0^T P_0)``, stored beside ``S_c``; the rest of the chunk runs
  from ``S_lag`` with ``eta_0 = 0`` and ``g`` counted from row 0, so every row of the read formula, the lag row
  included (its ``A`` row is 0 and its decay 1), reads ``S_lag``. The carry is ``c Softmax(e^{g_last} log S_lag -
  kb^T P)``; the backward state pass stores ``dU``, the gradient w.r.t. those logits, in place of ``dS'``, and
  leaves the lag token's key-side gradients (``dk_0, deta_0, dlog alpha_0``) for the gradient kernel. The tangent
  read (``kl_read='tangent'``) reads ``S_lag`` through ``common._tangent_rows`` and writes with centred queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

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
)
from kernels.miras.decay import dot, mix, mix_t, scores
from kernels.miras.spec import MemorySpec
from kernels.utils import autotune

RETENTIONS = ("none", "l2", "lq", "elastic", "kl")
"""Retentions of the linear memory on these kernels (all that ``chunk.check_supported`` accepts for it)."""

LQ, ELASTIC, KL = tl.constexpr(2), tl.constexpr(3), tl.constexpr(4)
"""``RETENTION`` codes (``common.RETENTION_CODES``; ``KL_TANGENT`` is 5): ``RETENTION >= KL`` is Memora."""


def covers(spec: MemorySpec) -> bool:
    """Whether ``spec`` (already accepted by ``chunk.check_supported``) runs on these kernels."""
    return spec.arch == "linear" and spec.retention in RETENTIONS


def whole_rows(spec: MemorySpec) -> bool:
    """Whether a program must hold whole value rows of the state: the lq scale is a norm over them, and Huber's head
    switch and norm form and the robust bias take the norm of each residual row."""
    return spec.retention == "lq" or bias_code(spec) in (BIAS_CODES["huber_head"], BIAS_CODES["huber_norm"],
                                                         BIAS_CODES["robust"])  # fmt: skip


@triton.jit
def _sequence(i_n, T, cu_ptr, offsets_ptr, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """First token, length and first global chunk of sequence ``i_n``."""
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
        first = tl.load(offsets_ptr + i_n).to(tl.int64)
    else:
        bos = tl.cast(i_n, tl.int64) * T
        first = tl.cast(i_n, tl.int64) * tl.cdiv(T, BT)
    return bos, T, first


@triton.jit
def _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """First token and length of the sequence holding global chunk ``i_c``, and the chunk's rows ``[BT]``."""
    if IS_VARLEN:
        i_n = tl.load(seq_ptr + i_c)
    else:
        i_n = i_c // tl.cdiv(T, BT)
    bos, T, first = _sequence(i_n, T, cu_ptr, offsets_ptr, BT, IS_VARLEN)
    return bos, T, (i_c - first) * BT + tl.arange(0, BT)


@triton.jit
def _gates(eta_ptr, la_ptr, rows, offs_k, T, K, sk, HAS_ALPHA: tl.constexpr, RETENTION: tl.constexpr,
           BT: tl.constexpr):  # fmt: skip
    """``eta`` and the cumulative log decay ``g`` of a chunk ``[BT, BK]``, and ``g``'s last row ``[BK]``; for
    Memora those of the chunk after its lag token (:func:`_after_lag`)."""
    eta = _rows(eta_ptr, rows, offs_k, T, K, sk)
    if HAS_ALPHA:
        g = tl.cumsum(_rows(la_ptr, rows, offs_k, T, K, sk), 0)
    else:
        g = tl.zeros_like(eta)
    g_last = tl.sum(tl.where((tl.arange(0, BT) == BT - 1)[:, None], g, 0.0), 0)
    if RETENTION >= KL:
        eta, g, g_last, _ = _after_lag(eta, g, g_last, BT)
    return eta, g, g_last


@triton.jit
def _after_lag(eta, g, g_last, BT: tl.constexpr):
    """Memora's chunk after the lag token (Eq. 30): no write on row 0 and the decay counted from it; and
    ``log alpha_0 [BK]``."""
    lag = (tl.arange(0, BT) == 0)[:, None]
    la0 = tl.sum(tl.where(lag, g, 0.0), 0)
    return tl.where(lag, 0.0, eta), g - la0[None, :], g_last - la0, la0


@triton.jit
def _frame(bos, i_h, i_v, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Row strides, the head's key and value offsets and the program's key and value columns."""
    sk, sv = H * K, H * V
    return sk, sv, bos * sk + i_h * K, bos * sv + i_h * V, tl.arange(0, BK), i_v * BV + tl.arange(0, BV)


@triton.jit
def _start(hs_ptr, hl_ptr, chunk, offs_k, offs_v, K, V, RETENTION: tl.constexpr):
    """The state chunk ``chunk`` reads: its start state, or Memora's after the lag token."""
    if RETENTION >= KL:
        S = _rows(hl_ptr + chunk, offs_k, offs_v, K, V, V)
    else:
        S = _rows(hs_ptr + chunk, offs_k, offs_v, K, V, V)
    return S


@triton.jit
def _queries(q, c, offs_k, K, scale, RETENTION: tl.constexpr):
    """The queries of ``A``: ``q c``, or the tangent read's centred queries at the fan-in mean ``c / K``."""
    if RETENTION == KL_TANGENT:
        out = _centre(q, offs_k, K) * (scale / K)
    else:
        out = q * c[None, :]
    return out


@triton.jit
def _read(q, c, S, g, floor, scale, RETENTION: tl.constexpr):
    """What each row reads of the (decayed) state: ``(q c e^g) S``, or the tangent read (``common._tangent_rows``)."""
    if RETENTION == KL_TANGENT:
        out = _tangent_rows(q, S, tl.exp(g) - 1.0, floor, scale)
    else:
        out = dot(q * c[None, :] * tl.exp(g), S)
    return out


@triton.jit
def _advance(S, ek, g, g_last, P):
    """The chunk's end state ``e^{g_last} S - (eta k e^{g_last - g})^T P`` (Eq. 28 at the chunk's last token)."""
    return tl.exp(g_last)[:, None] * S - dot(tl.trans(ek * tl.exp(g_last[None, :] - g)), P)


@triton.jit
def _carry(S, ek, g, g_last, P, offs_k, K, offs_v, V, floor, scale):
    """Memora's end state ``c Softmax(e^{g_last} log S - (eta k e^{g_last - g})^T P)`` (Eq. 31-32)."""
    U = tl.exp(g_last)[:, None] * _log_floor(S, floor) - dot(tl.trans(ek * tl.exp(g_last[None, :] - g)), P)
    return _simplex(U, offs_k, K, offs_v, V, scale)


@triton.jit
def _values(v_ptr, d_ptr, rows, offs_v, T, V, sv, HAS_DELTA: tl.constexpr):
    """A chunk's values and ``delta`` (0 when the bias reads none), ``[BT, BV]``."""
    v = _rows(v_ptr, rows, offs_v, T, V, sv)
    if HAS_DELTA:
        d = _rows(d_ptr, rows, offs_v, T, V, sv)
    else:
        d = tl.zeros_like(v)
    return v, d


@triton.jit
def _lag_residual(S, k0, v0, d0, V, sharp, p, eps, BIAS: tl.constexpr):
    """The lag token's residual ``k_0 S - v_0`` and gradient ``psi`` (rows other than 0 of ``k0, v0, d0`` are 0)."""
    r0 = dot(k0, S) - v0
    return r0, _psi(r0, v0, d0, V, sharp, p, eps, BIAS)


@triton.jit
def _lag_step(S, eta0, k0, P0, la0, offs_k, K, offs_v, V, floor, scale):
    """Memora's exact step on the lag token from ``S`` (Eq. 30): ``c Softmax(e^{alpha_0} log S - eta_0 k_0^T P_0)``."""
    L = tl.exp(la0)[:, None] * _log_floor(S, floor) - dot(tl.trans(eta0 * k0), P0)
    return _simplex(L, offs_k, K, offs_v, V, scale)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _fwd_state_kernel(
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    h0_ptr,
    hs_ptr,
    hl_ptr,
    p_ptr,
    ht_ptr,
    cu_ptr,
    offsets_ptr,
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
    bos, T, first = _sequence(i_n, T, cu_ptr, offsets_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    lag = (tl.arange(0, BT) == 0)[:, None]
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        S = _rows(h0_ptr + state, offs_k, offs_v, K, V, V)
    for it in range(tl.cdiv(T, BT)):
        chunk = ((first + it) * H + i_h) * K * V
        _store(hs_ptr + chunk, S, offs_k, offs_v, K, V, V)
        rows = it * BT + tl.arange(0, BT)
        k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
        v, d = _values(v_ptr + base_v, d_ptr + base_v, rows, offs_v, T, V, sv, HAS_DELTA)
        eta, g, g_last = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, 0, BT)
        if RETENTION >= KL:
            eta0, k0 = tl.where(lag, eta, 0.0), tl.where(lag, k, 0.0)
            eta, g, g_last, la0 = _after_lag(eta, g, g_last, BT)
            _, P0 = _lag_residual(S, k0, tl.where(lag, v, 0.0), tl.where(lag, d, 0.0), V, sharp, p, eps, BIAS)
            S = _lag_step(S, eta0, k0, P0, la0, offs_k, K, offs_v, V, floor, scale)
            _store(hl_ptr + chunk, S, offs_k, offs_v, K, V, V)
        c, _ = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        P = _psi(dot(k * c[None, :], S) - v, v, d, V, sharp, p, eps, BIAS)
        _store(p_ptr + base_v, P, rows, offs_v, T, V, sv)
        if RETENTION >= KL:
            S = _carry(S, eta * k, g, g_last, P, offs_k, K, offs_v, V, floor, scale)
        else:
            S = _advance(S, eta * k, g, g_last, P)
        if RETENTION == ELASTIC:
            S = _soft_threshold_tl(S, gamma)
    if STORE_HT:
        _store(ht_ptr + state, S, offs_k, offs_v, K, V, V)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _fwd_output_kernel(
    q_ptr,
    k_ptr,
    eta_ptr,
    la_ptr,
    hs_ptr,
    hl_ptr,
    p_ptr,
    o_ptr,
    cu_ptr,
    offsets_ptr,
    seq_ptr,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    q_exp,
    eps_q,
    floor,
    scale,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    q = _rows(q_ptr + base_k, rows, offs_k, T, K, sk)
    k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
    eta, g, _ = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, RETENTION, BT)
    S = _start(hs_ptr, hl_ptr, (tl.cast(i_c, tl.int64) * H + i_h) * K * V, offs_k, offs_v, K, V, RETENTION)
    c, _ = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
    P = _rows(p_ptr + base_v, rows, offs_v, T, V, sv)
    A = scores(_queries(q, c, offs_k, K, scale, RETENTION), eta * k, g, BT, BK)
    _store(o_ptr + base_v, _read(q, c, S, g, floor, scale, RETENTION) - dot(A, P), rows, offs_v, T, V, sv)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _bwd_read_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    do_ptr,
    dpa_ptr,
    dcq_ptr,
    cu_ptr,
    offsets_ptr,
    seq_ptr,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    sharp,
    p,
    eps,
    q_exp,
    eps_q,
    scale,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    q = _rows(q_ptr + base_k, rows, offs_k, T, K, sk)
    k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
    eta, g, _ = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, RETENTION, BT)
    do = _rows(do_ptr + base_v, rows, offs_v, T, V, sv)
    c = tl.zeros([BK], dtype=tl.float32) + 1.0
    if RETENTION == LQ:
        chunk = tl.cast(i_c, tl.int64) * H + i_h
        S = _rows(hs_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
        c, _ = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        v, d = _values(v_ptr + base_v, d_ptr + base_v, rows, offs_v, T, V, sv, HAS_DELTA)
        P = _psi(dot(k * c[None, :], S) - v, v, d, V, sharp, p, eps, BIAS)
        i = tl.arange(0, BT)
        dA = tl.where(i[None, :] <= i[:, None], -dot(do, tl.trans(P)), 0.0)
        # the queries' half of the gradient w.r.t. the scale c (the state pass adds the keys')
        dqc = dot(do, tl.trans(S)) * tl.exp(g) + mix(dA, eta * k, g, BT, BK)
        tl.store(dcq_ptr + chunk * K + offs_k, tl.sum(dqc * q, 0), mask=offs_k < K)
    A = scores(_queries(q, c, offs_k, K, scale, RETENTION), eta * k, g, BT, BK)
    _store(dpa_ptr + base_v, -dot(tl.trans(A), do), rows, offs_v, T, V, sv)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _bwd_state_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    hl_ptr,
    do_ptr,
    dpa_ptr,
    dcq_ptr,
    dht_ptr,
    dhs_ptr,
    dr_ptr,
    dv_ptr,
    dd_ptr,
    lag_ptr,
    dh0_ptr,
    cu_ptr,
    offsets_ptr,
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
    HAS_DHT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_n, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, first = _sequence(i_n, T, cu_ptr, offsets_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    lag = (tl.arange(0, BT) == 0)[:, None]
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dS = _rows(dht_ptr + state, offs_k, offs_v, K, V, V)
    n_chunks = tl.cdiv(T, BT)
    for back in range(n_chunks):
        it = n_chunks - 1 - back
        chunk = (first + it) * H + i_h
        S = _rows(hs_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
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
        Sr = S
        if RETENTION >= KL:
            k0, v0 = tl.where(lag, k, 0.0), tl.where(lag, v, 0.0)
            d0, eta0 = tl.where(lag, d, 0.0), tl.where(lag, eta, 0.0)
            eta, g, g_last, la0 = _after_lag(eta, g, g_last, BT)
            Sr = _rows(hl_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
        c, power = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        kc = k * c[None, :]
        r = dot(kc, Sr) - v
        P = _psi(r, v, d, V, sharp, p, eps, BIAS)
        if RETENTION == ELASTIC:
            # the soft threshold passes the gradient where the end state before it lies outside [-gamma, gamma]
            dS = tl.where(tl.abs(_advance(S, eta * k, g, g_last, P)) > gamma, dS, 0.0)
        if RETENTION >= KL:
            # through the softmax to the end state's logits U; e^{g_last} log S_lag carries into S_lag
            dS = _simplex_vjp(_carry(Sr, eta * k, g, g_last, P, offs_k, K, offs_v, V, floor, scale), dS, scale)
            dSr = tl.where(Sr > floor, tl.exp(g_last)[:, None] * dS / tl.maximum(Sr, floor), 0.0)
        else:
            dSr = tl.exp(g_last)[:, None] * dS
        _store(dhs_ptr + chunk * K * V, dS, offs_k, offs_v, K, V, V)
        dP = _rows(dpa_ptr + base_v, rows, offs_v, T, V, sv) - dot(eta * k * tl.exp(g_last[None, :] - g), dS)
        dr, dd = _psi_vjp(r, d, dP, V, sharp, p, eps, BIAS)
        if RETENTION == KL_TANGENT:
            dSr += _tangent_rows_dw(do, q, Sr, tl.exp(g) - 1.0, floor, scale)
        else:
            dSr += dot(tl.trans(q * c[None, :] * tl.exp(g)), do)
        dSr += dot(tl.trans(kc), dr)
        if RETENTION == LQ:
            dc = tl.load(dcq_ptr + chunk * K + offs_k, mask=offs_k < K, other=0.0) + tl.sum(dot(dr, tl.trans(S)) * k, 0)
            dSr += _lq_grad(S, c, power, dc, q_exp, eps_q, LQ_ROW, BK)
        if BIAS == 0:
            dv = -dP
        else:
            dv = -dr
            _store(dr_ptr + base_v, dr, rows, offs_v, T, V, sv)
        if RETENTION >= KL:
            # the lag token's exact step from the chunk start, S_lag = c Softmax(L)
            r0, P0 = _lag_residual(S, k0, v0, d0, V, sharp, p, eps, BIAS)
            dL = _simplex_vjp(Sr, dSr, scale)
            dP0 = -dot(eta0 * k0, dL)
            dr0, dd0 = _psi_vjp(r0, d0, dP0, V, sharp, p, eps, BIAS)
            if BIAS == 0:
                dv += -dP0
            else:
                dv += -dr0
            dd += dd0
            dek0 = -dot(P0, tl.trans(dL))
            # this value block's share of the lag row's key-side gradients: dk_0, deta_0, dlog alpha_0
            out = lag_ptr + (chunk * tl.num_programs(2) + i_v) * 3 * K + offs_k
            tl.store(out, tl.sum(dek0 * eta0 + dot(dr0, tl.trans(S)), 0), mask=offs_k < K)
            tl.store(out + K, tl.sum(dek0 * k0, 0), mask=offs_k < K)
            tl.store(out + 2 * K, tl.exp(la0) * tl.sum(dL * _log_floor(S, floor), 1), mask=offs_k < K)
            dS = tl.where(S > floor, tl.exp(la0)[:, None] * dL / tl.maximum(S, floor), 0.0) + dot(tl.trans(k0), dr0)
        else:
            dS = dSr
        _store(dv_ptr + base_v, dv, rows, offs_v, T, V, sv)
        if HAS_DELTA:
            _store(dd_ptr + base_v, dd, rows, offs_v, T, V, sv)
    if HAS_H0:
        _store(dh0_ptr + state, dS, offs_k, offs_v, K, V, V)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _bwd_grad_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    hl_ptr,
    dhs_ptr,
    do_ptr,
    dr_ptr,
    lag_ptr,
    cu_ptr,
    offsets_ptr,
    seq_ptr,
    dq_ptr,
    dk_ptr,
    deta_ptr,
    dla_ptr,
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
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    # key-side gradients are this value block's share; the blocks' shares are added up after the launch
    part = base_k + tl.cast(i_v, tl.int64) * key_block
    chunk = tl.cast(i_c, tl.int64) * H + i_h
    i = tl.arange(0, BT)
    last, lag = (i == BT - 1)[:, None], (i == 0)[:, None]
    S = _rows(hs_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
    dS = _rows(dhs_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
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
    Sr, carried = S, S
    if RETENTION >= KL:
        eta, g, g_last, _ = _after_lag(eta, g, g_last, BT)
        Sr = _rows(hl_ptr + chunk * K * V, offs_k, offs_v, K, V, V)
        carried = _log_floor(Sr, floor)
    c, _ = _lq_scale(S, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
    qa, ek, eg = _queries(q, c, offs_k, K, scale, RETENTION), eta * k, tl.exp(g)
    decay_end = tl.exp(g_last[None, :] - g)
    P = _psi(dot(k * c[None, :], Sr) - v, v, d, V, sharp, p, eps, BIAS)
    dA = tl.where(i[None, :] <= i[:, None], -dot(do, tl.trans(P)), 0.0)
    mA, mA_t = mix(dA, ek, g, BT, BK), mix_t(dA, qa, g, BT, BK)
    dkb = -dot(P, tl.trans(dS))
    if RETENTION == KL_TANGENT:
        dq, dfade = _tangent_rows_vjp(do, q, Sr, eg - 1.0, floor, scale)
        dq += _centre(mA, offs_k, K) * (scale / K)
        dg = dfade * eg
    else:
        dqb = dot(do, tl.trans(Sr))
        dq = (dqb * eg + mA) * c[None, :]
        dg = dqb * qa * eg
    dg += qa * mA - ek * mA_t - dkb * ek * decay_end
    dg_last = tl.exp(g_last) * tl.sum(carried * dS, 1) + tl.sum(dkb * ek * decay_end, 0)
    dg += tl.where(last, dg_last[None, :], 0.0)
    dek = mA_t + dkb * decay_end
    dk = dek * eta
    if BIAS != 0:
        dk += dot(_rows(dr_ptr + base_v, rows, offs_v, T, V, sv), tl.trans(Sr)) * c[None, :]
    deta = dek * k
    dla = tl.sum(dg, 0)[None, :] - tl.cumsum(dg, 0) + dg
    if RETENTION >= KL:
        lagged = lag_ptr + (chunk * tl.num_programs(2) + i_v) * 3 * K + offs_k
        dk = tl.where(lag, tl.load(lagged, mask=offs_k < K, other=0.0)[None, :], dk)
        deta = tl.where(lag, tl.load(lagged + K, mask=offs_k < K, other=0.0)[None, :], deta)
        dla = tl.where(lag, tl.load(lagged + 2 * K, mask=offs_k < K, other=0.0)[None, :], dla)
    _store(dq_ptr + part, dq, rows, offs_k, T, K, sk)
    _store(dk_ptr + part, dk, rows, offs_k, T, K, sk)
    _store(deta_ptr + part, deta, rows, offs_k, T, K, sk)
    if HAS_ALPHA:
        _store(dla_ptr + part, dla, rows, offs_k, T, K, sk)


def launch_grids(n_sequences: int, n_chunks: int, heads: int, value_blocks: int) -> dict[str, tuple[int, int, int]]:
    """The grid of each kernel here: the state passes run one program per (sequence, head, value block) and walk
    their chunks in order; the others run one per (global chunk, head, value block)."""
    per_sequence, per_chunk = (n_sequences, heads, value_blocks), (n_chunks, heads, value_blocks)
    return {
        "fwd_state": per_sequence,
        "fwd_output": per_chunk,
        "bwd_read": per_chunk,
        "bwd_state": per_sequence,
        "bwd_grads": per_chunk,
    }


def scalars(spec: MemorySpec, K: int) -> dict[str, float]:
    """The kernels' float arguments; Memora's simplex scale ``c`` is ``kl_scale`` or ``sqrt(K)`` (the fan-in)."""
    return dict(
        sharp=spec.sign_sharpness,
        p=spec.p,
        eps=spec.eps,
        q_exp=spec.q,
        eps_q=spec.eps**spec.q,
        gamma=spec.elastic_threshold,
        floor=spec.kl_floor,
        scale=spec.kl_scale if spec.kl_scale is not None else math.sqrt(K),
    )


@dataclass(frozen=True)
class _Run:
    """One call's sizes, varlen indices and compile-time flags, shared by its five launches."""

    spec: MemorySpec
    T: int
    N: int
    H: int
    K: int
    V: int
    BT: int
    BV: int
    n_chunks: int
    cu_seqlens: torch.Tensor | None
    offsets: torch.Tensor | None
    chunk_seq: torch.Tensor | None
    has_alpha: bool
    has_delta: bool

    @staticmethod
    def of(q, v, spec, chunk_size, block, cu_seqlens, log_alpha, delta) -> _Run:
        B, T, H, K = q.shape
        if whole_rows(spec) and block < v.shape[-1]:
            raise ValueError(f"{spec.retention=}, {spec.bias=} need whole value rows in a program; got block {block}")
        offsets = chunk_seq = None
        if cu_seqlens is None:
            N, n_chunks = B, B * triton.cdiv(T, chunk_size)
        else:
            N, offsets = len(cu_seqlens) - 1, _chunk_offsets(cu_seqlens, chunk_size)
            n_chunks = int(offsets[-1])
            counts = (offsets[1:] - offsets[:-1]).long()
            chunk_seq = torch.repeat_interleave(torch.arange(N, device=q.device, dtype=torch.int32), counts)
        return _Run(spec, T, N, H, K, v.shape[-1], chunk_size, block, n_chunks, cu_seqlens, offsets, chunk_seq,
                    log_alpha is not None, delta is not None)  # fmt: skip

    @property
    def kl(self) -> bool:
        return self.spec.retention == "kl"

    def grid(self, name: str) -> tuple[int, int, int]:
        return launch_grids(self.N, self.n_chunks, self.H, triton.cdiv(self.V, self.BV))[name]

    def varlen(self, dummy: torch.Tensor, per_chunk: bool) -> tuple:
        """The varlen pointers of a state pass (``cu_seqlens``, chunk offsets) or a chunk-parallel kernel (and the
        sequence of every chunk)."""
        tensors = (self.cu_seqlens, self.offsets, self.chunk_seq) if per_chunk else (self.cu_seqlens, self.offsets)
        return _or_dummy(dummy, *tensors)

    def sizes(self) -> tuple:
        return self.T, self.H, self.K, self.V

    def scalars(self, *names: str) -> tuple[float, ...]:
        values = scalars(self.spec, self.K)
        return tuple(values[name] for name in names)

    def blocks(self) -> dict:
        return dict(BT=self.BT, BK=max(16, triton.next_power_of_2(self.K)), BV=self.BV, HAS_ALPHA=self.has_alpha,
                    IS_VARLEN=self.cu_seqlens is not None, RETENTION=chunk_retention(self.spec),
                    LQ_ROW=self.spec.lq_scope == "row")  # fmt: skip

    def bias(self) -> dict:
        """``psi``'s compile-time flags."""
        return dict(BIAS=bias_code(self.spec), HAS_DELTA=self.has_delta)


STATE = ("sharp", "p", "eps", "q_exp", "eps_q", "gamma", "floor", "scale")
"""The float arguments of the state passes, in order."""


def _forward(run: _Run, q, k, v, eta, log_alpha, delta, h0, output_final_state: bool):
    """Output ``[B, T, H, V]``, chunk-start states ``[n_chunks, H, K, V]``, Memora's states after each lag token
    (or None) and the final state (or None)."""
    f32 = dict(dtype=torch.float32, device=q.device)
    _, H, K, V = run.sizes()
    hs = torch.empty(run.n_chunks, H, K, V, **f32)
    hl = torch.empty_like(hs) if run.kl else None
    P = torch.empty(v.shape, **f32)
    ht = torch.empty(run.N, H, K, V, **f32) if output_final_state else None
    blocks = run.blocks()
    _fwd_state_kernel[run.grid("fwd_state")](
        k,
        v,
        eta,
        *_or_dummy(hs, log_alpha, delta, h0),
        hs,
        _or_dummy(hs, hl)[0],
        P,
        _or_dummy(hs, ht)[0],
        *run.varlen(hs, per_chunk=False),
        *run.sizes(),
        *run.scalars(*STATE),
        **blocks,
        **run.bias(),
        HAS_H0=h0 is not None,
        STORE_HT=output_final_state,
    )
    o = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    _fwd_output_kernel[run.grid("fwd_output")](
        q,
        k,
        eta,
        _or_dummy(hs, log_alpha)[0],
        hs,
        _or_dummy(hs, hl)[0],
        P,
        o,
        *run.varlen(hs, per_chunk=True),
        *run.sizes(),
        *run.scalars("q_exp", "eps_q", "floor", "scale"),
        **blocks,
    )
    return o, hs, hl, ht


def _backward(run: _Run, do, dht, q, k, v, eta, log_alpha, delta, h0, hs, hl) -> tuple:
    """``dq, dk, dv, deta, dlog_alpha, ddelta, dh0`` in fp32 (None where the input is None)."""
    f32 = dict(dtype=torch.float32, device=q.device)
    la, dl, hl = _or_dummy(hs, log_alpha, delta, hl)
    blocks, bias = run.blocks(), run.bias()
    NV = run.grid("bwd_grads")[-1]
    dpa = torch.empty(v.shape, **f32)
    dcq = torch.empty(run.n_chunks, run.H, run.K, **f32) if run.spec.retention == "lq" else hs
    _bwd_read_kernel[run.grid("bwd_read")](
        q,
        k,
        v,
        eta,
        la,
        dl,
        hs,
        do,
        dpa,
        dcq,
        *run.varlen(hs, per_chunk=True),
        *run.sizes(),
        *run.scalars("sharp", "p", "eps", "q_exp", "eps_q", "scale"),
        **blocks,
        **bias,
    )
    dhs, dr, dv = torch.empty_like(hs), torch.empty(v.shape, **f32), torch.empty(v.shape, **f32)
    lag = torch.empty(run.n_chunks, run.H, NV, 3, run.K, **f32) if run.kl else hs
    dd = torch.empty(v.shape, **f32) if delta is not None else None
    dh0 = torch.empty(h0.shape, **f32) if h0 is not None else None
    _bwd_state_kernel[run.grid("bwd_state")](
        q,
        k,
        v,
        eta,
        la,
        dl,
        hs,
        hl,
        do,
        dpa,
        dcq,
        _or_dummy(hs, dht)[0],
        dhs,
        dr,
        dv,
        _or_dummy(hs, dd)[0],
        lag,
        _or_dummy(hs, dh0)[0],
        *run.varlen(hs, per_chunk=False),
        *run.sizes(),
        *run.scalars(*STATE),
        **blocks,
        **bias,
        HAS_H0=h0 is not None,
        HAS_DHT=dht is not None,
    )
    dq, dk, deta = (torch.empty(NV, *q.shape, **f32) for _ in range(3))
    dla = torch.empty(NV, *q.shape, **f32) if log_alpha is not None else None
    _bwd_grad_kernel[run.grid("bwd_grads")](
        q,
        k,
        v,
        eta,
        la,
        dl,
        hs,
        hl,
        dhs,
        do,
        dr,
        lag,
        *run.varlen(hs, per_chunk=True),
        dq,
        dk,
        deta,
        _or_dummy(hs, dla)[0],
        run.T,
        q.numel(),
        *run.sizes()[1:],
        *run.scalars("sharp", "p", "eps", "q_exp", "eps_q", "floor", "scale"),
        **blocks,
        **bias,
    )
    dq, dk, deta, dla = (None if g is None else g.sum(0) for g in (dq, dk, deta, dla))
    return dq, dk, dv, deta, dla, dd, dh0


class ChunkLinearFunction(torch.autograd.Function):
    """Chunk-parallel forward and backward of the linear Miras memory (Eq. 28-29).

    Inputs ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, the gates as ``common.kernel_gates`` expands them, ``h0
    [N, H, K, V]`` fp32 or None, the spec, the chunk size, ``cu_seqlens`` (int32) or None, whether to return the
    final state, and ``block``, the value columns per program (``chunk.value_block``). Returns ``o [B, T, H, V]``
    in ``q``'s dtype and the final state (fp32) or None."""

    @staticmethod
    def forward(ctx, q, k, v, eta, log_alpha, delta, h0, spec, chunk_size, cu_seqlens, output_final_state, block):
        run = _Run.of(q, v, spec, chunk_size, block, cu_seqlens, log_alpha, delta)
        o, hs, hl, ht = _forward(run, q, k, v, eta, log_alpha, delta, h0, output_final_state)
        ctx.save_for_backward(q, k, v, eta, log_alpha, delta, h0, hs, hl)
        ctx.run = run
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, eta, log_alpha, delta, h0, hs, hl = ctx.saved_tensors
        dht = None if dht is None else dht.contiguous()
        grads = _backward(ctx.run, do.contiguous(), dht, q, k, v, eta, log_alpha, delta, h0, hs, hl)
        inputs = (q, k, v, eta, log_alpha, delta, h0)
        cast = tuple(None if g is None else g.to(x.dtype) for g, x in zip(grads, inputs, strict=True))
        return (*cast, None, None, None, None, None)


__all__ = ["RETENTIONS", "ChunkLinearFunction", "covers", "launch_grids", "scalars", "whole_rows"]
