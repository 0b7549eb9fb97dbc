"""Registers, spills and shared memory of the Miras Triton kernels on a GPU target, compiled ahead of time.

    python -m benchmarks.miras_resources                  # every kernel, D = 64 and 128, l2 and kl retention, sm_90a
    python -m benchmarks.miras_resources --kernels mlp_bwd --head-dims 128 --retentions lq --num-warps 8

Needs no GPU: Triton compiles each kernel for ``--arch`` and ``ptxas -v`` (the one bundled with Triton) reports
what one program uses. A kernel whose shared memory exceeds the device's per-block limit does not launch at all
(``fits``); a spill means the program's tensors do not fit the register file, the next number the performance
work has to move. Compiling takes a minute or two per kernel on a CPU. Writes
``reports/benchmarks/miras_resources_<arch>.{json,md}`` (Triton version, git sha), rewritten after each kernel.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.miras.fused_recurrent_mlp import DECODE_WARPS
from kernels.utils import git_tag, write_record

REPO = Path(__file__).resolve().parents[1]
BF16_POINTERS = ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr")
"""Inputs and output in bf16, as in training; gates, states and gradients are fp32."""
INT_ARGS = ("T", "position", "chunk_size", "key_block")
SHARED_LIMIT = {"sm_90a": 232448, "sm_90": 232448, "sm_80": 166912}
"""Largest shared memory one block may use (bytes): H100/H200 227 KB, A100 163 KB."""


def _kernels():
    from kernels.miras import chunk, chunk_mlp, fused_recurrent, fused_recurrent_mlp

    return {
        "linear_fwd": (chunk._fwd_kernel, {"HAS_H0": False, "STORE_HT": False}),
        "linear_bwd": (chunk._bwd_kernel, {"HAS_H0": False, "HAS_DHT": False}),
        "mlp_fwd": (chunk_mlp._mlp_fwd_kernel, {"STORE_STATES": True}),
        "mlp_bwd": (chunk_mlp._mlp_bwd_kernel, {"HAS_DHT": False}),
        "linear_decode": (fused_recurrent._fused_recurrent_kernel, {}),
        "mlp_decode": (fused_recurrent_mlp._mlp_recurrent_kernel, {}),
    }


KERNELS = ("linear_fwd", "linear_bwd", "mlp_fwd", "mlp_bwd", "linear_decode", "mlp_decode")
RETENTIONS = ("none", "l2", "lq", "kl")


def constexprs(name: str, head_dim: int, chunk: int, extra: dict, retention: str = "l2") -> dict:
    """The specialisation compiled: l2 bias, channel-wise gates, no varlen, 16 heads, and ``retention``."""
    from kernels.miras.chunk_mlp import tile_e
    from kernels.miras.common import RETENTION_CODES

    common = {"BT": chunk, "BIAS": 1, "RETENTION": RETENTION_CODES[retention], "LQ_ROW": False}
    common |= {"HAS_ALPHA": retention != "none", "HAS_DELTA": False, "IS_VARLEN": False, "H": 16, **extra}
    if name.startswith("linear"):
        from kernels.miras.chunk import value_block
        from kernels.miras.spec import MemorySpec

        BV = value_block(MemorySpec(arch="linear", retention=retention), head_dim, head_dim)
        linear = common | {"K": head_dim, "V": head_dim, "BK": head_dim, "BV": BV}
        if name == "linear_decode":
            return {k: v for k, v in linear.items() if k not in ("BT", "IS_VARLEN")}
        return linear
    E = 4 * head_dim
    BET = min(E, tile_e(head_dim))
    mlp = {"D": head_dim, "E": E, "BD": head_dim, "BW": max(head_dim, chunk), "BET": BET, "NE": E // BET}
    if name == "mlp_decode":
        from kernels.miras.fused_recurrent_mlp import CHUNK_ONLY

        return {k: v for k, v in (common | mlp).items() if k not in CHUNK_ONLY} | {"ACT": 0}
    return common | mlp | {"ACT": 0}


def _ptxas(ptx: str, arch: str) -> dict:
    """``ptxas -v`` of ``ptx`` with whichever bundled ptxas accepts its PTX version."""
    binaries = sorted((Path(triton.__file__).parent / "backends" / "nvidia" / "bin").glob("ptxas*"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        for ptxas in binaries:
            out = subprocess.run(
                [str(ptxas), "-v", f"--gpu-name={arch}", str(path), "-o", str(Path(tmp) / "kernel.cubin")],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                text = out.stderr + out.stdout
                numbers = {
                    "registers": r"Used (\d+) registers",
                    "spill_stores_bytes": r"(\d+) bytes spill stores",
                    "spill_loads_bytes": r"(\d+) bytes spill loads",
                    "stack_bytes": r"(\d+) bytes stack frame",
                }
                found = {key: re.search(pattern, text) for key, pattern in numbers.items()}
                return {key: int(m.group(1)) for key, m in found.items() if m} | {"ptxas": ptxas.name}
    raise RuntimeError(f"no bundled ptxas ({', '.join(b.name for b in binaries)}) assembles this PTX")


def compile_kernel(
    name: str,
    head_dim: int,
    chunk: int,
    arch: str,
    num_warps: int,
    num_stages: int,
    retention: str = "l2",
) -> dict:
    """One row: shared memory from Triton, registers and spills from ptxas, and whether it fits ``arch``."""
    kernel, extra = _kernels()[name]
    fn = kernel if hasattr(kernel, "params") else kernel.fn
    consts = constexprs(name, head_dim, chunk, extra, retention)
    signature = {}
    for param in fn.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name.endswith("_ptr"):
            signature[param.name] = "*bf16" if param.name in BF16_POINTERS else "*fp32"
        else:
            signature[param.name] = "i32" if param.name in INT_ARGS else "fp32"
    missing = [n for n, kind in signature.items() if kind == "constexpr" and n not in consts]
    if missing:
        raise ValueError(f"{name}: no value for constexpr {missing}")
    source = ASTSource(fn, signature=signature, constexprs={n: consts[n] for n in signature if n in consts})
    capability = int(re.sub(r"\D", "", arch))
    compiled = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )
    row = {"kernel": name, "head_dim": head_dim, "chunk": chunk, "retention": retention}
    row |= {"num_warps": num_warps, "num_stages": num_stages}
    shared = compiled.metadata.shared
    fits = shared <= SHARED_LIMIT[arch] if arch in SHARED_LIMIT else None
    return row | {"shared_bytes": shared, "fits": fits, **_ptxas(compiled.asm["ptx"], arch)}


def to_markdown(record: dict) -> str:
    limit = SHARED_LIMIT.get(record["arch"])
    lines = [
        "# Miras Triton kernels: registers, spills and shared memory per program",
        "",
        f"Target {record['arch']}; triton {record['triton']}; git {record['git']}. Command: `{record['command']}`.",
        "Specialisation: l2 bias, channel-wise gates, bf16 q, k, v, o, do; fp32 states, products (tf32x3) and",
        "accumulation. " + (f"fits: shared memory within the {limit} B a block may use." if limit else ""),
        "",
        "| kernel | D | chunk | retention | warps | stages | registers | spill stores B | spill loads B | stack B "
        "| shared B | fits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = ("registers", "spill_stores_bytes", "spill_loads_bytes", "stack_bytes", "shared_bytes", "fits")
    for r in record["results"]:
        head = [r["kernel"], r["head_dim"], r["chunk"], r["retention"], r["num_warps"], r["num_stages"]]
        cells = [r.get(k, "-") for k in keys[:-1]] + [{True: "yes", False: "**no**", None: "-"}[r.get("fits")]]
        lines.append("| " + " | ".join(str(c) for c in head + cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_resources", description=__doc__)
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--head-dims", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--retentions", nargs="+", choices=RETENTIONS, default=["l2", "kl"])
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument(
        "--num-warps", type=int, help="default: 4 (the autotuner's first config), DECODE_WARPS for decoding"
    )
    parser.add_argument("--num-stages", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "arch": args.arch,
        "triton": triton.__version__,
        "git": git_tag(REPO),
        "command": f"python -m benchmarks.miras_resources {command}".strip(),
        "results": [],
    }
    stem = args.out / f"miras_resources_{args.arch}"
    for name in args.kernels:
        for head_dim in args.head_dims:
            for retention in args.retentions:
                warps = args.num_warps or (DECODE_WARPS if name.endswith("_decode") else 4)
                row = compile_kernel(name, head_dim, args.chunk_size, args.arch, warps, args.num_stages, retention)
                record["results"].append(row)
                print(json.dumps(row), flush=True)
                write_record(stem, record, to_markdown(record))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
