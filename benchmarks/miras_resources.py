"""Registers, spills and shared memory of the Miras Triton kernels on a GPU target, compiled ahead of time.

    python -m benchmarks.miras_resources                  # every kernel, D = 64 and 128, l2, kl and tangent, sm_90a
    python -m benchmarks.miras_resources --kernels mlp_carry_bwd --head-dims 128 --retentions lq --num-warps 8
    python -m benchmarks.miras_resources --kernels chunk_linear --retentions none l2   # the five chunk_linear kernels
    python -m benchmarks.miras_resources --kernels mlp_split --retentions l2       # the MLP memory's split kernels

Needs no GPU: Triton compiles each kernel for ``--arch`` and ``ptxas -v`` (the one bundled with Triton) reports
what one program uses. A kernel whose shared memory exceeds the device's per-block limit does not launch at all
(``fits``); a spill means the program's tensors do not fit the register file, the next number the performance
work has to move. Compiling takes a minute or two per kernel on a CPU. Writes
``reports/benchmarks/miras_resources_<arch>.{json,md}``, rewritten after each kernel. A run merges into the record
already there (``--fresh`` starts over): its rows replace those of the same kernel, D, chunk, retention, warps
and stages, the others stay with the git sha and Triton version they were compiled at. Each row also gives the
kernel's launch grid at ``B = 4, T = 4096, H = 16`` and ``B = 1, T = 32768`` (pure arithmetic on the kernels'
own grid functions, recomputed on every write) and the retentions ``chunk_miras`` / ``fused_recurrent_miras``
run on it.

A kernel is only compiled at the retentions it runs (``serves``). Rows of kernels the code no longer has (the
one-program-per-sequence linear kernels that ``chunk_linear.py`` replaced, the MLP memory's one-program forward
that its split forward replaced) are dropped on the next write.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.miras.fused_recurrent_mlp import DECODE_WARPS
from kernels.utils import front_end as _front_end
from kernels.utils import git_tag, write_record
from kernels.utils import signature as kernel_signature

REPO = Path(__file__).resolve().parents[1]
BF16_POINTERS = ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr")
"""Inputs and output in bf16, as in training; gates, states and gradients are fp32."""
INT_POINTERS = ("cu_ptr", "offsets_ptr", "seq_ptr")
"""The varlen indices (int32; unread here, where ``IS_VARLEN`` is off)."""
INT_ARGS = ("T", "n_total", "position", "chunk_size", "key_block")
SHARED_LIMIT = {"sm_90a": 232448, "sm_90": 232448, "sm_80": 166912}
"""Largest shared memory one block may use (bytes): H100/H200 227 KB, A100 163 KB."""
SHAPES = ((4, 4096, 16), (1, 32768, 16))
"""``(B, T, H)`` of the launch-grid columns: fla's benchmark batch and one long sequence (as
``benchmarks.miras_grid``, whose report ``miras_launch_grid.md`` adds programs per SM and chunks per program)."""

CHUNK_LINEAR = {
    "linear_state_fwd": "fwd_state",
    "linear_output_fwd": "fwd_output",
    "linear_read_bwd": "bwd_read",
    "linear_state_bwd": "bwd_state",
    "linear_grads_bwd": "bwd_grads",
}
"""The chunk-parallel kernels of ``kernels/miras/chunk_linear.py``: report name -> name in ``launch_grids``."""
CHUNK_MLP = {
    "mlp_state_fwd": "fwd_state",
    "mlp_output_fwd": "fwd_output",
    "mlp_read_bwd": "bwd_read",
    "mlp_carry_bwd": "bwd_carry",
}
"""The MLP memory's split kernels (``kernels/miras/chunk_mlp.py``): report name -> name in its ``launch_grids``."""
KERNELS = (*CHUNK_LINEAR, *CHUNK_MLP, "linear_decode", "mlp_decode")
GROUPS = {"chunk_linear": tuple(CHUNK_LINEAR), "mlp_split": tuple(CHUNK_MLP)}
"""Names ``--kernels`` also accepts, for several kernels at once."""
BIASES = ("dot", "l2", "l1", "lp", "huber", "robust")
"""What ``--bias`` takes (``MemorySpec.bias``; Huber in its default mode). The norm-based ones keep whole value
rows in a program (``chunk_linear.whole_rows``)."""
RETENTIONS = ("none", "l2", "lq", "elastic", "kl", "tangent")
"""What ``--retentions`` takes: ``MemorySpec.retention``, and ``tangent`` for Memora's preset, ``kl`` with
``kl_read='tangent'`` (``kl`` alone is the linear read)."""
NOT_CONSTEXPR = {"linear_output_fwd": ("BIAS", "HAS_DELTA"), "mlp_output_fwd": ("BIAS", "HAS_DELTA", "BW")}
"""Keys of the shared specialisation a kernel has no constexpr for: the output kernels never form ``psi``."""


