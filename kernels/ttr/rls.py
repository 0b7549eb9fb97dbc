"""Recursive least squares: the exact (ridge-regularised, exponentially weighted) linear memory.

Vignettes 1 and 2 of the paper: the optimal linear memory of eq. "ols" and its weighted form,
``M_t = V_t^T Gamma_t K_t (K_t^T Gamma_t K_t)^{-1}`` with ``Gamma_t = diag(gamma^(t-i))``. The paper gives no
ridge; without one ``K_t^T Gamma_t K_t`` is singular for ``t < K``. Here, after ``t`` tokens::

    A_t = gamma^t A_0 + sum_{i<=t} gamma^(t-i) k_i k_i^T          (A_0 = P_0^{-1}, default ridge * I)
    C_t = gamma^t C_0 + sum_{i<=t} gamma^(t-i) k_i v_i^T          (C_0 = A_0 S_0, default 0)
    S_t = M_t^T = A_t^{-1} C_t,        y_t = M_t q_t = S_t^T q_t

so the ridge decays with the data: ``A_t = K^T Gamma K + gamma^t * ridge * I``. This is the definition under which
the Sherman-Morrison recursion (exponentially weighted RLS, rank-1 updates of ``P_t = A_t^{-1}``) is exact; a
ridge that stays ``ridge * I`` would add ``(1 - gamma) ridge I``, a full-rank term, at every step. ``A_t`` and
``C_t`` are the minimisers' normal equations of::

    sum_{i<=t} gamma^(t-i) 1/2 ||v_i - M k_i||^2 + gamma^t 1/2 tr((M - M_0) A_0 (M - M_0)^T)

i.e. eq. "general-least-squares" plus a prior at ``M_0`` weighted like a token seen before the first one.

- :func:`rls_recurrent`: sequential Sherman-Morrison updates (decoding).
- :func:`rls_parallel`: all ``A_t, C_t`` by a discounted prefix sum, then one batched ``torch.linalg.solve``
  (``O(T K^3)`` work and ``O(T K^2)`` memory).
- :func:`rls_chunk`: chunkwise Woodbury updates with one ``C x C`` Cholesky factor per chunk (training: matrix
  products only, ``O(T (C^2 + K^2))`` work per value column and ``O(K^2)`` state).
- :func:`naive_rls`: the literal formula, rebuilding ``K_t, V_t, Gamma_t`` at each step (the specification).

State: ``(S [B, H, K, V], P [B, H, K, K])`` with ``P = A^{-1}``.
"""

from __future__ import annotations

import torch

from kernels.ttr.naive import compute_dtype

RLSState = tuple[torch.Tensor, torch.Tensor]


def _check(forget: float, ridge: float, initial_state: RLSState | None) -> None:
    if not 0 < forget <= 1:
        raise ValueError(f"forget must be in (0, 1], got {forget}")
    if initial_state is None and not ridge > 0:
        raise ValueError(f"ridge must be positive without an initial state (P_0 = I / ridge), got {ridge}")


def _initial(initial_state, ridge, B, H, K, V, dtype, device) -> RLSState:
    if initial_state is None:
        S = torch.zeros(B, H, K, V, dtype=dtype, device=device)
        P = torch.eye(K, dtype=dtype, device=device).expand(B, H, K, K) / ridge
        return S, P
    S, P = initial_state
    return S.to(dtype), P.to(dtype)


def rls_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = 1e-3,
    forget: float = 1.0,
    initial_state: RLSState | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, RLSState | None]:
    """Exponentially weighted RLS, one Sherman-Morrison update per token.

    With ``P = A^{-1}`` and the state ``S = M^T`` (Vignette 2's geometrically weighted RLS)::

        P' = P / gamma;   u = P' k_t;   P = P' - u u^T / (1 + k_t^T u)
        S = S + (P k_t) (v_t - S^T k_t)^T;   y_t = S^T q_t

    i.e. a delta rule whose step is the matrix ``P_t`` (``P_t k_t = u / (1 + k_t^T u)``).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        ridge: ``lambda > 0`` of ``P_0 = I / lambda`` (ignored with an initial state). The paper gives none.
        forget: ``gamma`` in ``(0, 1]``; 1 is eq. "ols" (unweighted). The ridge decays as ``gamma^t lambda``.
        initial_state: ``(S_0 [B, H, K, V], P_0 [B, H, K, K])`` or None (``(0, I / ridge)``).
        output_final_state: whether to return ``(S_T, P_T)``.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype and ``(S_T, P_T)`` (compute dtype) or None.
    """
    _check(forget, ridge, initial_state)
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, *(initial_state or ()))
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S, P = _initial(initial_state, ridge, B, H, K, V, dtype, q.device)
    outputs = []
    for q_t, k_t, v_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), strict=True):
        if forget != 1:
            P = P / forget
        u = torch.einsum("bhij,bhj->bhi", P, k_t)
        denom = 1 + (k_t * u).sum(-1, keepdim=True)
        # u u^T is exactly symmetric, so P stays symmetric in floating point
        P = P - u[..., :, None] * u[..., None, :] / denom[..., None]
        error = v_t - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S + (u / denom)[..., :, None] * error[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), ((S, P) if output_final_state else None)


