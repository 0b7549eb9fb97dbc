"""Pure-torch Miras memories: the literal per-token recurrence and the paper's chunkwise form.

``naive_recurrent_miras`` is the specification: one token at a time, the gradient of the attentional bias at
the previous state, every retention non-linearity at every token. ``naive_chunk_miras`` is the parallel form of
section 5.4 that the Triton kernels transcribe: gradients at the chunk-start state, the decays and learning
rates of a chunk combined as ``E_b * B_b`` (Eq. 28-29, 32), the non-linear retention applied at chunk ends
(Memora: on the lag token, Eq. 30). With ``chunk_size=1`` the two are the same function.

Layout: ``q, k [B, T, H, K]``, ``v [B, T, H, V]``; ``eta``, ``alpha``, ``delta`` per head ``[B, T, H]`` or
channel-wise ``[B, T, H, D]`` (see ``MemorySpec.gate_axis`` for which weight axis ``D`` indexes). A state is a
dict of per-head fast weights ``[B, H, fan_in, fan_out]`` (one per weight of the memory, see
``weight_shapes``): ``weights`` (the memory ``W``), ``accumulator`` (Moneta's ``A``, retention ``lq``) and
``momentum`` (``algorithm='momentum'``). The read is ``o_t = M(W_t; q_t)``, after the write of token ``t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.miras.spec import MemorySpec, weight_shapes

Weights = tuple[torch.Tensor, ...]


def _matmul(x: torch.Tensor, w: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``x @ w`` (or ``x @ w^T``) where ``w`` is shared by the tokens of ``x`` or has one matrix per token."""
    if transpose:
        w = w.transpose(-1, -2)
    if w.dim() == x.dim() + 1:
        return (x.unsqueeze(-2) @ w).squeeze(-2)
    return x @ w