def _kernels():
    from kernels.miras import chunk_linear, chunk_mlp, fused_recurrent, fused_recurrent_mlp

    return {
        "linear_state_fwd": (chunk_linear._fwd_state_kernel, {"HAS_H0": False, "STORE_HT": False}),
        "linear_output_fwd": (chunk_linear._fwd_output_kernel, {}),
        "linear_read_bwd": (chunk_linear._bwd_read_kernel, {}),
        "linear_state_bwd": (chunk_linear._bwd_state_kernel, {"HAS_H0": False, "HAS_DHT": False}),
        "linear_grads_bwd": (chunk_linear._bwd_grad_kernel, {}),
        "mlp_state_fwd": (chunk_mlp._mlp_fwd_state_kernel, {}),
        "mlp_output_fwd": (chunk_mlp._mlp_fwd_output_kernel, {}),
        "mlp_read_bwd": (chunk_mlp._mlp_bwd_kernel, {"HAS_DHT": False, "READ": True, "CARRY": False}),
        "mlp_carry_bwd": (chunk_mlp._mlp_bwd_kernel, {"HAS_DHT": False, "READ": False, "CARRY": True}),
        "linear_decode": (fused_recurrent._fused_recurrent_kernel, {}),
        "mlp_decode": (fused_recurrent_mlp._mlp_recurrent_kernel, {}),
    }


def _spec(name: str, retention: str, bias: str = "l2"):
    from kernels.miras.spec import MemorySpec

    arch = "mlp" if name.startswith("mlp") else "linear"
    if retention == "tangent":
        return MemorySpec(arch=arch, bias=bias, retention="kl", kl_read="tangent")
    return MemorySpec(arch=arch, bias=bias, retention=retention)


def serves(name: str) -> tuple[str, ...]:
    """The retentions (l2 bias) whose memory runs on kernel ``name``: ``chunk_miras`` sends every linear memory to
    ``chunk_linear.py`` and every MLP memory to ``chunk_mlp.py``; decoding takes every retention the chunk kernels
    take but Memora's tangent read."""
    from kernels.miras.chunk import check_supported

    out = []
    for retention in RETENTIONS:
        try:
            check_supported(_spec(name, retention), decoding=name.endswith("_decode"))
        except NotImplementedError:
            continue
        out.append(retention)
    return tuple(out)


def launch_grid(name: str, head_dim: int, retention: str, B: int, T: int, H: int, chunk: int) -> tuple[int, ...]:
    """The programs kernel ``name`` launches for ``B`` sequences of ``T`` tokens and ``H`` heads of ``head_dim``."""
    from kernels.miras import chunk_mlp
    from kernels.miras.chunk import program_grid
    from kernels.miras.chunk_linear import launch_grids

    spec = _spec(name, retention)
    if name.endswith("_decode"):
        return (B, H)  # fused_recurrent_miras(_mlp): one program per (sequence, head)
    grid = program_grid(spec, B, H, head_dim, head_dim)
    if name in CHUNK_LINEAR:
        return launch_grids(B, B * math.ceil(T / chunk), H, grid[-1])[CHUNK_LINEAR[name]]
    if name in CHUNK_MLP:
        return chunk_mlp.launch_grids(B, B * math.ceil(T / chunk), H)[CHUNK_MLP[name]]
    return grid


