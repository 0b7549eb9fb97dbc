"""Chunk-parallel Triton kernels of the linear Miras memory ``M(x) = x W`` with retention ``none``, ``l2`` or
``elastic``.

The same function as ``chunk._fwd_kernel`` / ``chunk._bwd_kernel`` (Eq. 28-29, chunk equations in ``chunk.py``),
split as flash-linear-attention splits its chunked delta rule: only the state recurrence runs chunk by chunk, in a
light pass per (sequence, head, value block); everything inside a chunk that the carried state does not feed back
into runs in programs over (global chunk, head, value block). With ``g`` the within-chunk cumulative log decay,
``kb = eta k e^{g_last - g}`` and ``A = scores(q, eta k)`` (``kernels.miras.decay``)::

    forward   state pass    S_c stored;  R = k S_c - v,  P = psi(R) stored;  S_{c+1} = e^{g_last} S_c - kb^T P
              output        o = (q e^g) S_c - A P                                          (chunk-parallel)
    backward  read          dPa = -A^T do                                                  (chunk-parallel)
              state pass    dS'_c stored;  dP = dPa - kb dS'_c,  dR = psi'(R)^T dP,  dv, ddelta stored;
                            dS'_{c-1} = e^{g_last} dS'_c + (q e^g)^T do + k^T dR;  dS'_{-1} = dh0
              gradients     dq, dk, deta, dlog alpha from S_c, dS'_c, P and dR             (chunk-parallel)

``dS'_c`` is the gradient of the loss w.r.t. the end state of chunk ``c``. As in the delta rule the gradient at
the chunk start, ``P = psi(k S_c - v)``, depends on the state (non-linearly through ``common._psi`` for the l1,
lp, Huber and robust biases), so both state passes form ``R`` from the carried state. The chunk-parallel kernels
address chunks by their global index (``hs[i_c]``); with ``cu_seqlens`` a per-chunk sequence index maps it back
(chunks restart at every sequence, as ``common._chunk_offsets`` counts them). ``elastic`` soft-thresholds each
chunk's end state in the forward state pass (Eq. 22) and masks ``dS'_c`` where that end state lay inside
``[-gamma, gamma]`` in the backward one. Retentions ``lq`` and ``kl`` stay on ``chunk.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.miras.common import (
    LAUNCH_CONFIGS,
    _chunk_inputs,
    _chunk_offsets,
    _or_dummy,
    _psi,
    _psi_vjp,
    _rows,
    _soft_threshold_tl,
    _store,
    bias_code,
)
from kernels.miras.decay import dot, mix, mix_t, scores
from kernels.miras.spec import MemorySpec
from kernels.utils import autotune

RETENTIONS = ("none", "l2", "elastic")
"""Retentions of the linear memory on these kernels: the decay is linear in the state, and elastic's soft
threshold (Eq. 22) acts on each chunk's end state elementwise, in the state passes alone."""


def covers(spec: MemorySpec) -> bool:
    """Whether ``spec`` (already accepted by ``chunk.check_supported``) runs on these kernels."""
    return spec.arch == "linear" and spec.retention in RETENTIONS


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
def _gates(eta_ptr, la_ptr, rows, offs_k, T, K, sk, HAS_ALPHA: tl.constexpr, BT: tl.constexpr):
    """``eta`` and the cumulative log decay ``g`` of a chunk ``[BT, BK]``, and ``g``'s last row ``[BK]``."""
    eta = _rows(eta_ptr, rows, offs_k, T, K, sk)
    if HAS_ALPHA:
        g = tl.cumsum(_rows(la_ptr, rows, offs_k, T, K, sk), 0)
    else:
        g = tl.zeros_like(eta)
    return eta, g, tl.sum(tl.where((tl.arange(0, BT) == BT - 1)[:, None], g, 0.0), 0)


