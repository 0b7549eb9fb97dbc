"""Pieces shared by the mixers: the short convolution, backend choice and varlen splitting."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from miras.config import ConfigError, MixerConfig


class ShortConvolution(nn.Module):
    """Depthwise causal 1D convolution followed by SiLU (the short convolution of Mamba, GDN and Miras), or
    linear with ``activation=False`` (the key convolution of the test-time-regression layers).

    ``forward(x[B, T, C], cache[B, K-1, C] or None) -> (y[B, T, C], cache)``: ``cache`` holds the last
    ``K - 1`` inputs so that a sequence can be continued exactly.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = False, activation: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.activation = kernel_size, activation
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        if cache is None:
            cache = x.new_zeros(B, self.kernel_size - 1, C)
        padded = torch.cat([cache.to(x.dtype), x], dim=1)
        y = self.conv(padded.transpose(1, 2)).transpose(1, 2)
        y = F.silu(y) if self.activation else y
        return y, padded[:, padded.shape[1] - (self.kernel_size - 1) :]


def fla_available() -> bool:
    return importlib.util.find_spec("fla") is not None


def check_backend(config: MixerConfig, allowed: tuple[str, ...] = ("auto", "torch", "fla")) -> None:
    """Raise :class:`ConfigError` at construction when ``config.backend`` is not one ``config.name`` has."""
    if config.backend not in allowed:
        raise ConfigError(
            f"mixer.backend={config.backend!r} is invalid for mixer.name={config.name!r}; allowed values: "
            + ", ".join(map(repr, allowed))
        )


def use_fla(backend: str, x: torch.Tensor) -> bool:
    """Whether to call fla's kernels for ``x``: ``auto`` on CUDA when fla is installed, ``fla`` always (CUDA only).

    Decided per call from the device, so one checkpoint runs on fla's kernels on a GPU and on the torch path
    on a CPU with the same parameters.
    """
    if backend == "fla":
        if not x.is_cuda or not fla_available():
            raise RuntimeError(
                "mixer.backend='fla' needs CUDA tensors and the fla-core package (fla's kernels do not run on a "
                "CPU); use backend 'auto' or 'torch'"
            )
        return True
    return backend == "auto" and x.is_cuda and fla_available()


def split_varlen(
    step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, cu_seqlens: torch.Tensor, state: object
) -> torch.Tensor:
    """Run ``step`` on each of the sequences packed in ``x[1, T, D]`` at offsets ``cu_seqlens`` and concatenate."""
    if x.shape[0] != 1 or state is not None:
        raise ValueError("cu_seqlens needs a batch of size 1 and no state (sequences are packed)")
    bounds = cu_seqlens.tolist()
    return torch.cat([step(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dim=1)


def width(d_model: int, expand: float, field: str) -> int:
    width = d_model * expand
    if not math.isclose(width, round(width)):
        raise ConfigError(f"mixer.{field}={expand!r} is invalid; allowed values: d_model * {field} an integer")
    return round(width)


def dt_bias_init(n: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """Mamba's time-step bias: ``softplus^-1`` of a log-uniform ``dt`` in ``[dt_min, dt_max]``."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))