def constexprs(name: str, head_dim: int, chunk: int, extra: dict, retention: str = "l2", bias: str = "l2") -> dict:
    """The specialisation compiled: channel-wise gates, no varlen, 16 heads, ``retention`` and ``bias`` (with its
    ``delta`` where it reads one)."""
    from kernels.miras.chunk_mlp import tile_e
    from kernels.miras.common import bias_code, chunk_retention

    spec = _spec(name, retention, bias)
    common = {"BT": chunk, "BIAS": bias_code(spec), "RETENTION": chunk_retention(spec), "LQ_ROW": False}
    common |= {"HAS_ALPHA": retention != "none", "HAS_DELTA": spec.needs_delta, "IS_VARLEN": False, "H": 16}
    common |= extra
    if name.startswith("linear"):
        from kernels.miras.chunk import value_block

        BV = value_block(spec, head_dim, head_dim)
        linear = common | {"K": head_dim, "V": head_dim, "BK": head_dim, "BV": BV}
        if name == "linear_decode":  # fused_recurrent_miras: one program per (sequence, head), whole value rows
            linear["BV"] = max(16, triton.next_power_of_2(head_dim))
            return {k: v for k, v in linear.items() if k not in ("BT", "IS_VARLEN")}
        return {k: v for k, v in linear.items() if k not in NOT_CONSTEXPR.get(name, ())}
    E = 4 * head_dim
    BET = min(E, tile_e(head_dim))
    mlp = {"D": head_dim, "E": E, "BD": head_dim, "BW": max(head_dim, chunk), "BET": BET, "NE": E // BET}
    if name == "mlp_decode":
        from kernels.miras.fused_recurrent_mlp import CHUNK_ONLY

        return {k: v for k, v in (common | mlp).items() if k not in CHUNK_ONLY} | {"ACT": 0}
    return {k: v for k, v in (common | mlp | {"ACT": 0}).items() if k not in NOT_CONSTEXPR.get(name, ())}


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


def signature(name: str) -> dict[str, str]:
    """Triton's type of every argument of kernel ``name``: ``constexpr``, bf16 or fp32 pointers, i32 sizes, fp32
    scalars."""
    return kernel_signature(_kernels()[name][0], BF16_POINTERS, INT_POINTERS, INT_ARGS)


def compile_kernel(
    name: str,
    head_dim: int,
    chunk: int,
    arch: str,
    num_warps: int,
    num_stages: int,
    retention: str = "l2",
    bias: str = "l2",
) -> dict:
    """One row: shared memory from Triton, registers and spills from ptxas, and whether it fits ``arch``."""
    kernel, extra = _kernels()[name]
    fn = kernel if hasattr(kernel, "params") else kernel.fn
    consts = constexprs(name, head_dim, chunk, extra, retention, bias)
    types = signature(name)
    missing = [n for n, kind in types.items() if kind == "constexpr" and n not in consts]
    if missing:
        raise ValueError(f"{name}: no value for constexpr {missing}")
    source = ASTSource(fn, signature=types, constexprs={n: consts[n] for n in types if n in consts})
    capability = int(re.sub(r"\D", "", arch))
    compiled = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )
    row = {"kernel": name, "head_dim": head_dim, "chunk": chunk, "retention": retention, "bias": bias}
    row |= {"num_warps": num_warps, "num_stages": num_stages, "BV": consts.get("BV")}
    shared = compiled.metadata.shared
    fits = shared <= SHARED_LIMIT[arch] if arch in SHARED_LIMIT else None
    return row | {"shared_bytes": shared, "fits": fits, **_ptxas(compiled.asm["ptx"], arch)}


