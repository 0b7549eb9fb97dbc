"""Hand-written forward and vector-Jacobian product of one chunk of the Miras MLP memory (section 5.3-5.4).

The blueprint of a Triton backward: ``chunk_forward`` is ``naive._chunk_dual`` (``read='chunk'``) for the
2-layer memory ``M(x) = x + LN(act(x W_1) W_2)``, written as the per-chunk matrices a kernel holds (``[n, D]``,
``[n, E]``, ``[n, n]``, ``[D, E]``; ``[n, n, D]`` for channel-wise gates), and ``chunk_backward`` is its VJP from
explicit tensor formulas only, one helper per stage. ``manual_chunk_miras`` chains them over a sequence as a
``torch.autograd.Function`` that keeps only the chunk-start states and recomputes each chunk in its backward.

Per chunk, heads-first, ``E = expansion * D``; ``lr = eta`` and ``lb = cumsum(log alpha)`` are ``[n, C]`` with
``C = 1`` (per head) or ``D`` (channel-wise, scaling the rows of ``W_1`` and the columns of ``W_2``),
``b = e^lb``, ``dec[i, j] = b_i / b_j`` for ``j <= i`` (else 0) and ``c_l`` the lq scale of ``A_l`` (Eq. 24;
absent for other retentions, where ``A_l`` is ``W_l``)::

    W_l = c_l A_l,  Z_1 = k W_1,  H_1 = act(Z_1),  y = k + LN(H_1 W_2),  P = psi(y - v)       memory at the keys
    g_2 = LN'(P),  g_1 = (g_2 W_2^T) act'(Z_1)                                              its hand backprop
    u_0 = q c_1^T,  S_0[i, j] = sum_f u_0[i, f] dec[i, j, f] (lr k)_j[f]
    z_1 = (u_0 b) A_1 - S_0 g_1,  h = act(z_1)                                   read of layer 1 (Eq. 28-29)
    u_1 = h c_2^T,  S_1 = u_1 H_1^T,  z_2 = b (u_1 A_2) - sum_j S_1[i, j] dec[i, j] (lr g_2)_j     of layer 2
    o = q + LN(z_2)
    A_1' = b_n A_1 - (dec_n lr k)^T g_1,  A_2' = A_2 b_n - H_1^T (dec_n lr g_2)      end state, dec_n = dec[n-1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernels.miras.naive import _act, _act_grad, _initial, _lq_normalise, _lq_scale, _prepare, bias_grad
from kernels.miras.spec import MemorySpec

Weights = tuple[torch.Tensor, torch.Tensor]


def check_supported(spec: MemorySpec) -> None:
    """Raise ``NotImplementedError`` naming the first field of ``spec`` this module does not implement."""
    checks = (
        ("arch", spec.arch == "mlp"),
        ("depth", spec.depth == 2),
        ("residual_norm", spec.residual_norm),
        ("retention", spec.retention in ("none", "l2", "lq")),
        ("algorithm", spec.algorithm == "gd"),
        ("read", spec.read == "chunk"),
    )
    for name, ok in checks:
        if not ok:
            raise NotImplementedError(f"manual_chunk_miras does not support memory.{name}={getattr(spec, name)!r}")


def _sum_like(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """VJP of broadcasting ``like`` to ``grad``'s shape (same rank): sum over the axes where ``like`` has size 1."""
    dims = tuple(d for d in range(grad.dim()) if like.shape[d] == 1 and grad.shape[d] != 1)
    return grad.sum(dims, keepdim=True) if dims else grad


def _act_grad2(z: torch.Tensor, spec: MemorySpec) -> torch.Tensor:
    """``act''(z)``: GELU ``phi(z) (2 - z^2)``, SiLU ``s (1 - s) (2 + z (1 - 2 s))`` with ``s = sigmoid(z)``."""
    if spec.activation == "gelu":
        return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * (2 - z * z)
    s = torch.sigmoid(z)
    return s * (1 - s) * (2 + z * (1 - 2 * s))


