"""Gated linear attention in torch: the recurrence ``S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T``, ``o_t = q_t S_t``.

One op covers RetNet (a fixed decay per head), GLA (a data-dependent decay per key channel), Mamba2's SSD (a
data-dependent decay per head) and Mamba's selective scan (a decay per channel and state entry, heads of width
``V = 1``). ``naive_recurrent_gla`` is the literal per-token recurrence; ``naive_chunk_gla`` is the chunkwise
form (GLA paper, Yang et al. 2024, section 4) that fla's ``chunk_gla`` / ``chunk_simple_gla`` kernels compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when an input is fp64 (the tests' reference precision)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _prepare(q, k, v, g, scale, initial_state):
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    dtype = _accumulation_dtype(q, k, v, g)
    state = q.new_zeros(B, H, K, v.shape[-1], dtype=dtype) if initial_state is None else initial_state.to(dtype)
    return scale, state, (t.to(dtype) for t in (q, k, v, g))


def naive_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token gated linear attention.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: log-decay ``<= 0``, ``[B, T, H]`` (one per head) or ``[B, T, H, K]`` (one per key channel).
        scale: multiplies ``q`` (default ``K ** -0.5``).
        initial_state: ``[B, H, K, V]`` or None (zeros).

    Returns ``o[B, T, H, V]`` (dtype of ``v``) and the final state ``[B, H, K, V]`` in fp32 (fp64 for fp64
    inputs; or None).
    """
    dtype = v.dtype
    scale, state, (q, k, v, g) = _prepare(q, k, v, g, scale, initial_state)
    decay = g.exp() if g.dim() == 4 else g.exp()[..., None]
    outputs = []
    # unbind, not indexing: the backward of each index would write a full-size gradient
    for d_t, q_t, k_t, v_t in zip(*(t.unbind(1) for t in (decay, q, k, v)), strict=True):
        state = d_t[..., None] * state + k_t[..., :, None] * v_t[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t * scale, state))
    return torch.stack(outputs, 1).to(dtype), state if output_final_state else None


def naive_chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise gated linear attention; same arguments and results as :func:`naive_recurrent_gla`.

    Inside a chunk the output is the masked ``(q k^T ⊙ Γ) v`` with ``Γ_ij = exp(G_i - G_j)`` (``G`` the cumulative
    log-decay from the chunk start; every exponent is ``<= 0``), plus ``(q ⊙ exp(G)) S`` from the chunk-start
    state ``S``; chunks then pass ``S`` on. A per-channel decay makes ``Γ`` a ``[C, C, K]`` tensor, so keep
    ``chunk_size`` small (16, fla's sub-chunk) for GLA; a per-head decay allows 64.
    """
    dtype, (B, T, H, _), V = v.dtype, q.shape, v.shape[-1]
    scale, state, (q, k, v, g) = _prepare(q, k, v, g, scale, initial_state)
    per_key = g.dim() == 4
    C = chunk_size
    pad = (-T) % C
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        g = F.pad(g, (0, 0, 0, 0, 0, pad) if per_key else (0, 0, 0, pad))
    N = (T + pad) // C

    def chunks(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, N, C, H, -1).permute(0, 3, 1, 2, 4)

    q, k, v = chunks(q) * scale, chunks(k), chunks(v)
    G = chunks(g if per_key else g[..., None]).cumsum(3)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if per_key:
        gamma = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
        scores = torch.einsum("bhnik,bhnjk,bhnijk->bhnij", q, k, gamma)
    else:
        gamma = (G[..., :, None, 0] - G[..., None, :, 0]).masked_fill(~causal, float("-inf")).exp()
        scores = (q @ k.transpose(-1, -2)) * gamma
    o = scores @ v
    q_read = q * G.exp()
    k_write = k * (G[..., -1:, :] - G).exp()
    chunk_decay = G[..., -1, :].exp()[..., None]

    reads = []
    for q_n, d_n, k_n, v_n in zip(*(t.unbind(2) for t in (q_read, chunk_decay, k_write, v)), strict=True):
        reads.append(q_n @ state)
        state = d_n * state + k_n.transpose(-1, -2) @ v_n
    o = o + torch.stack(reads, 2)
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]
    return o.to(dtype), state if output_final_state else None


def naive_selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba's selective scan (Gu & Dao 2023, Algorithm 2): ``h_t = exp(dt_t A) ⊙ h_{t-1} + dt_t x_t B_t^T``,
    ``y_t = h_t C_t``; gated linear attention with one head per channel, ``V = 1`` and a decay per state entry.

    Args:
        x, dt: ``[b, T, D]`` (``dt > 0``); A: ``[D, N]`` (``< 0``); B, C: ``[b, T, N]``.
        initial_state: ``[b, D, N]`` or None.

    Returns ``y[b, T, D]`` (dtype of ``x``) and the final state ``[b, D, N]`` in fp32 (fp64 for fp64 inputs; or None).
    """
    dtype, acc = x.dtype, _accumulation_dtype(x, dt, A, B, C)
    x, dt, A, B, C = (t.to(acc) for t in (x, dt, A, B, C))
    h = x.new_zeros(x.shape[0], *A.shape) if initial_state is None else initial_state.to(acc)
    decay = (dt[..., None] * A).exp()
    write = (dt * x)[..., None] * B[:, :, None, :]
    outputs = []
    for d_t, w_t, c_t in zip(decay.unbind(1), write.unbind(1), C.unbind(1), strict=True):
        h = d_t * h + w_t
        outputs.append((h @ c_t[..., None])[..., 0])
    return torch.stack(outputs, 1).to(dtype), h if output_final_state else None