def front_end(name: str, head_dim: int, retention: str, chunk: int = 64, arch: str = "sm_90a"):
    """Kernel ``name`` at this specialisation through Triton's front end alone (``kernels.utils.front_end``)."""
    kernel, extra = _kernels()[name]
    consts = constexprs(name, head_dim, chunk, extra, retention)
    types = signature(name)
    return _front_end(kernel, types, {n: consts[n] for n in types if n in consts}, arch)


ROW_KEY = ("kernel", "head_dim", "chunk", "retention", "bias", "num_warps", "num_stages")


def _key(row: dict) -> tuple:
    """What a row was compiled at (rows from before the bias was recorded are l2)."""
    return tuple(row.get(k, "l2") for k in ROW_KEY)


def _order(row: dict) -> tuple:
    kernel = KERNELS.index(row["kernel"]) if row["kernel"] in KERNELS else len(KERNELS)
    retention = RETENTIONS.index(row["retention"]) if row["retention"] in RETENTIONS else len(RETENTIONS)
    bias = row.get("bias", "l2") != "l2"
    return (kernel, row["head_dim"], retention, bias, row["chunk"], row["num_warps"], row["num_stages"])


def annotate(row: dict) -> dict:
    """``row`` with what the current code says about it: the retentions its kernel serves, whether its own
    retention is one of them, and its launch grids (:data:`SHAPES`)."""
    name, retention = row["kernel"], row["retention"]
    grids = {f"{B}x{T}x{H}": list(launch_grid(name, row["head_dim"], retention, B, T, H, row["chunk"]))
             for B, T, H in SHAPES}  # fmt: skip
    return row | {"serves": list(serves(name)), "runs": retention in serves(name), "grids": grids}


def merge(previous: dict | None, record: dict) -> dict:
    """``record`` with the rows of ``previous`` (same arch) that it did not recompile; rows without their own git
    sha or Triton version take those of ``previous``. Sorted by kernel, D, retention."""
    rows = {_key(r): r for r in record["results"]}
    kept, runs = [], []
    if previous is not None and previous.get("arch") == record["arch"]:
        for r in previous.get("results", []):
            if _key(r) not in rows and r["kernel"] in KERNELS:
                kept.append({"git": previous.get("git"), "triton": previous.get("triton")} | r)
        runs = previous.get("runs") or [{k: previous.get(k) for k in ("git", "triton", "command")}]
    this = {k: record[k] for k in ("git", "triton", "command")}
    gits = {r.get("git", record["git"]) for r in kept} | {record["git"]}
    runs = [run for run in runs if run["git"] in gits and run != this] + [this]
    return record | {"runs": runs, "results": sorted([*rows.values(), *kept], key=_order)}


