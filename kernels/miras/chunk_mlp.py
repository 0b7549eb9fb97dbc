"""Triton chunk forward and backward of the Miras MLP memory ``M(x) = x + LN(act(x W_1) W_2)`` (section 5.3-5.4).

The transcription of ``naive_chunk_miras`` (``read='chunk'``) for a 2-layer memory with expansion ``E / D``.
One program per (sequence, head) walks the chunks holding ``W_1 [D, E]`` and ``W_2 [E, D]`` in fp32. Per chunk,
with ``g`` the within-chunk cumulative log decay on the ``D`` axis (rows of ``W_1``, columns of ``W_2``) and
``c_1, c_2`` the lq scales (1 unless ``retention='lq'``)::

    Z_1 = (k c_1) W_1,  H_1 = act(Z_1),  y = k + LN(H_1 c_2 W_2)            the memory at the chunk start
    g_2 = LN'(psi(y - v)),  g_1 = (g_2 (c_2 W_2)^T) act'(Z_1)               its hand backprop (Eq. 28)
    z_1 = (q c_1 e^g) W_1 - A_1 g_1,    A_1[i, j] = sum_f (q c_1)_if (eta k)_jf e^{g_if - g_jf}
    h = act(z_1),  z_2 = e^g (h c_2 W_2) - sum_j (h c_2 . H_1j) (eta g_2)_j e^{g_i - g_j}
    o = q + LN(z_2)                                                         the dual reads (Eq. 29)
    W_1' = e^{g_last} W_1 - (eta k e^{g_last - g})^T g_1,   W_2' = W_2 e^{g_last} - H_1^T (eta g_2 e^{g_last - g})

Memora (``retention='kl'``) takes the exact step on the chunk's first token (the lag token, Eq. 30), runs the
rest of the chunk from the weights after it, and carries ``c Softmax(e^{g_last} log W - U)`` (Eq. 27, 31-32).
The forward stores every chunk-start ``(W_1, W_2)``; the backward walks the chunks in reverse, recomputes the
chunk from them and carries ``(dW_1, dW_2)``. Through the hand backprop this needs second derivatives: ``act''``
and the VJP of the LayerNorm's own VJP (``kernels/miras/README.md``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.miras.chunk import (
    LAUNCH_CONFIGS,
    RETENTION_CODES,
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
    _store,
    bias_code,
    channelwise,
)
from kernels.miras.decay import mix, mix_t, scores
from kernels.miras.naive import _initial, _lq_normalise
from kernels.miras.spec import MemorySpec
from kernels.utils import autotune


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        out = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    else:
        out = z / (1.0 + tl.exp(-z))
    return out


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    if ACT == 0:
        out = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476)) + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    else:
        s = 1.0 / (1.0 + tl.exp(-z))
        out = s * (1.0 + z * (1.0 - s))
    return out


@triton.jit
def _layer_norm(z, cols, D, ln_eps):
    """``(z - mean) / std`` over the first ``D`` columns (padding stays 0) and ``1 / std`` per row."""
    valid = (cols < D)[None, :]
    cen = tl.where(valid, z - (tl.sum(z, 1) / D)[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(cen * cen, 1) / D + ln_eps)
    return cen * rstd[:, None], rstd


@triton.jit
def _act_grad2(z, ACT: tl.constexpr):
    """``act''(z)``: GELU ``phi(z) (2 - z^2)``, SiLU ``s (1 - s) (2 + z (1 - 2 s))``."""
    if ACT == 0:
        out = tl.exp(-0.5 * z * z) * 0.3989422804014327 * (2.0 - z * z)
    else:
        s = 1.0 / (1.0 + tl.exp(-z))
        out = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    return out


@triton.jit
def _ln_vjp(dn, n, rstd, cols, D):
    """VJP of ``n = LN(z)`` at ``dn`` (also the map ``psi -> g_2`` of ``memory_grads``), padding kept at 0."""
    valid = (cols < D)[None, :]
    dn = tl.where(valid, dn, 0.0)
    out = rstd[:, None] * (dn - (tl.sum(dn, 1) / D)[:, None] - n * (tl.sum(dn * n, 1) / D)[:, None])
    return tl.where(valid, out, 0.0)


@triton.jit
def _keys(k, v, d, W1, W2, c1, c2, offs_d, D, sharp, p, eps, ln_eps, BIAS: tl.constexpr, ACT: tl.constexpr):
    """The memory at the keys and its hand backprop: ``g_1 [BT, E]``, ``g_2 [BT, D]`` and what the VJP needs."""
    kc = k * c1[None, :]
    Z1 = tl.dot(kc, W1)
    H1 = _act(Z1, ACT)
    a1 = _act_grad(Z1, ACT)
    H1c = H1 * c2[None, :]
    N, rstd = _layer_norm(tl.dot(H1c, W2), offs_d, D, ln_eps)
    R = k + N - v
    P = _psi(R, v, d, D, sharp, p, eps, BIAS)
    g2 = _ln_vjp(P, N, rstd, offs_d, D)
    G = tl.dot(g2, tl.trans(W2))
    g1 = G * c2[None, :] * a1
    return kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, g1


@triton.jit
def _keys_vjp(
    dg1, dg2, dH1, k, d, W1, W2, c1, c2, kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, offs_d, D, sharp, p, eps,
    BIAS: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    """VJP of :func:`_keys` for the gradients of ``g_1``, ``g_2`` and ``H_1``: ``dk, dv, ddelta, dW_1, dW_2`` and the
    gradients of the lq scales. This is the second-order part: ``act''`` and the VJP of the LayerNorm's VJP."""
    dG = dg1 * c2[None, :] * a1
    dc2 = tl.sum(dg1 * G * a1, 0)
    dZ1 = dg1 * G * c2[None, :] * _act_grad2(Z1, ACT)
    dg2 = tl.where((offs_d < D)[None, :], dg2 + tl.dot(dG, W2), 0.0)
    dW2 = tl.dot(tl.trans(dG), g2)
    dP = _ln_vjp(dg2, N, rstd, offs_d, D)
    dN = -rstd[:, None] * (dg2 * (tl.sum(P * N, 1) / D)[:, None] + P * (tl.sum(dg2 * N, 1) / D)[:, None])
    drstd = tl.sum(dg2 * g2, 1) / rstd
    dR, dd = _psi_vjp(R, d, dP, D, sharp, p, eps, BIAS)
    if BIAS == 0:
        dv = -dP
    else:
        dv = -dR
    dZ2 = _ln_vjp(dN + dR, N, rstd, offs_d, D) - (drstd * rstd * rstd / D)[:, None] * N
    dH1c = tl.dot(dZ2, tl.trans(W2))
    dW2 += tl.dot(tl.trans(H1c), dZ2)
    dc2 += tl.sum(dH1c * H1, 0)
    dZ1 += (dH1 + dH1c * c2[None, :]) * a1
    dkc = tl.dot(dZ1, tl.trans(W1))
    dW1 = tl.dot(tl.trans(kc), dZ1)
    return dR + dkc * c1[None, :], dv, dd, dW1, dW2, tl.sum(dkc * k, 0), dc2