@triton.jit
def _frame(bos, i_h, i_v, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Row strides, the head's key and value offsets and the program's key and value columns."""
    sk, sv = H * K, H * V
    return sk, sv, bos * sk + i_h * K, bos * sv + i_h * V, tl.arange(0, BK), i_v * BV + tl.arange(0, BV)


@triton.jit
def _advance(S, ek, g, g_last, P):
    """The chunk's end state ``e^{g_last} S - (eta k e^{g_last - g})^T P`` (Eq. 28 at the chunk's last token)."""
    return tl.exp(g_last)[:, None] * S - dot(tl.trans(ek * tl.exp(g_last[None, :] - g)), P)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS"])
@triton.jit(do_not_specialize=["T"])
def _fwd_state_kernel(
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    h0_ptr,
    hs_ptr,
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
    gamma,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    HAS_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    ELASTIC: tl.constexpr,
):
    i_n, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, first = _sequence(i_n, T, cu_ptr, offsets_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        S = _rows(h0_ptr + state, offs_k, offs_v, K, V, V)
    for it in range(tl.cdiv(T, BT)):
        _store(hs_ptr + ((first + it) * H + i_h) * K * V, S, offs_k, offs_v, K, V, V)
        rows = it * BT + tl.arange(0, BT)
        k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
        v = _rows(v_ptr + base_v, rows, offs_v, T, V, sv)
        if HAS_DELTA:
            d = _rows(d_ptr + base_v, rows, offs_v, T, V, sv)
        else:
            d = tl.zeros_like(v)
        eta, g, g_last = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, BT)
        P = _psi(dot(k, S) - v, v, d, V, sharp, p, eps, BIAS)
        _store(p_ptr + base_v, P, rows, offs_v, T, V, sv)
        S = _advance(S, eta * k, g, g_last, P)
        if ELASTIC:
            S = _soft_threshold_tl(S, gamma)
    if STORE_HT:
        _store(ht_ptr + state, S, offs_k, offs_v, K, V, V)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV"])
@triton.jit(do_not_specialize=["T"])
def _fwd_output_kernel(
    q_ptr,
    k_ptr,
    eta_ptr,
    la_ptr,
    hs_ptr,
    p_ptr,
    o_ptr,
    cu_ptr,
    offsets_ptr,
    seq_ptr,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    q = _rows(q_ptr + base_k, rows, offs_k, T, K, sk)
    k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
    eta, g, _ = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, BT)
    S = _rows(hs_ptr + (tl.cast(i_c, tl.int64) * H + i_h) * K * V, offs_k, offs_v, K, V, V)
    P = _rows(p_ptr + base_v, rows, offs_v, T, V, sv)
    o = dot(q * tl.exp(g), S) - dot(scores(q, eta * k, g, BT, BK), P)
    _store(o_ptr + base_v, o, rows, offs_v, T, V, sv)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV"])
@triton.jit(do_not_specialize=["T"])
def _bwd_read_kernel(
    q_ptr,
    k_ptr,
    eta_ptr,
    la_ptr,
    do_ptr,
    dpa_ptr,
    cu_ptr,
    offsets_ptr,
    seq_ptr,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    q = _rows(q_ptr + base_k, rows, offs_k, T, K, sk)
    k = _rows(k_ptr + base_k, rows, offs_k, T, K, sk)
    eta, g, _ = _gates(eta_ptr + base_k, la_ptr + base_k, rows, offs_k, T, K, sk, HAS_ALPHA, BT)
    do = _rows(do_ptr + base_v, rows, offs_v, T, V, sv)
    _store(dpa_ptr + base_v, -dot(tl.trans(scores(q, eta * k, g, BT, BK)), do), rows, offs_v, T, V, sv)


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS"])
@triton.jit(do_not_specialize=["T"])
def _bwd_state_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    do_ptr,
    dpa_ptr,
    dht_ptr,
    dhs_ptr,
    dr_ptr,
    dv_ptr,
    dd_ptr,
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
    gamma,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    HAS_H0: tl.constexpr,
    HAS_DHT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    ELASTIC: tl.constexpr,
):
    i_n, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, first = _sequence(i_n, T, cu_ptr, offsets_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * K * V
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dS = _rows(dht_ptr + state, offs_k, offs_v, K, V, V)
    n_chunks = tl.cdiv(T, BT)
    for back in range(n_chunks):
        it = n_chunks - 1 - back
        chunk = ((first + it) * H + i_h) * K * V
        S = _rows(hs_ptr + chunk, offs_k, offs_v, K, V, V)
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
        r = dot(k, S) - v
        if ELASTIC:
            # the soft threshold passes the gradient where the end state before it lies outside [-gamma, gamma]
            end = _advance(S, eta * k, g, g_last, _psi(r, v, d, V, sharp, p, eps, BIAS))
            dS = tl.where(tl.abs(end) > gamma, dS, 0.0)
        _store(dhs_ptr + chunk, dS, offs_k, offs_v, K, V, V)
        dP = _rows(dpa_ptr + base_v, rows, offs_v, T, V, sv) - dot(eta * k * tl.exp(g_last[None, :] - g), dS)
        dr, dd = _psi_vjp(r, d, dP, V, sharp, p, eps, BIAS)
        if BIAS == 0:
            _store(dv_ptr + base_v, -dP, rows, offs_v, T, V, sv)
        else:
            _store(dv_ptr + base_v, -dr, rows, offs_v, T, V, sv)
            _store(dr_ptr + base_v, dr, rows, offs_v, T, V, sv)
        if HAS_DELTA:
            _store(dd_ptr + base_v, dd, rows, offs_v, T, V, sv)
        dS = tl.exp(g_last)[:, None] * dS + dot(tl.trans(q * tl.exp(g)), do) + dot(tl.trans(k), dr)
    if HAS_H0:
        _store(dh0_ptr + state, dS, offs_k, offs_v, K, V, V)


@triton.jit
def _decay_grads(q, k, eta, g, g_last, do, S, dS, P, BT: tl.constexpr, BK: tl.constexpr):
    """``dq``, ``d(eta k)`` and ``dg`` of one chunk (all ``[BT, BK]``) from its read ``o = (q e^g) S - A P`` and
    end state, for the end-state gradient ``dS``; ``g``'s gradient through ``g_last`` sits on the last row."""
    i = tl.arange(0, BT)
    ek, eg, decay_end = eta * k, tl.exp(g), tl.exp(g_last[None, :] - g)
    dA = tl.where(i[None, :] <= i[:, None], -dot(do, tl.trans(P)), 0.0)
    dqb = dot(do, tl.trans(S))
    dkb = -dot(P, tl.trans(dS))
    mA, mA_t = mix(dA, ek, g, BT, BK), mix_t(dA, q, g, BT, BK)
    dg = dqb * q * eg + q * mA - ek * mA_t - dkb * ek * decay_end
    dg_last = tl.exp(g_last) * tl.sum(S * dS, 1) + tl.sum(dkb * ek * decay_end, 0)
    dg += tl.where((i == BT - 1)[:, None], dg_last[None, :], 0.0)
    return dqb * eg + mA, mA_t + dkb * decay_end, dg


