"""Single-example SGD memories of Vignette 3: NLMS, Longhorn and Leaky LMS (Gated DeltaNet).

All three are the delta rule (LMS, one SGD step per token on ``1/2 ||v_t - M k_t||^2``, warm-started at
``M_{t-1}``) with a particular step, and Leaky LMS adds weight decay::

    M_t = a_t M_{t-1} + (v_t - M_{t-1} k_t) (b_t * k_t)^T,     y_t = M_t q_t

- NLMS: ``a_t = 1``, ``b_t = beta_t / (eps + ||k_t||^2)``; ``beta = 1, eps = 0`` is the projection
  ``argmin ||M - M_{t-1}||_F`` subject to ``M k_t = v_t`` (the paper's NLMS, the ``delta -> inf`` limit of
  Longhorn). ``beta_t`` in ``(0, 2)`` is the classic NLMS relaxation.
- Longhorn: ``a_t = 1``, ``b_t = delta_t / (1 + delta_t ||k_t||^2)``, the closed form of the implicit (proximal)
  update ``argmin 1/2 ||M - M_{t-1}||_F^2 + delta_t/2 ||v_t - M k_t||^2``. ``delta`` may be one per head
  (the paper's form) or one per value channel (the Longhorn paper's form, each row of ``M`` its own problem).
- Leaky LMS: SGD on ``1/2 ||v_t - M k_t||^2 + lambda_t/2 ||M||_F^2``, ``a_t = 1 - beta_t lambda_t``,
  ``b_t = beta_t``. With ``alpha = 1 - beta lambda``, ``eta = beta / alpha``, ``v' = alpha v`` it is exactly
  Gated DeltaNet, ``M_t = alpha_t M_{t-1} (I - eta_t k_t k_t^T) + eta_t v'_t k_t^T``.

No read scale (``y = M q``). State ``S = M^T [B, H, K, V]``; inputs ``q, k [B, T, H, K]``, ``v [B, T, H, V]``.
:func:`naive_longhorn` and :func:`naive_nlms` solve each token's optimisation problem with ``torch.linalg.solve``
(the specifications of the closed forms).
"""

from __future__ import annotations

import torch

from kernels.ttr.naive import compute_dtype

Step = torch.Tensor | float