def _layer_norm(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``N = (z - mean) rstd`` and ``rstd [..., 1]`` over the last axis (no affine part)."""
    mean = z.mean(-1, keepdim=True)
    rstd = (z.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
    return (z - mean) * rstd, rstd


def _ln_vjp(dn: torch.Tensor, normed: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """``rstd (dn - mean(dn) - N mean(dn N))``: the VJP of ``N = LN(z)``, and the map ``psi -> g_2`` of
    ``memory_grads``. Its matrix is symmetric, so it is also its own transpose."""
    return rstd * (dn - dn.mean(-1, keepdim=True) - normed * (dn * normed).mean(-1, keepdim=True))


def _ln_input_vjp(dnormed: torch.Tensor, drstd: torch.Tensor, normed: torch.Tensor, rstd: torch.Tensor):
    """VJP of ``(N, rstd) = LN(z)`` into ``dz [..., D]``; ``d rstd / dz = -rstd^2 N / D``."""
    return _ln_vjp(dnormed, normed, rstd) - drstd * rstd * rstd * normed / normed.shape[-1]


def _ln_vjp_vjp(dg: torch.Tensor, p: torch.Tensor, normed: torch.Tensor, rstd: torch.Tensor, g: torch.Tensor):
    """VJP of ``g = _ln_vjp(p, N, rstd)`` (the second-order term of the chunk): ``(dp, dN, drstd)``.

    ``dp = LN'(dg)`` by symmetry; ``N`` enters through ``N mean(p N)``; ``g`` is linear in ``rstd``.
    """
    dp = _ln_vjp(dg, normed, rstd)
    dnormed = -rstd * (dg * (p * normed).mean(-1, keepdim=True) + p * (dg * normed).mean(-1, keepdim=True))
    drstd = (dg * g).sum(-1, keepdim=True) / rstd
    return dp, dnormed, drstd


def _head_vjp(grad: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """VJP of ``naive._per_head``: ``grad [..., n, 1]`` back to ``delta [..., n]`` or (channel mean) ``[..., n, D]``."""
    return grad.squeeze(-1) if delta.dim() < grad.dim() else (grad / delta.shape[-1]).expand_as(delta)


def _channel_vjp(grad: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """VJP of ``naive._per_channel``: ``grad [..., n, D]`` back to ``delta [..., n]`` or ``[..., n, D]``."""
    return grad.sum(-1) if delta.dim() < grad.dim() else grad


def _unit_vjp(dpsi: torch.Tensor, r: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """VJP of ``r / norm`` with ``norm = sqrt(||r||^2 + eps)`` (rows of ``r [..., D]``)."""
    return dpsi / norm - r * (dpsi * r).sum(-1, keepdim=True) / norm**3


def _psi_vjp(dpsi: torch.Tensor, r: torch.Tensor, delta: torch.Tensor | None, spec: MemorySpec):
    """VJP of ``psi(r)`` (``bias_grad`` for every bias but ``dot``, Eq. 9-17): ``(dr, ddelta or None)``.

    The Huber switches (``|r_j| <= delta_j``, ``||r|| <= mean delta``) are piecewise constant: no gradient flows
    through the comparison, as with ``torch.where`` in the reference.
    """
    if spec.bias == "l2" or (spec.bias == "huber" and spec.huber_mode == "mixture" and not spec.huber_l1):
        return dpsi, None
    t = torch.tanh(spec.sign_sharpness * r)
    dt = spec.sign_sharpness * (1 - t * t)
    if spec.bias == "l1":
        return dpsi * dt, None
    if spec.bias == "lp":
        u = r * r + spec.eps
        return spec.p * dpsi * (dt * u ** ((spec.p - 1) / 2) + t * (spec.p - 1) * r * u ** ((spec.p - 3) / 2)), None
    norm = (r.pow(2).sum(-1, keepdim=True) + spec.eps).sqrt()
    radial = (dpsi * r).sum(-1, keepdim=True) / norm
    if spec.bias == "robust":
        d = delta.unsqueeze(-1) if delta.dim() < r.dim() else delta.mean(-1, keepdim=True)
        return dpsi + d * _unit_vjp(dpsi, r, norm), _head_vjp(radial, delta)
    if spec.huber_mode == "norm":
        d = delta.unsqueeze(-1) if delta.dim() < r.dim() else delta.mean(-1, keepdim=True)
        small = norm <= d
        dr = torch.where(small, dpsi, d * _unit_vjp(dpsi, r, norm))
        return dr, _head_vjp(torch.where(small, 0, radial), delta)
    d = delta.unsqueeze(-1) if delta.dim() < r.dim() else delta
    if spec.huber_mode == "mixture" and not spec.huber_l2:
        small = torch.zeros_like(r, dtype=torch.bool)
    elif spec.huber_mode == "coordinate" or spec.huber_switch == "channel":
        small = r.abs() <= d
    else:
        small = norm <= (d if delta.dim() < r.dim() else delta.mean(-1, keepdim=True))
    return torch.where(small, dpsi, dpsi * d * dt), _channel_vjp(torch.where(small, 0, dpsi * t), delta)


def _bias_vjp(dpsi: torch.Tensor, y: torch.Tensor, v: torch.Tensor, delta: torch.Tensor | None, spec: MemorySpec):
    """VJP of ``P = bias_grad(y, v, delta)`` through ``r = y - v``: ``(dy, dv, ddelta or None)``."""
    if spec.bias == "dot":
        return torch.zeros_like(y), -dpsi, None
    dr, ddelta = _psi_vjp(dpsi, y - v, delta, spec)
    return dr, -dr, ddelta


def _lq(a: torch.Tensor, spec: MemorySpec) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``W = c A`` with ``c = ||A||_q^-(q-2)`` (Eq. 24) per matrix ``[..., 1, 1]`` or row ``[..., fan_in, 1]``.

    Returns ``(W, c, sum |A|^q)``; ``c`` is None (``W = A``) unless ``retention='lq'`` with ``q != 2``.
    """
    if spec.retention != "lq" or spec.q == 2:
        return a, None, None
    dims = (-2, -1) if spec.lq_scope == "matrix" else (-1,)
    c = _lq_scale(a, spec)
    return a * c, c, a.abs().pow(spec.q).sum(dims, keepdim=True)


def _lq_vjp(dw: torch.Tensor, dc: torch.Tensor | None, a: torch.Tensor, c, power, spec: MemorySpec) -> torch.Tensor:
    """VJP of :func:`_lq` into ``dA``, given ``dW`` and the gradient ``dc`` of the scale from the reads.

    ``dc / d power = -(q - 2) / q * c / power`` (zero where the power sits on its clamp ``eps^q``) and
    ``d power / dA = q |A|^(q-1) sign(A)``.
    """
    if c is None:
        return dw
    q, floor = spec.q, spec.eps**spec.q
    dc = _sum_like(dw * a, c) + dc
    dpower = torch.where(power >= floor, -(q - 2) / q * dc * c / power.clamp_min(floor), 0)
    return dw * c + dpower * q * a.abs().pow(q - 1) * a.sign()


def _scaled(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """A read ``h [..., n, fan_in]`` times the chunk-start lq scale ``c^T`` (Moneta reads ``A_i / ||A_0||``)."""
    return h if c is None else h * c.mT


def _scaled_vjp(du: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None):
    """VJP of :func:`_scaled`: ``(dh, dc or None)``."""
    if c is None:
        return du, None
    return du * c.mT, _sum_like(du * h, c.mT).mT


def _decay(alpha: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``b = e^lb [B, H, n, C]`` and ``dec[i, j] = e^(lb_i - lb_j)`` for ``j <= i`` (else 0) ``[B, H, n, n, C]``,
    ``lb = cumsum(log alpha)`` within the chunk (Eq. 28); retention ``none`` has ``b = 1`` and ``dec`` causal."""
    B, H, n = like.shape[:3]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=like.device))[:, :, None]
    if alpha is None:
        return like.new_ones(B, H, n, 1), causal.to(like.dtype).expand(B, H, n, n, 1)
    lb = alpha.clamp_min(torch.finfo(alpha.dtype).tiny).log().cumsum(-2)
    dec = (lb.unsqueeze(-2) - lb.unsqueeze(-3)).masked_fill(~causal, float("-inf")).exp()
    return lb.exp(), dec


def _decay_vjp(db: torch.Tensor, ddec: torch.Tensor, b: torch.Tensor, dec: torch.Tensor, alpha: torch.Tensor):
    """VJP of :func:`_decay` into ``d alpha [B, H, n, C]``.

    ``d lb_i = db_i b_i + sum_j X_ij - sum_j X_ji`` with ``X = ddec * dec``; ``lb`` is a cumsum of ``log alpha``,
    so ``d log alpha`` is the reverse cumsum of ``d lb``; the clamp at ``tiny`` passes it where ``alpha >= tiny``.
    """
    x = ddec * dec
    dlb = db * b + x.sum(-2) - x.sum(-3)
    dlog = dlb.flip(-2).cumsum(-2).flip(-2)
    tiny = torch.finfo(alpha.dtype).tiny
    return torch.where(alpha >= tiny, dlog / alpha.clamp_min(tiny), 0)


def _row_scores(u: torch.Tensor, dec: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``S[i, j] = sum_f u[i, f] dec[i, j, f] w[j, f]`` (decay on the rows of a weight): ``[B, H, n, n]``.

    Per-head gates (``dec [.., n, n, 1]``) make it the masked matmul ``(u w^T) * dec``."""
    if dec.shape[-1] == 1:
        return (u @ w.mT) * dec[..., 0]
    return torch.einsum("...if,...ijf,...jf->...ij", u, dec, w)


def _row_scores_vjp(ds: torch.Tensor, u: torch.Tensor, dec: torch.Tensor, w: torch.Tensor):
    """VJP of :func:`_row_scores`: ``(du, dw, ddec)``."""
    if dec.shape[-1] == 1:
        dsd = ds * dec[..., 0]
        return dsd @ w, dsd.mT @ u, (ds * (u @ w.mT)).unsqueeze(-1)
    du = torch.einsum("...ij,...ijf,...jf->...if", ds, dec, w)
    dw = torch.einsum("...ij,...ijf,...if->...jf", ds, dec, u)
    return du, dw, ds.unsqueeze(-1) * u.unsqueeze(-2) * w.unsqueeze(-3)


def _col_mix(s: torch.Tensor, dec: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out[i, c] = sum_j s[i, j] dec[i, j, c] w[j, c]`` (decay on the columns of a weight): ``[B, H, n, D]``."""
    if dec.shape[-1] == 1:
        return (s * dec[..., 0]) @ w
    return torch.einsum("...ij,...ijc,...jc->...ic", s, dec, w)


def _col_mix_vjp(dout: torch.Tensor, s: torch.Tensor, dec: torch.Tensor, w: torch.Tensor):
    """VJP of :func:`_col_mix`: ``(ds, dw, ddec)``."""
    if dec.shape[-1] == 1:
        dw_s = dout @ w.mT
        return dw_s * dec[..., 0], (s * dec[..., 0]).mT @ dout, (dw_s * s).unsqueeze(-1)
    ds = torch.einsum("...ic,...ijc,...jc->...ij", dout, dec, w)
    dw = torch.einsum("...ic,...ij,...ijc->...jc", dout, s, dec)
    return ds, dw, dout.unsqueeze(-2) * s.unsqueeze(-1) * w.unsqueeze(-3)


@dataclass
class ChunkCache:
    """What :func:`chunk_backward` needs of one chunk (``[B, H, ...]`` heads-first; ``C`` = 1 or ``D``).

    Inputs ``q, k, v [n, D]``, the gates as given (``eta``, ``alpha``, ``delta``: ``[n]`` or ``[n, D]``) and as
    channels ``lr``, ``gate [n, C]``; the start state ``a1 [D, E]``, ``a2 [E, D]``, its lq scales ``c1, c2`` and
    powers (or None) and effective weights ``w1, w2``; the keys ``z1k, h1, act1 [n, E]``, ``nk, y, p, g2 [n, D]``,
    ``rstdk [n, 1]``, ``gw [n, E]`` (``g_2 W_2^T``), ``g1 [n, E]``; the decay ``b [n, C]``, ``dec [n, n, C]``; the reads
    ``u0 [n, D]``, ``s0 [n, n]``, ``z1 [n, E]``, ``h [n, E]``, ``u1 [n, E]``, ``s1 [n, n]``, ``m2 [n, D]``,
    ``no [n, D]``, ``rstdo [n, 1]``.
    """

    spec: MemorySpec
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    eta: torch.Tensor
    alpha: torch.Tensor | None
    delta: torch.Tensor | None
    lr: torch.Tensor
    gate: torch.Tensor | None
    a1: torch.Tensor
    a2: torch.Tensor
    c1: torch.Tensor | None
    c2: torch.Tensor | None
    power1: torch.Tensor | None
    power2: torch.Tensor | None
    w1: torch.Tensor
    w2: torch.Tensor
    z1k: torch.Tensor
    h1: torch.Tensor
    act1: torch.Tensor
    nk: torch.Tensor
    rstdk: torch.Tensor
    y: torch.Tensor
    p: torch.Tensor
    g2: torch.Tensor
    gw: torch.Tensor
    g1: torch.Tensor
    b: torch.Tensor
    dec: torch.Tensor
    u0: torch.Tensor
    s0: torch.Tensor
    z1: torch.Tensor
    h: torch.Tensor
    u1: torch.Tensor
    s1: torch.Tensor
    m2: torch.Tensor
    no: torch.Tensor
    rstdo: torch.Tensor


def _channels(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A gate ``[B, H, n]`` or ``[B, H, n, D]`` as ``[B, H, n, C]``."""
    return g.unsqueeze(-1) if g.dim() < like.dim() else g


def _keys(k, v, delta, w1, w2, spec: MemorySpec) -> dict[str, torch.Tensor]:
    """The memory at the keys and its hand backprop (``memory_grads``): the rank-one factors ``(k, g_1)`` of
    ``dl/dW_1`` and ``(H_1, g_2)`` of ``dl/dW_2``, ``g_2 = LN'(psi(y - v))``, ``g_1 = (g_2 W_2^T) act'(Z_1)``."""
    z1k = k @ w1
    h1 = _act(z1k, spec)
    nk, rstdk = _layer_norm(h1 @ w2, spec.ln_eps)
    y = k + nk
    p = bias_grad(y, v, delta, spec)
    g2 = _ln_vjp(p, nk, rstdk)
    gw = g2 @ w2.mT
    act1 = _act_grad(z1k, spec)
    return dict(z1k=z1k, h1=h1, act1=act1, nk=nk, rstdk=rstdk, y=y, p=p, g2=g2, gw=gw, g1=gw * act1)


def _keys_vjp(dg1: torch.Tensor, dg2: torch.Tensor, dh1: torch.Tensor, c: ChunkCache):
    """VJP of :func:`_keys` for ``dg_1, dh_1 [n, E]``, ``dg_2 [n, D]``: ``(dk, dv, ddelta, dW_1, dW_2)``.

    Second order: ``g_1`` depends on ``Z_1`` through ``act'`` (``act''``) and ``g_2`` on ``(N, rstd)`` through the
    LayerNorm's VJP (:func:`_ln_vjp_vjp`); both then flow back through the memory's forward.
    """
    dgw = dg1 * c.act1
    dz1k = dg1 * c.gw * _act_grad2(c.z1k, c.spec)
    dg2 = dg2 + dgw @ c.w2
    dw2 = dgw.mT @ c.g2
    dp, dnk, drstd = _ln_vjp_vjp(dg2, c.p, c.nk, c.rstdk, c.g2)
    dy, dv, ddelta = _bias_vjp(dp, c.y, c.v, c.delta, c.spec)
    dz2k = _ln_input_vjp(dnk + dy, drstd, c.nk, c.rstdk)
    dh1 = dh1 + dz2k @ c.w2.mT
    dw2 = dw2 + c.h1.mT @ dz2k
    dz1k = dz1k + dh1 * c.act1
    return dy + dz1k @ c.w1.mT, dv, ddelta, c.k.mT @ dz1k, dw2


def _read1(u0, a1, b, dec, ek, g1, spec: MemorySpec):
    """Layer 1's read from the linearly accumulated state (Eq. 29, decay on the rows of ``W_1``):
    ``z_1 = (u_0 b) A_1 - S_0 g_1`` with ``S_0 = _row_scores(u_0, dec, lr k)``; returns ``(S_0, z_1, h)``."""
    s0 = _row_scores(u0, dec, ek)
    z1 = (u0 * b) @ a1 - s0 @ g1
    return s0, z1, _act(z1, spec)


def _read1_vjp(dh: torch.Tensor, c: ChunkCache, ek: torch.Tensor):
    """VJP of :func:`_read1`: ``(du_0, dA_1, db, ddec, d(lr k), dg_1)``."""
    dz1 = dh * _act_grad(c.z1, c.spec)
    dub = dz1 @ c.a1.mT
    ds0 = -dz1 @ c.g1.mT
    du0, dek, ddec = _row_scores_vjp(ds0, c.u0, c.dec, ek)
    return du0 + dub * c.b, (c.u0 * c.b).mT @ dz1, _sum_like(dub * c.u0, c.b), ddec, dek, -c.s0.mT @ dz1


def _read2(u1, a2, b, dec, h1, eg):
    """Layer 2's read (decay on the columns of ``W_2``): ``z_2 = b (u_1 A_2) - _col_mix(u_1 H_1^T, dec, lr g_2)``;
    returns ``(S_1, u_1 A_2, z_2)``."""
    s1 = u1 @ h1.mT
    m2 = u1 @ a2
    return s1, m2, b * m2 - _col_mix(s1, dec, eg)


def _read2_vjp(dz2: torch.Tensor, c: ChunkCache, eg: torch.Tensor):
    """VJP of :func:`_read2`: ``(du_1, dA_2, db, ddec, d(lr g_2), dH_1)``."""
    dm2 = dz2 * c.b
    ds1, deg, ddec = _col_mix_vjp(-dz2, c.s1, c.dec, eg)
    du1 = dm2 @ c.a2.mT + ds1 @ c.h1
    return du1, c.u1.mT @ dm2, _sum_like(dz2 * c.m2, c.b), ddec, deg, ds1.mT @ c.u1


def _end(a1, a2, b, dec, ek, eg, g1, h1):
    """The next state (Eq. 28, ``i = n``): ``A_1' = b_n A_1 - (dec_n lr k)^T g_1``,
    ``A_2' = A_2 b_n - H_1^T (dec_n lr g_2)`` with ``dec_n = dec[n - 1] = b_n / b_j``."""
    last, tail = b[..., -1:, :], dec[..., -1, :, :]
    return last.mT * a1 - (tail * ek).mT @ g1, a2 * last - h1.mT @ (tail * eg)


def _end_vjp(dn1: torch.Tensor, dn2: torch.Tensor, c: ChunkCache, ek: torch.Tensor, eg: torch.Tensor):
    """VJP of :func:`_end`: ``(dA_1, dA_2, db, ddec, d(lr k), d(lr g_2), dg_1, dH_1)``; ``db``, ``ddec`` only in
    their last row."""
    last, tail = c.b[..., -1:, :], c.dec[..., -1, :, :]
    dtek = -c.g1 @ dn1.mT
    dteg = -c.h1 @ dn2
    db = torch.zeros_like(c.b)
    db[..., -1:, :] = _sum_like((c.a1 * dn1).sum(-1, keepdim=True).mT + (c.a2 * dn2).sum(-2, keepdim=True), last)
    ddec = torch.zeros_like(c.dec)
    ddec[..., -1, :, :] = _sum_like(dtek * ek + dteg * eg, tail)
    dg1 = -(tail * ek) @ dn1
    dh1 = -(tail * eg) @ dn2.mT
    return last.mT * dn1, dn2 * last, db, ddec, dtek * tail, dteg * tail, dg1, dh1


def chunk_forward(weights: Weights, q, k, v, eta, alpha, delta, spec: MemorySpec):
    """One chunk of the MLP memory, as ``naive._chunk_dual`` (``read='chunk'``, Eq. 28-29; lq Eq. 24).

    Args:
        weights: chunk-start state ``(A_1 [B, H, D, E], A_2 [B, H, E, D])`` (the accumulators for lq, else ``W``).
        q, k, v: ``[B, H, n, D]``.
        eta, alpha, delta: ``[B, H, n]`` or ``[B, H, n, D]``; ``alpha`` None for ``retention='none'``, ``delta``
            None unless the bias reads it.

    Returns:
        ``o [B, H, n, D]``, the next state (same layout as ``weights``) and the :class:`ChunkCache`.
    """
    a1, a2 = weights
    w1, c1, power1 = _lq(a1, spec)
    w2, c2, power2 = _lq(a2, spec)
    keys = _keys(k, v, delta, w1, w2, spec)
    lr = _channels(eta, k)
    gate = None if alpha is None else _channels(alpha, k)
    b, dec = _decay(gate, k)
    ek, eg = lr * k, lr * keys["g2"]
    u0 = _scaled(q, c1)
    s0, z1, h = _read1(u0, a1, b, dec, ek, keys["g1"], spec)
    u1 = _scaled(h, c2)
    s1, m2, z2 = _read2(u1, a2, b, dec, keys["h1"], eg)
    no, rstdo = _layer_norm(z2, spec.ln_eps)
    new = _end(a1, a2, b, dec, ek, eg, keys["g1"], keys["h1"])
    cache = ChunkCache(
        spec, q, k, v, eta, alpha, delta, lr, gate, a1, a2, c1, c2, power1, power2, w1, w2,
        **keys, b=b, dec=dec, u0=u0, s0=s0, z1=z1, h=h, u1=u1, s1=s1, m2=m2, no=no, rstdo=rstdo,
    )  # fmt: skip
    return q + no, new, cache


def chunk_backward(cache: ChunkCache, d_o: torch.Tensor, d_new_weights):
    """The VJP of :func:`chunk_forward` for ``d_o [B, H, n, D]`` and the next state's gradient (a pair, entries
    may be None), the stages in reverse: end state, output LN, read of layer 2, read of layer 1, the keys (second
    order), lq scales, decay.

    Returns:
        ``(dA_1, dA_2), dq, dk, dv, d_eta, d_alpha, d_delta`` shaped as the inputs; ``d_alpha`` None without
        ``alpha``, ``d_delta`` None when the bias does not read ``delta``.
    """
    c = cache
    dn1, dn2 = (torch.zeros_like(a) if d is None else d for a, d in zip((c.a1, c.a2), d_new_weights, strict=True))
    ek, eg = c.lr * c.k, c.lr * c.g2
    da1, da2, db, ddec, dek, deg, dg1, dh1 = _end_vjp(dn1, dn2, c, ek, eg)

    du1, da2_read, db2, ddec2, deg2, dh1_read = _read2_vjp(_ln_vjp(d_o, c.no, c.rstdo), c, eg)
    dh, dc2 = _scaled_vjp(du1, c.h, c.c2)
    du0, da1_read, db1, ddec1, dek1, dg1_read = _read1_vjp(dh, c, ek)
    dq, dc1 = _scaled_vjp(du0, c.q, c.c1)

    dek, deg = dek + dek1, deg + deg2
    dk, dv, ddelta, dw1, dw2 = _keys_vjp(dg1 + dg1_read, deg * c.lr, dh1 + dh1_read, c)
    da1 = da1 + da1_read + _lq_vjp(dw1, dc1, c.a1, c.c1, c.power1, c.spec)
    da2 = da2 + da2_read + _lq_vjp(dw2, dc2, c.a2, c.c2, c.power2, c.spec)

    dlr = _sum_like(dek * c.k + deg * c.g2, c.lr)
    d_eta = dlr.squeeze(-1) if c.eta.dim() < c.k.dim() else dlr
    d_alpha = None
    if c.alpha is not None:
        d_gate = _decay_vjp(db + db1 + db2, ddec + ddec1 + ddec2, c.b, c.dec, c.gate)
        d_alpha = d_gate.squeeze(-1) if c.alpha.dim() < c.k.dim() else d_gate
    return (da1, da2), d_o + dq, dk + dek * c.lr, dv, d_eta, d_alpha, ddelta


def _chunk_inputs(inputs: tuple, start: int, end: int) -> tuple:
    return tuple(None if x is None else x[:, :, start:end] for x in inputs)


def _concat(parts: list) -> torch.Tensor | None:
    return None if parts[0] is None else torch.cat(parts, 2)


class ManualChunkMiras(torch.autograd.Function):
    """The chunk loop with a hand-written backward (heads-first ``[B, H, T, .]`` inputs, start state ``A_1, A_2``).

    The forward keeps only the chunk-start states; the backward walks the chunks in reverse, recomputes each
    chunk's cache from its start state and carries the state gradient through :func:`chunk_backward`.
    """

    @staticmethod
    def forward(ctx, q, k, v, eta, alpha, delta, a1, a2, spec, chunk_size):
        T = q.shape[2]
        state, starts, outputs = (a1, a2), [], []
        for start in range(0, T, chunk_size):
            starts.append(state)
            part = _chunk_inputs((q, k, v, eta, alpha, delta), start, start + chunk_size)
            o, state, _ = chunk_forward(state, *part, spec)
            outputs.append(o)
        ctx.save_for_backward(q, k, v, eta, alpha, delta)
        ctx.starts, ctx.spec, ctx.chunk_size = starts, spec, chunk_size
        return torch.cat(outputs, 2), *state

    @staticmethod
    def backward(ctx, d_o, d_a1, d_a2):
        inputs = ctx.saved_tensors
        d_state = (d_a1, d_a2)
        grads = []
        for idx in reversed(range(len(ctx.starts))):
            start = idx * ctx.chunk_size
            part = _chunk_inputs(inputs, start, start + ctx.chunk_size)
            cache = chunk_forward(ctx.starts[idx], *part, ctx.spec)[2]
            d_state, *chunk_grads = chunk_backward(cache, d_o[:, :, start : start + ctx.chunk_size], d_state)
            grads.append(chunk_grads)
        per_input = [_concat(list(parts[::-1])) for parts in zip(*grads, strict=True)]
        return (*per_input, *d_state, None, None)


def manual_chunk_miras(
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
    """``naive_chunk_miras`` (same arguments, ``[B, T, H, D]`` layout) for the 2-layer MLP memory with ``read='chunk'``,
    ``algorithm='gd'`` and retention ``none``, ``l2`` or ``lq``, differentiated by :class:`ManualChunkMiras`.

    The final ``W = A / ||A||_q^(q-2)`` of Moneta is formed outside the function (torch autograd), as the Triton
    path does.
    """
    check_supported(spec)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; allowed values: an integer >= 1")
    out_dtype = q.dtype
    q, k, v, eta, alpha, delta = _prepare(q, k, v, eta, alpha, delta, spec)
    if not spec.needs_delta:
        delta = None
    B, H, T, D = k.shape
    state = _initial(initial_state, spec, B, H, D, D, k)[0]
    if T == 0:
        o = v.new_zeros(B, H, 0, D)
    else:
        o, *state = ManualChunkMiras.apply(q, k, v, eta, alpha, delta, *state, spec, chunk_size)
    if not output_final_state:
        return o.transpose(1, 2).to(out_dtype), None
    final = {"weights": tuple(_lq_normalise(s, spec) for s in state) if spec.retention == "lq" else tuple(state)}
    if spec.retention == "lq":
        final["accumulator"] = tuple(state)
    return o.transpose(1, 2).to(out_dtype), final
