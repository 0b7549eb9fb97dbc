"""Decay-weighted products inside a chunk, without the ``[BT, BT, F]`` decay tensor.

With ``g [BT, F]`` the inclusive cumulative log decay of a chunk (``g_i = sum_{m <= i} log alpha_m``, so
``g`` never increases down a column), the chunk kernels need three products, all over ``j <= i``::

    scores(a, b)[i, j] = sum_f a_if b_jf e^{g_if - g_jf}           e.g. A = scores(q c, eta k)
    mix(W, b)[i, f]    = sum_j W_ij b_jf e^{g_if - g_jf}           e.g. the layer-2 read of the MLP memory
    mix_t(W, a)[j, f]  = sum_i W_ij a_if e^{g_if - g_jf}           their transposes, for the backward

Forming ``e^{g_i - g_j}`` for every pair costs ``BT^2 F`` registers and exponentials. Instead the chunk is
halved recursively down to blocks of ``BC = 16`` rows. Across a split the pair factorises at the boundary row
``r`` (the last row of the upper half), ``e^{g_i - g_j} = e^{g_i - g_r} e^{g_r - g_j}``, and both factors are at
most 1 for ``j <= r < i``, so the off-diagonal blocks are plain matrix products (fla's GLA splits its chunks
for the same reason; the ratio ``e^{g_i} / e^{g_j}`` alone would overflow once a chunk decays past ``e^-88``).
Inside a ``BC`` block the exponentials are taken pair by pair, one key column at a time, exactly.

Chunks of 16, 32 and 64 rows; the splits and joins are register reshapes (no memory round trip).
"""

from __future__ import annotations

import triton
import triton.language as tl

BC: tl.constexpr = tl.constexpr(16)
"""Rows of the diagonal blocks, where exponentials are taken pair by pair (the smallest ``tl.dot`` side)."""
CHUNK_SIZES = (16, 32, 64)


@triton.jit
def dot(a, b):
    """``a @ b`` of fp32 operands at (nearly) fp32 precision, as three tf32 products (``tf32x3``); every product of
    the Miras kernels goes through it. A single tf32 product rounds its operands to 10 bits, which the Miras
    recurrences amplify: emulated at T = 130 (``reports/benchmarks/miras_precision_cpu.md``), Yaad's worst gradient
    ends 3e-2 (relative RMS) from fp64 with tf32 products and 0.57 with bf16 operands, against 2e-5 in fp32."""
    return tl.dot(a, b, input_precision="tf32x3")


