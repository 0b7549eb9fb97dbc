"""Token-by-token decoding of the chunkwise Miras memory in Triton (inference: no gradients); the MLP memory's
kernel is in ``fused_recurrent_mlp.py``.

Decoding must give the outputs of :func:`kernels.miras.chunk.chunk_miras` on the whole sequence, so it keeps
the chunk structure: every gradient of a chunk is taken at the chunk-start state (Eq. 28), and the reads use
the state accumulated linearly since then. The state is therefore::

    {"start": S_{t'} [N, H, K, V], "running": S_i [N, H, K, V], "position": i}

and one token ``(q, k, v, eta, alpha, delta)`` does, with ``c = ||S_{t'}||_q^-(q-2)`` (1 unless ``lq``)::

    r = (k * c) S_{t'} - v,   S_i = alpha * S_{i-1} - (eta * k) psi(r)^T,   o = (q * c) S_i

When ``position`` reaches the chunk size the running state becomes the next chunk start (soft-thresholded
for ``elastic``). Memora's ``kl`` takes the exact step on a chunk's first token (the lag token, Eq. 30) from
``S_{t'}`` to the gradient point ``"point"``, which replaces ``S_{t'}`` above, and carries
``c Softmax(b log S_lag - U)`` out of the chunk (``U = b S_lag - S_i``, ``b = "decay"``: the product of the gates
since the lag token). One program per sequence and head holds the states in fp32 registers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.miras.chunk import check_supported
from kernels.miras.chunk_linear import scalars
from kernels.miras.common import (
    RETENTION_CODES,
    _log_floor,
    _lq_scale,
    _psi,
    _simplex,
    _soft_threshold_tl,
    bias_code,
    kernel_gates,
)
from kernels.miras.fused_recurrent_mlp import DECODE_WARPS, fused_recurrent_miras_mlp
from kernels.miras.naive import _initial
from kernels.miras.spec import MemorySpec


@triton.jit(do_not_specialize=["T", "position", "chunk_size"])
def _fused_recurrent_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    start_ptr,
    running_ptr,
    point_ptr,
    decay_ptr,
    o_ptr,
    T,
    position,
    chunk_size,
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
    BK: tl.constexpr,
    BV: tl.constexpr,
    BIAS: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    offs_k, offs_v = tl.arange(0, BK), tl.arange(0, BV)
    mk, mv = offs_k < K, offs_v < V
    mkv = mk[:, None] & mv[None, :]
    nh = tl.cast(i_n, tl.int64) * H + i_h
    state = nh * K * V + offs_k[:, None] * V + offs_v[None, :]
    start = tl.load(start_ptr + state, mask=mkv, other=0.0)
    running = tl.load(running_ptr + state, mask=mkv, other=0.0)
    point = start
    b = tl.zeros([BK], dtype=tl.float32) + 1.0
    if RETENTION == 4:
        point = tl.load(point_ptr + state, mask=mkv, other=0.0)
        b = tl.load(decay_ptr + nh * K + offs_k, mask=mk, other=1.0)
    base_k = tl.cast(i_n, tl.int64) * T * H * K + i_h * K + offs_k
    base_v = tl.cast(i_n, tl.int64) * T * H * V + i_h * V + offs_v
    for t in range(T):
        tk, tv = base_k + t * H * K, base_v + t * H * V
        q = tl.load(q_ptr + tk, mask=mk, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + tk, mask=mk, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + tv, mask=mv, other=0.0).to(tl.float32)[None, :]
        eta = tl.load(eta_ptr + tk, mask=mk, other=0.0).to(tl.float32)
        a = tl.zeros([BK], dtype=tl.float32) + 1.0
        if HAS_ALPHA:
            a = tl.exp(tl.load(la_ptr + tk, mask=mk, other=0.0))
        d = tl.zeros_like(v)
        if HAS_DELTA:
            d = tl.load(d_ptr + tv, mask=mv, other=0.0).to(tl.float32)[None, :]
        if RETENTION == 4:
            if position == 0:
                r0 = tl.sum(k[:, None] * start, 0)[None, :] - v
                P0 = _psi(r0, v, d, V, sharp, p, eps, BIAS)
                L0 = a[:, None] * _log_floor(start, floor) - (eta * k)[:, None] * P0
                point = _simplex(L0, offs_k, K, offs_v, V, scale)
                running = point
                eta = tl.zeros([BK], dtype=tl.float32)
                a = tl.zeros([BK], dtype=tl.float32) + 1.0
        c, _ = _lq_scale(point, K, V, q_exp, eps_q, LQ_ROW, RETENTION, BK)
        r = tl.sum((k * c)[:, None] * point, 0)[None, :] - v
        P = _psi(r, v, d, V, sharp, p, eps, BIAS)
        running = a[:, None] * running - (eta * k)[:, None] * P
        b = b * a
        tl.store(o_ptr + tv, tl.sum((q * c)[:, None] * running, 0).to(o_ptr.dtype.element_ty), mask=mv)
        position += 1
        at_end = position == chunk_size
        if RETENTION == 3:
            new_start = _soft_threshold_tl(running, gamma)
        elif RETENTION == 4:
            new_start = _simplex(running + b[:, None] * (_log_floor(point, floor) - point), offs_k, K, offs_v, V, scale)
        else:
            new_start = running
        start = tl.where(at_end, new_start, start)
        running = tl.where(at_end, new_start, running)
        b = tl.where(at_end, 1.0, b)
        if RETENTION != 4:
            point = start
        position = tl.where(at_end, 0, position)
    tl.store(start_ptr + state, start, mask=mkv)
    tl.store(running_ptr + state, running, mask=mkv)
    if RETENTION == 4:
        tl.store(point_ptr + state, point, mask=mkv)
        tl.store(decay_ptr + nh * K + offs_k, b, mask=mk)


def fused_recurrent_miras(
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
    """Decode ``T`` tokens from ``state`` (module docstring); inputs as :func:`kernels.miras.chunk.chunk_miras`.

    Args:
        q, k: ``[N, T, H, K]``; v: ``[N, T, H, V]``; eta, alpha, delta: ``[N, T, H]`` or channel-wise.
        state: ``{"start", "running", "position"}`` (kl: also ``"point"`` and ``"decay"``) from a previous call;
            at position 0 only ``start`` is needed. None starts from zeros (kl: the uniform simplex) at position 0.
            The MLP memory's state is that of :func:`kernels.miras.fused_recurrent_mlp.fused_recurrent_miras_mlp`.
        chunk_size: the chunk size of the :func:`chunk_miras` run being continued.

    Returns:
        ``o [N, T, H, V]`` in ``q``'s dtype and the new state (fp32; the input state is not modified).
    """
    check_supported(spec)
    if spec.arch == "mlp":
        return fused_recurrent_miras_mlp(q, k, v, eta, alpha, spec, delta, state, chunk_size)
    N, T, H, K = q.shape
    V = v.shape[-1]
    kl = spec.retention == "kl"
    if state is None:
        start = _initial(None, spec, N, H, K, V, q.float())[0][0]
        state = {"start": start, "position": 0}
    position = int(state["position"])
    if not 0 <= position < chunk_size:
        raise ValueError(f"state['position']={position} is invalid; allowed values: 0 .. {chunk_size - 1}")
    missing = [name for name in (("running", "point", "decay") if kl else ("running",)) if name not in state]
    if position and missing:
        raise ValueError(f"state at position {position} needs {', '.join(map(repr, missing))} (from a decoding call)")
    start = state["start"].float().expand(N, H, K, V).clone()
    running = state["running"].float().expand(N, H, K, V).clone() if position else start.clone()
    point, decay = running, running
    if kl:
        point = state["point"].float().expand(N, H, K, V).clone() if position else start.clone()
        decay = (
            state["decay"].float().expand(N, H, K).clone()
            if position
            else torch.ones(N, H, K, device=q.device, dtype=torch.float32)
        )
    o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
    eta_c, log_alpha, delta_c = kernel_gates(spec, eta, alpha, delta, K, V)
    with torch.no_grad():
        _fused_recurrent_kernel[(N, H)](
            q.contiguous(),
            k.contiguous(),
            v.contiguous(),
            eta_c,
            eta_c if log_alpha is None else log_alpha,
            eta_c if delta_c is None else delta_c,
            start,
            running,
            point,
            decay,
            o,
            T,
            position,
            chunk_size,
            H,
            K,
            V,
            *scalars(spec, K).values(),
            BK=max(16, triton.next_power_of_2(K)),
            BV=max(16, triton.next_power_of_2(V)),
            BIAS=bias_code(spec),
            RETENTION=RETENTION_CODES[spec.retention],
            LQ_ROW=spec.lq_scope == "row",
            HAS_ALPHA=log_alpha is not None,
            HAS_DELTA=delta_c is not None,
            num_warps=DECODE_WARPS,
        )
    new = {"start": start, "running": running, "position": (position + T) % chunk_size}
    if kl:
        new |= {"point": point, "decay": decay}
    return o, new
