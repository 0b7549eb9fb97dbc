"""Triton chunk forward and backward of the Miras MLP memory ``M(x) = x + LN(act(x W_1) W_2)`` (section 5.3-5.4).

The transcription of ``naive_chunk_miras`` (``read='chunk'``) for a 2-layer memory with expansion ``E / D``.
The forward's state pass and the backward's ``CARRY`` part run one program per (sequence, head) that walks the
chunks. Per chunk, with ``g`` the within-chunk cumulative log decay on the ``D`` axis (rows of ``W_1``, columns of
``W_2``) and ``c_1, c_2`` the lq scales (1 unless ``retention='lq'``)::

    Z_1 = (k c_1) W_1,  H_1 = act(Z_1),  y = k + LN(H_1 c_2 W_2)            the memory at the chunk start
    g_2 = LN'(psi(y - v)),  g_1 = (g_2 (c_2 W_2)^T) act'(Z_1)               its hand backprop (Eq. 28)
    z_1 = (q c_1 e^g) W_1 - A_1 g_1,    A_1[i, j] = sum_f (q c_1)_if (eta k)_jf e^{g_if - g_jf}
    h = act(z_1),  z_2 = e^g (h c_2 W_2) - sum_j (h c_2 . H_1j) (eta g_2)_j e^{g_i - g_j}
    o = q + LN(z_2)                                                         the dual reads (Eq. 29)
    W_1' = e^{g_last} W_1 - (eta k e^{g_last - g})^T g_1,   W_2' = W_2 e^{g_last} - H_1^T (eta g_2 e^{g_last - g})

The forward is split as ``chunk_linear`` splits the linear memory's: a serial state pass
(``_mlp_fwd_state_kernel``) forms the memory at the keys, ``g_1, g_2`` and the end state and stores every
chunk-start state and, per token, ``g_1 [T, E]`` and ``eta g_2 [T, D]``; then one program per (global chunk, head)
(``_mlp_fwd_output_kernel``) forms both dual reads and ``o`` from them, ``H_1`` and the lq scales again from the
stored chunk-start weights. Every chunk-start state is stored even when no gradient is needed. What stays serial
is the larger part of the forward's products (``benchmarks.miras_mlp_split``). The backward is linear in the
gradients of ``o`` and of the final state, and runs as two launches of ``_mlp_bwd_kernel``: ``READ``, over the
chunks, each chunk's reads taken back from its start weights with no gradient at its end, which leaves the input
gradients and a per-chunk weight gradient ``dr``; then ``CARRY``, per (sequence, head), the carried ``dW``
through the writes alone, plus ``dr`` at each chunk start.

The weights of a head (``W_1 [D, E]`` and ``W_2 [E, D]``: 128 KB in fp32 at ``D = 64, E = 256``) fit neither a
program's registers nor, as ``tl.dot`` operands, its shared memory. They stay in global memory, in the
per-chunk state buffers that the L2 cache holds, and every pass over them walks ``E`` in tiles of ``BET``
columns (``W_1[:, e]``, ``W_2[e, :]``). What sums over ``E`` (the memory at the keys, the layer-2 read, the
gradients flowing back to ``D``-sized tensors) accumulates over the tiles; a tile's ``[BT, BET]``
intermediates are recomputed in each pass that needs them instead of being stored.

Memora (``retention='kl'``) takes the exact step on the chunk's first token (the lag token, Eq. 30), runs the
rest of the chunk from the weights after it, and carries ``c Softmax(e^{g_last} log W - U)`` (Eq. 27, 31-32). As in
``chunk_linear`` the forward's state pass takes the lag step and stores the weights after it beside the
chunk-start state; with ``eta_0 = 0`` and the decay counted from row 0 the lag row is an ordinary row of the read.
With ``kl_read='tangent'`` both dual reads are the first-order softmax step (``kernels/miras/README.md``): the
decay through ``W log W``, the writes with centred reads at the fan-in mean ``c / fan_in``.
The softmax of ``W_2`` runs over ``E`` (its fan-in), across tiles: the logits are written, then normalised
in a second pass with the running column maximum and sum. The forward keeps every chunk-start state; each
backward part recomputes a chunk from its start state, and ``CARRY`` walks the chunks in reverse and carries
``(dW_1, dW_2)`` in a pair of buffers. Through the hand backprop this needs second derivatives: ``act''`` and
the VJP of the LayerNorm's own VJP (``kernels/miras/README.md``). A program rereads buffers that other threads
of it wrote, so every such hand-over passes a ``tl.debug_barrier``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.miras.chunk_linear import _after_lag, _gates, _queries, _sequence, _values
from kernels.miras.common import (
    KL_TANGENT,
    LAUNCH_CONFIGS,
    _centre,
    _chunk_inputs,
    _chunk_offsets,
    _log_floor,
    _lq_grad,
    _or_dummy,
    _psi,
    _psi_vjp,
    _rows,
    _simplex,
    _simplex_vjp,
    _store,
    _tangent_rows,
    _tangent_rows_dw,
    _tangent_rows_vjp,
    bias_code,
    chunk_retention,
    kernel_gates,
)
from kernels.miras.decay import dot, mix, mix_t, scores
from kernels.miras.naive import _initial, _lq_normalise
from kernels.miras.spec import MemorySpec
from kernels.utils import autotune

TILE_E = 64
"""Widest tile: columns of ``W_1`` (rows of ``W_2``) per tile; ``[D, 64]`` fp32 weights are 16 KB at ``D = 64``."""


def tile_e(D: int) -> int:
    """Columns per tile for heads of ``D``: ``BD x BET = 4096`` fp32 elements (16 KB) a weight tile, at most
    :data:`TILE_E` (64 up to ``D = 64``, 32 at 128). At ``D = 128`` 64-column tiles made the backward need 224 KB of
    shared memory (Memora's 288 KB, past the 227 KB of an H100 block); 32-column ones need 160 KB for both (sm_90a,
    ``reports/benchmarks/miras_resources_sm_90a.md``)."""
    return min(TILE_E, max(16, 4096 // max(16, triton.next_power_of_2(D))))


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
def _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET: tl.constexpr):
    """Tile ``t``: ``W_1[:, e] [BD, BET]``, ``W_2[e, :] [BET, BD]`` and ``e`` (0 outside ``D`` rows, ``E`` columns)."""
    cols = t * BET + tl.arange(0, BET)
    return _rows(w1_ptr, offs_d, cols, D, E, E), _rows(w2_ptr, cols, offs_d, E, D, D), cols


@triton.jit
def _put(w1_ptr, w2_ptr, W1, W2, cols, offs_d, D, E):
    _store(w1_ptr, W1, offs_d, cols, D, E, E)
    _store(w2_ptr, W2, cols, offs_d, E, D, D)


KC, G2, R1EG, A1S, EKT, EG2T, DM2, DS2, DZ2, Q0, DZQ2, K0, G20, EK0, EG20, DZ20, R1, FADE, DN2 = (
    tl.constexpr(i) for i in range(19)
)
N_SLOTS = tl.constexpr(19)
"""Workspace slots of the ``[BT, D]`` (``A1S``, ``DS2``: ``[BT, BT]``) tensors that every tile of a pass multiplies
with. Held in registers across a tile loop, each would also keep a ``tl.dot`` operand copy in shared memory for the
whole loop (the compiler hoists it); written once per chunk and read where used, they take registers and shared
memory only for that product."""


@triton.jit
def _stash(ws_ptr, slot, x, R: tl.constexpr, C: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr):
    r, c = tl.arange(0, R), tl.arange(0, C)
    tl.store(ws_ptr + slot * BT * BW + r[:, None] * BW + c[None, :], x)


@triton.jit
def _fetch(ws_ptr, slot, R: tl.constexpr, C: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr):
    r, c = tl.arange(0, R), tl.arange(0, C)
    return tl.load(ws_ptr + slot * BT * BW + r[:, None] * BW + c[None, :], volatile=True)


@triton.jit
def _fetch_t(ws_ptr, slot, R: tl.constexpr, C: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr):
    """The transpose ``[C, R]`` of the ``[R, C]`` tensor in ``slot``."""
    r, c = tl.arange(0, R), tl.arange(0, C)
    return tl.load(ws_ptr + slot * BT * BW + r[None, :] * BW + c[:, None], volatile=True)


@triton.jit
def _powq(W, q_exp):
    a = tl.abs(W)
    return tl.where(a > 0, tl.exp(q_exp * tl.log(tl.maximum(a, 1e-38))), 0.0)


@triton.jit
def _lq_c(power, q_exp, eps_q):
    return tl.exp(-(q_exp - 2.0) / q_exp * tl.log(tl.maximum(power, eps_q)))


@triton.jit
def _scales(
    w1_ptr, w2_ptr, offs_d, D, E, q_exp, eps_q, LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, BD: tl.constexpr,
    BET: tl.constexpr, NE: tl.constexpr,
):  # fmt: skip
    """lq (Eq. 24): ``c_1`` and ``||.||_q^q`` per row of ``W_1`` (the matrix scope repeats the whole sum), and the
    whole ``||W_2||_q^q``; ones for other retentions."""
    p1 = tl.zeros([BD], dtype=tl.float32)
    p2 = 0.0
    if RETENTION == 2:
        for t in range(NE):
            W1, W2, cols = _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET)
            p1 += tl.sum(_powq(W1, q_exp), 1)
            p2 += tl.sum(tl.sum(_powq(W2, q_exp), 1), 0)
        if not LQ_ROW:
            p1 = tl.zeros([BD], dtype=tl.float32) + tl.sum(p1, 0)
        c1 = _lq_c(p1, q_exp, eps_q)
    else:
        p1 += 1.0
        c1 = p1
    return c1, p1, p2


@triton.jit
def _scale2(W2, p2, q_exp, eps_q, LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, BET: tl.constexpr):
    """``c_2`` and ``||.||_q^q`` per row of a ``W_2`` tile (the matrix scope: ``p2``, the whole sum); ones otherwise."""
    if RETENTION == 2:
        if LQ_ROW:
            power = tl.sum(_powq(W2, q_exp), 1)
        else:
            power = tl.zeros([BET], dtype=tl.float32) + p2
        c = _lq_c(power, q_exp, eps_q)
    else:
        power = tl.zeros([BET], dtype=tl.float32) + 1.0
        c = power
    return c, power


@triton.jit
def _keys(
    w1_ptr, w2_ptr, k, v, d, c1, p2, offs_d, D, E, sharp, p, eps, q_exp, eps_q, ln_eps, BIAS: tl.constexpr,
    LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, ACT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
    BET: tl.constexpr, NE: tl.constexpr,
):  # fmt: skip
    """The memory at the keys (a pass over the tiles) and the ``D``-sized part of its hand backprop:
    ``kc = k c_1``, ``N, rstd = LN(H_1 c_2 W_2)``, ``R = k + N - v``, ``P = psi(R)`` and ``g_2 = LN'(P)``."""
    kc = k * c1[None, :]
    Y = tl.zeros([BT, BD], dtype=tl.float32)
    for t in range(NE):
        W1, W2, cols = _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET)
        c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
        Y += dot(_act(dot(kc, W1), ACT) * c2[None, :], W2)
    N, rstd = _layer_norm(Y, offs_d, D, ln_eps)
    R = k + N - v
    P = _psi(R, v, d, D, sharp, p, eps, BIAS)
    return kc, N, rstd, R, P, _ln_vjp(P, N, rstd, offs_d, D)