@triton.jit
def _halves(x, R: tl.constexpr, C: tl.constexpr):
    """The top and bottom ``R / 2`` rows of ``x [R, C]``."""
    return tl.split(tl.permute(tl.reshape(x, [2, R // 2, C]), [1, 2, 0]))


@triton.jit
def _stack(top, bottom, R: tl.constexpr, C: tl.constexpr):
    """``[top; bottom]`` of two ``[R, C]`` blocks: ``[2R, C]``."""
    return tl.reshape(tl.permute(tl.join(top, bottom), [2, 0, 1]), [2 * R, C])


@triton.jit
def _quarters(W, R: tl.constexpr):
    """``W00, W10, W11`` of a square ``[R, R]`` (the upper-right quarter is never read)."""
    top, bottom = _halves(W, R, R)
    W00, _ = _halves(tl.trans(top), R, R // 2)
    W10, W11 = _halves(tl.trans(bottom), R, R // 2)
    return tl.trans(W00), tl.trans(W10), tl.trans(W11)


@triton.jit
def _assemble(S00, S10, S11, R: tl.constexpr):
    """The lower block-triangular ``[[S00, 0], [S10, S11]]`` of ``[R, R]`` quarters: ``[2R, 2R]``."""
    top = tl.trans(_stack(tl.trans(S00), tl.zeros([R, R], dtype=tl.float32), R, R))
    bottom = tl.trans(_stack(tl.trans(S10), tl.trans(S11), R, R))
    return _stack(top, bottom, R, 2 * R)


@triton.jit
def _last_row(x, R: tl.constexpr):
    return tl.sum(tl.where((tl.arange(0, R) == R - 1)[:, None], x, 0.0), 0)


@triton.jit
def _row(x, j, R: tl.constexpr):
    return tl.sum(tl.where((tl.arange(0, R) == j)[:, None], x, 0.0), 0)


@triton.jit
def _col(x, j, R: tl.constexpr):
    return tl.sum(tl.where((tl.arange(0, R) == j)[None, :], x, 0.0), 1)


@triton.jit
def _pair_decay(g, gj, j, R: tl.constexpr):
    """``e^{g_i - g_j}`` for rows ``i >= j`` of a block, 0 above (never an overflow: the exponent is <= 0)."""
    return tl.exp(tl.where((tl.arange(0, R) >= j)[:, None], g - gj[None, :], float("-inf")))


@triton.jit
def _scores_block(a, b, g, R: tl.constexpr):
    i = tl.arange(0, R)
    S = tl.zeros([R, R], dtype=tl.float32)
    for j in range(R):
        col = tl.sum(a * _row(b, j, R)[None, :] * _pair_decay(g, _row(g, j, R), j, R), 1)
        S = tl.where(i[None, :] == j, col[:, None], S)
    return S


@triton.jit
def _mix_block(W, b, g, R: tl.constexpr):
    Z = tl.zeros(b.shape, dtype=tl.float32)
    for j in range(R):
        Z += _col(W, j, R)[:, None] * _row(b, j, R)[None, :] * _pair_decay(g, _row(g, j, R), j, R)
    return Z


@triton.jit
def _mix_t_block(W, a, g, R: tl.constexpr):
    i = tl.arange(0, R)
    Z = tl.zeros(a.shape, dtype=tl.float32)
    for j in range(R):
        row = tl.sum(_col(W, j, R)[:, None] * a * _pair_decay(g, _row(g, j, R), j, R), 0)
        Z = tl.where(i[:, None] == j, row[None, :], Z)
    return Z


@triton.jit
def _boundary(a1, b0, g0, g1, R: tl.constexpr):
    """``a1 e^{g1 - g_r}`` and ``b0 e^{g_r - g0}``: the two halves scaled to their boundary row ``r``."""
    gr = _last_row(g0, R)[None, :]
    return a1 * tl.exp(g1 - gr), b0 * tl.exp(gr - g0)


@triton.jit
def _scores_cross(a, b, g, R: tl.constexpr, F: tl.constexpr):
    """Halves of ``a, b, g`` (``2R`` rows) and the lower-left quarter of ``scores``."""
    a0, a1 = _halves(a, 2 * R, F)
    b0, b1 = _halves(b, 2 * R, F)
    g0, g1 = _halves(g, 2 * R, F)
    hi, lo = _boundary(a1, b0, g0, g1, R)
    return a0, a1, b0, b1, g0, g1, dot(hi, tl.trans(lo))


@triton.jit
def _scores_2(a, b, g, F: tl.constexpr):
    a0, a1, b0, b1, g0, g1, S10 = _scores_cross(a, b, g, BC, F)
    return _assemble(_scores_block(a0, b0, g0, BC), S10, _scores_block(a1, b1, g1, BC), BC)


@triton.jit
def _scores_4(a, b, g, F: tl.constexpr):
    a0, a1, b0, b1, g0, g1, S10 = _scores_cross(a, b, g, 2 * BC, F)
    return _assemble(_scores_2(a0, b0, g0, F), S10, _scores_2(a1, b1, g1, F), 2 * BC)


@triton.jit
def _mix_cross(W, b, g, R: tl.constexpr, F: tl.constexpr):
    """Quarters of ``W``, halves of ``b, g`` (``2R`` rows) and the contribution of the upper half to the lower."""
    W00, W10, W11 = _quarters(W, 2 * R)
    b0, b1 = _halves(b, 2 * R, F)
    g0, g1 = _halves(g, 2 * R, F)
    gr = _last_row(g0, R)[None, :]
    return W00, W11, b0, b1, g0, g1, tl.exp(g1 - gr) * dot(W10, b0 * tl.exp(gr - g0))


@triton.jit
def _mix_2(W, b, g, F: tl.constexpr):
    W00, W11, b0, b1, g0, g1, Z10 = _mix_cross(W, b, g, BC, F)
    return _stack(_mix_block(W00, b0, g0, BC), _mix_block(W11, b1, g1, BC) + Z10, BC, F)


@triton.jit
def _mix_4(W, b, g, F: tl.constexpr):
    W00, W11, b0, b1, g0, g1, Z10 = _mix_cross(W, b, g, 2 * BC, F)
    return _stack(_mix_2(W00, b0, g0, F), _mix_2(W11, b1, g1, F) + Z10, 2 * BC, F)


@triton.jit
def _mix_t_cross(W, a, g, R: tl.constexpr, F: tl.constexpr):
    """Quarters of ``W``, halves of ``a, g`` (``2R`` rows) and the contribution of the lower half to the upper."""
    W00, W10, W11 = _quarters(W, 2 * R)
    a0, a1 = _halves(a, 2 * R, F)
    g0, g1 = _halves(g, 2 * R, F)
    gr = _last_row(g0, R)[None, :]
    return W00, W11, a0, a1, g0, g1, tl.exp(gr - g0) * dot(tl.trans(W10), a1 * tl.exp(g1 - gr))


@triton.jit
def _mix_t_2(W, a, g, F: tl.constexpr):
    W00, W11, a0, a1, g0, g1, Z01 = _mix_t_cross(W, a, g, BC, F)
    return _stack(_mix_t_block(W00, a0, g0, BC) + Z01, _mix_t_block(W11, a1, g1, BC), BC, F)


@triton.jit
def _mix_t_4(W, a, g, F: tl.constexpr):
    W00, W11, a0, a1, g0, g1, Z01 = _mix_t_cross(W, a, g, 2 * BC, F)
    return _stack(_mix_t_2(W00, a0, g0, F) + Z01, _mix_t_2(W11, a1, g1, F), 2 * BC, F)


@triton.jit
def scores(a, b, g, BT: tl.constexpr, F: tl.constexpr):
    """``S[i, j] = sum_f a_if b_jf e^{g_if - g_jf}`` for ``j <= i``, 0 above: ``[BT, BT]`` from ``[BT, F]``."""
    if BT == BC:
        out = _scores_block(a, b, g, BT)
    elif BT == 2 * BC:
        out = _scores_2(a, b, g, F)
    else:
        out = _scores_4(a, b, g, F)
    return out


@triton.jit
def mix(W, b, g, BT: tl.constexpr, F: tl.constexpr):
    """``Z[i, f] = sum_{j <= i} W_ij b_jf e^{g_if - g_jf}``: ``[BT, F]`` (``W`` read on and below the diagonal)."""
    if BT == BC:
        out = _mix_block(W, b, g, BT)
    elif BT == 2 * BC:
        out = _mix_2(W, b, g, F)
    else:
        out = _mix_4(W, b, g, F)
    return out


@triton.jit
def mix_t(W, a, g, BT: tl.constexpr, F: tl.constexpr):
    """``Z[j, f] = sum_{i >= j} W_ij a_if e^{g_if - g_jf}``: ``[BT, F]`` (``W`` read on and below the diagonal)."""
    if BT == BC:
        out = _mix_t_block(W, a, g, BT)
    elif BT == 2 * BC:
        out = _mix_t_2(W, a, g, F)
    else:
        out = _mix_t_4(W, a, g, F)
    return out


def check_chunk_size(chunk_size: int) -> None:
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(
            f"chunk_size={chunk_size!r} is invalid for the Triton kernels; allowed values: "
            + ", ".join(map(str, CHUNK_SIZES))
        )


__all__ = ["BC", "CHUNK_SIZES", "check_chunk_size", "dot", "mix", "mix_t", "scores"]
