"""Token mixers: one registry ``name -> nn.Module`` with one signature.

Every mixer is built as ``cls(d_model, config: MixerConfig, layer_idx)`` and called as
``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)``.
"""

from __future__ import annotations

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


def build_mixer(d_model: int, config: MixerConfig, layer_idx: int) -> nn.Module:
    if config.name not in MIXERS:
        raise NotImplementedError(
            f"mixer.name={config.name!r} is declared but not implemented yet; implemented: {sorted(MIXERS)}"
        )
    return MIXERS[config.name](d_model, config, layer_idx)


from miras.layers import attention, miras  # noqa: E402,F401  (registers the mixers)
