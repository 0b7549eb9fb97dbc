"""Test-time regression (Wang, Shi, Fox 2025): linear attention and softmax attention as regressions.

Every layer of the paper fits, at each step ``t``, a memory ``m_t`` to the causal prefix of key/value pairs and
reads it at the query (eq. "general-least-squares")::

    m_t = argmin_m 1/2 sum_{i<=t} gamma_i^(t) ||v_i - m(k_i)||^2,        y_t = m_t(q_t)

This module holds the two layers that need no solve:

- :func:`linear_attention`: the linear class with the covariance ``K_t^T K_t`` replaced by ``I`` (Vignette 1,
  one step of batch gradient descent from 0), ``y_t = (sum_{i<=t} v_i k_i^T) q_t``, then an output norm (Qin et
  al. 2022). :func:`naive_recurrent_linear_attention` is its per-token recurrence.
- :func:`softmax_attention`: the locally-constant (degree ``p = 0``, Nadaraya-Watson) regressor with
  exponential weights (Vignette 4). :func:`naive_softmax_attention` is its per-query loop and
  :func:`naive_nadaraya_watson` the Gaussian-kernel estimator it equals when keys have unit norm.

Layout: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, outputs ``[B, T, H, V]``, the state of linear attention
``S = M^T [B, H, K, V]`` (a read is ``q @ S``). Computation is in fp32, or fp64 when an input is fp64; outputs
come back in ``v``'s dtype, states in the compute dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NORMS = ("none", "unit", "rms", "layer")


def compute_dtype(*tensors: torch.Tensor | float | None) -> torch.dtype:
    """fp32, promoted by every tensor argument (fp64 inputs stay fp64)."""
    dtype = torch.float32
    for x in tensors:
        if isinstance(x, torch.Tensor):
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def output_norm(y: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Normalise ``y [..., V]`` over its last dim (one head): the output norm of linear attention.

    - ``"none"``: ``y``.
    - ``"unit"``: ``y / max(||y||_2, eps)`` (``F.normalize``; exactly unit norm whenever ``||y|| >= eps``).
    - ``"rms"``: ``y / sqrt(mean(y^2) + eps)`` (RMSNorm without weight).
    - ``"layer"``: ``(y - mean(y)) / sqrt(var(y) + eps)``, biased variance (LayerNorm without affine).
    """
    if norm == "none":
        return y
    if norm == "unit":
        return F.normalize(y, dim=-1, eps=eps)
    if norm == "rms":
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    if norm == "layer":
        return F.layer_norm(y, y.shape[-1:], eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    norm: str = "unit",
    eps: float = 1e-6,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal linear attention with output normalisation, all tokens at once (the parallel form).

    Vignette 1: the least-squares memory of eq. "ols", ``M_t = V_t^T K_t (K_t^T K_t)^{-1}``, with the key
    covariance ``K_t^T K_t`` replaced by ``I`` (equivalently one batch-gradient step from ``M = 0`` with step 1)::

        M_t = S_0^T + sum_{i<=t} v_i k_i^T,        y_t = norm(M_t q_t)

    computed as ``Y = tril(Q K^T) V + Q S_0``. No ``1/sqrt(K)`` read scale (the paper has none; with ``"unit"``,
    ``"rms"`` or ``"layer"`` a scale would cancel up to ``eps``). The norm acts per head over ``V`` (Qin et al.
    2022, "The Devil in Linear Transformer"; the paper does not say which form, see :func:`output_norm`). The
    default ``"unit"`` is the form of the spec's re-simulation of Figure 2.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        norm: ``"none"``, ``"unit"`` (default), ``"rms"`` or ``"layer"``.
        eps: the norm's epsilon.
        initial_state: ``S_0 = M_0^T [B, H, K, V]`` or None (zeros). The state is never normalised.
        output_final_state: whether to return ``S_T``.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype and ``S_T [B, H, K, V]`` (compute dtype) or None.
    """
    _check_norm(norm)
    dtype = compute_dtype(q, k, v, initial_state)
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    scores = torch.einsum("bthk,bshk->bhts", q, k).tril()
    y = torch.einsum("bhts,bshv->bthv", scores, v)
    S0 = None if initial_state is None else initial_state.to(dtype)
    if S0 is not None:
        y = y + torch.einsum("bthk,bhkv->bthv", q, S0)
    state = None
    if output_final_state:
        state = torch.einsum("bthk,bthv->bhkv", k, v)
        state = state if S0 is None else S0 + state
    return output_norm(y, norm, eps).to(out_dtype), state


def naive_recurrent_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    norm: str = "unit",
    eps: float = 1e-6,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`linear_attention` one token at a time (the specification)::

        S_t = S_{t-1} + k_t v_t^T,        y_t = norm(S_t^T q_t)

    Same arguments and returns as :func:`linear_attention`.
    """
    _check_norm(norm)
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, initial_state)
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outputs = []
    # unbind, not indexing: the backward of each index would write a full-size gradient
    for q_t, k_t, v_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), strict=True):
        S = S + k_t[..., :, None] * v_t[..., None, :]
        outputs.append(output_norm(torch.einsum("bhk,bhkv->bhv", q_t, S), norm, eps))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), (S if output_final_state else None)