@autotune(LAUNCH_CONFIGS, key=["BT", "BK", "BV", "BIAS"])
@triton.jit(do_not_specialize=["T"])
def _bwd_grad_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    hs_ptr,
    dhs_ptr,
    do_ptr,
    dr_ptr,
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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_c, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, T, rows = _chunk_of(i_c, T, cu_ptr, offsets_ptr, seq_ptr, BT, IS_VARLEN)
    sk, sv, base_k, base_v, offs_k, offs_v = _frame(bos, i_h, i_v, H, K, V, BK, BV)
    # key-side gradients are this value block's share; the blocks' shares are added up after the launch
    part = base_k + tl.cast(i_v, tl.int64) * key_block
    chunk = (tl.cast(i_c, tl.int64) * H + i_h) * K * V
    S = _rows(hs_ptr + chunk, offs_k, offs_v, K, V, V)
    dS = _rows(dhs_ptr + chunk, offs_k, offs_v, K, V, V)
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
    P = _psi(dot(k, S) - v, v, d, V, sharp, p, eps, BIAS)
    dq, dek, dg = _decay_grads(q, k, eta, g, g_last, do, S, dS, P, BT, BK)
    dk = dek * eta
    if BIAS != 0:
        dk += dot(_rows(dr_ptr + base_v, rows, offs_v, T, V, sv), tl.trans(S))
    _store(dq_ptr + part, dq, rows, offs_k, T, K, sk)
    _store(dk_ptr + part, dk, rows, offs_k, T, K, sk)
    _store(deta_ptr + part, dek * k, rows, offs_k, T, K, sk)
    if HAS_ALPHA:
        _store(dla_ptr + part, tl.sum(dg, 0)[None, :] - tl.cumsum(dg, 0) + dg, rows, offs_k, T, K, sk)


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

    def grid(self, name: str) -> tuple[int, int, int]:
        return launch_grids(self.N, self.n_chunks, self.H, triton.cdiv(self.V, self.BV))[name]

    def varlen(self, dummy: torch.Tensor, per_chunk: bool) -> tuple:
        """The varlen pointers of a state pass (``cu_seqlens``, chunk offsets) or a chunk-parallel kernel (and the
        sequence of every chunk)."""
        tensors = (self.cu_seqlens, self.offsets, self.chunk_seq) if per_chunk else (self.cu_seqlens, self.offsets)
        return _or_dummy(dummy, *tensors)

    def sizes(self) -> tuple:
        return self.T, self.H, self.K, self.V

    def blocks(self) -> dict:
        return dict(BT=self.BT, BK=max(16, triton.next_power_of_2(self.K)), BV=self.BV, HAS_ALPHA=self.has_alpha,
                    IS_VARLEN=self.cu_seqlens is not None)  # fmt: skip

    def bias(self) -> tuple[tuple, dict]:
        """``psi``'s float arguments and its compile-time flags."""
        spec = self.spec
        return (spec.sign_sharpness, spec.p, spec.eps), dict(BIAS=bias_code(spec), HAS_DELTA=self.has_delta)

    def retention(self) -> tuple[tuple, dict]:
        """The state passes' retention arguments: elastic's threshold and flag."""
        return (self.spec.elastic_threshold,), dict(ELASTIC=self.spec.retention == "elastic")


