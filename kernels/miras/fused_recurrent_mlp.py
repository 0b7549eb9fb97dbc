"""Token-by-token decoding of the chunkwise Miras MLP memory in Triton (inference: no gradients).

The outputs are those of :func:`kernels.miras.chunk_mlp.chunk_miras_mlp` on the whole sequence: inside a chunk
every gradient is taken at the chunk's gradient point ``W`` (the chunk start; Memora: the weights after the lag
token, Eq. 30-32) and each weight ``l`` of the memory is read as ``b W_l + U_l``, with ``b`` the product of the
retention gates since then (on the ``D`` axis: rows of ``W_1``, columns of ``W_2``) and ``U_l`` the decayed sum of
the chunk's writes so far. One token ``(q, k, v, eta, alpha, delta)`` does, with the lq scales ``c_1, c_2`` of the
chunk start (1 unless ``retention='lq'``)::

    z = (k c_1) W_1,  y = k + LN(act(z) c_2 W_2),  g_2 = LN'(psi(y - v)),  g_1 = (g_2 (c_2 W_2)^T) act'(z)
    b <- alpha b,  U_1 <- alpha U_1 - (eta k)^T g_1,  U_2 <- U_2 alpha - act(z)^T (eta g_2)
    o = q + LN(act((q c_1)(b W_1 + U_1)) c_2 (W_2 b + U_2))

After the chunk's last token the start becomes ``b W + U`` (Memora: ``c Softmax(b log W + U)``, Eq. 27) and
``U, b`` restart at ``0, 1``. Memora's first token of a chunk takes the exact step from the chunk start and
writes the gradient point. The weights (``W_1 [D, E]``, ``W_2 [E, D]``) stay in global memory and each token
walks the hidden axis ``E`` in tiles, as :mod:`kernels.miras.chunk_mlp` does; a program rereads what its other
threads wrote, so every hand-over passes a ``tl.debug_barrier``. The products are vector-matrix ones, in fp32 on
the CUDA cores: each token streams the weights twice (the pass at the key, then the write-and-read pass with
``U``), so decoding is bound by memory, not by arithmetic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.miras.chunk_mlp import (
    _act,
    _act_grad,
    _layer_norm,
    _ln_vjp,
    _meta,
    _normalise,
    _online,
    _put,
    _scalars,
    _scale2,
    _scales,
    _tile,
)
from kernels.miras.common import _log_floor, _psi, _simplex, _store, kernel_gates
from kernels.miras.naive import _initial
from kernels.miras.spec import MemorySpec


@triton.jit
def _hidden(w1_ptr, w2_ptr, kc, p2, offs_d, D, E, q_exp, eps_q, LQ_ROW: tl.constexpr, RETENTION: tl.constexpr,
            ACT: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr):  # fmt: skip
    """``act(kc W_1) c_2 W_2`` at one key ``kc [BD]`` (a pass over the tiles), ``[BD]``."""
    y = tl.zeros_like(kc)
    for t in range(NE):
        W1, W2, cols = _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET)
        c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
        y += tl.sum((_act(tl.sum(kc[:, None] * W1, 0), ACT) * c2)[:, None] * W2, 0)
    return y


@triton.jit
def _out_grad(k, v, d, y, offs_d, D, sharp, p, eps, ln_eps, BIAS: tl.constexpr):
    """``g_2 = LN'(psi(k + LN(y) - v))``: the gradient of the bias at the LayerNorm's input, ``[BD]``."""
    N, rstd = _layer_norm(y[None, :], offs_d, D, ln_eps)
    P = _psi(k[None, :] + N - v[None, :], v[None, :], d[None, :], D, sharp, p, eps, BIAS)
    return tl.sum(_ln_vjp(P, N, rstd, offs_d, D), 0)


@triton.jit
def _lag(
    s1_ptr, s2_ptr, w1_ptr, w2_ptr, k, v, d, eta, a, offs_d, D, E, sharp, p, eps, ln_eps, floor, scale1, scale2,
    BIAS: tl.constexpr, ACT: tl.constexpr, BD: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr,
):  # fmt: skip
    """Memora's lag token (Eq. 30): ``W = c Softmax(alpha log S - eta grad l(S; k, v))`` from the chunk start
    ``S`` to the gradient point ``W``; the softmax of ``W_2`` runs over ``E``, across the tiles."""
    g2 = _out_grad(
        k, v, d, _hidden(s1_ptr, s2_ptr, k, 0.0, offs_d, D, E, 1.0, 1.0, False, 4, ACT, BET, NE), offs_d, D, sharp,
        p, eps, ln_eps, BIAS,
    )  # fmt: skip
    m = tl.zeros([BD], dtype=tl.float32) - 1e30
    s = tl.zeros([BD], dtype=tl.float32)
    for t in range(NE):
        W1, W2, cols = _tile(s1_ptr, s2_ptr, t, offs_d, D, E, BET)
        z = tl.sum(k[:, None] * W1, 0)
        g1 = tl.sum(W2 * g2[None, :], 1) * _act_grad(z, ACT)
        L1 = a[:, None] * _log_floor(W1, floor) - (eta * k)[:, None] * g1[None, :]
        _store(w1_ptr, _simplex(L1, offs_d, D, cols, E, scale1), offs_d, cols, D, E, E)
        L2 = _log_floor(W2, floor) * a[None, :] - _act(z, ACT)[:, None] * (eta * g2)[None, :]
        m, s = _online(L2, cols, E, offs_d, D, m, s)
        _store(w2_ptr, L2, cols, offs_d, E, D, D)
    tl.debug_barrier()
    _normalise(w2_ptr, m, s, scale2, offs_d, D, E, BET, NE)


@triton.jit
def _close_chunk(
    s1_ptr, s2_ptr, w1_ptr, w2_ptr, u1_ptr, u2_ptr, b, offs_d, D, E, floor, scale1, scale2, KL: tl.constexpr,
    BD: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr,
):  # fmt: skip
    """The next chunk's start ``b W + U`` (Memora: ``c Softmax(b log W + U)``) and ``U = 0``. Without kl the
    start and the gradient point are one buffer; each thread rewrites exactly the elements it read."""
    m = tl.zeros([BD], dtype=tl.float32) - 1e30
    s = tl.zeros([BD], dtype=tl.float32)
    for t in range(NE):
        W1, W2, cols = _tile(w1_ptr, w2_ptr, t, offs_d, D, E, BET)
        U1, U2, cols = _tile(u1_ptr, u2_ptr, t, offs_d, D, E, BET)
        if KL:
            S1 = _simplex(b[:, None] * _log_floor(W1, floor) + U1, offs_d, D, cols, E, scale1)
            S2 = _log_floor(W2, floor) * b[None, :] + U2
            m, s = _online(S2, cols, E, offs_d, D, m, s)
        else:
            S1 = b[:, None] * W1 + U1
            S2 = W2 * b[None, :] + U2
        tl.debug_barrier()  # every thread has read the tile before any overwrites it
        _put(s1_ptr, s2_ptr, S1, S2, cols, offs_d, D, E)
        _put(u1_ptr, u2_ptr, tl.zeros_like(U1), tl.zeros_like(U2), cols, offs_d, D, E)
    if KL:
        tl.debug_barrier()
        _normalise(s2_ptr, m, s, scale2, offs_d, D, E, BET, NE)


@triton.jit(do_not_specialize=["T", "position", "chunk_size"])
def _mlp_recurrent_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, la_ptr, d_ptr, s1_ptr, s2_ptr, w1_ptr, w2_ptr, u1_ptr, u2_ptr, b_ptr, o_ptr, T,
    position, chunk_size, H: tl.constexpr, D: tl.constexpr, E: tl.constexpr, sharp, p, eps, q_exp, eps_q, ln_eps,
    floor, scale1, scale2, BD: tl.constexpr, BET: tl.constexpr, NE: tl.constexpr, BIAS: tl.constexpr,
    RETENTION: tl.constexpr, LQ_ROW: tl.constexpr, ACT: tl.constexpr, HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
):  # fmt: skip
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    nh = tl.cast(i_n, tl.int64) * H + i_h
    head = nh * D * E
    s1, s2, w1, w2, u1, u2 = s1_ptr + head, s2_ptr + head, w1_ptr + head, w2_ptr + head, u1_ptr + head, u2_ptr + head
    offs_d = tl.arange(0, BD)
    md = offs_d < D
    b = tl.load(b_ptr + nh * D + offs_d, mask=md, other=1.0)
    c1, p1, p2 = _scales(w1, w2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD, BET, NE)
    base = tl.cast(i_n, tl.int64) * T * H * D + i_h * D + offs_d
    for t in range(T):
        tl.debug_barrier()
        x = base + t * H * D
        q = tl.load(q_ptr + x, mask=md, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + x, mask=md, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + x, mask=md, other=0.0).to(tl.float32)
        eta = tl.load(eta_ptr + x, mask=md, other=0.0).to(tl.float32)
        a = tl.zeros([BD], dtype=tl.float32) + 1.0
        if HAS_ALPHA:
            a = tl.exp(tl.load(la_ptr + x, mask=md, other=0.0))
        d = tl.zeros([BD], dtype=tl.float32)
        if HAS_DELTA:
            d = tl.load(d_ptr + x, mask=md, other=0.0).to(tl.float32)
        if RETENTION == 4:
            if position == 0:
                _lag(
                    s1, s2, w1, w2, k, v, d, eta, a, offs_d, D, E, sharp, p, eps, ln_eps, floor, scale1, scale2,
                    BIAS, ACT, BD, BET, NE,
                )  # fmt: skip
                tl.debug_barrier()
                eta = tl.zeros([BD], dtype=tl.float32)
                a = tl.zeros([BD], dtype=tl.float32) + 1.0
        b = b * a
        kc, qc = k * c1, q * c1
        y = _hidden(w1, w2, kc, p2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, ACT, BET, NE)
        g2 = _out_grad(k, v, d, y, offs_d, D, sharp, p, eps, ln_eps, BIAS)
        zq = tl.zeros([BD], dtype=tl.float32)
        for i in range(NE):
            W1, W2, cols = _tile(w1, w2, i, offs_d, D, E, BET)
            U1, U2, cols = _tile(u1, u2, i, offs_d, D, E, BET)
            c2, power2 = _scale2(W2, p2, q_exp, eps_q, LQ_ROW, RETENTION, BET)
            z = tl.sum(kc[:, None] * W1, 0)
            g1 = tl.sum(W2 * g2[None, :], 1) * c2 * _act_grad(z, ACT)
            U1 = a[:, None] * U1 - (eta * k)[:, None] * g1[None, :]
            U2 = U2 * a[None, :] - _act(z, ACT)[:, None] * (eta * g2)[None, :]
            tl.debug_barrier()  # every thread has read the tile before any overwrites it
            _put(u1, u2, U1, U2, cols, offs_d, D, E)
            h = _act(tl.sum((qc * b)[:, None] * W1 + qc[:, None] * U1, 0), ACT) * c2
            zq += tl.sum(h[:, None] * (W2 * b[None, :] + U2), 0)
        o = q + tl.sum(_layer_norm(zq[None, :], offs_d, D, ln_eps)[0], 0)
        tl.store(o_ptr + x, o.to(o_ptr.dtype.element_ty), mask=md)
        position += 1
        if position == chunk_size:
            tl.debug_barrier()
            _close_chunk(s1, s2, w1, w2, u1, u2, b, offs_d, D, E, floor, scale1, scale2, RETENTION == 4, BD, BET, NE)
            tl.debug_barrier()
            b = tl.zeros([BD], dtype=tl.float32) + 1.0
            position = 0
            if RETENTION == 2:
                c1, p1, p2 = _scales(w1, w2, offs_d, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD, BET, NE)
    tl.store(b_ptr + nh * D + offs_d, b, mask=md)


CHUNK_ONLY = ("BT", "BW", "IS_VARLEN")
DECODE_WARPS = 8
"""Warps per decoding program (both memories). On sm_90a at 4 every head size spilled registers; at 8 the MLP
memory's spills at no head size and the linear memory's (whole ``[K, V]`` states) at ``D = 64`` at none, but at
``D = 128`` it spills 1.4 KB (l2), 2.6 KB (lq) and 6.5 KB (kl): ``reports/benchmarks/miras_resources_sm_90a.md``."""


def _fresh(shapes, like: torch.Tensor, value: float) -> tuple[torch.Tensor, ...]:
    return tuple(torch.full(s, value, device=like.device, dtype=torch.float32) for s in shapes)


def fused_recurrent_miras_mlp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None,
    spec: MemorySpec,
    delta: torch.Tensor | None = None,
    state: dict | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict]:
    """Decode ``T`` tokens of the MLP memory from ``state`` (module docstring); called by
    :func:`kernels.miras.fused_recurrent.fused_recurrent_miras`, which checks ``spec``.

    Args:
        q, k, v: ``[N, T, H, D]``; eta, alpha, delta: ``[N, T, H]`` or ``[N, T, H, D]``.
        state: ``{"start": (W_1 [N, H, D, E], W_2 [N, H, E, D]), "position": i}`` (``start``: the chunk-start
            weights, Moneta's accumulator ``A``), with, past a chunk's first token, ``"update"`` (``U_1, U_2``),
            ``"decay"`` (``b [N, H, D]``) and, for Memora, ``"point"`` (the weights after the lag token); or None
            (zeros at position 0, Memora the uniform simplex).
        chunk_size: the chunk size of the :func:`chunk_miras` run being continued.

    Returns:
        ``o [N, T, H, D]`` in ``q``'s dtype and the new state (fp32; the input state is not modified, and the
        new one shares the weights this call leaves unchanged with it).
    """
    N, T, H, D = q.shape
    if v.shape[-1] != D:
        raise ValueError(f"the MLP memory needs d_k == d_v, got {D} and {v.shape[-1]}")
    E = spec.expansion * D
    kl = spec.retention == "kl"
    if state is None:
        state = {"start": _initial(None, spec, N, H, D, D, q.float())[0], "position": 0}
    position = int(state["position"])
    if not 0 <= position < chunk_size:
        raise ValueError(f"state['position']={position} is invalid; allowed values: 0 .. {chunk_size - 1}")
    needed = ("update", "decay", "point") if kl else ("update", "decay")
    missing = [name for name in needed if name not in state]
    if position and missing:
        raise ValueError(f"state at position {position} needs {', '.join(map(repr, missing))} (from a decoding call)")
    shapes = ((N, H, D, E), (N, H, E, D))

    def own(weights, copy: bool):
        """fp32 ``[N, H, ...]`` buffers; a copy where the kernel writes them, else ``weights`` themselves."""
        out = (w.float().expand(s) for w, s in zip(weights, shapes, strict=True))
        return tuple(w.clone() if copy else w.contiguous() for w in out)

    # the kernel writes the start only at a chunk end and Memora's point only at a lag token: share the rest
    start = own(state["start"], copy=position + T >= chunk_size)
    if position:
        update, decay = own(state["update"], copy=True), state["decay"].float().expand(N, H, D).clone()
    else:
        update, decay = _fresh(shapes, q, 0.0), _fresh([(N, H, D)], q, 1.0)[0]
    point = start
    if kl and position:
        point = own(state["point"], copy=position + T > chunk_size)
    elif kl:
        point = tuple(torch.empty_like(w) for w in start)
    eta_c, log_alpha, delta_c = kernel_gates(spec, eta, alpha, delta, D, D)
    o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
    # the chunk kernels' specialisation, less what only a chunk has (its length, workspace and packing)
    meta = {k: v for k, v in _meta(spec, chunk_size, D, log_alpha, delta_c, None).items() if k not in CHUNK_ONLY}
    with torch.no_grad():
        _mlp_recurrent_kernel[(N, H)](
            q.contiguous(),
            k.contiguous(),
            v.contiguous(),
            eta_c,
            eta_c if log_alpha is None else log_alpha,
            eta_c if delta_c is None else delta_c,
            *start,
            *point,
            *update,
            decay,
            o,
            T,
            position,
            chunk_size,
            H,
            D,
            E,
            *_scalars(spec, D),
            **meta,
            num_warps=DECODE_WARPS,
        )
    new = {"start": start, "update": update, "decay": decay, "position": (position + T) % chunk_size}
    if kl:
        new["point"] = point
    return o, new


__all__ = ["DECODE_WARPS", "fused_recurrent_miras_mlp"]
