from kernels.gla.naive import naive_chunk_gla, naive_recurrent_gla, naive_selective_scan

__all__ = ["naive_chunk_gla", "naive_recurrent_gla", "naive_selective_scan"]