def _forward(run: _Run, q, k, v, eta, log_alpha, delta, h0, output_final_state: bool):
    """Output ``[B, T, H, V]``, chunk-start states ``[n_chunks, H, K, V]`` and the final state (or None)."""
    f32 = dict(dtype=torch.float32, device=q.device)
    _, H, K, V = run.sizes()
    hs = torch.empty(run.n_chunks, H, K, V, **f32)
    P = torch.empty(v.shape, **f32)
    ht = torch.empty(run.N, H, K, V, **f32) if output_final_state else None
    scalars, bias = run.bias()
    gamma, elastic = run.retention()
    blocks = run.blocks()
    _fwd_state_kernel[run.grid("fwd_state")](
        k,
        v,
        eta,
        *_or_dummy(hs, log_alpha, delta, h0),
        hs,
        P,
        _or_dummy(hs, ht)[0],
        *run.varlen(hs, per_chunk=False),
        *run.sizes(),
        *scalars,
        *gamma,
        **blocks,
        **bias,
        **elastic,
        HAS_H0=h0 is not None,
        STORE_HT=output_final_state,
    )
    o = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    _fwd_output_kernel[run.grid("fwd_output")](
        q, k, eta, _or_dummy(hs, log_alpha)[0], hs, P, o, *run.varlen(hs, per_chunk=True), *run.sizes(), **blocks
    )
    return o, hs, ht