@triton.jit
def _chain(ws, W1, W2, c2, floor, scale1, ACT: tl.constexpr, TANGENT: tl.constexpr, READ: tl.constexpr,
           BT: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr):  # fmt: skip
    """A tile's intermediates: at the keys ``Z_1, H_1, act'(Z_1), G = g_2 W_2^T, g_1``; of the read ``z_1, h`` and
    ``h c_2`` (``kc, g_2, read_1 e^g, A_1`` from the workspace; the tangent read: ``read_1`` and ``e^g - 1``),
    zeros unless ``READ``."""
    Z1 = dot(_fetch(ws, KC, BT, BD, BT, BW), W1)
    a1 = _act_grad(Z1, ACT)
    G = dot(_fetch(ws, G2, BT, BD, BT, BW), tl.trans(W2))
    g1 = G * c2[None, :] * a1
    z1 = tl.zeros_like(Z1)
    if READ:
        if TANGENT:
            z1 = _tangent_rows(_fetch(ws, R1, BT, BD, BT, BW), W1, _fetch(ws, FADE, BT, BD, BT, BW), floor, scale1)
        else:
            z1 = dot(_fetch(ws, R1EG, BT, BD, BT, BW), W1)
        z1 -= dot(_fetch(ws, A1S, BT, BT, BT, BW), g1)
    h = _act(z1, ACT)
    return Z1, _act(Z1, ACT), a1, G, g1, z1, h, h * c2[None, :]


@triton.jit
def _tangent_sums(W2, read2, H1, floor):
    """A tile's share of the sums over ``E`` that the layer-2 tangent read adds: ``read2 (W_2 log W_2) [BT, BD]``,
    the column sums of ``W_2 log W_2 [BD]`` and the row sums of ``read2`` and ``H_1`` (``[BT]`` each)."""
    WL2 = W2 * _log_floor(W2, floor)
    return dot(read2, WL2), tl.sum(WL2, 0), tl.sum(read2, 1), tl.sum(H1, 1)


@triton.jit
def _read2_scores(S2, hs, H1s, causal, E, scale2, TANGENT: tl.constexpr):
    """The layer-2 scores from ``S2 = read2 H_1^T``: causal; the tangent read's write part reads through the fan-in
    mean ``c_2 / E`` of ``W_2``, so its reads are centred over ``E`` (``hs, H1s``: the row sums of both sides)."""
    if TANGENT:
        S2 = (S2 - hs[:, None] * H1s[None, :] / E) * (scale2 / E)
    return tl.where(causal, S2, 0.0)


@triton.jit
def _read2_retained(M2, N2, cw2, eg, scale2, TANGENT: tl.constexpr):
    """The layer-2 read of the retained weights from ``M2 = read2 W_2``: ``e^g M2`` (gates on the columns), or the
    tangent read ``M2 + (e^g - 1) (N2 - M2 cw2 / c_2)`` (``N2 = read2 (W_2 log W_2)``, ``cw2`` its column sums)."""
    if TANGENT:
        out = M2 + (eg - 1.0) * (N2 - M2 * cw2[None, :] / scale2)
    else:
        out = eg * M2
    return out


@triton.jit
def _read2_retained_vjp(dz2, M2, N2, cw2, eg, scale2):
    """``(dM2, dN2, dcw2, dg)`` of the tangent :func:`_read2_retained` for the output gradient ``dz2``."""
    fade = eg - 1.0
    dM2 = dz2 * (1.0 - fade * cw2[None, :] / scale2)
    dcw2 = -tl.sum(dz2 * fade * M2, 0) / scale2
    return dM2, dz2 * fade, dcw2, dz2 * (N2 - M2 * cw2[None, :] / scale2) * eg


@triton.jit
def _read2_grad(ws, W2, H1, dhs, cols, E, floor, TANGENT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                BW: tl.constexpr):  # fmt: skip
    """A tile's ``d(h c_2) = dM_2 W_2^T + dS_2 H_1`` (tangent: ``+ dN_2 (W_2 log W_2)^T + dhs``, ``dhs`` the
    gradient of the row sums of :func:`_read2_scores`): the gradient of the layer-2 read."""
    dM2, dS2 = _fetch(ws, DM2, BT, BD, BT, BW), _fetch(ws, DS2, BT, BT, BT, BW)
    out = dot(dM2, tl.trans(W2)) + dot(dS2, H1)
    if TANGENT:
        WL2 = W2 * _log_floor(W2, floor)
        out += dot(_fetch(ws, DN2, BT, BD, BT, BW), tl.trans(WL2)) + tl.where((cols < E)[None, :], dhs[:, None], 0.0)
    return out


@triton.jit
def _g1_grad(ws, dz1, dU1, READ: tl.constexpr, CARRY: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
             BW: tl.constexpr):  # fmt: skip
    """A tile's ``dg_1 = -A_1^T dz_1 - (eta k e^{g_last - g}) dU_1``: through the layer-1 read (``READ``) and the
    end state (``CARRY``)."""
    out = tl.zeros_like(dz1)
    if READ:
        out -= dot(_fetch_t(ws, A1S, BT, BT, BT, BW), dz1)
    if CARRY:
        out -= dot(_fetch(ws, EKT, BT, BD, BT, BW), dU1)
    return out


@triton.jit
def _keys_rows_vjp(dg2, d, N, rstd, R, P, g2, offs_d, D, sharp, p, eps, BIAS: tl.constexpr):
    """For the gradient ``dg2`` of ``g_2 = LN'(psi(k + N - v))``, the second-order part of the VJP (through the
    LayerNorm's own VJP): ``dR`` (also ``dk``'s direct term), ``dv``, ``ddelta`` and ``dZ_2`` of ``N = LN(Z_2)``."""
    dg2 = tl.where((offs_d < D)[None, :], dg2, 0.0)
    dP = _ln_vjp(dg2, N, rstd, offs_d, D)
    dN = -rstd[:, None] * (dg2 * (tl.sum(P * N, 1) / D)[:, None] + P * (tl.sum(dg2 * N, 1) / D)[:, None])
    drstd = tl.sum(dg2 * g2, 1) / rstd
    dR, dd = _psi_vjp(R, d, dP, D, sharp, p, eps, BIAS)
    if BIAS == 0:
        dv = -dP
    else:
        dv = -dR
    dZ2 = _ln_vjp(dN + dR, N, rstd, offs_d, D) - (drstd * rstd * rstd / D)[:, None] * N
    return dR, dv, dd, dZ2


@triton.jit
def _online(L, rows, E, offs_d, D, m, s):
    """Running column maximum ``m`` and sum ``s`` of ``exp(L - m)`` over the valid rows of the tiles seen so far."""
    valid = (rows < E)[:, None] & (offs_d < D)[None, :]
    m_new = tl.maximum(m, tl.max(tl.where(valid, L, -1e30), 0))
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(tl.where(valid, L, float("-inf")) - m_new[None, :]), 0)
    return m_new, s


