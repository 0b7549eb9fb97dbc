"""TTT-Linear and TTT-MLP (Sun et al. 2024): pure-torch references, TTT-Linear matching fla's ``chunk_ttt_linear``."""

from kernels.ttt.naive import naive_chunk_ttt_linear, naive_chunk_ttt_mlp, naive_recurrent_ttt_linear

__all__ = ["naive_chunk_ttt_linear", "naive_chunk_ttt_mlp", "naive_recurrent_ttt_linear"]