def _backward(run: _Run, do, dht, q, k, v, eta, log_alpha, delta, h0, hs) -> tuple:
    """``dq, dk, dv, deta, dlog_alpha, ddelta, dh0`` in fp32 (None where the input is None)."""
    f32 = dict(dtype=torch.float32, device=q.device)
    la = _or_dummy(hs, log_alpha)[0]
    scalars, bias = run.bias()
    gamma, elastic = run.retention()
    blocks = run.blocks()
    dpa = torch.empty(v.shape, **f32)
    _bwd_read_kernel[run.grid("bwd_read")](
        q, k, eta, la, do, dpa, *run.varlen(hs, per_chunk=True), *run.sizes(), **blocks
    )
    dhs, dr, dv = torch.empty_like(hs), torch.empty(v.shape, **f32), torch.empty(v.shape, **f32)
    dd = torch.empty(v.shape, **f32) if delta is not None else None
    dh0 = torch.empty(h0.shape, **f32) if h0 is not None else None
    _bwd_state_kernel[run.grid("bwd_state")](
        q,
        k,
        v,
        eta,
        la,
        _or_dummy(hs, delta)[0],
        hs,
        do,
        dpa,
        _or_dummy(hs, dht)[0],
        dhs,
        dr,
        dv,
        *_or_dummy(hs, dd, dh0),
        *run.varlen(hs, per_chunk=False),
        *run.sizes(),
        *scalars,
        *gamma,
        **blocks,
        **bias,
        **elastic,
        HAS_H0=h0 is not None,
        HAS_DHT=dht is not None,
    )
    NV = run.grid("bwd_grads")[-1]
    dq, dk, deta = (torch.empty(NV, *q.shape, **f32) for _ in range(3))
    dla = torch.empty(NV, *q.shape, **f32) if log_alpha is not None else None
    _bwd_grad_kernel[run.grid("bwd_grads")](
        q,
        k,
        v,
        eta,
        la,
        _or_dummy(hs, delta)[0],
        hs,
        dhs,
        do,
        dr,
        *run.varlen(hs, per_chunk=True),
        dq,
        dk,
        deta,
        _or_dummy(hs, dla)[0],
        run.T,
        q.numel(),
        *run.sizes()[1:],
        *scalars,
        **blocks,
        **bias,
    )
    dq, dk, deta, dla = (None if g is None else g.sum(0) for g in (dq, dk, deta, dla))
    return dq, dk, dv, deta, dla, dd, dh0


class ChunkLinearFunction(torch.autograd.Function):
    """Chunk-parallel forward and backward of the linear Miras memory with retention ``none``, ``l2`` or
    ``elastic`` (Eq. 28-29); arguments as ``chunk.ChunkMirasFunction`` (inputs ``[B, T, H, D]``, gates expanded by
    ``common.kernel_gates``, ``h0 [N, H, K, V]`` fp32 or None) plus ``block``, the value columns per program
    (``chunk.value_block``). Returns ``o [B, T, H, V]`` in ``q``'s dtype and the final state (fp32) or None."""

    @staticmethod
    def forward(ctx, q, k, v, eta, log_alpha, delta, h0, spec, chunk_size, cu_seqlens, output_final_state, block):
        run = _Run.of(q, v, spec, chunk_size, block, cu_seqlens, log_alpha, delta)
        o, hs, ht = _forward(run, q, k, v, eta, log_alpha, delta, h0, output_final_state)
        ctx.save_for_backward(q, k, v, eta, log_alpha, delta, h0, hs)
        ctx.run = run
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, eta, log_alpha, delta, h0, hs = ctx.saved_tensors
        dht = None if dht is None else dht.contiguous()
        grads = _backward(ctx.run, do.contiguous(), dht, q, k, v, eta, log_alpha, delta, h0, hs)
        inputs = (q, k, v, eta, log_alpha, delta, h0)
        cast = tuple(None if g is None else g.to(x.dtype) for g, x in zip(grads, inputs, strict=True))
        return (*cast, None, None, None, None, None)


__all__ = ["RETENTIONS", "ChunkLinearFunction", "covers", "launch_grids"]