def _act(z: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    return F.gelu(z) if spec.activation == "gelu" else F.silu(z)


def _act_grad(z: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    if spec.activation == "gelu":
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def memory_forward(weights: Weights, x: torch.Tensor, spec: MemorySpec) -> tuple[torch.Tensor, tuple]:
    """``M(W; x)`` for ``x[..., K]``; returns the output ``[..., V]`` and what :func:`memory_grads` needs."""
    inputs, pre = [], []
    h = x
    for layer, w in enumerate(weights):
        inputs.append(h)
        z = _matmul(h, w)
        pre.append(z)
        h = _act(z, spec) if layer < len(weights) - 1 else z
    out, norm = _memory_output(x, h, spec)
    return out, (inputs, pre, norm)


def _memory_output(x: torch.Tensor, h: torch.Tensor, spec: MemorySpec) -> tuple[torch.Tensor, tuple | None]:
    """The MLP memory's ``x + LN(h)`` (no-op for the linear memory)."""
    if spec.arch == "linear" or not spec.residual_norm:
        return h, None
    mean = h.mean(-1, keepdim=True)
    rstd = (h.var(-1, unbiased=False, keepdim=True) + spec.ln_eps).rsqrt()
    normed = (h - mean) * rstd
    return x + normed, (normed, rstd)


def memory_grads(
    weights: Weights, cache: tuple, grad_out: torch.Tensor, spec: MemorySpec
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Backpropagate ``grad_out = dl/dM(x)`` to every fast weight: ``dl/dW_l = outer(x_l, g_l)``.

    The gradients are returned as their rank-one factors ``(x_l[..., fan_in], g_l[..., fan_out])``, so that the
    chunkwise form never materialises one gradient matrix per token.
    """
    inputs, pre, norm = cache
    grad = grad_out
    if norm is not None:
        normed, rstd = norm
        grad = rstd * (grad - grad.mean(-1, keepdim=True) - normed * (grad * normed).mean(-1, keepdim=True))
    factors = [None] * len(weights)
    for layer in reversed(range(len(weights))):
        factors[layer] = (inputs[layer], grad)
        if layer:
            grad = _matmul(grad, weights[layer], transpose=True) * _act_grad(pre[layer - 1], spec)
    return factors


def _per_channel(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-head ``g[...]`` or channel-wise ``g[..., D]`` as a tensor that broadcasts against ``like[..., D]``."""
    return g.unsqueeze(-1) if g.dim() < like.dim() else g


def _per_head(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``g`` reduced to one value per head (channel mean), shaped ``[..., 1]`` against ``like[..., D]``."""
    return g.unsqueeze(-1) if g.dim() < like.dim() else g.mean(-1, keepdim=True)


def bias_grad(y: torch.Tensor, v: torch.Tensor, delta: torch.Tensor | None, spec: MemorySpec) -> torch.Tensor:
    """``dl/dM(k)`` of the attentional bias at the memory output ``y = M(k)`` (Eq. 8-17), smoothed as Remark 5."""
    if spec.bias == "dot":
        return -v.expand_as(y)
    r = y - v
    if spec.bias == "l2":
        return r
    sign = torch.tanh(spec.sign_sharpness * r)
    if spec.bias == "l1":
        return sign
    if spec.bias == "lp":
        return spec.p * sign * (r * r + spec.eps) ** ((spec.p - 1) / 2)
    if delta is None:
        raise ValueError(f"memory.bias={spec.bias!r} needs delta (the Huber threshold or robust radius)")
    norm = (r.pow(2).sum(-1, keepdim=True) + spec.eps).sqrt()
    if spec.bias == "robust":
        return r + _per_head(delta, r) * r / norm
    if spec.huber_mode == "norm":
        d = _per_head(delta, r)
        return torch.where(norm <= d, r, d * r / norm)
    d = _per_channel(delta, r)
    if spec.huber_mode == "coordinate":
        return torch.where(r.abs() <= d, r, d * sign)
    if not spec.huber_l1:
        return r
    if not spec.huber_l2:
        return d * sign
    small = r.abs() <= d if spec.huber_switch == "channel" else norm <= _per_head(delta, r)
    return torch.where(small, r, d * sign)


def _gate_axis(layer: int, n_layers: int, spec: MemorySpec) -> str:
    """Which axis of weight ``layer`` a channel-wise gate scales: ``row``, ``col`` or ``mean`` (head mean)."""
    if spec.arch == "linear":
        return "row" if spec.gate_axis == "key" else "col"
    return "row" if layer == 0 else "col" if layer == n_layers - 1 else "mean"


def _channels(g: torch.Tensor, prefix: int, axis: str) -> torch.Tensor:
    """Gate with ``prefix`` leading dims (+ optional channel dim) as ``[*prefix, C]`` with C the channels or 1."""
    if g.dim() == prefix:
        return g.unsqueeze(-1)
    return g.mean(-1, keepdim=True) if axis == "mean" else g


def _on_weight(c: torch.Tensor, axis: str) -> torch.Tensor:
    """``[..., C]`` channel values broadcast onto ``[..., fan_in, fan_out]``."""
    return c.unsqueeze(-2) if axis == "col" else c.unsqueeze(-1)


def _lq_scale(a: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """``||A||_q^-(q-2)`` over each matrix (``[..., 1, 1]``) or row (``[..., fan_in, 1]``) of ``a``."""
    dims = (-2, -1) if spec.lq_scope == "matrix" else (-1,)
    power = a.abs().pow(spec.q).sum(dims, keepdim=True).clamp_min(spec.eps**spec.q)
    return power.pow(-(spec.q - 2) / spec.q)


def _lq_normalise(a: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """``A / ||A||_q^(q-2)`` (Eq. 24) over each matrix or row of ``a[..., fan_in, fan_out]``."""
    return a if spec.q == 2 else a * _lq_scale(a, spec)


def _soft_threshold(z: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """``S_gamma(z) = sign(z) max(0, |z| - gamma)`` (Eq. 22)."""
    return torch.sign(z) * F.relu(z.abs() - spec.elastic_threshold)


def simplex(logits: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """``c Softmax(logits)`` over the slice ``spec.kl_axis`` of ``logits[..., fan_in, fan_out]`` (Eq. 21, 27)."""
    if spec.kl_axis == "matrix":
        n = logits.shape[-2] * logits.shape[-1]
        out = torch.softmax(logits.flatten(-2), -1).view_as(logits)
    else:
        dim = -2 if spec.kl_axis == "fan_in" else -1
        n = logits.shape[dim]
        out = torch.softmax(logits, dim)
    return out * (spec.kl_scale if spec.kl_scale is not None else math.sqrt(n))


def _effective(state: Weights, spec: MemorySpec) -> Weights:
    """The memory's weights ``W`` from its state (Moneta reads ``A / ||A||_q^(q-2)``)."""
    return tuple(_lq_normalise(s, spec) for s in state) if spec.retention == "lq" else state


def _linear_space(state: Weights, spec: MemorySpec) -> Weights:
    """The state in the space where a chunk's writes add up linearly (Memora: ``log W``, Eq. 27)."""
    if spec.retention == "kl":
        return tuple(s.clamp_min(spec.kl_floor).log() for s in state)
    return state


def _read_map(linear: Weights, spec: MemorySpec) -> Weights:
    """Weights read from a linearly accumulated state (the retention's non-linearity, applied at reads)."""
    if spec.retention == "elastic":
        return tuple(_soft_threshold(s, spec) for s in linear)
    if spec.retention == "kl":
        return tuple(simplex(s, spec) for s in linear)
    return _effective(linear, spec)


def _chunk_end(linear: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """The state carried out of a chunk from its last linearly accumulated value (Moneta keeps ``A``)."""
    if spec.retention == "elastic":
        return _soft_threshold(linear, spec)
    if spec.retention == "kl":
        return simplex(linear, spec)
    return linear


def _prepare(q, k, v, eta, alpha, delta, spec):
    dtype = torch.promote_types(q.dtype, torch.float32)

    def heads_first(x):
        return None if x is None else x.transpose(1, 2).to(dtype)

    if spec.needs_delta and delta is None:
        raise ValueError(f"memory.bias={spec.bias!r} needs delta (the Huber threshold or robust radius)")
    if spec.retention == "none":
        alpha = None
    elif alpha is None:
        raise ValueError(f"memory.retention={spec.retention!r} needs alpha (the retention gate)")
    if spec.arch == "mlp" and k.shape[-1] != v.shape[-1]:
        raise ValueError(f"the MLP memory needs d_k == d_v, got {k.shape[-1]} and {v.shape[-1]}")
    return [heads_first(x) for x in (q, k, v, eta, alpha, delta)]


def _initial(initial_state, spec: MemorySpec, B: int, H: int, d_k: int, d_v: int, like: torch.Tensor):
    """Primary state (``A`` for lq, else ``W``) and momentum from ``initial_state`` (zeros when None)."""
    shapes = weight_shapes(spec, d_k, d_v)
    momentum = None
    if initial_state is None:
        if spec.retention == "kl":
            state = tuple(simplex(like.new_zeros(B, H, *s), spec) for s in shapes)
        else:
            state = tuple(like.new_zeros(B, H, *s) for s in shapes)
    elif isinstance(initial_state, dict):
        key = "accumulator" if spec.retention == "lq" else "weights"
        if key not in initial_state:
            raise ValueError(f"initial_state needs {key!r} for memory.retention={spec.retention!r}")
        state = tuple(initial_state[key])
        momentum = initial_state.get("momentum")
    else:
        state = (initial_state,) if torch.is_tensor(initial_state) else tuple(initial_state)
    if len(state) != len(shapes):
        raise ValueError(f"initial_state has {len(state)} weights, the memory has {len(shapes)}")
    state = tuple(s.to(like.dtype).expand(B, H, *shape) for s, shape in zip(state, shapes, strict=True))
    if spec.algorithm == "momentum":
        momentum = (
            tuple(like.new_zeros(B, H, *s) for s in shapes)
            if momentum is None
            else tuple(m.to(like.dtype).expand(B, H, *s) for m, s in zip(momentum, shapes, strict=True))
        )
    return state, momentum


def _final(state: Weights, momentum: Weights | None, spec: MemorySpec) -> dict:
    out = {"weights": _effective(state, spec)}
    if spec.retention == "lq":
        out["accumulator"] = state
    if momentum is not None:
        out["momentum"] = momentum
    return out


def _token_step(state, momentum, k_t, v_t, eta_t, alpha_t, delta_t, spec):
    """One exact write (Eq. 5 with the chosen retention): gradient at ``W_{t-1}``, non-linearity applied."""
    weights = _effective(state, spec)
    y, cache = memory_forward(weights, k_t, spec)
    factors = memory_grads(weights, cache, bias_grad(y, v_t, delta_t, spec), spec)
    new_state, new_momentum = [], []
    for layer, (s, (x, g)) in enumerate(zip(state, factors, strict=True)):
        axis = _gate_axis(layer, len(state), spec)
        step = _on_weight(_channels(eta_t, 2, axis), axis) * (x.unsqueeze(-1) * g.unsqueeze(-2))
        if momentum is not None:
            step = spec.momentum * momentum[layer] - step
            new_momentum.append(step)
        else:
            step = -step
        decay = 1.0 if alpha_t is None else _on_weight(_channels(alpha_t, 2, axis), axis)
        if spec.retention == "kl":
            s = simplex(decay * s.clamp_min(spec.kl_floor).log() + step, spec)
        else:
            s = decay * s + step
            if spec.retention == "elastic":
                s = _soft_threshold(s, spec)
        new_state.append(s)
    return tuple(new_state), tuple(new_momentum) if momentum is not None else None


def naive_recurrent_miras(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None,
    spec: MemorySpec,
    delta: torch.Tensor | None = None,
    initial_state=None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, dict | None]:
    """The Miras memory one token at a time (Eq. 5 with the retention of ``spec``; Eq. 24, 26, 27).

    Args:
        q, k: ``[B, T, H, K]`` queries and keys (the layer l2-normalises them).
        v: ``[B, T, H, V]`` values.
        eta: learning rate ``eta_t``, ``[B, T, H]`` or ``[B, T, H, D]``.
        alpha: retention gate ``alpha_t`` (same shapes; ignored and may be None for ``retention='none'``).
        spec: the point of the design space.
        delta: Huber threshold ``delta_t`` / robust radius (same shapes), for ``bias`` in huber, robust.
        initial_state: a state dict, or the weights (a tensor for a linear memory, a tuple for an MLP);
            ``None`` starts from zeros (Memora: the uniform simplex).
        output_final_state: also return the final state dict.

    Returns:
        ``o [B, T, H, V]`` in ``q``'s dtype and the final state (or None).
    """
    out_dtype = q.dtype
    q, k, v, eta, alpha, delta = _prepare(q, k, v, eta, alpha, delta, spec)
    B, H, T, d_k = k.shape
    state, momentum = _initial(initial_state, spec, B, H, d_k, v.shape[-1], k)
    outputs = []
    for t in range(T):
        state, momentum = _token_step(
            state,
            momentum,
            k[:, :, t],
            v[:, :, t],
            eta[:, :, t],
            None if alpha is None else alpha[:, :, t],
            None if delta is None else delta[:, :, t],
            spec,
        )
        outputs.append(memory_forward(_effective(state, spec), q[:, :, t], spec)[0])
    o = torch.stack(outputs, 2) if outputs else v.new_zeros(B, H, 0, v.shape[-1])
    return o.transpose(1, 2).to(out_dtype), (_final(state, momentum, spec) if output_final_state else None)


def _log_decay(alpha: torch.Tensor | None) -> torch.Tensor | None:
    """``log b_i = sum_{m <= i} log alpha_m`` within a chunk, from ``alpha[B, H, n, C]``."""
    return None if alpha is None else alpha.clamp_min(torch.finfo(alpha.dtype).tiny).log().cumsum(2)


def _decay_matrix(log_b: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = b_i / b_j = prod_{j < m <= i} alpha_m`` for ``j <= i``, else 0: ``[B, H, n, n, C]``."""
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=like.device))[:, :, None]
    if log_b is None:
        return causal.to(like.dtype)[None, None]
    return (log_b.unsqueeze(3) - log_b.unsqueeze(2)).masked_fill(~causal, float("-inf")).exp()


def _outer(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) * g.unsqueeze(-2)


def _chunk_writes(state, momentum, k, v, eta, alpha, delta, spec):
    """All writes of one chunk from its start state: per-token states ``[B, H, n, fan_in, fan_out]``.

    ``S_i = b_i S_0 - sum_{j <= i} (b_i / b_j) eta_j outer(x_j, g_j)`` (Eq. 28-29) is evaluated in the ratio form
    ``b_i (S_0 - cumsum_j(eta_j / b_j outer(x_j, g_j)))`` while ``1 / b_j`` stays far from overflow, and with the
    explicit ``[n, n]`` decay matrix otherwise (and for momentum, whose coefficients do not factor).
    """
    n = k.shape[2]
    weights = _effective(state, spec)
    y, cache = memory_forward(weights, k, spec)
    factors = memory_grads(weights, cache, bias_grad(y, v, delta, spec), spec)
    per_token, new_state, new_momentum = [], [], []
    ratio_limit = 0.5 * math.log(torch.finfo(k.dtype).max)
    for layer, (s, (x, g)) in enumerate(zip(_linear_space(state, spec), factors, strict=True)):
        axis = _gate_axis(layer, len(state), spec)
        log_b = _log_decay(None if alpha is None else _channels(alpha, 3, axis))
        lr = _channels(eta, 3, axis)
        b = k.new_ones(1, 1, n, 1) if log_b is None else log_b.exp()
        if momentum is None and (log_b is None or -log_b[:, :, -1].min().item() < ratio_limit):
            scaled = lr if log_b is None else lr * (-log_b).exp()
            outer = _outer(x, scaled * g) if axis == "col" else _outer(scaled * x, g)
            tokens = _on_weight(b, axis) * (s.unsqueeze(2) - outer.cumsum(2))
        else:
            coef = _decay_matrix(log_b, n, k)
            if momentum is not None:
                powers = spec.momentum ** torch.arange(n, dtype=k.dtype, device=k.device)
                lags = torch.arange(n, device=k.device)
                mix = torch.where(
                    lags[:, None] >= lags[None, :], powers[(lags[:, None] - lags[None, :]).clamp_min(0)], 0
                )
                carry = torch.einsum("bhijc,j->bhic", coef, powers * spec.momentum)
                coef = torch.einsum("bhijc,jm->bhimc", coef, mix)
            # sum_j coef[i, j] * eta_j * outer(x_j, g_j), with the channel axis on the rows or the columns
            if axis == "col":
                update = x.transpose(-1, -2).unsqueeze(2) @ (coef * (lr * g).unsqueeze(2))
            else:
                update = (coef * (lr * x).unsqueeze(2)).transpose(-1, -2) @ g.unsqueeze(2)
            tokens = _on_weight(b, axis) * s.unsqueeze(2) - update
            if momentum is not None:
                tokens = tokens + _on_weight(carry, axis) * momentum[layer].unsqueeze(2)
                last = (spec.momentum ** torch.arange(n - 1, -1, -1, dtype=k.dtype, device=k.device))[:, None]
                step = x.transpose(-1, -2) @ (lr * g * last) if axis == "col" else (lr * x * last).transpose(-1, -2) @ g
                new_momentum.append(spec.momentum**n * momentum[layer] - step)
        per_token.append(tokens)
        new_state.append(_chunk_end(tokens[:, :, -1], spec))
    return per_token, tuple(new_state), tuple(new_momentum) if momentum is not None else None


def _momentum_mix(decay: torch.Tensor, n: int, spec: MemorySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients with momentum: ``S_i = b_i S_0 + carry_i M_0 - sum_j coef[i, j] eta_j grad_j``."""
    like = decay
    powers = spec.momentum ** torch.arange(n, dtype=like.dtype, device=like.device)
    lags = torch.arange(n, device=like.device)
    mix = torch.where(lags[:, None] >= lags[None, :], powers[(lags[:, None] - lags[None, :]).clamp_min(0)], 0)
    carry = torch.einsum("bhijc,j->bhic", decay, powers * spec.momentum)
    return torch.einsum("bhijc,jm->bhimc", decay, mix), carry


def _chunk_dual(state, momentum, q, k, v, eta, alpha, delta, spec):
    """One chunk with reads from the linearly accumulated state (``MemorySpec.read='chunk'``), never forming a
    per-token weight: each layer's read ``h_i W_i`` is ``(h_i * b_i) W_0 - sum_j s_ij g_j`` with the scores
    ``s_ij = sum_f h_i[f] D[i, j, f] eta_j[f] x_j[f]`` (decay on rows; the column case is the transpose).
    Moneta reads ``A_i / ||A_{t'}||_q^(q-2)``, the chunk-start normaliser (the non-linearity acts at chunk ends,
    section 5.4); Memora reads the steps after its lag token as weight-space linear steps (Eq. 31-32) or through
    the first-order softmax step (``MemorySpec.kl_read``), and carries ``c Softmax`` of the log-space
    accumulation; elastic reads before its threshold."""
    n = k.shape[2]
    weights = _effective(state, spec)
    y, cache = memory_forward(weights, k, spec)
    factors = memory_grads(weights, cache, bias_grad(y, v, delta, spec), spec)
    h = q
    new_state, new_momentum = [], []
    ratio_limit = 0.5 * math.log(torch.finfo(k.dtype).max)
    for layer, (s, (x, g)) in enumerate(zip(state, factors, strict=True)):
        axis = _gate_axis(layer, len(state), spec)
        log_b = _log_decay(None if alpha is None else _channels(alpha, 3, axis))
        lr = _channels(eta, 3, axis)
        b = k.new_ones(1, 1, n, 1) if log_b is None else log_b.exp()
        read = h if spec.retention != "lq" else h * _lq_read_scale(s, spec)
        carry = None
        tangent = spec.retention == "kl" and spec.kl_read == "tangent"
        if tangent:
            mean_w, wl = _kl_tangent(s, spec)
            held = read.sum(-1, keepdim=True)
            c = mean_w * s.shape[-2]
            if axis == "col":
                retained = read @ s + (b - 1) * (read @ (wl - s * wl.sum(-2, keepdim=True) / c))
            else:
                fade = (b - 1).expand_as(read)
                retained = read @ s + (read * fade) @ wl - (read @ s) * (fade @ wl) / c
        if momentum is None and (log_b is None or -log_b[:, :, -1].min().item() < ratio_limit):
            # ratio form: D[i, j] = b_i / b_j factors, so every score is one masked matmul
            causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=k.device))
            inv_b = 1 / b
            if axis == "col":
                scores = read @ x.transpose(-1, -2)
                if tangent:
                    scores = mean_w * (scores - held * x.mean(-1).unsqueeze(-2))
                scores = scores.masked_fill(~causal, 0)
                write = b * (scores @ (lr * g * inv_b))
                z = retained - write if tangent else b * (read @ s) - write
            else:
                scores = (read * b) @ (lr * x * inv_b).transpose(-1, -2)
                if tangent:
                    centre = b.expand_as(read) @ (lr * x * inv_b).transpose(-1, -2) / x.shape[-1]
                    scores = mean_w * (scores - held * centre)
                scores = scores.masked_fill(~causal, 0)
                z = retained if tangent else (read * b) @ s
                z = z - scores @ g
            last = b[:, :, -1:] * inv_b
        else:
            coef = _decay_matrix(log_b, n, k)
            if momentum is not None:
                coef, carry = _momentum_mix(coef, n, spec)
            if axis == "col":
                scores = read @ x.transpose(-1, -2)
                if tangent:
                    scores = mean_w * (scores - held * x.mean(-1).unsqueeze(-2))
                if coef.shape[-1] == 1:
                    inner = (scores * coef[..., 0]) @ (lr * g)
                else:
                    inner = torch.einsum("bhij,bhijo,bhjo->bhio", scores, coef, lr * g)
                z = (retained if tangent else b * (read @ s)) - inner
                if carry is not None:
                    z = z + carry * (read @ momentum[layer])
            else:
                if coef.shape[-1] == 1:
                    scores = (read @ (lr * x).transpose(-1, -2)) * coef[..., 0]
                    centre = (lr * x).mean(-1).unsqueeze(-2) * coef[..., 0]
                else:
                    scores = torch.einsum("bhif,bhijf,bhjf->bhij", read, coef, lr * x)
                    centre = torch.einsum("bhijf,bhjf->bhij", coef, lr * x) / x.shape[-1]
                if tangent:
                    scores = mean_w * (scores - held * centre)
                z = (retained if tangent else (read * b) @ s) - scores @ g
                if carry is not None:
                    z = z + (read * carry) @ momentum[layer]
            last = coef[:, :, -1]
        h = _act(z, spec) if layer < len(state) - 1 else z

        update = x.transpose(-1, -2) @ (last * lr * g) if axis == "col" else (last * lr * x).transpose(-1, -2) @ g
        end = _on_weight(b[:, :, -1], axis) * _linear_space((s,), spec)[0] - update
        if carry is not None:
            end = end + _on_weight(carry[:, :, -1], axis) * momentum[layer]
            powers = (spec.momentum ** torch.arange(n - 1, -1, -1, dtype=k.dtype, device=k.device))[:, None]
            step = x.transpose(-1, -2) @ (lr * g * powers) if axis == "col" else (lr * x * powers).transpose(-1, -2) @ g
            new_momentum.append(spec.momentum**n * momentum[layer] - step)
        new_state.append(_chunk_end(end, spec))
    out = _memory_output(q, h, spec)[0]
    return out, tuple(new_state), tuple(new_momentum) if momentum is not None else None


def _kl_tangent(w: torch.Tensor, spec: MemorySpec) -> tuple[float, torch.Tensor]:
    """Memora's first-order read around the lag weights ``W`` (``MemorySpec.kl_read='tangent'``).

    ``c Softmax(l + d)`` over each fan-in column is ``W + W * (d - <W / c, d>)`` to first order in ``d``. The
    write part of ``d`` (``-sum eta x g^T``) is read with ``W`` replaced by its column mean ``c / fan_in``, which
    keeps it a matmul; the retention part ``(b - 1) log W`` exactly, through
    ``W * log W``. Returns that mean and ``W * log W``."""
    if spec.kl_axis != "fan_in":
        raise NotImplementedError(f"memory.kl_read='tangent' needs memory.kl_axis='fan_in', got {spec.kl_axis!r}")
    fan_in = w.shape[-2]
    c = spec.kl_scale if spec.kl_scale is not None else math.sqrt(fan_in)
    log_w = w.clamp_min(spec.kl_floor).log()
    return c / fan_in, w * log_w


def _lq_read_scale(a: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """The chunk-start ``||A||_q^-(q-2)`` shaped to scale the entries of a read ``h[..., fan_in]``."""
    return a.new_ones(()) if spec.q == 2 else _lq_scale(a, spec).transpose(-1, -2)


def naive_chunk_miras(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None,
    spec: MemorySpec,
    delta: torch.Tensor | None = None,
    initial_state=None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict | None]:
    """The chunkwise (parallel) Miras memory of section 5.4; same arguments as :func:`naive_recurrent_miras`.

    In each chunk of ``chunk_size`` tokens every gradient is taken at the chunk-start weights ``W_{t'}`` and the
    writes are combined with the cumulative decays and learning rates (Eq. 28-29):
    ``S_i = b_i S_{t'} - sum_{j <= i} (b_i / b_j) eta_j grad l(W_{t'}; k_j, v_j)``. Reads use the per-token
    states through the retention's map (Moneta's ``A / ||A||_q^(q-2)``, the elastic soft-threshold); the state
    carried to the next chunk is the last one (thresholded for ``elastic``). Memora adds its writes up in
    ``log W`` (Eq. 27 is linear there but for the softmax normaliser) and applies ``c Softmax`` at reads and at
    the chunk end; with ``kl_lag`` the first token of every chunk is a lag token taking the exact step (Eq. 30)
    and the rest of its chunk takes gradients at the weights after it (Eq. 31-32).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; allowed values: an integer >= 1")
    out_dtype = q.dtype
    q, k, v, eta, alpha, delta = _prepare(q, k, v, eta, alpha, delta, spec)
    B, H, T, d_k = k.shape
    state, momentum = _initial(initial_state, spec, B, H, d_k, v.shape[-1], k)
    outputs = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        if spec.retention == "kl" and spec.kl_lag:
            state, momentum = _token_step(
                state,
                momentum,
                k[:, :, start],
                v[:, :, start],
                eta[:, :, start],
                alpha[:, :, start],
                None if delta is None else delta[:, :, start],
                spec,
            )
            outputs.append(memory_forward(state, q[:, :, start : start + 1], spec)[0])
            start += 1
        if start == end:
            continue
        part = slice(start, end)
        inputs = (
            k[:, :, part],
            v[:, :, part],
            eta[:, :, part],
            None if alpha is None else alpha[:, :, part],
            None if delta is None else delta[:, :, part],
        )
        if spec.read == "token":
            per_token, state, momentum = _chunk_writes(state, momentum, *inputs, spec)
            outputs.append(memory_forward(_read_map(tuple(per_token), spec), q[:, :, part], spec)[0])
        else:
            out, state, momentum = _chunk_dual(state, momentum, q[:, :, part], *inputs, spec)
            outputs.append(out)
    o = torch.cat(outputs, 2) if outputs else v.new_zeros(B, H, 0, v.shape[-1])
    return o.transpose(1, 2).to(out_dtype), (_final(state, momentum, spec) if output_final_state else None)
