"""Softmax attention mixers: Transformer++ (full causal) and sliding-window attention (SWA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.rotary import apply_rope, positions_from_cu_seqlens, rope_frequencies


@register_mixer("swa")
@register_mixer("transformer")
class Attention(nn.Module):
    """Causal multi-head softmax attention with RoPE (Llama / Transformer++), optionally windowed.

    Args:
        d_model: width of the residual stream ``D``.
        config: ``n_head`` heads of size ``D / n_head``; ``window`` keys per query (``None``: all past keys);
            ``rope`` and ``rope_theta`` for the rotary embedding.
        layer_idx: position of the block in the stack (unused; part of the mixer signature).

    ``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)``: ``state`` is the KV cache
    ``{"k": [B, S, H, K], "v": [B, S, H, K], "offset": int}`` (only the last ``window`` keys are kept);
    ``cu_seqlens[N + 1]`` packs N sequences into a ``B = 1`` batch, each attending only to itself.
    """

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        if d_model % config.n_head:
            raise ConfigError(
                f"mixer.n_head={config.n_head} is invalid for attention; allowed values: a divisor of d_model={d_model}"
            )
        self.n_head = config.n_head
        self.head_dim = d_model // config.n_head
        self.window = config.window
        self.rope = config.rope
        self.rope_theta = config.rope_theta
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim)

        offset = state["offset"] if state else 0
        if cu_seqlens is not None:
            if B != 1 or state is not None:
                raise ValueError("cu_seqlens needs a batch of size 1 and no state (sequences are packed)")
            positions = positions_from_cu_seqlens(cu_seqlens, T)[None]
        else:
            positions = torch.arange(offset, offset + T, device=x.device)[None]
        if self.rope:
            cos, sin = rope_frequencies(self.head_dim, positions, self.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if state:
            k = torch.cat([state["k"], k], dim=1)
            v = torch.cat([state["v"], v], dim=1)
        mask = self._mask(T, k.shape[1], x.device, cu_seqlens)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=mask is None
        )
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, D))

        if cu_seqlens is not None:
            return y, None
        keep = k.shape[1] if self.window is None else min(self.window - 1, k.shape[1])
        return y, {"k": k[:, k.shape[1] - keep :], "v": v[:, v.shape[1] - keep :], "offset": offset + T}

    def _mask(self, T: int, S: int, device: torch.device, cu_seqlens: torch.Tensor | None) -> torch.Tensor | None:
        """Boolean ``[T, S]`` mask (True = attend), or None when plain causal attention is exact."""
        if S == T and self.window is None and cu_seqlens is None:
            return None
        q_pos = torch.arange(S - T, S, device=device)[:, None]
        k_pos = torch.arange(S, device=device)[None, :]
        mask = k_pos <= q_pos
        if self.window is not None:
            mask &= q_pos - k_pos < self.window
        if cu_seqlens is not None:
            doc = torch.searchsorted(cu_seqlens, torch.arange(S, device=device), right=True)
            mask &= doc[S - T :, None] == doc[None, :]
        return mask