@triton.jit
def _normalise(w2_ptr, m, s, scale, offs_d, D, E, BET: tl.constexpr, NE: tl.constexpr):
    """Turn the logits of ``W_2`` written tile by tile into ``scale * softmax`` over ``E`` (its fan-in), in place.
    Each thread rewrites exactly the elements it read."""
    for t in range(NE):
        rows = t * BET + tl.arange(0, BET)
        L = _rows(w2_ptr, rows, offs_d, E, D, D)
        valid = (rows < E)[:, None] & (offs_d < D)[None, :]
        W = scale * tl.exp(tl.where(valid, L, float("-inf")) - m[None, :]) / tl.maximum(s, 1e-30)[None, :]
        _store(w2_ptr, W, rows, offs_d, E, D, D)


@triton.jit
def _lag_step(
    w1_ptr, w2_ptr, lag1_ptr, lag2_ptr, k0, v0, d0, eta0, a0, offs_d, D, E, sharp, p, eps, ln_eps, floor, scale1,
    scale2, BIAS: tl.constexpr, ACT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BET: tl.constexpr,
    NE: tl.constexpr, ws, BW: tl.constexpr,
):  # fmt: skip
    """Memora's lag token (Eq. 30): the exact step ``W = c Softmax(alpha log W - eta grad)`` of the chunk's first
    token (the one nonzero row of ``k0, v0, d0, eta0``) from the weights at ``w``, written to ``lag``."""
    _lag_keys(
        w1_ptr, w2_ptr, k0, v0, d0, eta0, offs_d, D, E, sharp, p, eps, ln_eps, BIAS, ACT, BT, BD, BET, NE, ws, BW
    )  # fmt: skip
    m = tl.zeros([BD], dtype=tl.float32) - 1e30
    s = tl.zeros([BD], dtype=tl.float32)
    for t in range(NE):
        W1, W2, cols = _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET)
        Z1 = dot(_fetch(ws, K0, BT, BD, BT, BW), W1)
        g1 = dot(_fetch(ws, G20, BT, BD, BT, BW), tl.trans(W2)) * _act_grad(Z1, ACT)
        L1 = a0[:, None] * _log_floor(W1, floor) - dot(_fetch_t(ws, EK0, BT, BD, BT, BW), g1)
        _store(lag1_ptr, _simplex(L1, offs_d, D, cols, E, scale1), offs_d, cols, D, E, E)
        L2 = _log_floor(W2, floor) * a0[None, :] - dot(tl.trans(_act(Z1, ACT)), _fetch(ws, EG20, BT, BD, BT, BW))
        m, s = _online(L2, cols, E, offs_d, D, m, s)
        _store(lag2_ptr, L2, cols, offs_d, E, D, D)
    tl.debug_barrier()
    _normalise(lag2_ptr, m, s, scale2, offs_d, D, E, BET, NE)
    tl.debug_barrier()


@triton.jit
def _lag_keys(
    w1_ptr, w2_ptr, k0, v0, d0, eta0, offs_d, D, E, sharp, p, eps, ln_eps, BIAS: tl.constexpr, ACT: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr, ws, BW: tl.constexpr,
):  # fmt: skip
    """The lag token's memory at its key from the weights at ``w`` (:func:`_keys`, no lq), its row tensors stashed
    for the step and its VJP; returns the key-side tensors the VJP needs."""
    ones = tl.zeros([BD], dtype=tl.float32) + 1.0
    kc0, N0, rstd0, R0, P0, g20 = _keys(
        w1_ptr, w2_ptr, k0, v0, d0, ones, 0.0, offs_d, D, E, sharp, p, eps, 1.0, 1.0, ln_eps, BIAS, False, 4, ACT,
        BT, BD, BET, NE,
    )  # fmt: skip
    _stash(ws, K0, k0, BT, BD, BT, BW)
    _stash(ws, G20, g20, BT, BD, BT, BW)
    _stash(ws, EK0, eta0 * k0, BT, BD, BT, BW)
    _stash(ws, EG20, eta0 * g20, BT, BD, BT, BW)
    tl.debug_barrier()
    return N0, rstd0, R0, P0, g20


@triton.jit
def _chunk_start(
    ws, cur1, cur2, q, k, v, d, eta, g, g_last, q0, offs_d, D, E, sharp, p, eps, q_exp, eps_q, ln_eps, scale1,
    BIAS: tl.constexpr, LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, ACT: tl.constexpr, READ: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr,
):  # fmt: skip
    """What the backward computes of a chunk before its tile loops (the chunk's forward again): the lq scales, the
    memory at the keys, the layer-1 scores ``A_1 = scores(read1s, eta k)`` and the decays; the row tensors the tiles
    multiply with go to the workspace (:func:`_chain` reads them): those of the reads if ``READ``, else those of the
    writes."""
    c1, p1, p2 = _scales(cur1, cur2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD, BET, NE)
    kc, N, rstd, R, P, g2 = _keys(
        cur1, cur2, k, v, d, c1, p2, offs_d, D, E, sharp, p, eps, q_exp, eps_q, ln_eps, BIAS, LQ_ROW, RETENTION,
        ACT, BT, BD, BET, NE,
    )  # fmt: skip
    ek, eg2 = eta * k, eta * g2
    read1 = q * c1[None, :]
    eg = tl.exp(g)
    read1_eg = read1 * eg
    decay_last = tl.exp(g_last)
    tail = tl.exp(g_last[None, :] - g)
    _stash(ws, KC, kc, BT, BD, BT, BW)
    _stash(ws, G2, g2, BT, BD, BT, BW)
    if RETENTION == KL_TANGENT:
        _stash(ws, R1, read1, BT, BD, BT, BW)
        _stash(ws, FADE, eg - 1.0, BT, BD, BT, BW)
        # the write part of the tangent read: centred queries at the fan-in mean c_1 / D of W_1
        read1s = _centre(read1, offs_d, D) * (scale1 / D)
    else:
        _stash(ws, R1EG, read1_eg, BT, BD, BT, BW)
        read1s = read1
    if READ:
        _stash(ws, A1S, scores(read1s, ek, g, BT, BD), BT, BT, BT, BW)
        _stash(ws, Q0, q0, BT, BD, BT, BW)
    else:
        _stash(ws, EKT, ek * tail, BT, BD, BT, BW)
        _stash(ws, EG2T, eg2 * tail, BT, BD, BT, BW)
    tl.debug_barrier()
    return c1, p1, p2, kc, N, rstd, R, P, g2, ek, eg2, read1s, eg, read1_eg, decay_last, tail


@triton.jit
def _slot(base_ptr, i_n, i_h, it, first_chunk, H: tl.constexpr, size: tl.constexpr, PER_CHUNK: tl.constexpr):
    """Chunk ``it``'s slot in a buffer of weight-sized tensors: every chunk's own (the states), else two per
    sequence used in turn (the backward's carried gradients)."""
    if PER_CHUNK:
        index = first_chunk + it
    else:
        index = tl.cast(i_n, tl.int64) * 2 + it % 2
    return base_ptr + (index * H + i_h) * size


