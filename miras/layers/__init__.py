"""Token mixers: one registry ``name -> nn.Module`` with one signature.

Every mixer is built as ``cls(d_model, config: MixerConfig, layer_idx)`` and called as
``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from miras.config import KNOWN_MIXERS, ConfigError, MixerConfig

MIXERS: dict[str, type[nn.Module]] = {}


def register_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a mixer to :data:`MIXERS` under ``name`` (which must be in ``KNOWN_MIXERS``)."""
    if name not in KNOWN_MIXERS:
        raise ConfigError(f"mixer name {name!r} is not declared in miras.config.KNOWN_MIXERS")

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        MIXERS[name] = cls
        return cls

    return add


PATTERNS: dict[str, tuple[str, ...]] = {
    "samba": ("mamba", "swa"),
    "gated_deltanet_h2": ("mamba2", "gated_deltanet", "swa"),
    "moneta_h": ("moneta", "swa"),
    "yaad_h": ("yaad", "swa"),
    "memora_h": ("memora", "swa"),
}
"""Hybrid layer patterns: block ``i`` uses mixer ``pattern[i % len(pattern)]``, every block with its MLP.

``samba`` alternates Mamba and sliding-window attention (Ren et al. 2024, Samba: Mamba-MLP-SWA-MLP).
``gated_deltanet_h2`` is the H2 hybrid of the Gated DeltaNet paper (Yang et al. 2025, section 3.4): Mamba2,
Gated DeltaNet and SWA layers in turn. The Miras ``-H`` hybrids "sequentially combine our Miras layer with
Sliding Window Attention" following Samba (Miras section 5.4); the ratio is not reported, so they alternate
like Samba. The SWA window is ``mixer.swa_window``.
"""


def implemented(name: str) -> bool:
    """Whether mixer or pattern ``name`` can be built."""
    return name in MIXERS or (name in PATTERNS and all(part in MIXERS for part in PATTERNS[name]))


def layer_mixer(config: MixerConfig, layer_idx: int) -> MixerConfig:
    """The mixer config of block ``layer_idx``: ``config`` itself, or its pattern's component for the block."""
    if config.name not in PATTERNS:
        return config
    pattern = PATTERNS[config.name]
    name = pattern[layer_idx % len(pattern)]
    window = config.swa_window if name == "swa" else config.window
    return dataclasses.replace(config, name=name, window=window)


def build_mixer(d_model: int, config: MixerConfig, layer_idx: int) -> nn.Module:
    if not implemented(config.name):
        raise NotImplementedError(
            f"mixer.name={config.name!r} is declared but not implemented yet; implemented: "
            f"{sorted(n for n in (*MIXERS, *PATTERNS) if implemented(n))}"
        )
    config = layer_mixer(config, layer_idx)
    return MIXERS[config.name](d_model, config, layer_idx)


from miras.layers import attention, linear, mamba, miras, ttr, ttt  # noqa: E402,F401  (registers the mixers)
