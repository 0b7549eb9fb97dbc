"""Higher-order (p = 1, local-linear) softmax attention of test-time regression: torch references and Triton op."""

from kernels.hosa.naive import DEFAULT_RIDGE, naive_hosa, naive_hosa_block
from kernels.hosa.parallel import DEFAULT_CG_ITERS, ParallelHOSAFunction, parallel_hosa

__all__ = [
    "DEFAULT_CG_ITERS",
    "DEFAULT_RIDGE",
    "ParallelHOSAFunction",
    "naive_hosa",
    "naive_hosa_block",
    "parallel_hosa",
]
