"""Triton chunk forward of the Miras MLP memory ``M(x) = x + LN(act(x W_1) W_2)`` (section 5.3-5.4).

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

Forward only: the backward is not written yet (issue 9), so :func:`chunk_mlp_forward` refuses inputs that
need gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.miras.chunk import (
    RETENTION_CODES,
    _chunk_inputs,
    _decay,
    _lq_scale,
    _psi,
    _rows,
    _store,
    bias_code,
    channelwise,
)
from kernels.miras.naive import _initial, _lq_normalise
from kernels.miras.spec import MemorySpec


def check_mlp_supported(spec: MemorySpec) -> None:
    """Raise ``NotImplementedError`` naming the field when the MLP forward kernel cannot run ``spec``."""
    for name, value, allowed in (
        ("arch", spec.arch, ("mlp",)),
        ("depth", spec.depth, (2,)),
        ("residual_norm", spec.residual_norm, (True,)),
        ("retention", spec.retention, ("none", "l2", "lq")),
        ("algorithm", spec.algorithm, ("gd",)),
        ("read", spec.read, ("chunk",)),
    ):
        if value not in allowed:
            raise NotImplementedError(
                f"memory.{name}={value!r} has no Triton MLP kernel yet (issue 9); on the kernel: "
                + ", ".join(map(repr, allowed))
            )


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


@triton.jit(do_not_specialize=["T"])
def _mlp_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    la_ptr,
    d_ptr,
    w1_ptr,
    w2_ptr,
    o_ptr,
    ht1_ptr,
    ht2_ptr,
    cu_ptr,
    T,
    H: tl.constexpr,
    D: tl.constexpr,
    E: tl.constexpr,
    sharp,
    p,
    eps,
    q_exp,
    eps_q,
    ln_eps,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BE: tl.constexpr,
    BIAS: tl.constexpr,
    RETENTION: tl.constexpr,
    LQ_ROW: tl.constexpr,
    ACT: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    if IS_VARLEN:
        bos = tl.load(cu_ptr + i_n).to(tl.int64)
        T = (tl.load(cu_ptr + i_n + 1) - bos).to(tl.int32)
    else:
        bos = tl.cast(i_n, tl.int64) * T
    s = H * D
    base = bos * s + i_h * D
    offs_d, offs_e = tl.arange(0, BD), tl.arange(0, BE)
    state = (tl.cast(i_n, tl.int64) * H + i_h) * D * E
    W1 = _rows(w1_ptr + state, offs_d, offs_e, D, E, E)
    W2 = _rows(w2_ptr + state, offs_e, offs_d, E, D, D)
    for it in range(tl.cdiv(T, BT)):
        rows = it * BT + tl.arange(0, BT)
        q, k, v, eta, g, g_last, d = _chunk_inputs(
            q_ptr + base,
            k_ptr + base,
            v_ptr + base,
            eta_ptr + base,
            la_ptr + base,
            d_ptr + base,
            rows,
            offs_d,
            offs_d,
            T,
            D,
            D,
            s,
            s,
            HAS_ALPHA,
            HAS_DELTA,
            BT,
        )
        c1, _ = _lq_scale(W1, D, E, q_exp, eps_q, LQ_ROW, RETENTION, BD)
        c2, _ = _lq_scale(W2, E, D, q_exp, eps_q, LQ_ROW, RETENTION, BE)
        Z1 = tl.dot(k * c1[None, :], W1)
        H1 = _act(Z1, ACT)
        N, rstd = _layer_norm(tl.dot(H1 * c2[None, :], W2), offs_d, D, ln_eps)
        P = _psi(k + N - v, v, d, D, sharp, p, eps, BIAS)
        g2 = rstd[:, None] * (P - (tl.sum(P, 1) / D)[:, None] - N * (tl.sum(P * N, 1) / D)[:, None])
        g2 = tl.where((offs_d < D)[None, :], g2, 0.0)
        g1 = tl.dot(g2, tl.trans(W2)) * c2[None, :] * _act_grad(Z1, ACT)

        E3 = _decay(g, BT)
        ek, eg2 = eta * k, eta * g2
        read1 = q * c1[None, :]
        A1 = tl.sum(read1[:, None, :] * ek[None, :, :] * E3, 2)
        h = _act(tl.dot(read1 * tl.exp(g), W1) - tl.dot(A1, g1), ACT)
        read2 = h * c2[None, :]
        i = tl.arange(0, BT)
        S2 = tl.where(i[None, :] <= i[:, None], tl.dot(read2, tl.trans(H1)), 0.0)
        z2 = tl.exp(g) * tl.dot(read2, W2) - tl.sum(S2[:, :, None] * eg2[None, :, :] * E3, 1)
        out, _ = _layer_norm(z2, offs_d, D, ln_eps)
        _store(o_ptr + base, q + out, rows, offs_d, T, D, s)

        tail = tl.exp(g_last[None, :] - g)
        W1 = tl.exp(g_last)[:, None] * W1 - tl.dot(tl.trans(ek * tail), g1)
        W2 = W2 * tl.exp(g_last)[None, :] - tl.dot(tl.trans(H1), eg2 * tail)
    if STORE_HT:
        _store(ht1_ptr + state, W1, offs_d, offs_e, D, E, E)
        _store(ht2_ptr + state, W2, offs_e, offs_d, E, D, D)


def chunk_mlp_forward(
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
    """The chunkwise MLP memory on Triton, forward only; arguments as :func:`kernels.miras.chunk.chunk_miras`.

    ``initial_state`` is required in practice (an MLP memory at zero weights stays at the symmetric point); None
    starts from zeros as :func:`naive_chunk_miras` does.
    """
    check_mlp_supported(spec)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, eta, alpha, delta, *_leaves(initial_state))
    ):
        raise NotImplementedError("the Triton backward of the MLP memory is not written yet (issue 9)")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; allowed values: a power of two >= 16")
    B, T, H, D = q.shape
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    E = spec.expansion * D
    weights = _initial(initial_state, spec, N, H, D, D, q.float())[0]
    W1, W2 = (w.float().contiguous() for w in weights)
    log_alpha = None
    if spec.retention != "none":
        log_alpha = channelwise(alpha, D).float().clamp_min(torch.finfo(torch.float32).tiny).log()
    eta_c = channelwise(eta, D)
    delta_c = channelwise(delta, D) if spec.needs_delta else None
    o = torch.empty(v.shape, device=v.device, dtype=q.dtype)
    ht1 = torch.empty_like(W1) if output_final_state else W1
    ht2 = torch.empty_like(W2) if output_final_state else W2
    _mlp_fwd_kernel[(N, H)](
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        eta_c,
        eta_c if log_alpha is None else log_alpha,
        eta_c if delta_c is None else delta_c,
        W1,
        W2,
        o,
        ht1,
        ht2,
        W1 if cu_seqlens is None else cu_seqlens.to(torch.int32),
        T,
        H,
        D,
        E,
        spec.sign_sharpness,
        spec.p,
        spec.eps,
        spec.q,
        spec.eps**spec.q,
        spec.ln_eps,
        BT=chunk_size,
        BD=max(16, triton.next_power_of_2(D)),
        BE=max(16, triton.next_power_of_2(E)),
        BIAS=bias_code(spec),
        RETENTION=RETENTION_CODES[spec.retention],
        LQ_ROW=spec.lq_scope == "row",
        ACT=0 if spec.activation == "gelu" else 1,
        HAS_ALPHA=log_alpha is not None,
        HAS_DELTA=delta_c is not None,
        STORE_HT=output_final_state,
        IS_VARLEN=cu_seqlens is not None,
    )
    if not output_final_state:
        return o, None
    final = (ht1, ht2)
    if spec.retention == "lq":
        return o, {"weights": tuple(_lq_normalise(w, spec) for w in final), "accumulator": final}
    return o, {"weights": final}


def _leaves(state) -> tuple:
    if state is None:
        return ()
    if torch.is_tensor(state):
        return (state,)
    if isinstance(state, dict):
        return tuple(t for value in state.values() for t in (value if isinstance(value, tuple) else (value,)))
    return tuple(state)


__all__ = ["check_mlp_supported", "chunk_mlp_forward"]
