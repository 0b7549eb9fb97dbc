"""Llama-style pre-norm decoder over a pluggable token mixer (Miras section 5.4, "Llama's macro architecture")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from miras.config import ModelConfig
from miras.layers import build_mixer


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, the Llama MLP."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))`` (mixer-only when ``config.mlp`` is False)."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = build_mixer(config.d_model, config.mixer, layer_idx)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps) if config.mlp else None
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden) if config.mlp else None

    def forward(self, x, state=None, cu_seqlens=None):
        y, state = self.mixer(self.mixer_norm(x), state=state, cu_seqlens=cu_seqlens)
        x = x + y
        if self.mlp is None:
            return x, state
        return x + self.mlp(self.mlp_norm(x)), state


class LanguageModel(nn.Module):
    """Decoder-only language model.

    ``forward(input_ids[B, T], states=None, cu_seqlens=None) -> (logits[B, T, V], states)`` where ``states``
    is a list with one mixer state per block (KV caches or recurrent memories), for incremental decoding.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for linear and embedding weights; residual outputs scaled by 1/sqrt(2 n_layer)."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith(("o_proj", "out_proj", "down_proj"))
                scale = 1 / math.sqrt(2 * self.config.n_layer) if residual else 1.0
                nn.init.normal_(module.weight, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters") and module is not self and not list(module.children()):
                module.reset_parameters()

    def forward(
        self,
        input_ids: torch.Tensor,
        states: list | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list]:
        h, new_states = self.hidden(input_ids, states, cu_seqlens)
        return self.lm_head(h), new_states

    def hidden(
        self, input_ids: torch.Tensor, states: list | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list]:
        """``(h[B, T, D], states)``: the normalised last hidden states, the LM head's input (a loss over a few
        positions, as in MQAR, applies the head to those alone)."""
        x = self.embed(input_ids)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, state = block(x, state=None if states is None else states[i], cu_seqlens=cu_seqlens)
            new_states.append(state)
        return self.norm(x), new_states


def count_parameters(model: nn.Module, exclude_embeddings: bool = False) -> int:
    """Number of distinct parameters (tied weights once); optionally without the input embedding."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or (exclude_embeddings and name.startswith("embed.")):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
