"""Helpers shared by the kernels: interpreter detection, autotune that works on CPU, and test comparison."""

from __future__ import annotations

import os

import torch


def is_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotune(configs: list, key: list[str], **kwargs):
    """``triton.autotune`` that keeps only the first config under the interpreter.

    With several configs the autotuner benchmarks through the GPU driver, which a CPU machine lacks.
    """
    import triton

    return triton.autotune(configs[:1] if is_interpreting() else configs, key=key, **kwargs)


def relative_rms(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``rms(ref - out) / rms(ref)`` computed in fp64 (0 when both are zero)."""
    ref, out = ref.double(), out.double()
    denom = ref.pow(2).mean().sqrt().item()
    err = (ref - out).pow(2).mean().sqrt().item()
    return err / denom if denom > 0 else err


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float) -> None:
    """Fail when ``out`` has NaN/Inf where ``ref`` has none, or when their relative RMS error exceeds ``ratio``."""
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all() and torch.isfinite(ref).all():
        raise AssertionError(f"{name}: non-finite values")
    err = relative_rms(ref, out)
    if not err <= ratio:
        raise AssertionError(f"{name}: relative RMS error {err:.3e} > {ratio:.1e}")
