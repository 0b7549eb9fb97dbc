"""Pure-torch TTT layers (Sun et al. 2024, "Learning to (Learn at Test Time): RNNs with Expressive Hidden States").

The hidden state of a TTT layer is the weight ``W`` of an inner model ``f`` that is trained online, per head, on a
self-supervised reconstruction loss (with ``theta_K x_t = k_t``, ``theta_V x_t = v_t``)::

    l(W; x_t) = 1/2 ||f(theta_K x_t; W) - theta_V x_t||^2,     f(x; W) = x + LN(f_res(x; W))

written with ``LN(z) = (z - mean z) / sqrt(var z + eps) * w + b`` (per-head affine ``w, b``; ``var`` biased).
Plain online gradient descent is ``W_t = W_{t-1} - eta_t grad l(W_{t-1}; x_t)`` and the read is
``z_t = f(theta_Q x_t; W_t)``, after token ``t``'s own update. Mini-batch TTT splits the sequence
into chunks of ``b`` tokens and takes every gradient of a chunk at the chunk-start weights ``W_0``::

    W_t = W_0 - eta_t * sum_{s <= t, s in chunk} grad l(W_0; x_s)

so a chunk's reads are one masked matmul (the paper's "dual form"), and the next chunk starts from the
weights of the chunk's last token. ``eta_t`` is the learning rate of the *reading* token ``t``: it scales the whole
cumulative sum, as in fla's ``chunk_ttt_linear``, not the gradient of each writing token ``s``.

Layout (fla's): ``q, k [B, T, H, K]``, ``v [B, T, H, V]`` with ``K == V`` (the reconstruction target is
``v - k``), ``w, b [H, V]``, ``eta [B, T, H, 1]`` (or a Python float). Computation is in fp32 (fp64 for fp64
inputs); outputs are cast to ``v.dtype`` and final states are returned in the computation dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MLPState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _heads_first(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor | float, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """``[B, T, H, D]`` inputs as ``[B, H, T, D]`` in ``dtype``; a float ``eta`` becomes ``[B, H, T, 1]``."""
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[-1] != v.shape[-1]:
        raise ValueError(f"TTT reconstructs v - k, so K must equal V, got K={k.shape[-1]}, V={v.shape[-1]}")
    if isinstance(eta, (int, float)):
        eta = torch.full_like(q[..., :1], float(eta))
    return tuple(x.transpose(1, 2).to(dtype) for x in (q, k, v, eta))


def _affine(w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head LN weight and bias ``[H, V]`` as ``[1, H, 1, V]``."""
    return w.to(dtype)[None, :, None, :], b.to(dtype)[None, :, None, :]


def _layer_norm(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z - mean) * rstd`` over the last axis and ``rstd = 1 / sqrt(var + eps)`` (biased variance)."""
    mean = z.mean(-1, keepdim=True)
    rstd = torch.rsqrt(z.var(-1, unbiased=False, keepdim=True) + eps)
    return (z - mean) * rstd, rstd


def _norm_residual(o: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """fla's read ``o + LN(o)``."""
    return o + _layer_norm(o, eps)[0] * w + b


def _recon_grad(
    z: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float
) -> torch.Tensor:
    """``dl/dz`` of ``l = 1/2 ||k + LN(z) - v||^2`` for ``z, k, v [..., V]``: the LN backward of the residual."""
    z_hat, rstd = _layer_norm(z, eps)
    g = (z_hat * w + b + k - v) * w
    return rstd * (g - g.mean(-1, keepdim=True) - z_hat * (g * z_hat).mean(-1, keepdim=True))


