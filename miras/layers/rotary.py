"""Rotary position embeddings (RoFormer; Llama's rotate-half convention)."""

from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer ``positions`` of any shape: returns two ``[*positions.shape, head_dim]``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x[B, T, H, K]`` by tables ``cos, sin[B or 1, T, K]``; computed in at least fp32, returned in x's
    dtype."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    x1, x2 = wide.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    out = wide * cos[:, :, None] + rotated * sin[:, :, None]
    return out.to(x.dtype)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of each packed token inside its own sequence: ``[total]``, restarting at every boundary."""
    idx = torch.arange(total, device=cu_seqlens.device)
    starts = cu_seqlens[torch.searchsorted(cu_seqlens, idx, right=True) - 1]
    return idx - starts
