"""Higher-order (p = 1) attention kernel against SDPA causal attention: forward and forward+backward times.

    python -m benchmarks.hosa_speed                      # on a GPU: T in {1024, 4096}, D = 64, bf16
    python -m benchmarks.hosa_speed --out reports/benchmarks

Each method runs on the same inputs ``[B, T, H, D]`` in one process: ``sdpa`` (``F.scaled_dot_product_attention``,
causal; the target is p = 1 within 10x of its forward at T = 4096), ``hosa`` (``parallel_hosa``, Triton, with its
default CG steps) and, where it fits, ``hosa_naive`` (the exact batched solve, ``naive_hosa``). Times are medians
of ``--repeats`` runs after ``--warmup``, synchronised on CUDA; peak memory is the allocator's high-water mark over
one forward+backward. Writes ``hosa_<device>.json`` and ``.md`` with the device, versions and git sha; ratios to
SDPA in one file are the claim. On a CPU (the Triton interpreter) only the harness is meaningful.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from kernels.hosa import naive_hosa, parallel_hosa
from kernels.utils import git_tag, timed, write_record

REPO = Path(__file__).resolve().parents[1]


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)


METHODS: dict[str, Callable] = {"sdpa": sdpa, "hosa": parallel_hosa, "hosa_naive": naive_hosa}


def measure(method: str, shape: tuple[int, int, int, int], dtype, device, warmup: int, repeats: int) -> dict:
    """Forward and forward+backward seconds and peak memory of one method at ``shape = (B, T, H, D)``."""
    fn = METHODS[method]
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=g, device=device, dtype=dtype)

    def forward():
        with torch.no_grad():
            fn(q, k, v)

    def forward_backward():
        out = fn(q, k, v)
        out = out.transpose(1, 2) if method == "sdpa" else out
        torch.autograd.grad(out, (q, k, v), grad)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    try:
        row = {"fwd_s": timed(forward, device, warmup, repeats)}
        row["fwd_bwd_s"] = timed(forward_backward, device, warmup, repeats)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    if device.type == "cuda":
        row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return row


def run(args: argparse.Namespace) -> dict:
    from kernels.utils import device_name

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    results = []
    for T in args.seq_lens:
        shape = (args.batch, T, args.heads, args.head_dim)
        for method in args.methods:
            if method == "hosa_naive" and T > args.naive_max_len:
                continue
            row = measure(method, shape, dtype, device, args.warmup, args.repeats)
            results.append({"method": method, "B": shape[0], "T": T, "H": shape[2], "D": shape[3], **row})
            print(json.dumps(results[-1]), flush=True)
    import triton

    return {
        "device": device_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "git": git_tag(REPO),
        "command": "python -m benchmarks.hosa_speed " + " ".join(args.argv),
        "results": results,
    }


def to_markdown(record: dict) -> str:
    lines = [
        "# Higher-order (p = 1) attention vs SDPA causal attention",
        "",
        f"Device: {record['device']}; {record['dtype']}; torch {record['torch']}, triton {record['triton']}; "
        f"git {record['git']}. Command: `{record['command']}`.",
        "",
        "| method | B | T | H | D | fwd ms | fwd+bwd ms | fwd / SDPA | fwd+bwd / SDPA | peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = {r["T"]: r for r in record["results"] if r["method"] == "sdpa" and "fwd_s" in r}
    for r in record["results"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['B']} | {r['T']} | {r['H']} | {r['D']} | {r['error']} |||||")
            continue
        ref = base.get(r["T"])
        ratios = [f"{r[key] / ref[key]:.1f}x" if ref else "-" for key in ("fwd_s", "fwd_bwd_s")]
        peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "-"
        lines.append(
            f"| {r['method']} | {r['B']} | {r['T']} | {r['H']} | {r['D']} | {1e3 * r['fwd_s']:.3f} | "
            f"{1e3 * r['fwd_bwd_s']:.3f} | {ratios[0]} | {ratios[1]} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.hosa_speed", description=__doc__)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--naive-max-len", type=int, default=1024, help="longest T for the exact batched solve")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    record = run(args)
    stem = args.out / f"hosa_{args.device.split(':')[0]}"
    write_record(stem, record, to_markdown(record))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