def _per_token(x: Step, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A step as ``[B, T, H, 1]`` or ``[B, T, H, V]``: floats broadcast, ``[B, T, H]`` gains a trailing dim."""
    if not isinstance(x, torch.Tensor):
        return torch.full((*like.shape[:3], 1), float(x), dtype=dtype, device=like.device)
    x = x.to(dtype)
    return x[..., None] if x.dim() == 3 else x


def _nlms_step(k: torch.Tensor, beta: Step, eps: float, dtype: torch.dtype) -> torch.Tensor:
    return _per_token(beta, k, dtype) / (eps + k.to(dtype).pow(2).sum(-1, keepdim=True))


def _longhorn_step(k: torch.Tensor, beta: Step, dtype: torch.dtype) -> torch.Tensor:
    delta = _per_token(beta, k, dtype)
    return delta / (1 + delta * k.to(dtype).pow(2).sum(-1, keepdim=True))


def _as_given(step: torch.Tensor, beta: Step) -> torch.Tensor:
    """Drop the trailing dim unless ``beta`` was given per value channel ``[B, T, H, V]``."""
    return step if isinstance(beta, torch.Tensor) and beta.dim() == 4 else step[..., 0]


def nlms_step_size(k: torch.Tensor, beta: Step = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """NLMS's delta-rule step ``beta_t / (eps + ||k_t||^2)``: ``[B, T, H]`` (``[B, T, H, V]`` for such a beta)."""
    return _as_given(_nlms_step(k, beta, eps, compute_dtype(k, beta)), beta)


def longhorn_step_size(k: torch.Tensor, beta: Step) -> torch.Tensor:
    """Longhorn's delta-rule step ``delta_t / (1 + delta_t ||k_t||^2)`` for the strength ``delta_t = beta``:
    ``[B, T, H]`` (``[B, T, H, V]`` for a per-channel strength)."""
    return _as_given(_longhorn_step(k, beta, compute_dtype(k, beta)), beta)


def _sgd_loop(q, k, v, step, decay, initial_state, output_final_state):
    """``S = decay_t S + k_t (step_t * (v_t - S^T k_t))^T``, ``y_t = S^T q_t``; ``step [B, T, H, 1|V]``."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = step.dtype
    out_dtype = v.dtype
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    decays = [None] * T if decay is None else decay.to(dtype)[..., None, None].unbind(1)
    outputs = []
    for q_t, k_t, v_t, b_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), step.unbind(1), decays, strict=True):
        error = v_t - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S if a_t is None else a_t * S
        S = S + k_t[..., :, None] * (b_t * error)[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), (S if output_final_state else None)


def nlms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Step = 1.0,
    eps: float = 1e-6,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised LMS (Vignette 3, "NLMS"): ``M_t = M_{t-1} + beta_t (v_t - M_{t-1} k_t) k_t^T / (eps + ||k_t||^2)``.

    ``beta = 1`` with ``eps -> 0`` is the paper's hyperparameter-free layer (``M_t k_t = v_t`` after each
    update); ``eps`` guards ``k_t = 0``. With ``beta = 1`` it equals :func:`longhorn` at ``delta = 1 / eps``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        beta: relaxation ``[B, T, H]``, ``[B, T, H, V]`` or a float (default 1).
        eps: added to ``||k_t||^2``.
        initial_state: ``S_0 = M_0^T [B, H, K, V]`` or None (zeros).
        output_final_state: whether to return ``S_T``.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype and ``S_T`` (compute dtype) or None.
    """
    dtype = compute_dtype(q, k, v, beta, initial_state)
    step = _nlms_step(k, beta, eps, dtype)
    return _sgd_loop(q, k, v, step, None, initial_state, output_final_state)


def longhorn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Step,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Longhorn (Vignette 3, "adaptive step size"): the implicit online-regression update in closed form.

    ``M_t = argmin_M 1/2 ||M - M_{t-1}||_F^2 + delta_t/2 ||v_t - M k_t||^2``
    ``    = M_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T``, ``b_t = delta_t / (1 + delta_t ||k_t||^2)``

    (per value channel ``j`` when ``delta`` is ``[B, T, H, V]``). This is the exact ``k k^T`` form the paper
    derives; it is a delta rule with the step :func:`longhorn_step_size`.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        beta: the strength ``delta_t >= 0`` (called beta in the Longhorn paper), ``[B, T, H]``, ``[B, T, H, V]``
            or a float.
        initial_state, output_final_state: as :func:`nlms`.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype and ``S_T`` (compute dtype) or None.
    """
    dtype = compute_dtype(q, k, v, beta, initial_state)
    step = _longhorn_step(k, beta, dtype)
    return _sgd_loop(q, k, v, step, None, initial_state, output_final_state)


def leaky_lms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Step,
    weight_decay: Step,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Leaky LMS (Vignette 3, "L2 regularization"): one SGD step on the L2-regularised per-token loss.

    ``M_t = (1 - beta_t lambda_t) M_{t-1} + beta_t (v_t - M_{t-1} k_t) k_t^T``, the gradient step on
    ``1/2 ||v_t - M k_t||^2 + lambda_t/2 ||M||_F^2`` at ``M_{t-1}``. Gated DeltaNet is its reparameterisation,
    see :func:`leaky_lms_to_gated_deltanet`.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        beta: step ``beta_t`` ``[B, T, H]`` or a float.
        weight_decay: ``lambda_t`` ``[B, T, H]`` or a float (the paper takes it in ``[0, 1]``).
        initial_state, output_final_state: as :func:`nlms`.

    Returns:
        ``y [B, T, H, V]`` in ``v``'s dtype and ``S_T`` (compute dtype) or None.
    """
    dtype = compute_dtype(q, k, v, beta, weight_decay, initial_state)
    step = _per_token(beta, k, dtype)
    decay = 1 - (step * _per_token(weight_decay, k, dtype))[..., 0]
    return _sgd_loop(q, k, v, step, decay, initial_state, output_final_state)


def leaky_lms_to_gated_deltanet(
    v: torch.Tensor, beta: torch.Tensor, weight_decay: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaky LMS ``(v, beta, lambda)`` to Gated DeltaNet ``(v', eta, g)``: ``alpha = 1 - beta lambda``,
    ``eta = beta / alpha``, ``v' = alpha v``, ``g = log alpha`` (needs ``beta lambda < 1``)."""
    alpha = 1 - beta * weight_decay
    return v * alpha[..., None], beta / alpha, alpha.log()


def gated_deltanet_to_leaky_lms(
    v: torch.Tensor, eta: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse map: ``(v, beta, lambda) = (v' / alpha, alpha eta, (1 - alpha) / (alpha eta))``."""
    alpha = g.exp()
    return v / alpha[..., None], alpha * eta, (1 - alpha) / (alpha * eta)


def naive_longhorn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Step,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Longhorn by solving each token's proximal problem (the specification of :func:`longhorn`).

    Per value channel ``j`` the minimiser's normal equations are
    ``(I + delta_j k_t k_t^T) s_j = s_{t-1, j} + delta_j v_{t, j} k_t`` for the column ``s_j`` of ``S = M^T``.
    Same arguments and returns as :func:`longhorn`.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, beta, initial_state)
    out_dtype = v.dtype
    delta = _per_token(beta, k, dtype)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    eye = torch.eye(K, dtype=dtype, device=q.device)
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for t in range(T):
        k_t, d_t = k[:, t], delta[:, t]  # d_t [B, H, 1 or V]
        system = eye + d_t[..., None, None] * (k_t[..., :, None] * k_t[..., None, :])[:, :, None]
        rhs = (S + k_t[..., :, None] * (d_t * v[:, t])[..., None, :]).transpose(-1, -2)[..., None]
        S = torch.linalg.solve(system, rhs)[..., 0].transpose(-1, -2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), (S if output_final_state else None)


def naive_nlms(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Step = 1.0,
    eps: float = 1e-6,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """NLMS as a relaxed projection, solving each token's constrained problem (the specification of :func:`nlms`).

    The projection ``argmin 1/2 ||s - s_{t-1}||^2`` subject to ``k_t^T s = v_t`` (softened by ``eps``: the
    constraint's residual costs ``1/(2 eps)``) is the KKT system ``[[I, k_t], [k_t^T, -eps]] [s; nu] =
    [s_{t-1}; v_t]``, solved for all value channels at once; then ``S_t = (1 - beta_t) S_{t-1} + beta_t S_proj``.
    Same arguments and returns as :func:`nlms` (``eps = 0`` is allowed here as there).
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    dtype = compute_dtype(q, k, v, beta, initial_state)
    out_dtype = v.dtype
    relax = _per_token(beta, k, dtype)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    corner = torch.full((B, H, 1, 1), -float(eps), dtype=dtype, device=q.device)
    eye = torch.eye(K, dtype=dtype, device=q.device).expand(B, H, K, K)
    outputs = []
    for t in range(T):
        k_t = k[:, t]
        top = torch.cat([eye, k_t[..., :, None]], -1)
        bottom = torch.cat([k_t[..., None, :], corner], -1)
        system = torch.cat([top, bottom], -2)  # [B, H, K+1, K+1]
        projected = torch.linalg.solve(system, torch.cat([S, v[:, t, :, None, :]], -2))[..., :K, :]
        r_t = relax[:, t, :, None, :]  # [B, H, 1, 1 or V]
        S = (1 - r_t) * S + r_t * projected
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    y = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V)
    return y.to(out_dtype), (S if output_final_state else None)