def rls_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = 1e-3,
    forget: float = 1.0,
    initial_state: RLSState | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, RLSState | None]:
    """The same function as :func:`rls_recurrent`, chunk by chunk (Woodbury identity).

    Within a chunk starting from ``(S, P)``, with the chunk's rows ``K [C, K]``, ``V``, ``Q`` and
    ``G = I + K P K^T`` (SPD, Cholesky ``L``)::

        u_t = G_{<=t}^{-1} (K P q_t)_{<=t}            (leading blocks: one factorisation serves every t)
        y_t = S^T q_t + sum_{s<=t} u_t[s] (v_s - S^T k_s)
        S' = S + P K^T G^{-1} (V - K S),    P' = P - P K^T G^{-1} K P

    since ``K_{<=t} A_t^{-1} q_t = u_t``; the leading ``t x t`` block of ``G`` has the leading block of ``L`` as
    its Cholesky factor, so ``U = L^{-T} triu(L^{-1} K P Q^T)`` holds every ``u_t`` as a column. A forget factor
    ``gamma < 1`` enters as the chunk's i-th key and value scaled by ``gamma^(-i/2)`` (i = 1..C; the ``gamma``
    powers cancel in ``y_t``) and ``P' / gamma^C``; large chunks with small ``gamma`` lose precision.

    Same arguments and returns as :func:`rls_recurrent`, plus ``chunk_size``.
    """
    _check(forget, ridge, initial_state)
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, *(initial_state or ()))
    out_dtype = v.dtype
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    S, P = _initial(initial_state, ridge, B, H, K, V, dtype, q.device)
    # P is symmetric; the Cholesky factorisation reads one triangle of G = I + K P K^T, so P is made exactly so
    P = 0.5 * (P + P.transpose(-1, -2))
    outputs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, :, start : start + chunk_size] for x in (q, k, v))
        C = kc.shape[2]
        if forget != 1:
            scale = forget ** (-0.5 * torch.arange(1, C + 1, dtype=dtype, device=q.device))[:, None]
            kc, vc = kc * scale, vc * scale
        KP = kc @ P
        eye = torch.eye(C, dtype=dtype, device=q.device)
        L = torch.linalg.cholesky(eye + KP @ kc.transpose(-1, -2))
        W = torch.linalg.solve_triangular(L, KP @ qc.transpose(-1, -2), upper=False)
        U = torch.linalg.solve_triangular(L.transpose(-1, -2), W.triu(), upper=True)
        R = vc - kc @ S
        outputs.append(qc @ S + U.transpose(-1, -2) @ R)
        Z = torch.linalg.solve_triangular(L, KP, upper=False)
        S = S + Z.transpose(-1, -2) @ torch.linalg.solve_triangular(L, R, upper=False)
        P = P - Z.transpose(-1, -2) @ Z
        P = 0.5 * (P + P.transpose(-1, -2))
        if forget != 1:
            P = P / forget**C
    y = torch.cat(outputs, 2).transpose(1, 2) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), ((S, P) if output_final_state else None)


def discounted_cumsum(
    x: torch.Tensor, gamma: float, x0: torch.Tensor | None = None, chunk_size: int = 64
) -> torch.Tensor:
    """``y[:, t] = gamma^(t+1) x0 + sum_{i<=t} gamma^(t-i) x[:, i]`` along dim 1 of ``x [B, T, ...]``.

    ``x0 [B, ...]`` or None (zero). For ``gamma < 1`` the sum runs chunk by chunk with a ``C x C`` decay matrix
    (only non-negative powers of ``gamma`` appear, so nothing overflows) and a carry between chunks.
    """
    if gamma == 1:
        y = x.cumsum(1)
        return y if x0 is None else y + x0[:, None]
    B, T = x.shape[:2]
    if T == 0:
        return x
    flat = x.reshape(B, T, -1)
    carry = None if x0 is None else x0.reshape(B, -1)
    steps = torch.arange(min(chunk_size, T), dtype=x.dtype, device=x.device)
    lags = steps[:, None] - steps[None, :]
    decay = torch.where(lags >= 0, gamma ** lags.clamp(min=0), torch.zeros_like(lags))
    chunks = []
    for start in range(0, T, chunk_size):
        chunk = flat[:, start : start + chunk_size]
        C = chunk.shape[1]
        y = torch.einsum("ts,bsr->btr", decay[:C, :C], chunk)
        if carry is not None:
            y = y + (gamma ** (steps[:C] + 1))[:, None] * carry[:, None]
        chunks.append(y)
        carry = y[:, -1]
    return torch.cat(chunks, 1).reshape(x.shape)