@autotune(LAUNCH_CONFIGS, key=["BT", "BD", "BET", "BIAS", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _mlp_fwd_state_kernel(
    k_ptr, v_ptr, eta_ptr, la_ptr, d_ptr, w1_ptr, w2_ptr, hs1_ptr, hs2_ptr, hl1_ptr, hl2_ptr, ht1_ptr, ht2_ptr,
    g1_ptr, eg2_ptr, ws_ptr, cu_ptr, chunk_ptr, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr, sharp, p, eps,
    q_exp, eps_q, ln_eps, floor, scale1, scale2,
    BT: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr, BIAS: tl.constexpr,
    RETENTION: tl.constexpr, LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """The serial part of the split forward: per chunk the memory at the keys, ``g_1 [BT, E]`` and ``eta g_2``
    (stored per token for :func:`_mlp_fwd_output_kernel`) and the end state; stores every chunk-start state.
    Memora first takes the lag step (Eq. 30) from the chunk-start state, stores its weights in ``hl`` and runs the
    rest of the chunk from them (``g_1, g_2`` at the lag weights, ``eta_0 = 0``), ending with the simplex carry."""
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    bos, T, first = _sequence(i_n, T, cu_ptr, chunk_ptr, BT, IS_VARLEN)
    s, sg = H * D, H * E
    base, base_g = bos * s + i_h * D, bos * sg + i_h * E
    offs_d = tl.arange(0, BD)
    head = (tl.cast(i_n, tl.int64) * H + i_h) * D * E
    ws = ws_ptr + (tl.cast(i_n, tl.int64) * H + i_h) * N_SLOTS * BT * BW
    lag = (tl.arange(0, BT) == 0)[:, None]
    n_chunks = tl.cdiv(T, BT)
    for it in range(n_chunks):
        tl.debug_barrier()
        if it == 0:
            cur1, cur2 = w1_ptr + head, w2_ptr + head
        else:
            cur1 = _slot(hs1_ptr, i_n, i_h, it, first, H, D * E, True)
            cur2 = _slot(hs2_ptr, i_n, i_h, it, first, H, D * E, True)
        if it == n_chunks - 1:
            nxt1, nxt2 = ht1_ptr + head, ht2_ptr + head
        else:
            nxt1 = _slot(hs1_ptr, i_n, i_h, it + 1, first, H, D * E, True)
            nxt2 = _slot(hs2_ptr, i_n, i_h, it + 1, first, H, D * E, True)
        rows = it * BT + tl.arange(0, BT)
        k = _rows(k_ptr + base, rows, offs_d, T, D, s)
        v, d = _values(v_ptr + base, d_ptr + base, rows, offs_d, T, D, s, HAS_DELTA)
        eta, g, g_last = _gates(eta_ptr + base, la_ptr + base, rows, offs_d, T, D, s, HAS_ALPHA, 0, BT)
        if RETENTION >= 4:
            eta0 = tl.where(lag, eta, 0.0)
            eta, g, g_last, la0 = _after_lag(eta, g, g_last, BT)
            lag1 = _slot(hl1_ptr, i_n, i_h, it, first, H, D * E, True)
            lag2 = _slot(hl2_ptr, i_n, i_h, it, first, H, D * E, True)
            _lag_step(
                cur1, cur2, lag1, lag2, tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, d, 0.0), eta0,
                tl.exp(la0), offs_d, D, E, sharp, p, eps, ln_eps, floor, scale1, scale2, BIAS, ACT, BT, BD, BET, NE,
                ws, BW,
            )  # fmt: skip
            cur1, cur2 = lag1, lag2
        c1, p1, p2 = _scales(cur1, cur2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD, BET, NE)
        kc, N, rstd, R, P, g2 = _keys(
            cur1, cur2, k, v, d, c1, p2, offs_d, D, E, sharp, p, eps, q_exp, eps_q, ln_eps, BIAS, LQ_ROW, RETENTION,
            ACT, BT, BD, BET, NE,
        )  # fmt: skip
        eg2 = eta * g2
        _store(eg2_ptr + base, eg2, rows, offs_d, T, D, s)
        tail = tl.exp(g_last[None, :] - g)
        decay_last = tl.exp(g_last)
        _stash(ws, KC, kc, BT, BD, BT, BW)
        _stash(ws, G2, g2, BT, BD, BT, BW)
        _stash(ws, EKT, eta * k * tail, BT, BD, BT, BW)
        _stash(ws, EG2T, eg2 * tail, BT, BD, BT, BW)
        tl.debug_barrier()
        m = tl.zeros([BD], dtype=tl.float32) - 1e30
        sm = tl.zeros([BD], dtype=tl.float32)
        for t in range(NE):
            W1, W2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
            c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
            Z1 = dot(_fetch(ws, KC, BT, BD, BT, BW), W1)
            g1 = dot(_fetch(ws, G2, BT, BD, BT, BW), tl.trans(W2)) * c2[None, :] * _act_grad(Z1, ACT)
            _store(g1_ptr + base_g, g1, rows, cols, T, E, sg)
            U1 = dot(_fetch_t(ws, EKT, BT, BD, BT, BW), g1)
            U2 = dot(tl.trans(_act(Z1, ACT)), _fetch(ws, EG2T, BT, BD, BT, BW))
            if RETENTION >= 4:
                W1n = _simplex(decay_last[:, None] * _log_floor(W1, floor) - U1, offs_d, D, cols, E, scale1)
                W2n = _log_floor(W2, floor) * decay_last[None, :] - U2
                m, sm = _online(W2n, cols, E, offs_d, D, m, sm)
            else:
                W1n = decay_last[:, None] * W1 - U1
                W2n = W2 * decay_last[None, :] - U2
            _put(nxt1, nxt2, W1n, W2n, cols, offs_d, D, E)
        if RETENTION >= 4:
            # the softmax of W_2 runs over E, across the tiles just written
            tl.debug_barrier()
            _normalise(nxt2, m, sm, scale2, offs_d, D, E, BET, NE)


@autotune(LAUNCH_CONFIGS, key=["BT", "BD", "BET", "RETENTION"])
@triton.jit(do_not_specialize=["T"])
def _mlp_fwd_output_kernel(
    q_ptr, k_ptr, eta_ptr, la_ptr, w1_ptr, w2_ptr, hs1_ptr, hs2_ptr, hl1_ptr, hl2_ptr, g1_ptr, eg2_ptr, o_ptr,
    cu_ptr, chunk_ptr, seq_ptr, T, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr, q_exp, eps_q, ln_eps, floor,
    scale1, scale2, BT: tl.constexpr, BD: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr,
    RETENTION: tl.constexpr, LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """The chunk-parallel read of the split forward, one program per (global chunk, head): both dual reads
    (Eq. 29) from the chunk-start weights and the stored ``g_1, eta g_2``, ``H_1`` formed again from the keys.
    Memora reads from its lag weights; its lag row is an ordinary row (``eta_0 = 0``, decay 1)."""
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    TANGENT: tl.constexpr = RETENTION == KL_TANGENT
    if IS_VARLEN:
        i_n = tl.load(seq_ptr + i_c)
    else:
        i_n = i_c // tl.cdiv(T, BT)
    bos, T, first = _sequence(i_n, T, cu_ptr, chunk_ptr, BT, IS_VARLEN)
    chunk = (tl.cast(i_c, tl.int64) * H + i_h) * D * E
    if RETENTION >= 4:
        cur1, cur2 = hl1_ptr + chunk, hl2_ptr + chunk
    elif i_c == first:
        cur1 = w1_ptr + (tl.cast(i_n, tl.int64) * H + i_h) * D * E
        cur2 = w2_ptr + (tl.cast(i_n, tl.int64) * H + i_h) * D * E
    else:
        cur1, cur2 = hs1_ptr + chunk, hs2_ptr + chunk
    s, sg = H * D, H * E
    base, base_g = bos * s + i_h * D, bos * sg + i_h * E
    offs_d = tl.arange(0, BD)
    i = tl.arange(0, BT)
    causal = i[None, :] <= i[:, None]
    rows = (i_c - first) * BT + i
    q = _rows(q_ptr + base, rows, offs_d, T, D, s)
    k = _rows(k_ptr + base, rows, offs_d, T, D, s)
    eta, g, g_last = _gates(eta_ptr + base, la_ptr + base, rows, offs_d, T, D, s, HAS_ALPHA, RETENTION, BT)
    c1, p1, p2 = _scales(cur1, cur2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD, BET, NE)
    kc, read1 = k * c1[None, :], q * c1[None, :]
    eg = tl.exp(g)
    read1_eg = read1 * eg
    A1 = scores(_queries(q, c1, offs_d, D, scale1, RETENTION), eta * k, g, BT, BD)
    S2 = tl.zeros([BT, BT], dtype=tl.float32)
    M2 = tl.zeros([BT, BD], dtype=tl.float32)
    N2 = tl.zeros([BT, BD], dtype=tl.float32)
    cw2 = tl.zeros([BD], dtype=tl.float32)
    hs = tl.zeros([BT], dtype=tl.float32)
    H1s = tl.zeros([BT], dtype=tl.float32)
    for t in range(NE):
        W1, W2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
        c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
        H1 = _act(dot(kc, W1), ACT)
        g1 = _rows(g1_ptr + base_g, rows, cols, T, E, sg)
        if TANGENT:
            z1 = _tangent_rows(read1, W1, eg - 1.0, floor, scale1)
        else:
            z1 = dot(read1_eg, W1)
        read2 = _act(z1 - dot(A1, g1), ACT) * c2[None, :]
        S2 += dot(read2, tl.trans(H1))
        M2 += dot(read2, W2)
        if TANGENT:
            tN2, tcw2, ths, tH1s = _tangent_sums(W2, read2, H1, floor)
            N2, cw2, hs, H1s = N2 + tN2, cw2 + tcw2, hs + ths, H1s + tH1s
    eg2 = _rows(eg2_ptr + base, rows, offs_d, T, D, s)
    S2 = _read2_scores(S2, hs, H1s, causal, E, scale2, TANGENT)
    z2 = _read2_retained(M2, N2, cw2, eg, scale2, TANGENT) - mix(S2, eg2, g, BT, BD)
    _store(o_ptr + base, q + _layer_norm(z2, offs_d, D, ln_eps)[0], rows, offs_d, T, D, s)


@triton.jit
def _end_grads(end1, end2, dn1, dn2, t, n_valid, cs, offs_d, D, E, scale1, scale2, RETENTION: tl.constexpr,
               BET: tl.constexpr):  # fmt: skip
    """Tile ``t`` of the gradient at the chunk's end (0 where ``n_valid`` is 0: no gradient flows into the last
    state), taken back through Memora's simplex (Eq. 27); ``cs`` is ``sum_e W_2' dW_2'`` over all tiles."""
    dU1, dU2, cols = _tile(dn1, dn2, t, offs_d, n_valid, E, BET)
    if RETENTION >= 4:
        W1, W2, cols = _tile(end1, end2, t, offs_d, D, E, BET)
        dU1 = _simplex_vjp(W1, dU1, scale1)
        dU2 = W2 * (dU2 - cs[None, :] / scale2)
    return dU1, dU2


@triton.jit
def _tile_back(
    ws, cur1, cur2, end1, end2, dn1, dn2, t, n_valid, cs, p2, dhs, offs_d, D, E, q_exp, eps_q, floor, scale1, scale2,
    LQ_ROW: tl.constexpr, RETENTION: tl.constexpr, ACT: tl.constexpr, READ: tl.constexpr, CARRY: tl.constexpr,
    BT: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, BET: tl.constexpr,
):  # fmt: skip
    """Tile ``t`` as every backward pass starts it: its weights and forward intermediates (:func:`_chain`), the
    gradient at the chunk's end (:func:`_end_grads`; zeros unless ``CARRY``), that of the layer-2 read and ``dz_1``
    (zeros unless ``READ``)."""
    W1, W2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
    c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
    TANGENT: tl.constexpr = RETENTION == KL_TANGENT
    Z1, H1, a1, G, g1, z1, h, read2 = _chain(ws, W1, W2, c2, floor, scale1, ACT, TANGENT, READ, BT, BD, BW)
    dU1, dU2 = tl.zeros_like(W1), tl.zeros_like(W2)
    if CARRY:
        dU1, dU2 = _end_grads(end1, end2, dn1, dn2, t, n_valid, cs, offs_d, D, E, scale1, scale2, RETENTION, BET)
    dread2, dz1 = tl.zeros_like(Z1), tl.zeros_like(Z1)
    if READ:
        dread2 = _read2_grad(ws, W2, H1, dhs, cols, E, floor, TANGENT, BT, BD, BW)
        dz1 = dread2 * c2[None, :] * _act_grad(z1, ACT)
    return W1, W2, cols, c2, power2, Z1, H1, a1, G, g1, h, read2, dU1, dU2, dread2, dz1


@triton.jit
def _lag_tile(cur1, cur2, out1, out2, start1, start2, t, cs_lag, offs_d, D, E, scale1, scale2, BET: tl.constexpr):
    """Tile ``t`` of Memora's lag step backward: the lag weights ``L``, the gradient at them taken back through
    their simplex ``dL``, and the chunk-start weights ``St`` the step was taken from."""
    L1, L2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
    dW1, dW2, cols = _tile(out1, out2, t, offs_d, D, E, BET)
    St1, St2, cols = _tile(start1, start2, t, offs_d, D, E, BET)
    return L1, L2, _simplex_vjp(L1, dW1, scale1), L2 * (dW2 - cs_lag[None, :] / scale2), St1, St2, cols


@autotune(
    LAUNCH_CONFIGS,
    key=["BT", "BD", "BET", "BIAS", "RETENTION", "READ"],
    restore_value=["dk_ptr", "dv_ptr", "deta_ptr", "dla_ptr", "dd_ptr"],
)
@triton.jit(do_not_specialize=["T", "n_total"])
def _mlp_bwd_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, d_ptr, w1_ptr, w2_ptr, hs1_ptr, hs2_ptr, hl1_ptr, hl2_ptr, ht1_ptr,
    ht2_ptr, do_ptr, dht1_ptr, dht2_ptr, st1_ptr, st2_ptr, db1_ptr, db2_ptr, dr1_ptr, dr2_ptr,
    ws_ptr, cu_ptr, chunk_ptr, seq_ptr, dq_ptr, dk_ptr, dv_ptr, deta_ptr, dla_ptr, dd_ptr, dh1_ptr, dh2_ptr, T,
    n_total, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr, sharp, p, eps, q_exp, eps_q, ln_eps, floor, scale1,
    scale2, BT: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr,
    BIAS: tl.constexpr, RETENTION: tl.constexpr, LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr, READ: tl.constexpr,
    CARRY: tl.constexpr,
):  # fmt: skip
    """One part of the backward, which is linear in ``(do, dW')``; the host launches ``READ`` then ``CARRY``.

    ``READ`` (chunk-parallel; programs stride over the global chunks): a chunk's gradient through its reads alone,
    the gradient at its end state taken as 0. Writes the input gradients ``dq ... ddelta`` and the gradient at the
    chunk's start weights (Memora: at its lag weights, read from ``hl``) to ``dr``.
    ``CARRY`` (one program per (sequence, head) walking its chunks in reverse): the gradient through the writes
    alone, carried from each chunk's end to its start, plus the chunk's ``dr``; adds its share to the input
    gradients (not ``dq``: the writes do not read ``q``) and takes Memora's lag step back."""
    i_p, i_h = tl.program_id(0), tl.program_id(1)
    TANGENT: tl.constexpr = RETENTION == KL_TANGENT
    s = H * D
    offs_d = tl.arange(0, BD)
    ws = ws_ptr + (tl.cast(i_p, tl.int64) * H + i_h) * N_SLOTS * BT * BW
    i = tl.arange(0, BT)
    causal = i[None, :] <= i[:, None]
    lag = (i == 0)[:, None]
    if READ:
        lo, hi, stride = i_p, n_total, tl.num_programs(0)
    else:
        bos, T_n, first_chunk = _sequence(i_p, T, cu_ptr, chunk_ptr, BT, IS_VARLEN)
        lo, hi, stride = 0, tl.cdiv(T_n, BT), 1
    for step in range(lo, hi, stride):
        tl.debug_barrier()
        if READ:
            if IS_VARLEN:
                i_n = tl.load(seq_ptr + step)
            else:
                i_n = step // tl.cdiv(T, BT)
        else:
            i_n = i_p
        bos, T_n, first_chunk = _sequence(i_n, T, cu_ptr, chunk_ptr, BT, IS_VARLEN)
        n_chunks = tl.cdiv(T_n, BT)
        if READ:
            it = step - first_chunk
        else:
            it = n_chunks - 1 - step
        base = bos * s + i_h * D
        head = (tl.cast(i_n, tl.int64) * H + i_h) * D * E
        chunk = ((first_chunk + it) * H + i_h) * D * E
        if it == 0:
            cur1, cur2 = w1_ptr + head, w2_ptr + head
        else:
            cur1, cur2 = hs1_ptr + chunk, hs2_ptr + chunk
        if CARRY:
            if it == 0:
                dp1, dp2 = dh1_ptr + head, dh2_ptr + head
            else:
                dp1 = _slot(db1_ptr, i_n, i_h, it, 0, H, D * E, False)
                dp2 = _slot(db2_ptr, i_n, i_h, it, 0, H, D * E, False)
            if it == n_chunks - 1:
                end1, end2 = ht1_ptr + head, ht2_ptr + head
                dn1, dn2 = dht1_ptr + head, dht2_ptr + head
            else:
                end1, end2 = hs1_ptr + chunk + H * D * E, hs2_ptr + chunk + H * D * E
                dn1 = _slot(db1_ptr, i_n, i_h, it + 1, 0, H, D * E, False)
                dn2 = _slot(db2_ptr, i_n, i_h, it + 1, 0, H, D * E, False)
            n_valid = tl.where(it == n_chunks - 1, D if HAS_DHT else 0, D)
        else:
            end1, end2, dn1, dn2, n_valid = cur1, cur2, cur1, cur2, 0
        rows = it * BT + i
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base, k_ptr + base, v_ptr + base, eta_ptr + base, la_ptr + base, d_ptr + base,
            rows, offs_d, offs_d, T_n, D, D, s, s, HAS_ALPHA, HAS_DELTA, BT,
        )  # fmt: skip
        do = tl.zeros([BT, BD], dtype=tl.float32)
        if READ:
            do = _rows(do_ptr + base, rows, offs_d, T_n, D, s)
        q0 = tl.where(lag, q, 0.0)
        do_lag = tl.zeros([BT, BD], dtype=tl.float32)
        k0, v0, d0, eta0 = tl.where(lag, k, 0.0), tl.where(lag, v, 0.0), tl.where(lag, d, 0.0), tl.where(lag, eta, 0.0)
        la0 = tl.sum(tl.where(lag, g, 0.0), 0)
        a0 = tl.exp(la0)
        start1, start2 = cur1, cur2
        if RETENTION >= 4:
            if CARRY:
                N0, rstd0, R0, P0, g20 = _lag_keys(
                    cur1, cur2, k0, v0, d0, eta0, offs_d, D, E, sharp, p, eps, ln_eps, BIAS, ACT, BT, BD, BET, NE,
                    ws, BW,
                )  # fmt: skip
            cur1, cur2 = hl1_ptr + chunk, hl2_ptr + chunk
            eta = tl.where(lag, 0.0, eta)
            g = g - la0[None, :]
            g_last = g_last - la0
            do_lag = tl.where(lag, do, 0.0)
            do = tl.where(lag, 0.0, do)

        # the chunk's forward again, from its start state
        c1, p1, p2, kc, N, rstd, R, P, g2, ek, eg2, read1s, eg, read1_eg, decay_last, tail = _chunk_start(
            ws, cur1, cur2, q, k, v, d, eta, g, g_last, q0, offs_d, D, E, sharp, p, eps, q_exp, eps_q, ln_eps, scale1,
            BIAS, LQ_ROW, RETENTION, ACT, READ, BT, BD, BW, BET, NE,
        )  # fmt: skip
        ekt, eg2t = ek * tail, eg2 * tail
        dg = tl.zeros([BT, BD], dtype=tl.float32)
        deg2 = tl.zeros([BT, BD], dtype=tl.float32)
        dhs = tl.zeros([BT], dtype=tl.float32)
        dH1s = tl.zeros([BT], dtype=tl.float32)
        dcw2 = tl.zeros([BD], dtype=tl.float32)
        cs = tl.zeros([BD], dtype=tl.float32)
        if READ:
            S2 = tl.zeros([BT, BT], dtype=tl.float32)
            M2 = tl.zeros([BT, BD], dtype=tl.float32)
            N2 = tl.zeros([BT, BD], dtype=tl.float32)
            cw2 = tl.zeros([BD], dtype=tl.float32)
            hs = tl.zeros([BT], dtype=tl.float32)
            H1s = tl.zeros([BT], dtype=tl.float32)
            Yq = tl.zeros([BT, BD], dtype=tl.float32)
            for t in range(NE):
                W1, W2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
                c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
                Z1, H1, a1, G, g1, z1, h, read2 = _chain(ws, W1, W2, c2, floor, scale1, ACT, TANGENT, READ, BT, BD, BW)
                S2 += dot(read2, tl.trans(H1))
                M2 += dot(read2, W2)
                if TANGENT:
                    tN2, tcw2, ths, tH1s = _tangent_sums(W2, read2, H1, floor)
                    N2, cw2, hs, H1s = N2 + tN2, cw2 + tcw2, hs + ths, H1s + tH1s
                if RETENTION >= 4:
                    Yq += dot(_act(dot(_fetch(ws, Q0, BT, BD, BT, BW), W1), ACT), W2)
            S2 = _read2_scores(S2, hs, H1s, causal, E, scale2, TANGENT)
            mS2 = mix(S2, eg2, g, BT, BD)
            n_out, rstd_out = _layer_norm(_read2_retained(M2, N2, cw2, eg, scale2, TANGENT) - mS2, offs_d, D, ln_eps)

            # the read of layer 2, o = q + LN(z_2), and its decay-weighted sums
            dz2 = _ln_vjp(do, n_out, rstd_out, offs_d, D)
            dS2 = -scores(dz2, eg2, g, BT, BD)
            if TANGENT:
                dM2, dN2, dcw2, dg = _read2_retained_vjp(dz2, M2, N2, cw2, eg, scale2)
                dS2 = dS2 * (scale2 / E)
                dhs = -tl.sum(dS2 * H1s[None, :], 1) / E
                dH1s = -tl.sum(dS2 * hs[:, None], 0) / E
                _stash(ws, DN2, dN2, BT, BD, BT, BW)
            else:
                dM2 = dz2 * eg
                dg = dM2 * M2
            mS2_t = mix_t(S2, dz2, g, BT, BD)
            deg2 = -mS2_t
            dg += eg2 * mS2_t - dz2 * mS2
            if RETENTION >= 4:
                nq, rq = _layer_norm(Yq, offs_d, D, ln_eps)
                _stash(ws, DZQ2, _ln_vjp(do_lag, nq, rq, offs_d, D), BT, BD, BT, BW)
            _stash(ws, DM2, dM2, BT, BD, BT, BW)
            _stash(ws, DS2, dS2, BT, BT, BT, BW)
            tl.debug_barrier()
        elif RETENTION >= 4:
            # Memora's end state is a simplex: its VJP needs sum_e W_2' dW_2' over all tiles
            for t in range(NE):
                Wn1, Wn2, cols = _tile(end1, end2, t, offs_d, D, E, BET)
                dWn1, dWn2, cols = _tile(dn1, dn2, t, offs_d, n_valid, E, BET)
                cs += tl.sum(Wn2 * dWn2, 0)

        # pass 1: what sums over E in the reads and the end state, and the gradient of g_2 through
        # g_1 = (g_2 W_2^T) c_2 act'(Z_1), whose tile terms need only the tile's dz_1 and dU_1
        dreg = tl.zeros([BT, BD], dtype=tl.float32)
        dfade = tl.zeros([BT, BD], dtype=tl.float32)
        dA1 = tl.zeros([BT, BT], dtype=tl.float32)
        dekt = tl.zeros([BT, BD], dtype=tl.float32)
        deg2t = tl.zeros([BT, BD], dtype=tl.float32)
        dgl = tl.zeros([BD], dtype=tl.float32)
        dg2 = tl.zeros([BT, BD], dtype=tl.float32)
        for t in range(NE):
            W1, W2, cols, c2, power2, Z1, H1, a1, G, g1, h, read2, dU1, dU2, dread2, dz1 = _tile_back(
                ws, cur1, cur2, end1, end2, dn1, dn2, t, n_valid, cs, p2, dhs, offs_d, D, E, q_exp, eps_q, floor,
                scale1, scale2, LQ_ROW, RETENTION, ACT, READ, CARRY, BT, BD, BW, BET,
            )  # fmt: skip
            if READ:
                if TANGENT:
                    tread, tfade = _tangent_rows_vjp(
                        dz1, _fetch(ws, R1, BT, BD, BT, BW), W1, _fetch(ws, FADE, BT, BD, BT, BW), floor, scale1
                    )
                    dreg, dfade = dreg + tread, dfade + tfade
                else:
                    dreg += dot(dz1, tl.trans(W1))
                dA1 -= dot(dz1, tl.trans(g1))
            if CARRY:
                dekt -= dot(g1, tl.trans(dU1))
                deg2t -= dot(H1, dU2)
                if RETENTION >= 4:
                    dgl += tl.sum(_log_floor(W1, floor) * dU1, 1) + tl.sum(_log_floor(W2, floor) * dU2, 0)
                else:
                    dgl += tl.sum(W1 * dU1, 1) + tl.sum(W2 * dU2, 0)
            dg1 = _g1_grad(ws, dz1, dU1, READ, CARRY, BT, BD, BW)
            dg2 += dot(dg1 * c2[None, :] * a1, W2)
        dq = do + do_lag
        dc1 = tl.zeros([BD], dtype=tl.float32)
        if READ:
            dA1 = tl.where(causal, dA1, 0.0)
            mA1, mA1_t = mix(dA1, ek, g, BT, BD), mix_t(dA1, read1s, g, BT, BD)
            dek = mA1_t
            dg += read1s * mA1 - ek * mA1_t
            if TANGENT:
                dg += dfade * eg
                dread1 = dreg + _centre(mA1, offs_d, D) * (scale1 / D)
            else:
                dg += dreg * read1_eg
                dread1 = dreg * eg + mA1
            dq += dread1 * c1[None, :]
            dc1 += tl.sum(dread1 * q, 0)
            dg_last = tl.zeros([BD], dtype=tl.float32)
        else:
            dek = dekt * tail
            deg2 += deg2t * tail
            dg -= dekt * ekt + deg2t * eg2t
            dg_last = decay_last * dgl + tl.sum(dekt * ekt, 0) + tl.sum(deg2t * eg2t, 0)
        dg2 += deg2 * eta
        dR, dv, dd, dZ2 = _keys_rows_vjp(dg2, d, N, rstd, R, P, g2, offs_d, D, sharp, p, eps, BIAS)
        _stash(ws, DZ2, dZ2, BT, BD, BT, BW)
        tl.debug_barrier()

        # pass 2: the weight gradients at the chunk start (staged when a further pass adjusts them)
        if READ:
            out1, out2 = dr1_ptr + chunk, dr2_ptr + chunk
            dp1, dp2 = out1, out2
        elif RETENTION == 2 or RETENTION >= 4:
            out1, out2 = st1_ptr + head, st2_ptr + head
        else:
            out1, out2 = dp1, dp2
        dkc = tl.zeros([BT, BD], dtype=tl.float32)
        dc2_sum = 0.0
        cs_lag = tl.zeros([BD], dtype=tl.float32)
        for t in range(NE):
            W1, W2, cols, c2, power2, Z1, H1, a1, G, g1, h, read2, dU1, dU2, dread2, dz1 = _tile_back(
                ws, cur1, cur2, end1, end2, dn1, dn2, t, n_valid, cs, p2, dhs, offs_d, D, E, q_exp, eps_q, floor,
                scale1, scale2, LQ_ROW, RETENTION, ACT, READ, CARRY, BT, BD, BW, BET,
            )  # fmt: skip
            dg1 = _g1_grad(ws, dz1, dU1, READ, CARRY, BT, BD, BW)
            dG = dg1 * c2[None, :] * a1
            dH1c = dot(_fetch(ws, DZ2, BT, BD, BT, BW), tl.trans(W2))
            if READ:
                dH1 = dot(_fetch_t(ws, DS2, BT, BT, BT, BW), read2)
                if TANGENT:
                    dH1 += tl.where((cols < E)[None, :], dH1s[:, None], 0.0)
            else:
                dH1 = -dot(_fetch(ws, EG2T, BT, BD, BT, BW), tl.trans(dU2))
            dZ1 = dg1 * G * c2[None, :] * _act_grad2(Z1, ACT) + (dH1 + dH1c * c2[None, :]) * a1
            dkc += dot(dZ1, tl.trans(W1))
            if READ:
                dW1 = tl.zeros_like(W1)
                dW2 = tl.zeros_like(W2)
                if TANGENT:
                    dW1 += _tangent_rows_dw(
                        dz1, _fetch(ws, R1, BT, BD, BT, BW), W1, _fetch(ws, FADE, BT, BD, BT, BW), floor, scale1
                    )
                    dWL2 = dot(tl.trans(read2), _fetch(ws, DN2, BT, BD, BT, BW)) + dcw2[None, :]
                    dW2 += dWL2 * (_log_floor(W2, floor) + tl.where(W2 > floor, 1.0, 0.0))
                else:
                    dW1 += dot(_fetch_t(ws, R1EG, BT, BD, BT, BW), dz1)
                dW2 += dot(tl.trans(read2), _fetch(ws, DM2, BT, BD, BT, BW))
            else:
                if RETENTION >= 4:
                    dW1 = tl.where(W1 > floor, decay_last[:, None] * dU1 / tl.maximum(W1, floor), 0.0)
                    dW2 = tl.where(W2 > floor, dU2 * decay_last[None, :] / tl.maximum(W2, floor), 0.0)
                else:
                    dW1 = decay_last[:, None] * dU1
                    dW2 = dU2 * decay_last[None, :]
                dr1, dr2, cols = _tile(dr1_ptr + chunk, dr2_ptr + chunk, t, offs_d, D, E, BET)
                dW1 += dr1
                dW2 += dr2
            dW1 += dot(_fetch_t(ws, KC, BT, BD, BT, BW), dZ1)
            dW2 += dot(tl.trans(dG), _fetch(ws, G2, BT, BD, BT, BW))
            dW2 += dot(tl.trans(H1 * c2[None, :]), _fetch(ws, DZ2, BT, BD, BT, BW))
            if RETENTION == 2:
                dc2 = tl.sum(dg1 * G * a1, 0) + tl.sum(dH1c * H1, 0)
                if READ:
                    dc2 += tl.sum(dread2 * h, 0)
                if LQ_ROW:
                    dW2 += _lq_grad(W2, c2, power2, dc2, q_exp, eps_q, True, BET)
                else:
                    dc2_sum += tl.sum(dc2, 0)
            if RETENTION >= 4:
                if READ:
                    # the read of the lag token from the weights after its step
                    zq1 = dot(_fetch(ws, Q0, BT, BD, BT, BW), W1)
                    dzq1 = dot(_fetch(ws, DZQ2, BT, BD, BT, BW), tl.trans(W2)) * _act_grad(zq1, ACT)
                    dW1 += dot(_fetch_t(ws, Q0, BT, BD, BT, BW), dzq1)
                    dW2 += dot(tl.trans(_act(zq1, ACT)), _fetch(ws, DZQ2, BT, BD, BT, BW))
                    dq += dot(dzq1, tl.trans(W1))
                else:
                    cs_lag += tl.sum(W2 * dW2, 0)
            _put(out1, out2, dW1, dW2, cols, offs_d, D, E)
        dk = dR + dkc * c1[None, :] + dek * eta
        dc1 += tl.sum(dkc * k, 0)
        deta = deg2 * g2 + dek * k
        dla = tl.sum(dg, 0)[None, :] - tl.cumsum(dg, 0) + dg + dg_last[None, :]

        if RETENTION == 2:
            # lq: the gradient through the scales, which needs every tile's share of dc
            tl.debug_barrier()
            first = tl.arange(0, BET) == 0
            for t in range(NE):
                W1, W2, cols = _tile(cur1, cur2, t, offs_d, D, E, BET)
                c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
                dW1, dW2, cols = _tile(out1, out2, t, offs_d, D, E, BET)
                dW1 += _lq_grad(W1, c1, p1, dc1, q_exp, eps_q, LQ_ROW, BD)
                if not LQ_ROW:
                    dW2 += _lq_grad(W2, c2, power2, tl.where(first, dc2_sum, 0.0), q_exp, eps_q, False, BET)
                _put(dp1, dp2, dW1, dW2, cols, offs_d, D, E)

        if RETENTION >= 4:
            if READ:
                # the lag row's gate gradients come from its step, taken back by the CARRY part
                deta = tl.where(lag, 0.0, deta)
                dla = tl.where(lag, 0.0, dla)
            else:
                # the lag token's exact step from the chunk start (Eq. 30), through its simplex
                tl.debug_barrier()
                dla0 = tl.zeros([BD], dtype=tl.float32)
                dek0 = tl.zeros([BT, BD], dtype=tl.float32)
                deg20 = tl.zeros([BT, BD], dtype=tl.float32)
                for t in range(NE):
                    L1, L2, dL1, dL2, St1, St2, cols = _lag_tile(
                        cur1, cur2, out1, out2, start1, start2, t, cs_lag, offs_d, D, E, scale1, scale2, BET
                    )
                    dla0 += tl.sum(dL1 * _log_floor(St1, floor), 1) + tl.sum(dL2 * _log_floor(St2, floor), 0)
                    Z10 = dot(_fetch(ws, K0, BT, BD, BT, BW), St1)
                    g10 = dot(_fetch(ws, G20, BT, BD, BT, BW), tl.trans(St2)) * _act_grad(Z10, ACT)
                    dek0 -= dot(g10, tl.trans(dL1))
                    deg20 -= dot(_act(Z10, ACT), dL2)
                dg20 = deg20 * eta0
                for t in range(NE):
                    L1, L2, dL1, dL2, St1, St2, cols = _lag_tile(
                        cur1, cur2, out1, out2, start1, start2, t, cs_lag, offs_d, D, E, scale1, scale2, BET
                    )
                    dg10 = -dot(_fetch(ws, EK0, BT, BD, BT, BW), dL1)
                    dg20 += dot(dg10 * _act_grad(dot(_fetch(ws, K0, BT, BD, BT, BW), St1), ACT), St2)
                dR0, dv0, dd0, dZ20 = _keys_rows_vjp(dg20, d0, N0, rstd0, R0, P0, g20, offs_d, D, sharp, p, eps, BIAS)
                _stash(ws, DZ20, dZ20, BT, BD, BT, BW)
                tl.debug_barrier()
                dkc0 = tl.zeros([BT, BD], dtype=tl.float32)
                for t in range(NE):
                    L1, L2, dL1, dL2, St1, St2, cols = _lag_tile(
                        cur1, cur2, out1, out2, start1, start2, t, cs_lag, offs_d, D, E, scale1, scale2, BET
                    )
                    Z10 = dot(_fetch(ws, K0, BT, BD, BT, BW), St1)
                    a10 = _act_grad(Z10, ACT)
                    G0 = dot(_fetch(ws, G20, BT, BD, BT, BW), tl.trans(St2))
                    dg10 = -dot(_fetch(ws, EK0, BT, BD, BT, BW), dL1)
                    dG0 = dg10 * a10
                    dH10 = -dot(_fetch(ws, EG20, BT, BD, BT, BW), tl.trans(dL2))
                    dH10 += dot(_fetch(ws, DZ20, BT, BD, BT, BW), tl.trans(St2))
                    dZ10 = dg10 * G0 * _act_grad2(Z10, ACT) + dH10 * a10
                    dkc0 += dot(dZ10, tl.trans(St1))
                    dSt1 = tl.where(St1 > floor, a0[:, None] * dL1 / tl.maximum(St1, floor), 0.0)
                    dSt1 += dot(_fetch_t(ws, K0, BT, BD, BT, BW), dZ10)
                    dSt2 = tl.where(St2 > floor, dL2 * a0[None, :] / tl.maximum(St2, floor), 0.0)
                    dSt2 += dot(tl.trans(dG0), _fetch(ws, G20, BT, BD, BT, BW))
                    dSt2 += dot(tl.trans(_act(Z10, ACT)), _fetch(ws, DZ20, BT, BD, BT, BW))
                    _put(dp1, dp2, dSt1, dSt2, cols, offs_d, D, E)
                dk += dR0 + dkc0 + dek0 * eta0
                dv += dv0
                dd += dd0
                deta = tl.where(lag, dek0 * k0 + deg20 * g20, deta)
                dla = tl.where(lag, (a0 * dla0)[None, :], dla)

        if READ:
            _store(dq_ptr + base, dq, rows, offs_d, T_n, D, s)
        else:
            dk += _rows(dk_ptr + base, rows, offs_d, T_n, D, s)
            dv += _rows(dv_ptr + base, rows, offs_d, T_n, D, s)
            deta += _rows(deta_ptr + base, rows, offs_d, T_n, D, s)
            if HAS_ALPHA:
                dla += _rows(dla_ptr + base, rows, offs_d, T_n, D, s)
            if HAS_DELTA:
                dd += _rows(dd_ptr + base, rows, offs_d, T_n, D, s)
        _store(dk_ptr + base, dk, rows, offs_d, T_n, D, s)
        _store(dv_ptr + base, dv, rows, offs_d, T_n, D, s)
        _store(deta_ptr + base, deta, rows, offs_d, T_n, D, s)
        if HAS_ALPHA:
            _store(dla_ptr + base, dla, rows, offs_d, T_n, D, s)
        if HAS_DELTA:
            _store(dd_ptr + base, dd, rows, offs_d, T_n, D, s)


def _meta(spec: MemorySpec, chunk_size: int, D: int, log_alpha, delta, cu_seqlens) -> dict:
    E = spec.expansion * D
    BET = min(tile_e(D), max(16, triton.next_power_of_2(E)))
    BD = max(16, triton.next_power_of_2(D))
    return dict(
        BT=chunk_size,
        BD=BD,
        BW=max(BD, chunk_size),
        BET=BET,
        NE=triton.cdiv(E, BET),
        BIAS=bias_code(spec),
        RETENTION=chunk_retention(spec),
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


def _workspace(N: int, H: int, meta: dict, device) -> torch.Tensor:
    """Per program, the ``N_SLOTS`` row tensors a chunk's tile loops read (``[BT, BW]`` each, fp32)."""
    return torch.empty(N, H, N_SLOTS.value, meta["BT"], meta["BW"], device=device, dtype=torch.float32)


def _weights(n: int, H: int, D: int, E: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A buffer of ``n`` states ``(W_1 [n, H, D, E], W_2 [n, H, E, D])`` in fp32."""
    f32 = dict(device=device, dtype=torch.float32)
    return torch.empty(n, H, D, E, **f32), torch.empty(n, H, E, D, **f32)


BWD_READ_PROGRAMS = 1024
"""At most this many programs (all heads together) run the backward's ``READ`` part; each has its own workspace of
``N_SLOTS`` ``[BT, BW]`` fp32 tensors (304 KB at ``BT = BD = 64``: 311 MB for 1024), and past this count they
stride over the chunks. Chosen to bound that memory; on an H100 the kernel runs one program per SM at a time."""


def launch_grids(n_sequences: int, n_chunks: int, heads: int) -> dict[str, tuple[int, int]]:
    """The grid of each kernel: the forward's state pass and the backward's ``CARRY`` part run one program per
    (sequence, head) and walk their chunks in order; the forward's read runs one per (global chunk, head), the
    backward's ``READ`` part one per (global chunk, head) up to :data:`BWD_READ_PROGRAMS` programs."""
    per_sequence = (n_sequences, heads)
    read = (min(n_chunks, max(1, BWD_READ_PROGRAMS // heads)), heads)
    return {"fwd_state": per_sequence, "fwd_output": (n_chunks, heads), "bwd_read": read, "bwd_carry": per_sequence}


def _chunk_sequences(offsets: torch.Tensor, N: int) -> torch.Tensor:
    """The sequence of every global chunk of a packed batch, from the first chunk of each (``[N + 1]``)."""
    counts = (offsets[1:] - offsets[:-1]).long()
    return torch.repeat_interleave(torch.arange(N, device=offsets.device, dtype=torch.int32), counts)


def _split_forward(q, k, v, eta, log_alpha, delta, w1, w2, o, spec, meta, cu_seqlens, offsets, n_chunks):
    """The forward: the state pass stores every chunk-start state (Memora: and its weights after the lag step) and,
    per token, ``g_1 [.., H, E]`` and ``eta g_2``; the read writes ``o`` from them. Returns the chunk-start states,
    Memora's lag weights (else the states again) and the final state. The read needs every chunk's state, so they
    are stored also where no gradient will be taken."""
    B, T, H, D = q.shape
    E = spec.expansion * D
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    f32 = dict(dtype=torch.float32, device=q.device)
    hs1, hs2 = _weights(n_chunks, H, D, E, q.device)
    hl1, hl2 = _weights(n_chunks, H, D, E, q.device) if spec.retention == "kl" else (hs1, hs2)
    ht1, ht2 = _weights(N, H, D, E, q.device)
    g1, eg2 = torch.empty(B, T, H, E, **f32), torch.empty(q.shape, **f32)
    chunk_seq = None if cu_seqlens is None else _chunk_sequences(offsets, N)
    scalars = _scalars(spec, D)
    grids = launch_grids(N, n_chunks, H)
    _mlp_fwd_state_kernel[grids["fwd_state"]](
        k, v, eta, *_or_dummy(hs1, log_alpha, delta), w1, w2, hs1, hs2, hl1, hl2, ht1, ht2, g1, eg2,
        _workspace(N, H, meta, q.device), *_or_dummy(hs1, cu_seqlens, offsets), T, H, D, E, *scalars, **meta,
    )  # fmt: skip
    read = {name: meta[name] for name in ("BT", "BD", "BET", "NE", "RETENTION", "LQ_ROW", "ACT", "HAS_ALPHA")}
    _mlp_fwd_output_kernel[grids["fwd_output"]](
        q, k, eta, _or_dummy(hs1, log_alpha)[0], w1, w2, hs1, hs2, hl1, hl2, g1, eg2, o,
        *_or_dummy(hs1, cu_seqlens, offsets, chunk_seq), T, H, D, E, *scalars[3:], **read,
        IS_VARLEN=cu_seqlens is not None,
    )  # fmt: skip
    return hs1, hs2, hl1, hl2, ht1, ht2


class ChunkMirasMLPFunction(torch.autograd.Function):
    """Triton forward and backward of the 2-layer MLP memory (inputs ``[B, T, H, D]``, gates expanded)."""

    @staticmethod
    def forward(ctx, q, k, v, eta, log_alpha, delta, w1, w2, spec, chunk_size, cu_seqlens):
        B, T, H, D = q.shape
        offsets = None if cu_seqlens is None else _chunk_offsets(cu_seqlens, chunk_size)
        n_chunks = B * triton.cdiv(T, chunk_size) if offsets is None else int(offsets[-1])
        o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
        meta = _meta(spec, chunk_size, D, log_alpha, delta, cu_seqlens)
        states = _split_forward(q, k, v, eta, log_alpha, delta, w1, w2, o, spec, meta, cu_seqlens, offsets, n_chunks)
        ctx.save_for_backward(q, k, v, eta, log_alpha, delta, w1, w2, *states, cu_seqlens, offsets)
        ctx.spec, ctx.chunk_size, ctx.n_chunks = spec, chunk_size, n_chunks
        return o, *states[4:]

    @staticmethod
    def backward(ctx, do, dht1, dht2):
        q, k, v, eta, log_alpha, delta, w1, w2, hs1, hs2, hl1, hl2, ht1, ht2, cu_seqlens, offsets = ctx.saved_tensors
        spec, n_chunks = ctx.spec, ctx.n_chunks
        B, T, H, D = q.shape
        E = spec.expansion * D
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        f32 = dict(dtype=torch.float32, device=q.device)
        dq, dk, dv, deta = (torch.empty(q.shape, **f32) for _ in range(4))
        dla = torch.empty(q.shape, **f32) if log_alpha is not None else None
        dd = torch.empty(q.shape, **f32) if delta is not None else None
        dh1, dh2 = _weights(N, H, D, E, q.device)
        db1, db2 = _weights(2 * N, H, D, E, q.device)
        dr1, dr2 = _weights(n_chunks, H, D, E, q.device)
        staged = spec.retention in ("lq", "kl")
        st1, st2 = _weights(N, H, D, E, q.device) if staged else (hs1, hs2)
        has_dht = dht1 is not None or dht2 is not None
        if has_dht:
            dht1 = torch.zeros_like(dh1) if dht1 is None else dht1.float().contiguous()
            dht2 = torch.zeros_like(dh2) if dht2 is None else dht2.float().contiguous()
        meta = _meta(spec, ctx.chunk_size, D, log_alpha, delta, cu_seqlens)
        grids = launch_grids(N, n_chunks, H)
        chunk_seq = None if cu_seqlens is None else _chunk_sequences(offsets, N)
        args = (
            q, k, v, eta, *_or_dummy(hs1, log_alpha, delta), w1, w2, hs1, hs2, hl1, hl2, ht1, ht2, do.contiguous(),
            *_or_dummy(hs1, dht1, dht2), st1, st2, db1, db2, dr1, dr2,
            _workspace(max(grids["bwd_read"][0], N), H, meta, q.device),
            *_or_dummy(hs1, cu_seqlens, offsets, chunk_seq), dq, dk, dv, deta, *_or_dummy(hs1, dla, dd), dh1, dh2, T,
            n_chunks, H, D, E, *_scalars(spec, D),
        )  # fmt: skip
        # the reads of every chunk first: the carried part adds the gradient they leave at each chunk start
        _mlp_bwd_kernel[grids["bwd_read"]](*args, **meta, HAS_DHT=has_dht, READ=True, CARRY=False)
        _mlp_bwd_kernel[grids["bwd_carry"]](*args, **meta, HAS_DHT=has_dht, READ=False, CARRY=True)

        def cast(grad, like):
            return None if grad is None or like is None else grad.to(like.dtype)

        grads = (dq, dk, dv, deta, dla, dd)
        likes = (q, k, v, eta, log_alpha, delta)
        return (*(cast(g, x) for g, x in zip(grads, likes, strict=True)), dh1, dh2, None, None, None)


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
    o, ht1, ht2 = ChunkMirasMLPFunction.apply(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        *kernel_gates(spec, eta, alpha, delta, D, D),
        w1,
        w2,
        spec,
        chunk_size,
        None if cu_seqlens is None else cu_seqlens.to(torch.int32),
    )
    if not output_final_state:
        return o, None
    final = (ht1, ht2)
    if spec.retention == "lq":
        return o, {"weights": tuple(_lq_normalise(w, spec) for w in final), "accumulator": final}
    return o, {"weights": final}


__all__ = ["ChunkMirasMLPFunction", "chunk_miras_mlp", "launch_grids", "tile_e"]
