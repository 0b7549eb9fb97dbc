"""Miras associative memories (Moneta, Yaad, Memora and the whole design space): torch references."""

from kernels.miras.naive import naive_chunk_miras, naive_recurrent_miras
from kernels.miras.spec import MEMORA, MONETA, PRESETS, YAAD, MemorySpec, weight_shapes

__all__ = [
    "MEMORA",
    "MONETA",
    "PRESETS",
    "YAAD",
    "MemorySpec",
    "naive_chunk_miras",
    "naive_recurrent_miras",
    "weight_shapes",
]