@triton.jit
def _lag_step(
    W1, W2, k0, v0, d0, eta0, a0, offs_d, offs_e, D, E, sharp, p, eps, ln_eps, floor, scale1, scale2,
    BIAS: tl.constexpr, ACT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """Memora's lag token (Eq. 30): the exact step ``W = c Softmax(alpha log W - eta grad)`` from the first token
    of the chunk (the only nonzero row of ``k0, v0, eta0``); returns the new weights and the key intermediates."""
    ones_d = tl.zeros([BD], dtype=tl.float32) + 1.0
    ones_e = tl.zeros([BE], dtype=tl.float32) + 1.0
    kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, g1 = _keys(
        k0, v0, d0, W1, W2, ones_d, ones_e, offs_d, D, sharp, p, eps, ln_eps, BIAS, ACT
    )
    L1 = a0[:, None] * _log_floor(W1, floor) - tl.dot(tl.trans(eta0 * k0), g1)
    L2 = _log_floor(W2, floor) * a0[None, :] - tl.dot(tl.trans(H1), eta0 * g2)
    W1_lag = _simplex(L1, offs_d, D, offs_e, E, scale1)
    W2_lag = _simplex(L2, offs_e, E, offs_d, D, scale2)
    return W1_lag, W2_lag, kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, g1


@triton.jit
def _read(q, W1, W2, offs_d, D, ln_eps, ACT: tl.constexpr):
    """``M(W; q) = q + LN(act(q W_1) W_2)`` read directly from weights (Memora's lag token)."""
    z1 = tl.dot(q, W1)
    h = _act(z1, ACT)
    n, rstd = _layer_norm(tl.dot(h, W2), offs_d, D, ln_eps)
    return q + n, z1, h, n, rstd


@autotune(LAUNCH_CONFIGS, key=["BT", "BD", "BE", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _mlp_fwd_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, d_ptr, w1_ptr, w2_ptr, o_ptr, hs1_ptr, hs2_ptr, ht1_ptr, ht2_ptr,
    cu_ptr, chunk_ptr, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr,
    sharp, p, eps, q_exp, eps_q, ln_eps, floor, scale1, scale2,
    BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, BIAS: tl.constexpr, RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_DELTA: tl.constexpr,
    STORE_HT: tl.constexpr, STORE_STATES: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
        first_chunk = tl.load(chunk_ptr + i_n).to(tl.int64)
    else:
        bos = tl.cast(i_n, tl.int64) * T
        first_chunk = tl.cast(i_n, tl.int64) * tl.cdiv(T, BT)
    s = H * D
    base = bos * s + i_h * D
    offs_d, offs_e = tl.arange(0, BD), tl.arange(0, BE)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * D * E
    i = tl.arange(0, BT)
    lag = (i == 0)[:, None]
    W1 = _rows(w1_ptr + state, offs_d, offs_e, D, E, E)
    W2 = _rows(w2_ptr + state, offs_e, offs_d, E, D, D)
    for it in range(tl.cdiv(T, BT)):
        if STORE_STATES:
            chunk_state = ((first_chunk + it) * H + i_h) * D * E
            _store(hs1_ptr + chunk_state, W1, offs_d, offs_e, D, E, E)
            _store(hs2_ptr + chunk_state, W2, offs_e, offs_d, E, D, D)
        rows = it * BT + i
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base, k_ptr + base, v_ptr + base, eta_ptr + base, la_ptr + base, d_ptr + base,
            rows, offs_d, offs_d, T, D, D, s, s, HAS_ALPHA, HAS_DELTA, BT,
        )  # fmt: skip
        if RETENTION == 4:
            la0 = tl.sum(tl.where(lag, g, 0.0), 0)
            W1, W2, _, _, _, _, _, _, _, _, _, _, _, _ = _lag_step(
                W1, W2, tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, d, 0.0), tl.where(lag, eta, 0.0),
                tl.exp(la0), offs_d, offs_e, D, E, sharp, p, eps, ln_eps, floor, scale1, scale2, BIAS, ACT, BD, BE,
            )  # fmt: skip
            o_lag = _read(tl.where(lag, q, 0.0), W1, W2, offs_d, D, ln_eps, ACT)[0]
            eta = tl.where(lag, 0.0, eta)
            g = g - la0[None, :]
            g_last = g_last - la0
        c1, _ = _lq_scale(W1, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD)
        c2, _ = _lq_scale(W2, E, D, q_exp, eps_q, LQ_ROW, RETENTION, BE)
        kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, g1 = _keys(
            k, v, d, W1, W2, c1, c2, offs_d, D, sharp, p, eps, ln_eps, BIAS, ACT
        )
        ek, eg2 = eta * k, eta * g2
        read1 = q * c1[None, :]
        A1 = scores(read1, ek, g, BT, BD)
        h = _act(tl.dot(read1 * tl.exp(g), W1) - tl.dot(A1, g1), ACT)
        read2 = h * c2[None, :]
        S2 = tl.dot(read2, tl.trans(H1))
        z2 = tl.exp(g) * tl.dot(read2, W2) - mix(S2, eg2, g, BT, BD)
        o = q + _layer_norm(z2, offs_d, D, ln_eps)[0]
        if RETENTION == 4:
            o = tl.where(lag, o_lag, o)
        _store(o_ptr + base, o, rows, offs_d, T, D, s)

        tail = tl.exp(g_last[None, :] - g)
        update1 = tl.dot(tl.trans(ek * tail), g1)
        update2 = tl.dot(tl.trans(H1), eg2 * tail)
        if RETENTION == 4:
            W1 = _simplex(tl.exp(g_last)[:, None] * _log_floor(W1, floor) - update1, offs_d, D, offs_e, E, scale1)
            W2 = _simplex(_log_floor(W2, floor) * tl.exp(g_last)[None, :] - update2, offs_e, E, offs_d, D, scale2)
        else:
            W1 = tl.exp(g_last)[:, None] * W1 - update1
            W2 = W2 * tl.exp(g_last)[None, :] - update2
    if STORE_HT:
        _store(ht1_ptr + state, W1, offs_d, offs_e, D, E, E)
        _store(ht2_ptr + state, W2, offs_e, offs_d, E, D, D)


@autotune(LAUNCH_CONFIGS, key=["BT", "BD", "BE", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _mlp_bwd_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, d_ptr, hs1_ptr, hs2_ptr, do_ptr, dht1_ptr, dht2_ptr, cu_ptr, chunk_ptr,
    dq_ptr, dk_ptr, dv_ptr, deta_ptr, dla_ptr, dd_ptr, dh1_ptr, dh2_ptr, T, H: tl.constexpr, D: tl.constexpr,
    E: tl.constexpr, sharp, p, eps, q_exp, eps_q, ln_eps, floor, scale1, scale2,
    BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr, BIAS: tl.constexpr, RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_DELTA: tl.constexpr,
    HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
        first_chunk = tl.load(chunk_ptr + i_n).to(tl.int64)
    else:
        bos = tl.cast(i_n, tl.int64) * T
        first_chunk = tl.cast(i_n, tl.int64) * tl.cdiv(T, BT)
    s = H * D
    base = bos * s + i_h * D
    offs_d, offs_e = tl.arange(0, BD), tl.arange(0, BE)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * D * E
    i = tl.arange(0, BT)
    causal = i[None, :] <= i[:, None]
    lag = (i == 0)[:, None]
    dW1 = tl.zeros([BD, BE], dtype=tl.float32)
    dW2 = tl.zeros([BE, BD], dtype=tl.float32)
    if HAS_DHT:
        dW1 = _rows(dht1_ptr + state, offs_d, offs_e, D, E, E)
        dW2 = _rows(dht2_ptr + state, offs_e, offs_d, E, D, D)
    n_chunks = tl.cdiv(T, BT)
    for back in range(n_chunks):
        it = n_chunks - 1 - back
        chunk_state = ((first_chunk + it) * H + i_h) * D * E
        W1 = _rows(hs1_ptr + chunk_state, offs_d, offs_e, D, E, E)
        W2 = _rows(hs2_ptr + chunk_state, offs_e, offs_d, E, D, D)
        rows = it * BT + i
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base, k_ptr + base, v_ptr + base, eta_ptr + base, la_ptr + base, d_ptr + base,
            rows, offs_d, offs_d, T, D, D, s, s, HAS_ALPHA, HAS_DELTA, BT,
        )  # fmt: skip
        do = _rows(do_ptr + base, rows, offs_d, T, D, s)

        # the chunk's forward again, from its stored start state
        if RETENTION == 4:
            W1_start, W2_start = W1, W2
            la0 = tl.sum(tl.where(lag, g, 0.0), 0)
            k0, v0, d0 = tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, d, 0.0)
            eta0, q0 = tl.where(lag, eta, 0.0), tl.where(lag, q, 0.0)
            W1, W2, kc0, Z10, H10, a10, H1c0, N0, rstd0, R0, P0, g20, G0, g10 = _lag_step(
                W1, W2, k0, v0, d0, eta0, tl.exp(la0), offs_d, offs_e, D, E, sharp, p, eps, ln_eps, floor, scale1,
                scale2, BIAS, ACT, BD, BE,
            )  # fmt: skip
            eta = tl.where(lag, 0.0, eta)
            g = g - la0[None, :]
            g_last = g_last - la0
            do_lag = tl.where(lag, do, 0.0)
            do = tl.where(lag, 0.0, do)
        c1, power1 = _lq_scale(W1, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD)
        c2, power2 = _lq_scale(W2, E, D, q_exp, eps_q, LQ_ROW, RETENTION, BE)
        kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, g1 = _keys(
            k, v, d, W1, W2, c1, c2, offs_d, D, sharp, p, eps, ln_eps, BIAS, ACT
        )
        eg = tl.exp(g)
        ek, eg2 = eta * k, eta * g2
        read1 = q * c1[None, :]
        A1 = scores(read1, ek, g, BT, BD)
        z1 = tl.dot(read1 * eg, W1) - tl.dot(A1, g1)
        h = _act(z1, ACT)
        read2 = h * c2[None, :]
        S2 = tl.where(causal, tl.dot(read2, tl.trans(H1)), 0.0)
        M2 = tl.dot(read2, W2)
        mS2 = mix(S2, eg2, g, BT, BD)
        z2 = eg * M2 - mS2
        n_out, rstd_out = _layer_norm(z2, offs_d, D, ln_eps)
        tail = tl.exp(g_last[None, :] - g)
        decay_last = tl.exp(g_last)
        ekt, eg2t = ek * tail, eg2 * tail

        # the end state: W' = e^{g_last} W - U (linear), or c Softmax(e^{g_last} log W - U) (Memora, log space)
        if RETENTION == 4:
            logW1, logW2 = _log_floor(W1, floor), _log_floor(W2, floor)
            dU1 = _simplex_vjp(
                _simplex(decay_last[:, None] * logW1 - tl.dot(tl.trans(ekt), g1), offs_d, D, offs_e, E, scale1),
                dW1,
                scale1,
            )
            dU2 = _simplex_vjp(
                _simplex(logW2 * decay_last[None, :] - tl.dot(tl.trans(H1), eg2t), offs_e, E, offs_d, D, scale2),
                dW2,
                scale2,
            )
            dW1_prev = tl.where(W1 > floor, decay_last[:, None] * dU1 / tl.maximum(W1, floor), 0.0)
            dW2_prev = tl.where(W2 > floor, dU2 * decay_last[None, :] / tl.maximum(W2, floor), 0.0)
            dg_last = decay_last * (tl.sum(logW1 * dU1, 1) + tl.sum(logW2 * dU2, 0))
        else:
            dU1, dU2 = dW1, dW2
            dW1_prev = decay_last[:, None] * dW1
            dW2_prev = dW2 * decay_last[None, :]
            dg_last = decay_last * (tl.sum(W1 * dW1, 1) + tl.sum(W2 * dW2, 0))
        dekt = -tl.dot(g1, tl.trans(dU1))
        dg1 = -tl.dot(ekt, dU1)
        dH1 = -tl.dot(eg2t, tl.trans(dU2))
        deg2t = -tl.dot(H1, dU2)
        dek = dekt * tail
        deg2 = deg2t * tail
        dg = -dekt * ekt - deg2t * eg2t
        dg_last += tl.sum(dekt * ekt, 0) + tl.sum(deg2t * eg2t, 0)

        # the read of layer 2: o = q + LN(z_2)
        dz2 = _ln_vjp(do, n_out, rstd_out, offs_d, D)
        dM2 = dz2 * eg
        dg += dM2 * M2
        dread2 = tl.dot(dM2, tl.trans(W2))
        dW2_prev += tl.dot(tl.trans(read2), dM2)
        dS2 = -scores(dz2, eg2, g, BT, BD)
        mS2_t = mix_t(S2, dz2, g, BT, BD)
        deg2 -= mS2_t
        dg += eg2 * mS2_t - dz2 * mS2
        dread2 += tl.dot(dS2, H1)
        dH1 += tl.dot(tl.trans(dS2), read2)
        dc2 = tl.sum(dread2 * h, 0)

        # the read of layer 1
        dz1 = dread2 * c2[None, :] * _act_grad(z1, ACT)
        dW1_prev += tl.dot(tl.trans(read1 * eg), dz1)
        dreg = tl.dot(dz1, tl.trans(W1))
        dread1 = dreg * eg
        dg += dreg * read1 * eg
        dA1 = tl.where(causal, -tl.dot(dz1, tl.trans(g1)), 0.0)
        dg1 += -tl.dot(tl.trans(A1), dz1)
        mA1, mA1_t = mix(dA1, ek, g, BT, BD), mix_t(dA1, read1, g, BT, BD)
        dread1 += mA1
        dek += mA1_t
        dg += read1 * mA1 - ek * mA1_t
        dq = do + dread1 * c1[None, :]
        dc1 = tl.sum(dread1 * q, 0)

        # the memory at the keys
        dk, dv, dd, dW1k, dW2k, dc1k, dc2k = _keys_vjp(
            dg1, deg2 * eta, dH1, k, d, W1, W2, c1, c2, kc, Z1, H1, a1, H1c, N, rstd, R, P, g2, G, offs_d, D,
            sharp, p, eps, BIAS, ACT,
        )  # fmt: skip
        dk += dek * eta
        deta = deg2 * g2 + dek * k
        dW1_prev += dW1k
        dW2_prev += dW2k
        if RETENTION == 2:
            dW1_prev += _lq_grad(W1, c1, power1, dc1 + dc1k, q_exp, eps_q, LQ_ROW, BD)
            dW2_prev += _lq_grad(W2, c2, power2, dc2 + dc2k, q_exp, eps_q, LQ_ROW, BE)
        dla = tl.sum(dg, 0)[None, :] - tl.cumsum(dg, 0) + dg + dg_last[None, :]

        if RETENTION == 4:
            # the lag token: its read from W_lag, then its exact step from the chunk start (Eq. 30)
            o_lag, zq1, hq, nq, rq = _read(q0, W1, W2, offs_d, D, ln_eps, ACT)
            dzq2 = _ln_vjp(do_lag, nq, rq, offs_d, D)
            dW2_prev += tl.dot(tl.trans(hq), dzq2)
            dzq1 = tl.dot(dzq2, tl.trans(W2)) * _act_grad(zq1, ACT)
            dW1_prev += tl.dot(tl.trans(q0), dzq1)
            dq += do_lag + tl.dot(dzq1, tl.trans(W1))
            dL1 = _simplex_vjp(W1, dW1_prev, scale1)
            dL2 = _simplex_vjp(W2, dW2_prev, scale2)
            logS1, logS2 = _log_floor(W1_start, floor), _log_floor(W2_start, floor)
            a0 = tl.exp(la0)
            dla0 = a0 * (tl.sum(dL1 * logS1, 1) + tl.sum(dL2 * logS2, 0))
            ek0, eg20 = eta0 * k0, eta0 * g20
            dek0 = -tl.dot(g10, tl.trans(dL1))
            deg20 = -tl.dot(H10, dL2)
            dk0, dv0, dd0, dW1k, dW2k, _, _ = _keys_vjp(
                -tl.dot(ek0, dL1), deg20 * eta0, -tl.dot(eg20, tl.trans(dL2)), k0, d0, W1_start, W2_start,
                tl.zeros([BD], dtype=tl.float32) + 1.0, tl.zeros([BE], dtype=tl.float32) + 1.0,
                kc0, Z10, H10, a10, H1c0, N0, rstd0, R0, P0, g20, G0, offs_d, D, sharp, p, eps, BIAS, ACT,
            )  # fmt: skip
            dk += dk0 + dek0 * eta0
            dv += dv0
            dd += dd0
            deta = tl.where(lag, dek0 * k0 + deg20 * g20, deta)
            dla = tl.where(lag, dla0[None, :], dla)
            dW1_prev = tl.where(W1_start > floor, a0[:, None] * dL1 / tl.maximum(W1_start, floor), 0.0) + dW1k
            dW2_prev = tl.where(W2_start > floor, dL2 * a0[None, :] / tl.maximum(W2_start, floor), 0.0) + dW2k
        dW1, dW2 = dW1_prev, dW2_prev

        _store(dq_ptr + base, dq, rows, offs_d, T, D, s)
        _store(dk_ptr + base, dk, rows, offs_d, T, D, s)
        _store(dv_ptr + base, dv, rows, offs_d, T, D, s)
        _store(deta_ptr + base, deta, rows, offs_d, T, D, s)
        if HAS_ALPHA:
            _store(dla_ptr + base, dla, rows, offs_d, T, D, s)
        if HAS_DELTA:
            _store(dd_ptr + base, dd, rows, offs_d, T, D, s)
    _store(dh1_ptr + state, dW1, offs_d, offs_e, D, E, E)
    _store(dh2_ptr + state, dW2, offs_e, offs_d, E, D, D)


def _meta(spec: MemorySpec, chunk_size: int, D: int, log_alpha, delta, cu_seqlens) -> dict:
    return dict(
        BT=chunk_size,
        BD=max(16, triton.next_power_of_2(D)),
        BE=max(16, triton.next_power_of_2(spec.expansion * D)),
        BIAS=bias_code(spec),
        RETENTION=RETENTION_CODES[spec.retention],
        LQ_ROW=spec.lq_scope == "row",
        ACT=0 if spec.activation == "gelu" else 1,
        HAS_ALPHA=log_alpha is not None,
        HAS_DELTA=delta is not None,
        IS_VARLEN=cu_seqlens is not None,
    )


def _scalars(spec: MemorySpec, D: int) -> tuple[float, ...]:
    """The kernels' float arguments; Memora's simplex scale ``c`` is per weight (its fan-in, ``kl_axis='fan_in'``)."""
    E = spec.expansion * D
    scales = (spec.kl_scale, spec.kl_scale) if spec.kl_scale is not None else (math.sqrt(D), math.sqrt(E))
    return (spec.sign_sharpness, spec.p, spec.eps, spec.q, spec.eps**spec.q, spec.ln_eps, spec.kl_floor, *scales)


class ChunkMirasMLPFunction(torch.autograd.Function):
    """Triton forward and backward of the 2-layer MLP memory (inputs ``[B, T, H, D]``, gates expanded)."""

    @staticmethod
    def forward(ctx, q, k, v, eta, log_alpha, delta, w1, w2, spec, chunk_size, cu_seqlens, output_final_state):
        B, T, H, D = q.shape
        E = spec.expansion * D
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        offsets = None if cu_seqlens is None else _chunk_offsets(cu_seqlens, chunk_size)
        n_chunks = B * triton.cdiv(T, chunk_size) if offsets is None else int(offsets[-1])
        save = ctx.needs_input_grad[:8] != (False,) * 8
        f32 = dict(device=q.device, dtype=torch.float32)
        o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
        hs1 = torch.empty(n_chunks if save else 1, H, D, E, **f32)
        hs2 = torch.empty(n_chunks if save else 1, H, E, D, **f32)
        ht1 = torch.empty(N, H, D, E, **f32) if output_final_state else hs1
        ht2 = torch.empty(N, H, E, D, **f32) if output_final_state else hs2
        _mlp_fwd_kernel[(N, H)](
            q,
            k,
            v,
            eta,
            *_or_dummy(hs1, log_alpha, delta),
            w1,
            w2,
            o,
            hs1,
            hs2,
            ht1,
            ht2,
            *_or_dummy(hs1, cu_seqlens, offsets),
            T,
            H,
            D,
            E,
            *_scalars(spec, D),
            **_meta(spec, chunk_size, D, log_alpha, delta, cu_seqlens),
            STORE_HT=output_final_state,
            STORE_STATES=save,
        )
        ctx.save_for_backward(q, k, v, eta, log_alpha, delta, hs1, hs2, cu_seqlens, offsets)
        ctx.spec, ctx.chunk_size = spec, chunk_size
        ctx.mark_non_differentiable(*(() if output_final_state else (ht1, ht2)))
        return o, ht1, ht2

    @staticmethod
    def backward(ctx, do, dht1, dht2):
        q, k, v, eta, log_alpha, delta, hs1, hs2, cu_seqlens, offsets = ctx.saved_tensors
        spec = ctx.spec
        B, T, H, D = q.shape
        E = spec.expansion * D
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        f32 = dict(dtype=torch.float32, device=q.device)
        dq, dk, dv, deta = (torch.empty(q.shape, **f32) for _ in range(4))
        dla = torch.empty(q.shape, **f32) if log_alpha is not None else None
        dd = torch.empty(q.shape, **f32) if delta is not None else None
        dh1, dh2 = torch.empty(N, H, D, E, **f32), torch.empty(N, H, E, D, **f32)
        has_dht = dht1 is not None or dht2 is not None
        if has_dht:
            dht1 = torch.zeros_like(dh1) if dht1 is None else dht1.float().contiguous()
            dht2 = torch.zeros_like(dh2) if dht2 is None else dht2.float().contiguous()
        _mlp_bwd_kernel[(N, H)](
            q,
            k,
            v,
            eta,
            *_or_dummy(hs1, log_alpha, delta),
            hs1,
            hs2,
            do.contiguous(),
            *_or_dummy(hs1, dht1, dht2, cu_seqlens, offsets),
            dq,
            dk,
            dv,
            deta,
            *_or_dummy(hs1, dla, dd),
            dh1,
            dh2,
            T,
            H,
            D,
            E,
            *_scalars(spec, D),
            **_meta(spec, ctx.chunk_size, D, log_alpha, delta, cu_seqlens),
            HAS_DHT=has_dht,
        )

        def cast(grad, like):
            return None if grad is None or like is None else grad.to(like.dtype)

        grads = (dq, dk, dv, deta, dla, dd)
        likes = (q, k, v, eta, log_alpha, delta)
        return (*(cast(g, x) for g, x in zip(grads, likes, strict=True)), dh1, dh2, None, None, None, None)


def chunk_miras_mlp(
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
    """The chunkwise MLP memory on Triton, forward and backward; called by :func:`chunk_miras`, which checks the
    arguments (same signature).

    ``initial_state`` should be given (the layer's learned ``W_0``): an MLP memory at zero weights stays at the
    symmetric point. None starts from zeros, as :func:`naive_chunk_miras` does.
    """
    B, T, H, D = q.shape
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    w1, w2 = (w.float().contiguous() for w in _initial(initial_state, spec, N, H, D, D, q.float())[0])
    log_alpha = None
    if spec.retention != "none":
        log_alpha = channelwise(alpha, D).float().clamp_min(torch.finfo(torch.float32).tiny).log()
    o, ht1, ht2 = ChunkMirasMLPFunction.apply(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        channelwise(eta, D),
        log_alpha,
        channelwise(delta, D) if spec.needs_delta else None,
        w1,
        w2,
        spec,
        chunk_size,
        None if cu_seqlens is None else cu_seqlens.to(torch.int32),
        output_final_state,
    )
    if not output_final_state:
        return o, None
    final = (ht1, ht2)
    if spec.retention == "lq":
        return o, {"weights": tuple(_lq_normalise(w, spec) for w in final), "accumulator": final}
    return o, {"weights": final}


__all__ = ["ChunkMirasMLPFunction", "chunk_miras_mlp"]