def to_markdown(record: dict) -> str:
    limit = SHARED_LIMIT.get(record["arch"])
    shapes = " and ".join(f"B = {B}, T = {T}, H = {H}" for B, T, H in SHAPES)
    tritons = sorted({r.get("triton", record["triton"]) for r in record["results"]})
    runs = record.get("runs") or [{k: record[k] for k in ("git", "triton", "command")}]
    lines = [
        "# Miras Triton kernels: registers, spills and shared memory per program",
        "",
        f"Target {record['arch']}; triton {', '.join(tritons)}; git {record['git']} (the last run). Each run merges "
        "into the rows already here; the git column names the commit each row was compiled at. Runs: "
        + "; ".join(f"`{run['command']}` at git {run['git']}" for run in runs)
        + ".",
        "Specialisation: the bias column's attentional bias, channel-wise gates, no varlen, 16 heads, bf16 q, k, v, "
        "o, do; fp32 states, "
        "products (tf32x3) and accumulation; BV: value columns per program (linear memory: `chunk.value_block`'s "
        "blocks in the chunk kernels, whole heads in decoding). "
        + (f"fits: shared memory within the {limit} B a block may use." if limit else ""),
        "",
        "`serves`: the retentions whose memory runs on the kernel today. `chunk_miras` sends every linear memory to "
        "the five chunk-parallel kernels of `kernels/miras/chunk_linear.py` (`linear_state_fwd`, "
        "`linear_output_fwd`, `linear_read_bwd`, `linear_state_bwd`, `linear_grads_bwd`). The MLP memory's forward "
        "runs split at every retention (`mlp_state_fwd`, `mlp_output_fwd`; Memora's lag step in the state pass). "
        "Grids: programs launched at "
        f"{shapes} (`chunk.program_grid`, `chunk_linear.launch_grids`, `chunk_mlp.launch_grids`; programs per SM "
        "and chunks walked per "
        "program in [miras_launch_grid.md](miras_launch_grid.md)).",
        "",
    ]
    columns = ["kernel", "D", "chunk", "retention", "serves", "warps", "stages", "BV", "registers", "spill stores B"]
    columns += ["spill loads B", "stack B", "shared B", "fits", *(f"grid {B}x{T}x{H}" for B, T, H in SHAPES), "bias"]
    columns += ["git"]
    lines += ["| " + " | ".join(columns) + " |", "| " + " | ".join(["---"] * len(columns)) + " |"]
    keys = ("registers", "spill_stores_bytes", "spill_loads_bytes", "stack_bytes", "shared_bytes", "fits")
    for r in record["results"]:
        r = annotate(r)
        retention = r["retention"] if r["runs"] else f"{r['retention']} (*not run*)"
        head = [r["kernel"], r["head_dim"], r["chunk"], retention, ", ".join(r["serves"]), r["num_warps"]]
        head += [r["num_stages"], r.get("BV") or "-"]
        cells = [r.get(k, "-") for k in keys[:-1]] + [{True: "yes", False: "**no**", None: "-"}[r.get("fits")]]
        cells += [tuple(r["grids"][f"{B}x{T}x{H}"]) for B, T, H in SHAPES]
        cells += [r.get("bias", "l2"), r.get("git", record["git"])]
        lines.append("| " + " | ".join(str(c) for c in head + cells) + " |")
    return "\n".join(lines) + "\n"


def _names(requested: list[str]) -> list[str]:
    out = []
    for name in requested:
        for kernel in GROUPS.get(name, (name,)):
            if kernel not in out:
                out.append(kernel)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_resources", description=__doc__)
    parser.add_argument("--kernels", nargs="+", choices=[*KERNELS, *GROUPS], default=list(KERNELS))
    parser.add_argument("--head-dims", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--retentions", nargs="+", choices=RETENTIONS, default=["l2", "kl", "tangent"])
    parser.add_argument("--bias", choices=BIASES, default="l2", help="the attentional bias (MemorySpec.bias)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument(
        "--num-warps", type=int, help="default: 4 (the autotuner's first config), DECODE_WARPS for decoding"
    )
    parser.add_argument("--num-stages", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    parser.add_argument("--fresh", action="store_true", help="drop the rows of the record already there")
    args = parser.parse_args(argv)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    git = git_tag(REPO)
    record = {
        "arch": args.arch,
        "triton": triton.__version__,
        "git": git,
        "command": f"python -m benchmarks.miras_resources {command}".strip(),
        "results": [],
    }
    stem = args.out / f"miras_resources_{args.arch}"
    json_path = stem.with_suffix(".json")
    previous = None if args.fresh or not json_path.exists() else json.loads(json_path.read_text())
    for name in _names(args.kernels):
        for head_dim in args.head_dims:
            for retention in args.retentions:
                if retention not in serves(name):
                    print(f"skip {name} at retention {retention}: not among {serves(name)}", flush=True)
                    continue
                warps = args.num_warps or (DECODE_WARPS if name.endswith("_decode") else 4)
                row = compile_kernel(
                    name, head_dim, args.chunk_size, args.arch, warps, args.num_stages, retention, bias=args.bias
                )
                row |= {"git": git, "triton": triton.__version__}
                record["results"].append(row)
                print(json.dumps(row), flush=True)
                merged = merge(previous, record)
                merged["results"] = [annotate(r) for r in merged["results"]]
                write_record(stem, merged, to_markdown(merged))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
