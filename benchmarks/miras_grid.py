"""``python -m benchmarks.miras_grid``: how many programs each Miras chunk kernel launches, and how long each walks.

Today's chunk kernels run one program per (sequence, head), times the value blocks for the linear memory, and
every program walks all ``T / chunk`` chunks of its sequence in order. At fla's benchmark shape
(``B = 4, T = 4096, H = 16``) and at one long sequence (``B = 1, T = 32768``) that is far fewer programs than an
H100 has streaming multiprocessors (132), each doing many serial steps: the gap a chunk-parallel kernel closes.
Pure arithmetic on the kernels' own :func:`kernels.miras.chunk.program_grid`; writes
``reports/benchmarks/miras_launch_grid.{md,json}``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from kernels.miras import PRESETS
from kernels.miras.chunk import program_grid
from kernels.utils import git_tag, write_record

REPO = Path(__file__).resolve().parents[1]
SHAPES = ((4, 4096, 16), (1, 32768, 16))
"""``(B, T, H)``: fla's benchmark batch and one long sequence."""
H100_SMS = 132
CHUNK = 64


def rows(presets=("moneta", "yaad", "memora", "moneta_linear", "yaad_linear", "memora_linear"), dims=(64, 128)):
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


def markdown(table: list[dict], git: str) -> str:
    lines = [
        "# Miras chunk kernels: launch grid",
        "",
        f"`python -m benchmarks.miras_grid` (git {git}). Forward and backward launch the same grid; decoding "
        f"(`fused_recurrent_miras`) launches one program per (sequence, head). Chunks of {CHUNK}; an H100 has "
        f"{H100_SMS} SMs.",
        "",
        "| preset | D | B x T x H | grid | programs | programs per SM | chunks walked per program | decode programs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(
            f"| {r['preset']} | {r['D']} | {r['B']} x {r['T']} x {r['H']} | {tuple(r['grid'])} | {r['programs']} | "
            f"{r['per_sm']:.2f} | {r['chunks_per_program']} | {r['decode_programs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_grid", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    table, git = rows(), git_tag(REPO)
    write_record(args.out / "miras_launch_grid", {"git": git, "chunk": CHUNK, "rows": table}, markdown(table, git))
    print(f"wrote {args.out / 'miras_launch_grid'}.{{md,json}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
