"""Pure-torch (gated) delta rule: the literal per-token recurrence and the chunkwise WY/UT-transform form.

DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length") writes
its matrix memory with one step of online regression per token; Gated DeltaNet (Yang et al. 2025, "Gated Delta
Networks: Improving Mamba2 with Delta Rule") first decays it by a per-head scalar ``alpha_t = exp(g_t)``:

    S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t k_t^T        (paper layout, S_t of shape [V, K])

Here the state is stored transposed, ``S[K, V]`` (fla's layout: a read is ``q @ S``), so one token is

    S <- exp(g_t) S;   S <- S + beta_t k_t (v_t - S^T k_t)^T;   o_t = scale * S^T q_t

and the read happens after the write. ``g = None`` is plain DeltaNet (``alpha_t = 1``).

Layout: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, ``beta [B, T, H]``, ``g [B, T, H]`` (log-decay, ``<= 0``),
``initial_state [B, H, K, V]``. Both functions compute in fp32 (fp64 when given fp64), return ``o`` in ``v``'s
dtype and the final state in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    dtype = torch.float32
    for x in tensors:
        if x is not None:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (gated) delta rule one token at a time: the specification the chunk form must reproduce.

    For every token ``t`` and head, with the state ``S[K, V]``::

        S = exp(g_t) * S                      (skipped when g is None)
        S = S + beta_t * outer(k_t, v_t - k_t @ S)
        o_t = scale * q_t @ S

    Args:
        q: queries ``[B, T, H, K]``.
        k: keys ``[B, T, H, K]`` (the layers l2-normalise them; nothing here requires it).
        v: values ``[B, T, H, V]``.
        beta: writing strengths ``[B, T, H]``.
        g: log-decays ``[B, T, H]`` (``<= 0``), or None for DeltaNet.
        scale: read scale, ``K ** -0.5`` when None.
        initial_state: ``[B, H, K, V]``, zeros when None.
        output_final_state: whether to return the state after the last token.

    Returns:
        ``o [B, T, H, V]`` in ``v``'s dtype and the final state ``[B, H, K, V]`` (fp32, or fp64 for fp64 inputs)
        or None.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    out_dtype = v.dtype
    dtype = _compute_dtype(q, k, v, beta, g, initial_state)
    if scale is None:
        scale = K**-0.5
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    if g is not None:
        g = g.to(dtype)
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)

    outputs = []
    for t in range(T):
        k_t, b_t = k[:, t], beta[:, t, :, None]
        if g is not None:
            S = S * g[:, t, :, None, None].exp()
        error = v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S + torch.einsum("bhk,bhv->bhkv", k_t, b_t * error)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))

    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    return o.to(out_dtype), (S if output_final_state else None)


def naive_chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same function as :func:`naive_recurrent_gated_delta_rule`, computed chunk by chunk.

    Inside a chunk of ``C`` tokens starting from state ``S_0``, let ``G_i = g_1 + ... + g_i`` (chunk-local
    cumulative log-decay, 0 without gates) and ``D_ij = exp(G_i - G_j)``. The write of token ``i`` is
    ``beta_i k_i (v_i - k_i^T S_{i-1}')^T`` where ``S_{i-1}'`` is the decayed state it sees; its pseudo-values
    ``u_i`` solve the unit lower-triangular system (the UT transform of the papers' WY representation)::

        (I + A) u = diag(beta) (V - (K * exp(G)) S_0),    A = tril(diag(beta) (K K^T * D), -1)

    so with ``T = (I + A)^{-1} diag(beta)``, ``W = T (K * exp(G))`` and ``U = T V`` one has ``u = U - W S_0``,
    and then::

        O   = scale * ((Q * exp(G)) S_0 + (Q K^T * D * causal) u)
        S_C = exp(G_C) S_0 + (K * exp(G_C - G))^T u

    ``W``, ``U`` and the intra-chunk scores are computed for all chunks at once; only ``S_0 -> S_C`` loops over
    chunks. Every exponent is a difference ``G_i - G_j`` with ``j <= i``, so nothing overflows for long chunks.

    Args:
        q, k, v, beta, g, scale, initial_state, output_final_state: as :func:`naive_recurrent_gated_delta_rule`.
        chunk_size: tokens per chunk; ``T`` need not be a multiple of it.

    Returns:
        ``o [B, T, H, V]`` in ``v``'s dtype and the final state ``[B, H, K, V]`` (fp32, or fp64 for fp64 inputs)
        or None.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    C = chunk_size
    out_dtype = v.dtype
    dtype = _compute_dtype(q, k, v, beta, g, initial_state)
    if scale is None:
        scale = K**-0.5
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    beta = beta.to(dtype).transpose(1, 2)
    g = None if g is None else g.to(dtype).transpose(1, 2)

    # Padding tokens have beta = 0 (no write), g = 0 (no decay) and k = 0, so the state passes through them.
    pad = -T % C
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta = F.pad(beta, (0, pad))
        g = None if g is None else F.pad(g, (0, pad))
    N = (T + pad) // C

    q, k, v = (x.reshape(B, H, N, C, -1) for x in (q, k, v))
    beta = beta.reshape(B, H, N, C)
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if g is None:
        decay = causal.to(dtype)
        q_decayed, k_decayed, k_to_end, chunk_decay = q, k, k, None
    else:
        G = g.reshape(B, H, N, C).cumsum(-1)
        # Masked to -inf before exp so that the (unused) upper triangle never overflows.
        decay = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        q_decayed = q * G[..., None].exp()
        k_decayed = k * G[..., None].exp()
        k_to_end = k * (G[..., -1:] - G)[..., None].exp()
        chunk_decay = G[..., -1, None, None].exp()

    kk = k @ k.transpose(-1, -2)
    A = (beta[..., None] * kk * decay).masked_fill(~strict, 0)
    eye = torch.eye(C, dtype=dtype, device=q.device)
    Tmat = torch.linalg.solve_triangular(eye + A, torch.diag_embed(beta), upper=False, unitriangular=True)
    W = Tmat @ k_decayed
    U = Tmat @ v
    scores = q @ k.transpose(-1, -2) * decay

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outputs = []
    # unbind, not indexing: the backward of each index would write a full-size gradient
    decays = chunk_decay.unbind(2) if chunk_decay is not None else [None] * N
    per_chunk = (t.unbind(2) for t in (U, W, q_decayed, scores, k_to_end))
    for (U_n, W_n, q_n, s_n, k_n), d_n in zip(zip(*per_chunk, strict=True), decays, strict=True):
        u = U_n - W_n @ S
        outputs.append(q_n @ S + s_n @ u)
        if d_n is not None:
            S = S * d_n
        S = S + k_n.transpose(-1, -2) @ u

    if not outputs:
        return v.new_zeros(B, 0, H, V).to(out_dtype), (S if output_final_state else None)
    o = scale * torch.stack(outputs, dim=2).reshape(B, H, N * C, V)[:, :, :T]
    return o.transpose(1, 2).to(out_dtype), (S if output_final_state else None)
