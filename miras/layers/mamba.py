"""Selective state-space baselines: Mamba (Gu & Dao 2023) and Mamba2 (Dao & Gu 2024), as fla's layers build
them (flame's ``mamba_340M`` / ``mamba2_340M``: 48 mixer-only blocks, ``expand=2``, short convolutions with
bias, ``dt`` from a softplus with a log-uniform initial bias)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels.gla import naive_chunk_gla, naive_selective_scan
from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.modules import ShortConvolution, check_backend, dt_bias_init, split_varlen, use_fla, width


class _StateSpaceMixer(nn.Module):
    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        if cu_seqlens is not None:
            return split_varlen(lambda part: self(part)[0], x, cu_seqlens, state), None
        return self.step(x, state or {})


@register_mixer("mamba")
class Mamba(_StateSpaceMixer):
    """Mamba: ``in_proj`` to ``x, z`` (``expand_v * D`` each) -> short conv on ``x`` -> ``dt, B, C`` from
    ``x_proj`` (``dt`` through a rank ``ceil(D / 16)`` projection) -> selective scan with ``A = -exp(A_log)``
    of ``state_size`` entries per channel and a skip ``D`` -> ``y ⊙ SiLU(z)`` -> ``out_proj``.

    ``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y, state)`` with ``state`` =
    ``{"ssm": [B, D_inner, N] fp32, "conv": [B, conv_size - 1, D_inner]}``. The scan is the torch recurrence on
    every device (fla's Mamba layer calls the ``mamba_ssm`` CUDA package, which we do not depend on).
    """

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        check_backend(config, ("auto", "torch"))
        inner, N = width(d_model, config.expand_v, "expand_v"), config.state_size
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.conv = ShortConvolution(inner, config.conv_size or 1, bias=True)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner, bias=False)
        self.dt_bias = nn.Parameter(dt_bias_init(inner))
        self.A_log = nn.Parameter(torch.arange(1, N + 1, dtype=torch.float32).log().repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=False)

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        h, z = self.in_proj(x).chunk(2, dim=-1)
        h, conv = self.conv(h, state.get("conv"))
        dt, B, C = self.x_proj(h).split([self.dt_rank, *(2 * [self.A_log.shape[1]])], dim=-1)
        dt = F.softplus(self.dt_proj(dt) + self.dt_bias)
        y, ssm = naive_selective_scan(h, dt, -self.A_log.exp(), B, C, state.get("ssm"), output_final_state=True)
        y = (y + h * self.D) * F.silu(z)
        return self.out_proj(y), {"ssm": ssm, "conv": conv}


@register_mixer("mamba2")
class Mamba2(_StateSpaceMixer):
    """Mamba2: ``in_proj`` to ``z, x, B, C, dt`` -> short conv on ``x, B, C`` -> SSD with a scalar decay
    ``exp(dt_t A_h)`` per head of ``ssm_head_dim`` channels and ``state_size`` states (one group of ``B, C``)
    -> skip ``D`` -> ``RMSNorm(y ⊙ SiLU(z))`` -> ``out_proj``.

    SSD is gated linear attention with ``q = C``, ``k = B``, ``v = dt x`` and log-decay ``dt A``: fla's
    ``chunk_simple_gla`` on CUDA, :func:`kernels.gla.naive_chunk_gla` elsewhere. ``state`` =
    ``{"ssm": [B, H, N, P] fp32, "conv": [B, conv_size - 1, D_inner + 2N]}``.
    """

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        check_backend(config)
        self.backend = config.backend
        inner, N, P = width(d_model, config.expand_v, "expand_v"), config.state_size, config.ssm_head_dim
        if inner % P:
            raise ConfigError(
                f"mixer.ssm_head_dim={P} is invalid; allowed values: a divisor of expand_v * d_model = {inner}"
            )
        self.inner, self.N, self.P, self.n_head = inner, N, P, inner // P
        self.in_proj = nn.Linear(d_model, 2 * inner + 2 * N + self.n_head, bias=False)
        self.conv = ShortConvolution(inner + 2 * N, config.conv_size or 1, bias=True)
        self.dt_bias = nn.Parameter(dt_bias_init(self.n_head))
        self.A_log = nn.Parameter(torch.empty(self.n_head).uniform_(1, 16).log())
        self.D = nn.Parameter(torch.ones(self.n_head))
        self.norm = nn.RMSNorm(inner, eps=1e-5)
        self.out_proj = nn.Linear(inner, d_model, bias=False)

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        Bsz, T, _ = x.shape
        z, xBC, dt = self.in_proj(x).split([self.inner, self.inner + 2 * self.N, self.n_head], dim=-1)
        xBC, conv = self.conv(xBC, state.get("conv"))
        h, B, C = xBC.split([self.inner, self.N, self.N], dim=-1)
        h = h.view(Bsz, T, self.n_head, self.P)
        dt = F.softplus(dt.float() + self.dt_bias)
        g = -self.A_log.float().exp() * dt
        q, k = (t[:, :, None].expand(Bsz, T, self.n_head, self.N).contiguous() for t in (C, B))
        v = h * dt[..., None].to(h.dtype)
        if use_fla(self.backend, x):
            from fla.ops.simple_gla import chunk_simple_gla

            y, ssm = chunk_simple_gla(q, k, v, g=g, scale=1.0, initial_state=state.get("ssm"), output_final_state=True)
        else:
            y, ssm = naive_chunk_gla(
                q, k, v, g, scale=1.0, initial_state=state.get("ssm"), output_final_state=True, chunk_size=64
            )
        y = y + h * self.D[:, None].to(h.dtype)
        y = self.norm(y.reshape(Bsz, T, self.inner) * F.silu(z))
        return self.out_proj(y), {"ssm": ssm, "conv": conv}
