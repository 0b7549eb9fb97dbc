"""Pure-torch higher-order (p = 1, "local linear") softmax attention: closed form and literal block solve.

Test-time regression (Wang, Shi, Fox, arXiv 2501.12352), section "higher-order softmax attention": for the
query ``q`` of step ``t`` the memory is the weighted least-squares fit, with an intercept, of the prefix values
on the prefix keys, expanded around ``q``, with the softmax weights ``w_i = softmax_i(scale * q . k_i)``::

    min_{b, W}  sum_{i <= t} w_i ||v_i - b - W (k_i - q)||^2  +  ridge ||W||_F^2

and the retrieved value is the intercept ``y = b = M^[0]``. With ``kbar = sum w k``, ``vbar = sum w v`` and the
softmax-weighted covariances ``S_kk = sum w (k - kbar)(k - kbar)^T``, ``S_vk = sum w (v - vbar)(k - kbar)^T``::

    y = vbar + S_vk (S_kk + ridge I)^{-1} (q - kbar)

(the "offset softmax attention" form ``y = vbar - M^[1] dbar`` with ``M^[1] = S_vk (S_kk + ridge I)^{-1}`` and
``dbar = kbar - q``). The ridge acts on the slope only, so ``ridge -> inf`` gives softmax attention (p = 0).

Layout: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, output ``[B, T, H, V]`` in ``v``'s dtype. Both functions
compute in fp32 (fp64 when given fp64).
"""

from __future__ import annotations

import torch

DEFAULT_RIDGE = 1e-3
"""Ridge on the slope ``W`` (the paper states none; the README says why this value)."""


def _prepare(q, k, v, scale):
    K = k.shape[-1]
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), torch.promote_types(v.dtype, torch.float32))
    scale = K**-0.5 if scale is None else scale
    # [B, T, H, D] -> [B, H, T, D]
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    T = q.shape[2]
    scores = scale * (q @ k.transpose(-1, -2))
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    w = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    return q, k, v, w


def naive_hosa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = DEFAULT_RIDGE,
    scale: float | None = None,
) -> torch.Tensor:
    """Higher-order (p = 1) softmax attention by its closed form and one batched ``K x K`` solve per query.

    Per head, with ``w = softmax(scale * q k^T + causal mask)`` (``[T, T]``)::

        kbar = w k,  vbar = w v,
        S_kk[t] = sum_s w_ts k_s k_s^T - kbar_t kbar_t^T,   S_vk[t] = sum_s w_ts v_s k_s^T - vbar_t kbar_t^T,
        y_t = vbar_t + S_vk[t] (S_kk[t] + ridge I)^{-1} (q_t - kbar_t)

    The second moments are ``w @ (k (x) k)`` (``[T, K*K]`` and ``[T, V*K]`` per head); no ``T x T x K`` tensor
    is formed. Costs ``O(T^2 K (K + V) + T K^3)`` time and ``O(T^2 + T K (K + V))`` memory per head.

    Args:
        q: queries ``[B, T, H, K]``; the local-linear fit is evaluated at ``q`` itself.
        k: keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        ridge: ``lambda >= 0`` added to ``S_kk`` (a ridge on the slope); must be > 0 when a prefix has
            fewer than ``K + 1`` keys in general position.
        scale: softmax temperature on ``q . k``, ``K ** -0.5`` when None (the fit point stays unscaled ``q``).

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    if T == 0:
        return v.new_zeros(B, 0, H, V)
    out_dtype = v.dtype
    q, k, v, w = _prepare(q, k, v, scale)
    kbar = w @ k
    vbar = w @ v
    kk = (k[..., :, None] * k[..., None, :]).flatten(-2)
    vk = (v[..., :, None] * k[..., None, :]).flatten(-2)
    S_kk = (w @ kk).unflatten(-1, (K, K)) - kbar[..., :, None] * kbar[..., None, :]
    S_vk = (w @ vk).unflatten(-1, (V, K)) - vbar[..., :, None] * kbar[..., None, :]
    eye = torch.eye(K, dtype=q.dtype, device=q.device)
    z = torch.linalg.solve(S_kk + ridge * eye, (q - kbar)[..., None])
    y = vbar + (S_vk @ z)[..., 0]
    return y.transpose(1, 2).to(out_dtype)


def naive_hosa_block(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ridge: float = DEFAULT_RIDGE,
    scale: float | None = None,
) -> torch.Tensor:
    """The paper's literal local-linear regression: one ``(K+1) x (K+1)`` solve per query (small ``T`` only).

    For query ``t``: ``X_t = [1, k_i - q_t]_{i <= t}`` (``[t, 1+K]``), ``W_t = diag(w_t)`` and::

        [M^[0]  M^[1]] = (V_t^T W_t X_t) (X_t^T W_t X_t + diag(0, ridge I_K))^{-1},    y_t = M^[0]

    It materialises ``X_t`` for every query (``[B, H, T, T, 1+K]``): a test reference, not a path to use.

    Args:
        q, k, v, ridge, scale: as :func:`naive_hosa`.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    if T == 0:
        return v.new_zeros(B, 0, H, V)
    out_dtype = v.dtype
    q, k, v, w = _prepare(q, k, v, scale)
    d = k[..., None, :, :] - q[..., :, None, :]  # [B, H, T(query), T(key), K]
    X = torch.cat([torch.ones_like(d[..., :1]), d], dim=-1)  # [B, H, T, T, 1+K]
    wX = w[..., None] * X  # masked keys have w = 0
    gram = wX.transpose(-1, -2) @ X  # X^T W X, [B, H, T, 1+K, 1+K]
    reg = torch.diag(torch.cat([q.new_zeros(1), q.new_full((K,), ridge)]))
    rhs = wX.transpose(-1, -2) @ v[..., None, :, :]  # X^T W V, [B, H, T, 1+K, V]
    theta = torch.linalg.solve(gram + reg, rhs)  # [M^[0]; M^[1]^T]
    return theta[..., 0, :].transpose(1, 2).to(out_dtype)
