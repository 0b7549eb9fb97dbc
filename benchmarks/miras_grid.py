"""``python -m benchmarks.miras_grid``: how many programs each Miras chunk kernel launches, and how long each walks.

A kernel with one program per (sequence, head) walks all ``T / chunk`` chunks of its sequence in order (the MLP
memory's state passes, first table). At fla's benchmark shape (``B = 4, T = 4096, H = 16``) and at one long sequence
(``B = 1, T = 32768``) that is far fewer programs than an H100 has streaming multiprocessors (132), each doing many
serial steps: the gap a chunk-parallel kernel closes. The linear memory runs on such kernels
(``kernels/miras/chunk_linear.py``): two state passes per (sequence, head, value block) and three kernels over
every chunk, listed in a second table. The MLP memory runs split the same way at every retention
(``kernels/miras/chunk_mlp.py``: in the forward a state pass and a read over every chunk, in the backward a
chunk-parallel part through the reads and a serial part through the writes), in a third. Pure arithmetic on
the kernels' own :func:`kernels.miras.chunk.program_grid`,
:func:`kernels.miras.chunk_linear.launch_grids` and :func:`kernels.miras.chunk_mlp.launch_grids`; writes
``reports/benchmarks/miras_launch_grid.{md,json}``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from kernels.miras import PRESETS, MemorySpec, chunk_mlp
from kernels.miras.chunk import program_grid
from kernels.miras.chunk_linear import covers, launch_grids
from kernels.utils import git_tag, write_record

REPO = Path(__file__).resolve().parents[1]
SHAPES = ((4, 4096, 16), (1, 32768, 16))
"""``(B, T, H)``: fla's benchmark batch and one long sequence."""
H100_SMS = 132
CHUNK = 64
CHUNK_PARALLEL = {
    **{name: PRESETS[name] for name in ("moneta_linear", "yaad_linear", "memora_linear")},
    "l2 bias, l2 retention": MemorySpec(arch="linear"),
}
"""Linear memories on ``chunk_linear.py``: the presets' (Moneta's lq scale and Yaad's head switch keep whole value
rows; Memora's splits them) and the delta-rule-like one, whose value axis splits into blocks."""


def rows(presets=("moneta", "yaad", "memora"), dims=(64, 128)):
    """One row per preset, head size and shape: the chunk kernels' grid, programs, and chunks each walks."""
    out = []
    for name in presets:
        spec = PRESETS[name]
        for D in dims:
            for B, T, H in SHAPES:
                grid = program_grid(spec, B, H, D, D)
                programs = math.prod(grid)
                out.append(
                    {
                        "preset": name,
                        "D": D,
                        "B": B,
                        "T": T,
                        "H": H,
                        "grid": list(grid),
                        "programs": programs,
                        "per_sm": programs / H100_SMS,
                        "chunks_per_program": math.ceil(T / CHUNK),
                        "decode_programs": B * H,
                    }
                )
    return out


def chunk_parallel_rows(specs=CHUNK_PARALLEL, dims=(64, 128)):
    """One row per spec, head size, shape and kernel of ``chunk_linear.py``: its grid, programs and chunks each
    walks (1 for the chunk-parallel kernels)."""
    out = []
    for name, spec in specs.items():
        if not covers(spec):
            raise ValueError(f"{name} does not run on the chunk-parallel kernels")
        for D in dims:
            for B, T, H in SHAPES:
                n_chunks = B * math.ceil(T / CHUNK)
                grids = launch_grids(B, n_chunks, H, program_grid(spec, B, H, D, D)[-1])
                for kernel, grid in grids.items():
                    out.append(
                        {
                            "memory": name,
                            "D": D,
                            "B": B,
                            "T": T,
                            "H": H,
                            "kernel": kernel,
                            "grid": list(grid),
                            "programs": math.prod(grid),
                            "per_sm": math.prod(grid) / H100_SMS,
                            "chunks_per_program": math.ceil(T / CHUNK) if kernel.endswith("state") else 1,
                        }
                    )
    return out


