"""``python -m benchmarks.front_end``: every Triton kernel of the repo through Triton's front end, for a GPU target.

The tests run the kernels under the CPU interpreter, which executes them as Python: a kernel that reads a plain
global, or whose branches give a value two types, passes there and fails the first GPU compile. This runs each
kernel at the specialisations it is launched with through ``kernels.utils.front_end``: the Miras kernels at every
retention they serve (Memora's tangent read included), higher-order attention at every input precision, both at D = 64
and 128. Seconds, no GPU; run it where ``TRITON_INTERPRET`` is unset. A failure raises Triton's compilation error,
which points at the kernel's line.
"""

from __future__ import annotations

import argparse
import sys

HEAD_DIMS = (64, 128)
BF16 = ("q_ptr", "k_ptr", "v_ptr", "y_ptr", "dy_ptr", "dq_ptr", "dk_ptr", "dv_ptr")
"""HOSA's inputs, output and their gradients in bf16, as in training; residuals are fp32."""


def miras(arch: str) -> list[str]:
    from benchmarks import miras_resources as resources

    done = []
    for name in resources.KERNELS:
        for head_dim in HEAD_DIMS:
            for retention in resources.serves(name):
                resources.front_end(name, head_dim, retention, arch=arch)
        done.append(f"{name} at {', '.join(resources.serves(name))}")
    return done


def hosa(arch: str) -> list[str]:
    from kernels.hosa import parallel
    from kernels.utils import front_end, signature

    done = []
    for kernel in (parallel._hosa_fwd_kernel, parallel._hosa_bwd_query_kernel, parallel._hosa_bwd_key_kernel):
        for head_dim in HEAD_DIMS:
            for precision in parallel.INPUT_PRECISIONS:
                consts = {"BK": head_dim, "BV": head_dim, "PREC": precision, "BT": 64, "BS": 64}
                front_end(kernel, signature(kernel, BF16, i32=("T", "H", "K", "V", "cg_iters")), consts, arch)
        done.append(f"{kernel.__name__} at {', '.join(parallel.INPUT_PRECISIONS)}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.front_end", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90a")
    args = parser.parse_args(argv)
    for family in (miras, hosa):
        for line in family(args.arch):
            print(f"front end passes: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