def rls_parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = 1e-3,
    forget: float = 1.0,
    initial_state: RLSState | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, RLSState | None]:
    """The same function as :func:`rls_recurrent` by batched solves, every step at once.

    ``A_t [B, T, H, K, K]`` and ``C_t [B, T, H, K, V]`` come from one discounted prefix sum of ``k_t k_t^T`` and
    ``k_t v_t^T`` (Vignette 2, "T batched D_k x D_k solves"), then ``x_t = A_t^{-1} q_t`` by
    ``torch.linalg.solve`` and ``y_t = C_t^T x_t``. Memory is ``O(T K (K + V))`` per head. An initial state
    enters as ``A_0 = P_0^{-1}``, ``C_0 = P_0^{-1} S_0``.

    Same arguments and returns as :func:`rls_recurrent`; ``P_T`` is ``A_T^{-1}``.
    """
    _check(forget, ridge, initial_state)
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, *(initial_state or ()))
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    eye = torch.eye(K, dtype=dtype, device=q.device)
    if initial_state is None:
        A0 = (ridge * eye).expand(B, H, K, K)
        C0 = None
    else:
        S0, P0 = (x.to(dtype) for x in initial_state)
        A0 = torch.linalg.inv(P0)
        C0 = A0 @ S0
    A = discounted_cumsum(k[..., :, None] * k[..., None, :], forget, A0)
    C = discounted_cumsum(k[..., :, None] * v[..., None, :], forget, C0)
    x = torch.linalg.solve(A, q[..., None])
    y = (C * x).sum(-2)
    state = None
    if output_final_state:
        if T == 0:
            state = _initial(initial_state, ridge, B, H, K, V, dtype, q.device)
        else:
            state = (torch.linalg.solve(A[:, -1], C[:, -1]), torch.linalg.solve(A[:, -1], eye.expand(B, H, K, K)))
    return y.to(out_dtype), state


def naive_rls(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = 1e-3,
    forget: float = 1.0,
    initial_state: RLSState | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, RLSState | None]:
    """The literal weighted least-squares memory at every step (the specification of RLS).

    For ``t = 1..T``: ``Gamma_t = diag(gamma^(t-1), ..., gamma, 1)``, ``K_t = [k_1 ... k_t]^T``,
    ``V_t = [v_1 ... v_t]^T`` and (eq. "ols" with ridge; weighted form of Vignette 2)::

        M_t = (V_t^T Gamma_t K_t + gamma^t M_0 A_0) (K_t^T Gamma_t K_t + gamma^t A_0)^{-1},    y_t = M_t q_t

    with ``A_0 = P_0^{-1}`` (``ridge * I`` and ``M_0 = 0`` by default). Same arguments and returns as
    :func:`rls_recurrent`.
    """
    _check(forget, ridge, initial_state)
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, *(initial_state or ()))
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    eye = torch.eye(K, dtype=dtype, device=q.device)
    if initial_state is None:
        A0, C0 = ridge * eye, torch.zeros(B, H, K, V, dtype=dtype, device=q.device)
    else:
        S0, P0 = (x.to(dtype) for x in initial_state)
        A0 = torch.linalg.inv(P0)
        C0 = A0 @ S0
    outputs = []
    A = A0.expand(B, H, K, K)
    S = torch.linalg.solve(A, C0)
    for t in range(1, T + 1):
        weights = forget ** torch.arange(t - 1, -1, -1, dtype=dtype, device=q.device)  # diag(Gamma_t)
        K_t, V_t = k[:, :t], v[:, :t]
        A = forget**t * A0 + torch.einsum("s,bshi,bshj->bhij", weights, K_t, K_t)
        C = forget**t * C0 + torch.einsum("s,bshi,bshv->bhiv", weights, K_t, V_t)
        S = torch.linalg.solve(A, C)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t - 1], S))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    state = (S, torch.linalg.inv(A)) if output_final_state else None
    return y.to(out_dtype), state
