"""Helpers shared by the kernels: interpreter detection, autotune that works on CPU, and test comparison."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def is_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


AUTOTUNE_MODES = ("all", "first")
"""Values of the ``MIRAS_AUTOTUNE`` environment variable: ``all`` (default) tunes over every config on a GPU;
``first`` keeps the first, for correctness runs whose time would go to compiling configs that are then dropped."""


def autotune(configs: list, key: list[str], **kwargs):
    """``triton.autotune`` that keeps only the first config under the interpreter, or where ``MIRAS_AUTOTUNE=first``
    (read when the kernel module is imported).

    With several configs the autotuner benchmarks through the GPU driver, which a CPU machine lacks.
    """
    import triton

    first = is_interpreting() or autotune_mode() == "first"
    return triton.autotune(configs[:1] if first else configs, key=key, **kwargs)


def autotune_mode() -> str:
    """The ``MIRAS_AUTOTUNE`` mode in force (one of :data:`AUTOTUNE_MODES`; ``all`` where unset)."""
    mode = os.environ.get("MIRAS_AUTOTUNE", "all")
    if mode not in AUTOTUNE_MODES:
        raise ValueError(f"MIRAS_AUTOTUNE={mode!r}: allowed values are {', '.join(AUTOTUNE_MODES)}")
    return mode


def signature(kernel, bf16: tuple = (), i32_pointers: tuple = (), i32: tuple = ()) -> dict[str, str]:
    """Triton's type of every argument of ``kernel`` for :func:`front_end`: ``constexpr`` where annotated so, a
    pointer (``*_ptr``) to bf16 if named in ``bf16``, to int32 if in ``i32_pointers``, else to fp32; other scalars
    int32 if named in ``i32``, else fp32."""
    import inspect

    while hasattr(kernel, "fn"):  # autotuner -> jit (or interpreted) function -> the Python function
        kernel = kernel.fn
    types = {}
    for param in inspect.signature(kernel).parameters.values():
        if "constexpr" in str(param.annotation):
            types[param.name] = "constexpr"
        elif param.name.endswith("_ptr"):
            types[param.name] = "*bf16" if param.name in bf16 else "*i32" if param.name in i32_pointers else "*fp32"
        else:
            types[param.name] = "i32" if param.name in i32 else "fp32"
    return types


def front_end(kernel, signature: dict[str, str], constexprs: dict, arch: str = "sm_90a", num_warps: int = 4):
    """``kernel`` (a ``triton.jit`` function, autotuned or not) through Triton's front end alone, Python AST to
    Triton IR for a CUDA ``arch``: no GPU, a fraction of a second. It fails where a GPU compile would on what the
    CPU interpreter lets pass (a plain global read in a kernel, branches of different types). Needs the compiled
    kernels, so a process without ``TRITON_INTERPRET=1``. ``signature`` maps every non-constexpr argument to its
    Triton type (``*bf16``, ``i32``, ...) and every constexpr one to ``"constexpr"``. Returns the IR module."""
    import re

    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend

    while not hasattr(kernel, "params"):  # the autotuner wraps the jit function
        kernel = kernel.fn
    source = ASTSource(kernel, signature=signature, constexprs=constexprs)
    target = GPUTarget("cuda", int(re.sub(r"\D", "", arch)), 32)
    backend = make_backend(target)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": 1})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    return source.make_ir(target, options, codegen, backend.get_module_map(), context)


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup``, synchronised on CUDA."""
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def git_tag(repo) -> str:
    """The checkout's short sha, ``-dirty`` when tracked files differ: what a benchmark record cites."""
    git = git_state(repo)
    return git["sha"][:12] + ("-dirty" if git.get("dirty") else "")


def write_record(stem, record: dict, markdown: str) -> None:
    """Write a benchmark's ``<stem>.json`` and ``<stem>.md`` (``stem``: a path without suffix)."""
    import json

    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown)


def git_state(cwd: str | Path | None = None) -> dict:
    """``{"sha": ..., "dirty": bool}`` of the checkout holding ``cwd``. Outside git (a tree copied without ``.git``,
    e.g. to an offline GPU node) the sha is ``MIRAS_GIT_SHA`` where set, with ``dirty`` unknown, else ``"unknown"``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": os.environ.get("MIRAS_GIT_SHA") or "unknown", "dirty": None}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
