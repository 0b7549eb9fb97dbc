"""How the precision of the chunk kernels' products moves the Miras gradients, emulated on a CPU.

    TRITON_INTERPRET=1 python -m benchmarks.miras_precision     # Yaad and Memora, T = 130, chunk 64
    TRITON_INTERPRET=1 python -m benchmarks.miras_precision --presets moneta --length 65

Under the Triton interpreter every ``tl.dot`` is an fp32 numpy product. For each ``--modes`` entry this runs
:func:`kernels.miras.chunk.chunk_miras` forward and backward with the interpreter's products changed:

- ``fp32``: as they are: the kernels' ``tf32x3`` products keep fp32 precision, so this is the committed kernel;
- ``tf32``: operands rounded to tf32 (10 mantissa bits, nearest, ties away: ``cvt.rna.tf32``) first, a single
  tensor-core tf32 product;
- ``bf16``: operands rounded to bf16 (7 mantissa bits, nearest even) first, a bf16 tensor-core product;
- ``autocast``: :func:`kernels.miras.naive_chunk_miras` under CPU bf16 autocast instead of the kernel.

Each is compared with ``naive_chunk_miras`` in fp64 on the same inputs (``q, k, v`` rounded to bf16): relative
RMS error of the output and of every gradient (q, k, v, eta, alpha, delta, the initial weights); the table gives
the output's and the worst gradient's. Writes ``reports/benchmarks/miras_precision_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kernels.miras import PRESETS, naive_chunk_miras, weight_shapes
from kernels.miras.naive import simplex
from kernels.utils import git_tag, relative_rms, write_record

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp32", "tf32", "bf16", "autocast")
GRADS = ("dq", "dk", "dv", "deta", "dalpha", "ddelta", "dW1", "dW2")


def _round(a: np.ndarray, mode: str) -> np.ndarray:
    """fp32 ``a`` rounded to the operand precision of ``mode`` (kept in fp32)."""
    if mode == "fp32" or a.dtype != np.float32:
        return a
    u = np.ascontiguousarray(a).view(np.uint32).astype(np.uint64)
    if mode == "tf32":
        u = (u + 0x1000) & 0xFFFFE000
    else:
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).reshape(a.shape)


@contextlib.contextmanager
def operands(mode: str):
    """Round the operands of every interpreted ``tl.dot`` to ``mode`` while inside."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    original = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        a = interpreter.TensorHandle(_round(a.data, mode), a.dtype)
        b = interpreter.TensorHandle(_round(b.data, mode), b.dtype)
        return original(self, a, b, d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot
    try:
        yield
    finally:
        builder.create_dot = original


def make_inputs(preset: str, T: int, B: int = 2, H: int = 2, D: int = 16, seed: int = 0):
    """``q, k, v`` rounded to bf16 (l2-normalised ``q, k``) but held in fp32, so that outputs and gradients are not
    rounded again and only the products differ between modes; fp32 channel-wise gates and ``delta`` in the ranges
    of the tests, and a random initial memory (the simplex for ``kl``)."""
    spec = PRESETS[preset]
    gen = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1).bfloat16().float() for _ in range(2))
    v = torch.randn(B, T, H, D, generator=gen).bfloat16().float()
    eta_max = 0.1 if spec.retention == "kl" else 0.5
    eta = eta_max * torch.rand(B, T, H, D, generator=gen)
    alpha = 0.7 + 0.3 * torch.rand(B, T, H, D, generator=gen)
    delta = 0.2 + torch.rand(B, T, H, D, generator=gen)
    weights = [torch.randn(B, H, *s, generator=gen) / s[0] ** 0.5 for s in weight_shapes(spec, D, D)]
    if spec.retention == "kl":
        weights = [simplex(w, spec) for w in weights]
    return spec, [q, k, v, eta, alpha, delta], weights


def run(fn, spec, inputs, weights, dtype=None, chunk_size: int = 64):
    """Output and gradients of ``<o, do> + <W_final, dW>`` for fixed random ``do, dW``."""
    xs = [(x.to(dtype) if dtype else x).detach().requires_grad_() for x in inputs]
    ws = [(w.to(dtype) if dtype else w).detach().requires_grad_() for w in weights]
    key = "accumulator" if spec.retention == "lq" else "weights"
    o, final = fn(*xs[:5], spec, xs[5], {key: tuple(ws)}, True, chunk_size=chunk_size)
    flat = torch.cat([w.flatten() for w in final["weights"]])
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(o.shape, generator=gen).to(o)
    dw = torch.randn(flat.shape, generator=gen).to(flat)
    grads = torch.autograd.grad((o * do).sum() + (flat * dw).sum(), [*xs, *ws], allow_unused=True)
    return o, grads


def measure(preset: str, T: int, modes, chunk_size: int) -> list[dict]:
    from kernels.miras.chunk import chunk_miras

    spec, inputs, weights = make_inputs(preset, T)
    ref_o, ref_grads = run(naive_chunk_miras, spec, inputs, weights, torch.float64, chunk_size)
    rows = []
    for mode in modes:
        if mode == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                o, grads = run(naive_chunk_miras, spec, inputs, weights, chunk_size=chunk_size)
        else:
            with operands(mode):
                o, grads = run(chunk_miras, spec, inputs, weights, chunk_size=chunk_size)
        errors = {
            name: relative_rms(r, g.float())
            for name, r, g in zip(GRADS, ref_grads, grads, strict=True)
            if r is not None and r.abs().max() > 0
        }
        worst = max(errors, key=lambda n: errors[n] if np.isfinite(errors[n]) else np.inf)
        row = {"preset": preset, "T": T, "chunk": chunk_size, "mode": mode, "o": relative_rms(ref_o, o.float())}
        rows.append(row | {"worst_grad": worst, "worst_grad_error": errors[worst], "grads": errors})
        print(rows[-1], flush=True)
    return rows


def to_markdown(record: dict) -> str:
    lines = [
        "# Miras chunk kernels: product precision and gradient error (CPU emulation)",
        "",
        f"triton {record['triton']}; torch {record['torch']}; git {record['git']}. Command: `{record['command']}`.",
        "Relative RMS error against `naive_chunk_miras` in fp64 on the same inputs (q, k, v rounded to bf16, held in",
        "fp32; B = 2, H = 2, D = 16).",
        "`fp32`: the kernel as committed (tf32x3 products); `tf32`, `bf16`: the kernel with its product operands",
        "rounded so; `autocast`: `naive_chunk_miras` under bf16 autocast.",
        "",
        "| preset | T | chunk | products | o | worst gradient | its error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['preset']} | {r['T']} | {r['chunk']} | {r['mode']} | {r['o']:.2e} | {r['worst_grad']} | "
            f"{r['worst_grad_error']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_precision", description=__doc__)
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["yaad", "memora"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--length", type=int, default=130)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("needs the Triton interpreter: run it as TRITON_INTERPRET=1 python -m benchmarks.miras_precision")
    import triton

    record = {
        "command": " ".join(
            ["TRITON_INTERPRET=1 python -m benchmarks.miras_precision", *(sys.argv[1:] if argv is None else argv)]
        ),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "git": git_tag(REPO),
        "results": [],
    }
    for preset in args.presets:
        record["results"] += measure(preset, args.length, args.modes, args.chunk_size)
    stem = args.out / "miras_precision_cpu"
    write_record(stem, record, to_markdown(record))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