def mlp_rows(presets=("moneta", "yaad", "memora"), dims=(64, 128)):
    """One row per MLP preset, head size, shape and kernel of ``chunk_mlp.launch_grids``."""
    out = []
    for name in presets:
        for D in dims:
            for B, T, H in SHAPES:
                for kernel, grid in chunk_mlp.launch_grids(B, B * math.ceil(T / CHUNK), H).items():
                    programs = math.prod(grid)
                    walks = {"fwd_output": 1, "bwd_read": math.ceil(B * math.ceil(T / CHUNK) / grid[0])}
                    walks = walks.get(kernel, math.ceil(T / CHUNK))
                    row = {"memory": name, "D": D, "B": B, "T": T, "H": H, "kernel": kernel, "grid": list(grid)}
                    out.append(row | {"programs": programs, "per_sm": programs / H100_SMS, "chunks_per_program": walks})
    return out


def markdown(
    table: list[dict], git: str, chunk_parallel: list[dict] | None = None, mlp: list[dict] | None = None
) -> str:
    lines = [
        "# Miras chunk kernels: launch grid",
        "",
        f"`python -m benchmarks.miras_grid` (git {git}). The MLP memory's state passes (forward `fwd_state`, "
        "backward `bwd_carry`) launch this grid (its other kernels run per chunk, third table; the linear memory "
        "runs on the chunk-parallel kernels of the second); decoding (`fused_recurrent_miras`) launches one "
        f"program per (sequence, head). Chunks of {CHUNK}; an H100 has {H100_SMS} SMs.",
        "",
        "| preset | D | B x T x H | grid | programs | programs per SM | chunks walked per program | decode programs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(
            f"| {r['preset']} | {r['D']} | {r['B']} x {r['T']} x {r['H']} | {tuple(r['grid'])} | {r['programs']} | "
            f"{r['per_sm']:.2f} | {r['chunks_per_program']} | {r['decode_programs']} |"
        )
    if chunk_parallel:
        lines += _chunk_parallel_markdown(chunk_parallel)
    if mlp:
        lines += _mlp_markdown(mlp)
    return "\n".join(lines) + "\n"


def _kernel_table(table: list[dict]) -> list[str]:
    """The rows of a per-kernel grid table."""
    lines = [
        "| memory | D | B x T x H | kernel | grid | programs | programs per SM | chunks walked per program |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(
            f"| {r['memory']} | {r['D']} | {r['B']} x {r['T']} x {r['H']} | `{r['kernel']}` | {tuple(r['grid'])} | "
            f"{r['programs']} | {r['per_sm']:.2f} | {r['chunks_per_program']} |"
        )
    return lines


def _chunk_parallel_markdown(table: list[dict]) -> list[str]:
    lines = [
        "",
        "## Chunk-parallel linear memory (`kernels/miras/chunk_linear.py`)",
        "",
        "The state passes (`fwd_state`, `bwd_state`) run one program per (sequence, head, value block) and walk the "
        "chunks in order; `fwd_output`, `bwd_read` and `bwd_grads` run one program per (chunk, head, value block). "
        "Moneta's lq scale and Huber's head switch keep whole value rows (registers, spills and shared memory of the "
        "five kernels: "
        "[miras_resources_sm_90a.md](miras_resources_sm_90a.md)).",
        "",
    ]
    return lines + _kernel_table(table)


def _mlp_markdown(table: list[dict]) -> list[str]:
    lines = [
        "",
        "## MLP memory (`kernels/miras/chunk_mlp.py`)",
        "",
        "The forward runs a state pass (`fwd_state`, one program per (sequence, head), walking the chunks in order; "
        "Memora's takes each chunk's lag step there) and a read per (chunk, head) (`fwd_output`). The backward is "
        "linear in the gradients of the outputs and of the end state, so it runs in two parts: `bwd_read`, per "
        "(chunk, head), each chunk's gradient through its reads, up to `chunk_mlp.BWD_READ_PROGRAMS` programs that "
        "stride over the chunks past that; then `bwd_carry`, per (sequence, head), carries the weight gradient "
        "through the writes, walking the chunks in reverse (Memora's lag step there). Serial share of the "
        "multiply-adds: [miras_mlp_split.md](miras_mlp_split.md).",
        "",
    ]
    return lines + _kernel_table(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_grid", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    table, parallel, mlp, git = rows(), chunk_parallel_rows(), mlp_rows(), git_tag(REPO)
    record = {"git": git, "chunk": CHUNK, "rows": table, "chunk_parallel": parallel, "mlp": mlp}
    write_record(args.out / "miras_launch_grid", record, markdown(table, git, parallel, mlp))
    print(f"wrote {args.out / 'miras_launch_grid'}.{{md,json}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