def softmax_scale(d_k: int, scale: float | None = None, bandwidth: float | None = None) -> float:
    """The logit scale of softmax attention from either a ``scale`` or a kernel ``bandwidth``.

    Vignette 4: with unit-norm keys the weights ``s(k, q) = exp(-||k - q||^2 / B)`` are proportional (over
    keys) to ``exp(2 k.q / B)``, so ``scale = 2 / B``. A Gaussian kernel ``exp(-||k - q||^2 / (2 h^2))`` has
    ``B = 2 h^2`` and ``scale = 1 / h^2``. The default ``scale = 1 / sqrt(d_k)`` is ``B = 2 sqrt(d_k)``, the
    paper's identification of standard (QK-normalised) softmax attention.
    """
    if scale is not None and bandwidth is not None:
        raise ValueError("give either scale or bandwidth, not both (scale = 2 / bandwidth)")
    if bandwidth is not None:
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        return 2.0 / bandwidth
    return 1.0 / math.sqrt(d_k) if scale is None else scale


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    qk_norm: bool = False,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Causal softmax attention, the degree-0 local polynomial (Nadaraya-Watson) regressor of Vignette 4.

    ``m_{0,t}(q) = sum_{i<=t} s(k_i, q) v_i / sum_{j<=t} s(k_j, q)`` with ``s(k, q) = exp(scale * k.q)``::

        y_t = sum_{i<=t} softmax_i(scale * q_t.k_i) v_i

    With ``qk_norm=True`` ``q`` and ``k`` are l2-normalised first; then (indeed as soon as all keys have equal
    norm) ``exp(scale * k.q)`` is proportional to ``exp(-||k - q||^2 / B)`` with ``B = 2 / scale``, so the layer
    is exactly the Gaussian-kernel estimator :func:`naive_nadaraya_watson` with bandwidth ``B`` (Gaussian width
    ``h = sqrt(B / 2) = scale^{-1/2}``). The paper's form is ``B = 2 sqrt(K)``, i.e. the standard
    ``scale = 1/sqrt(K)``, the default. Without ``qk_norm`` the weights also depend on the key norms and the
    layer is not a function of the distance alone.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        scale: logit scale (default ``1/sqrt(K)``); exclusive with ``bandwidth``.
        qk_norm: l2-normalise ``q`` and ``k`` over ``K`` (no learned gain).
        bandwidth: ``B`` of ``exp(-||k - q||^2 / B)``; sets ``scale = 2 / B``.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype.
    """
    T, d_k = q.shape[1], q.shape[-1]
    scale = softmax_scale(d_k, scale, bandwidth)
    dtype = compute_dtype(q, k, v)
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if qk_norm:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = scale * torch.einsum("bthk,bshk->bhts", q, k)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    weights = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshv->bthv", weights, v).to(out_dtype)


def naive_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    qk_norm: bool = False,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """:func:`softmax_attention` one query at a time (the specification); same arguments and returns."""
    B, T, H, d_k = q.shape
    scale = softmax_scale(d_k, scale, bandwidth)
    dtype = compute_dtype(q, k, v)
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if qk_norm:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    outputs = []
    for t in range(T):
        logits = scale * torch.einsum("bshk,bhk->bhs", k[:, : t + 1], q[:, t])
        outputs.append(torch.einsum("bhs,bshv->bhv", logits.softmax(-1), v[:, : t + 1]))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return y.to(out_dtype)


def naive_nadaraya_watson(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The causal Nadaraya-Watson estimator with the kernel ``s(k, q) = exp(-||k - q||^2 / B)``, per query.

    Vignette 4, degree ``p = 0``: ``y_t = sum_{i<=t} s(k_i, q_t) v_i / sum_{j<=t} s(k_j, q_t)``. A Gaussian
    kernel of width ``h``, ``exp(-||k - q||^2 / (2 h^2))``, is ``bandwidth = 2 h^2``. The weights are normalised
    after subtracting the smallest squared distance (the estimator is invariant to a common factor).

    Args:
        q, k: ``[B, T, H, K]`` (any norms); v: ``[B, T, H, V]``.
        bandwidth: ``B > 0``.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype.
    """
    B, T, H, _ = q.shape
    dtype = compute_dtype(q, k, v)
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    outputs = []
    for t in range(T):
        sq_dist = (k[:, : t + 1] - q[:, t, None]).pow(2).sum(-1)  # [B, t+1, H]
        log_w = -sq_dist / bandwidth
        w = (log_w - log_w.amax(1, keepdim=True)).exp()
        outputs.append(torch.einsum("bsh,bshv->bhv", w / w.sum(1, keepdim=True), v[:, : t + 1]))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return y.to(out_dtype)
