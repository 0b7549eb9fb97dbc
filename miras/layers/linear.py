"""Linear-recurrent baselines with a matrix state: RetNet, GLA, DeltaNet and Gated DeltaNet.

Each follows the layer design that flash-linear-attention publishes for it (projections, short convolutions,
gates, output normalisation) and its defaults (fla's ``fla/layers`` and flame's 340M configs). The recurrence
runs on fla's chunk kernels on CUDA and on our torch twins (``kernels.gla``, ``kernels.delta_rule``) elsewhere,
with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.delta_rule import naive_chunk_gated_delta_rule
from kernels.gla import naive_chunk_gla
from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.modules import ShortConvolution, check_backend, dt_bias_init, split_varlen, use_fla, width
from miras.layers.rotary import apply_rope, rope_frequencies

GLA_GATE_RANK = 16
"""Rank of GLA's low-rank forget-gate projection (GLA paper, section 4.4)."""
GLA_GATE_NORMALIZER = 16
"""GLA's ``alpha_t = sigmoid(x W)^(1/16)``: the log-decay is ``logsigmoid(.) / 16`` (GLA paper, section 4.4)."""


class LinearRecurrentMixer(nn.Module):
    """q, k, v projections -> optional short convolutions -> heads -> a gated linear recurrence -> per-head
    RMSNorm, optionally gated by ``SiLU(g_proj(x))`` -> ``o_proj``.

    Subclasses choose the widths and features and implement :meth:`recurrence`.

    ``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)`` with ``state`` =
    ``{"recurrent": [B, H, K, V] fp32, "conv": {name: [B, conv_size - 1, C]}, "offset": int}``; a prefix and its
    continuation give exactly the outputs of the whole sequence.
    """

    short_conv = False
    output_gate = True
    qk_l2norm = False
    rope = False

    def __init__(self, d_model: int, config: MixerConfig, key_dim: int, value_dim: int, n_head: int) -> None:
        super().__init__()
        check_backend(config)
        if key_dim % n_head or value_dim % n_head:
            raise ConfigError(
                f"mixer.n_head={n_head} is invalid for mixer.name={config.name!r}; allowed values: a divisor of the "
                f"key width {key_dim} and the value width {value_dim}"
            )
        self.backend = config.backend
        self.n_head, self.head_k, self.head_v = n_head, key_dim // n_head, value_dim // n_head
        self.rope_theta = config.rope_theta
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        widths = {"q": key_dim, "k": key_dim, "v": value_dim}
        self.convs = nn.ModuleDict(
            {name: ShortConvolution(width, config.conv_size) for name, width in widths.items()}
            if self.short_conv and config.conv_size
            else {}
        )
        self.g_proj = nn.Linear(d_model, value_dim, bias=False) if self.output_gate else None
        self.o_norm = nn.RMSNorm(self.head_v, eps=1e-5)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

    def recurrence(self, x, q, k, v, initial_state, fla: bool):
        """``(o[B, T, H, V], final_state[B, H, K, V])`` of the layer's recurrence from ``initial_state``."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        if cu_seqlens is not None:
            return split_varlen(lambda part: self(part)[0], x, cu_seqlens, state), None
        B, T, _ = x.shape
        state = state or {}
        conv, new_conv = state.get("conv", {}), {}
        qkv = []
        for name, proj in (("q", self.q_proj), ("k", self.k_proj), ("v", self.v_proj)):
            h = proj(x)
            if name in self.convs:
                h, new_conv[name] = self.convs[name](h, conv.get(name))
            qkv.append(h.view(B, T, self.n_head, -1))
        q, k, v = qkv
        if self.qk_l2norm:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        offset = state.get("offset", 0)
        if self.rope:
            positions = torch.arange(offset, offset + T, device=x.device)[None]
            cos, sin = rope_frequencies(self.head_k, positions, self.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o, recurrent = self.recurrence(x, q, k, v, state.get("recurrent"), use_fla(self.backend, x))
        o = self.o_norm(o)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x)).view(B, T, self.n_head, self.head_v)
        y = self.o_proj(o.reshape(B, T, -1))
        return y, {"recurrent": recurrent, "conv": new_conv, "offset": offset + T}


@register_mixer("retnet")
class MultiScaleRetention(LinearRecurrentMixer):
    """RetNet (Sun et al. 2023): RoPE'd q, k, a fixed decay ``gamma_h = 1 - 2^(-5 - h)`` per head, values
    ``expand_v * D`` wide (RetNet: 2), a swish output gate (fla ``MultiScaleRetention``)."""

    rope = True

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        key_dim = width(d_model, config.expand_k, "expand_k")
        super().__init__(d_model, config, key_dim, width(d_model, config.expand_v, "expand_v"), config.n_head)
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(config.n_head, dtype=torch.float64))
        self.register_buffer("log_gamma", gamma.log().float(), persistent=False)

    def recurrence(self, x, q, k, v, initial_state, fla: bool):
        g = self.log_gamma.expand(*q.shape[:2], -1).contiguous()
        if fla:
            from fla.ops.simple_gla import chunk_simple_gla

            return chunk_simple_gla(q, k, v, g=g, initial_state=initial_state, output_final_state=True)
        return naive_chunk_gla(q, k, v, g, initial_state=initial_state, output_final_state=True, chunk_size=64)


@register_mixer("gla")
class GatedLinearAttention(LinearRecurrentMixer):
    """GLA (Yang et al. 2024): a data-dependent forget gate per key channel from a rank-16 projection,
    ``log alpha_t = logsigmoid(.) / 16``, keys ``expand_k * D`` wide (GLA: 0.5), a swish output gate."""

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        key_dim = width(d_model, config.expand_k, "expand_k")
        super().__init__(d_model, config, key_dim, width(d_model, config.expand_v, "expand_v"), config.n_head)
        self.gk_proj = nn.Sequential(
            nn.Linear(d_model, GLA_GATE_RANK, bias=False), nn.Linear(GLA_GATE_RANK, key_dim, bias=True)
        )

    def recurrence(self, x, q, k, v, initial_state, fla: bool):
        g = (F.logsigmoid(self.gk_proj(x)) / GLA_GATE_NORMALIZER).view_as(q)
        if fla:
            from fla.ops.gla import chunk_gla

            return chunk_gla(q, k, v, g, initial_state=initial_state, output_final_state=True)
        return naive_chunk_gla(q, k, v, g, initial_state=initial_state, output_final_state=True, chunk_size=16)


def _delta_widths(d_model: int, config: MixerConfig) -> tuple[int, int]:
    """Key and value widths: ``n_head * head_dim`` keys and ``expand_v`` times wider values when ``head_dim`` is
    set (Gated DeltaNet), else ``expand_k * D`` and ``expand_v * D`` (DeltaNet)."""
    if config.head_dim is not None:
        key_dim = config.n_head * config.head_dim
        return key_dim, width(key_dim, config.expand_v, "expand_v")
    return width(d_model, config.expand_k, "expand_k"), width(d_model, config.expand_v, "expand_v")


@register_mixer("deltanet")
class DeltaNet(LinearRecurrentMixer):
    """DeltaNet (Yang et al. 2024, "Parallelizing linear transformers with the delta rule"): SiLU short
    convolutions on q, k, v, l2-normalised q and k, ``beta_t = sigmoid(.)`` per head, output RMSNorm without a
    gate (flame's ``delta_net_340M``: ``use_gate=false``)."""

    short_conv = True
    output_gate = False
    qk_l2norm = True

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__(d_model, config, *_delta_widths(d_model, config), config.n_head)
        self.b_proj = nn.Linear(d_model, config.n_head, bias=False)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        return None, torch.sigmoid(self.b_proj(x))

    def recurrence(self, x, q, k, v, initial_state, fla: bool):
        g, beta = self.gates(x)
        if fla:
            from fla.ops.delta_rule import chunk_delta_rule
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule

            if g is None:
                return chunk_delta_rule(q, k, v, beta, initial_state=initial_state, output_final_state=True)
            return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=initial_state, output_final_state=True)
        return naive_chunk_gated_delta_rule(
            q, k, v, beta, g, initial_state=initial_state, output_final_state=True, chunk_size=64
        )


@register_mixer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang et al. 2025): DeltaNet plus a Mamba2-style decay per head,
    ``log alpha_t = -exp(A_log) * softplus(a_proj(x) + dt_bias)``, ``n_head`` heads of ``head_dim`` keys (256)
    and ``expand_v`` times wider values (2), and a swish output gate."""

    output_gate = True

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__(d_model, config, layer_idx)
        H = config.n_head
        self.a_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.empty(H).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(dt_bias_init(H))

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        return g, torch.sigmoid(self.b_proj(x))