def _state_or_zeros(state: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    if state is None:
        return like.new_zeros(shape)
    if tuple(state.shape) != shape:
        raise ValueError(f"initial state of shape {tuple(state.shape)}, expected {shape}")
    return state.to(like.dtype)


def _causal(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=like.device).tril()


def naive_chunk_ttt_linear(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    eta: torch.Tensor | float,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 16,
    initial_state: torch.Tensor | None = None,
    initial_state_bias: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r"""TTT-Linear, mini-batch form: the torch twin of ``fla.ops.ttt.chunk_ttt_linear`` (no ``cu_seqlens``).

    Per head the inner model is ``f(x) = x + LN(x W + c)`` with fast weights ``W [K, V]`` and ``c [1, V]`` (the
    state and the state bias). In chunk ``[t0, t0 + chunk_size)`` with chunk-start ``W_0, c_0``::

        g_s   = dl/dz at z = k_s W_0 + c_0,  l = 1/2 ||k_s + LN(z) - v_s||^2        (LN backward, [V])
        W_t   = W_0 - eta_t sum_{s<=t} k_s^T g_s,     c_t = c_0 - eta_t sum_{s<=t} g_s
        o_t   = scale q_t W_t + c_t
              = scale q_t W_0 + c_0 - eta_t sum_{s<=t} (scale q_t . k_s + 1) g_s     (dual form)
        out_t = o_t + LN(o_t)

    and the next chunk starts from ``W_{t_last}, c_{t_last}``. The read is fla's, not the paper's
    ``q_t + LN(q_t W_t + c_t)``: the residual is ``o_t`` itself, and ``scale`` multiplies ``q_t W_t`` only.

    When ``T`` is not a multiple of ``chunk_size`` the last chunk is shorter. As fla (the Triton kernel and
    ``chunk_ttt_linear_ref`` agree) it is completed with ``chunk_size - T % chunk_size`` phantom tokens
    ``k = v = 0`` at the last real token's ``eta``: they change no output and no ``W`` (their ``k`` is zero) but
    their gradients ``dl/dz`` at ``z = c_0`` enter the final state bias.

    Args:
        q, k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]``, ``V == K``.
        w, b: the LN affine of the inner model and of the read, ``[H, V]``.
        eta: the per-token learning rate, ``[B, T, H, 1]``, or a float.
        scale: multiplies the queries; ``K ** -0.5`` when ``None``.
        eps: LN epsilon.
        chunk_size: the TTT mini-batch size ``b``.
        initial_state: ``W`` at ``t = 0``, ``[B, H, K, V]``; zeros when ``None``.
        initial_state_bias: ``c`` at ``t = 0``, ``[B, H, 1, V]``; zeros when ``None``.
        output_final_state: return the final ``W`` and ``c``.

    Returns:
        ``(o [B, T, H, V] in v.dtype, W_T [B, H, K, V] or None, c_T [B, H, 1, V] or None)``.
    """
    out_dtype, dtype = v.dtype, _compute_dtype(v.dtype)
    q, k, v, eta = _heads_first(q, k, v, eta, dtype)
    w, b = _affine(w, b, dtype)
    batch, heads, length, dk = k.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    h = _state_or_zeros(initial_state, (batch, heads, dk, dv), k)
    hb = _state_or_zeros(initial_state_bias, (batch, heads, 1, dv), k)

    outs = []
    # split, not slicing: the backward of each slice would write a full-size gradient
    for qc, kc, vc, ec in zip(*(x.split(chunk_size, dim=2) for x in (q, k, v, eta)), strict=True):
        n = kc.shape[-2]
        g = _recon_grad(kc @ h + hb, kc, vc, w, b, eps)
        # the constant 1 is the bias c's input, so c is updated by the same masked sum as W
        scores = (scale * qc @ kc.transpose(-1, -2) + 1).masked_fill(~_causal(n, kc), 0)
        outs.append(scale * qc @ h + hb - ec * (scores @ g))
        e_last = ec[:, :, -1:]
        grad_bias = g.sum(-2, keepdim=True)
        if n < chunk_size:
            zero = torch.zeros_like(hb)
            grad_bias = grad_bias + (chunk_size - n) * _recon_grad(hb, zero, zero, w, b, eps)
        h = h - (e_last * kc).transpose(-1, -2) @ g
        hb = hb - e_last * grad_bias

    o = _norm_residual(torch.cat(outs, dim=2), w, b, eps).transpose(1, 2).to(out_dtype)
    if not output_final_state:
        return o, None, None
    return o, h, hb


def naive_recurrent_ttt_linear(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    eta: torch.Tensor | float,
    scale: float | None = None,
    eps: float = 1e-6,
    chunk_size: int = 16,
    initial_state: torch.Tensor | None = None,
    initial_state_bias: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """TTT-Linear as the literal specification: :func:`naive_chunk_ttt_linear`'s function, one token at a time.

    Each token's gradient ``grad l(W_0, c_0; k_s, v_s)`` is taken by ``torch.func.grad`` of the LN'd loss at the
    chunk-start weights, summed into ``G_t = sum_{s<=t} grad_s``, and the weights ``W_t = W_0 - eta_t G_t``,
    ``c_t = c_0 - eta_t G^c_t`` are materialised for the read ``out_t = o_t + LN(o_t)``,
    ``o_t = scale q_t W_t + c_t``. The last chunk is padded with zero tokens at the last real ``eta`` (their
    outputs are dropped, their gradients reach the final state bias), as fla does. Same arguments and returns as
    :func:`naive_chunk_ttt_linear`; slow, for tests.
    """
    out_dtype, dtype = v.dtype, _compute_dtype(v.dtype)
    q, k, v, eta = _heads_first(q, k, v, eta, dtype)
    w, b = _affine(w, b, dtype)
    batch, heads, length, dk = k.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    h = _state_or_zeros(initial_state, (batch, heads, dk, dv), k)
    hb = _state_or_zeros(initial_state_bias, (batch, heads, 1, dv), k)

    pad = -length % chunk_size
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        eta = torch.cat([eta, eta[:, :, -1:].expand(-1, -1, pad, -1)], dim=2)

    def loss(weight, bias, k_s, v_s):
        z = k_s @ weight + bias
        pred = k_s + F.layer_norm(z, (dv,), eps=eps) * w + b
        return 0.5 * (pred - v_s).pow(2).sum()

    grad_fn = torch.func.grad(loss, argnums=(0, 1))
    outs = []
    for start in range(0, length + pad, chunk_size):
        h0, hb0 = h, hb
        grad_sum, grad_bias_sum = torch.zeros_like(h0), torch.zeros_like(hb0)
        for t in range(start, start + chunk_size):
            gw, gb = grad_fn(h0, hb0, k[:, :, t : t + 1], v[:, :, t : t + 1])
            grad_sum, grad_bias_sum = grad_sum + gw, grad_bias_sum + gb
            e_t = eta[:, :, t : t + 1]
            h, hb = h0 - e_t * grad_sum, hb0 - e_t * grad_bias_sum
            o_t = scale * q[:, :, t : t + 1] @ h + hb
            outs.append(o_t + F.layer_norm(o_t, (dv,), eps=eps) * w + b)

    o = torch.cat(outs, dim=2)[:, :, :length].transpose(1, 2).to(out_dtype)
    if not output_final_state:
        return o, None, None
    return o, h, hb


def _gelu_grad(z: torch.Tensor) -> torch.Tensor:
    """``d gelu(z) / dz`` of the exact (erf) GELU: ``Phi(z) + z phi(z)``."""
    cdf = 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))
    return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def naive_chunk_ttt_mlp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    eta: torch.Tensor | float,
    scale: float = 1.0,
    eps: float = 1e-6,
    chunk_size: int = 16,
    initial_state: MLPState | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, MLPState | None]:
    r"""TTT-MLP, mini-batch form: the inner model is ``f(x) = x + LN(gelu(x W1 + b1) W2 + b2)`` per head.

    The fast weights ``theta = (W1 [K, F], b1 [1, F], W2 [F, V], b2 [1, V])`` (``F = 4 K`` in the paper) are
    trained as TTT-Linear's: in a chunk with chunk-start ``theta_0``, every token's gradient of
    ``l = 1/2 ||f(k_s) - v_s||^2`` is taken at ``theta_0`` and
    ``theta_t = theta_0 - eta_t sum_{s<=t} grad l(theta_0; k_s, v_s)``. Each layer is linear in its own weights,
    so the read needs no per-token weights (dual form, layer by layer, with ``x = scale q_t``)::

        u_t   = x W1_0 + b1_0 - eta_t sum_{s<=t} (x . k_s + 1) g1_s
        y_t   = gelu(u_t) W2_0 + b2_0 - eta_t sum_{s<=t} (gelu(u_t) . a_s + 1) g2_s
        out_t = x + LN(y_t)

    where ``a_s = gelu(k_s W1_0 + b1_0)`` and ``g1_s, g2_s`` are the gradients of ``l`` at the two pre-activations.

    Unlike :func:`naive_chunk_ttt_linear` the read is the paper's ``z_t = f(x; theta_t)`` (there is no fla op to
    match), ``scale`` defaults to 1 because ``f`` is non-linear and trained on unscaled keys, and a short last
    chunk is not padded: the final state is the last real token's ``theta_t``.

    Args:
        q, k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]``, ``V == K``.
        w, b: the LN affine ``[H, V]``.
        eta: ``[B, T, H, 1]`` or a float.
        scale: multiplies the queries before the read.
        eps: LN epsilon.
        chunk_size: the TTT mini-batch size.
        initial_state: ``(W1 [B, H, K, F], b1 [B, H, 1, F], W2 [B, H, F, V], b2 [B, H, 1, V])``, required: from
            all-zero weights only ``b2`` ever receives a gradient. The hidden size ``F`` is read from ``W1``.
        output_final_state: return the final ``theta``.

    Returns:
        ``(o [B, T, H, V] in v.dtype, (W1, b1, W2, b2) at the last token or None)``.
    """
    if initial_state is None:
        raise ValueError("naive_chunk_ttt_mlp needs initial_state=(W1, b1, W2, b2): a zero MLP only learns b2")
    out_dtype, dtype = v.dtype, _compute_dtype(v.dtype)
    q, k, v, eta = _heads_first(q, k, v, eta, dtype)
    w, b = _affine(w, b, dtype)
    batch, heads, length, dk = k.shape
    dv = v.shape[-1]
    hidden = initial_state[0].shape[-1]
    shapes = ((batch, heads, dk, hidden), (batch, heads, 1, hidden), (batch, heads, hidden, dv), (batch, heads, 1, dv))
    w1, b1, w2, b2 = (_state_or_zeros(s, shape, k) for s, shape in zip(initial_state, shapes, strict=True))

    outs = []
    for qc, kc, vc, ec in zip(*(x.split(chunk_size, dim=2) for x in (q, k, v, eta)), strict=True):
        mask = ~_causal(kc.shape[-2], kc)
        pre = kc @ w1 + b1
        act = F.gelu(pre)
        g2 = _recon_grad(act @ w2 + b2, kc, vc, w, b, eps)
        g1 = (g2 @ w2.transpose(-1, -2)) * _gelu_grad(pre)

        x = scale * qc
        u = x @ w1 + b1 - ec * ((x @ kc.transpose(-1, -2) + 1).masked_fill(mask, 0) @ g1)
        read = F.gelu(u)
        y = read @ w2 + b2 - ec * ((read @ act.transpose(-1, -2) + 1).masked_fill(mask, 0) @ g2)
        outs.append(x + _layer_norm(y, eps)[0] * w + b)

        e_last = ec[:, :, -1:]
        w1 = w1 - (e_last * kc).transpose(-1, -2) @ g1
        b1 = b1 - e_last * g1.sum(-2, keepdim=True)
        w2 = w2 - (e_last * act).transpose(-1, -2) @ g2
        b2 = b2 - e_last * g2.sum(-2, keepdim=True)

    o = torch.cat(outs, dim=2).transpose(1, 2).to(out_dtype)
    return o, ((w1, b1, w2, b2) if output_final_state else None)
