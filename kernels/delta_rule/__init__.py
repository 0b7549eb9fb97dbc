"""The (gated) delta rule of DeltaNet and Gated DeltaNet: torch references."""

from kernels.delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

__all__ = ["naive_chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule"]
