"""Test-time regression layers (Wang, Shi, Fox 2025) in pure torch: linear attention with output norm, recursive
least squares (recurrent and parallel), softmax attention as Nadaraya-Watson regression, NLMS, Longhorn and
Leaky LMS. Each vectorised op has a per-token ``naive_*`` specification beside it."""

from kernels.ttr.naive import (
    NORMS,
    linear_attention,
    naive_nadaraya_watson,
    naive_recurrent_linear_attention,
    naive_softmax_attention,
    output_norm,
    softmax_attention,
    softmax_scale,
)
from kernels.ttr.rls import discounted_cumsum, naive_rls, rls_chunk, rls_parallel, rls_recurrent
from kernels.ttr.sgd import (
    gated_deltanet_to_leaky_lms,
    leaky_lms,
    leaky_lms_to_gated_deltanet,
    longhorn,
    longhorn_step_size,
    naive_longhorn,
    naive_nlms,
    nlms,
    nlms_step_size,
)

__all__ = [
    "NORMS",
    "discounted_cumsum",
    "gated_deltanet_to_leaky_lms",
    "leaky_lms",
    "leaky_lms_to_gated_deltanet",
    "linear_attention",
    "longhorn",
    "longhorn_step_size",
    "naive_longhorn",
    "naive_nadaraya_watson",
    "naive_nlms",
    "naive_recurrent_linear_attention",
    "naive_rls",
    "naive_softmax_attention",
    "nlms",
    "nlms_step_size",
    "output_norm",
    "rls_chunk",
    "rls_parallel",
    "rls_recurrent",
    "softmax_attention",
    "softmax_scale",
]
