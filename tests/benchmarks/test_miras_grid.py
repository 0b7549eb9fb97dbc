"""The launch-grid report counts the programs the chunk kernels really launch."""

from benchmarks.miras_grid import chunk_parallel_rows, markdown, mlp_rows, rows
from kernels.miras import PRESETS
from kernels.miras.chunk import program_grid, value_block


def test_grid_counts_programs_and_serial_chunks():
    table = {(r["preset"], r["D"], r["B"]): r for r in rows()}
    mlp = table["moneta", 64, 4]
    assert mlp["grid"] == [4, 16] and mlp["programs"] == 64 and mlp["chunks_per_program"] == 64
    assert table["moneta", 64, 1]["chunks_per_program"] == 512
    assert program_grid(PRESETS["moneta"], 4, 16, 64, 64) == (4, 16) and ("yaad_linear", 64, 4) not in table
    assert "| moneta | 64 | 4 x 4096 x 16 | (4, 16) | 64 | 0.48 | 64 | 64 |" in markdown(rows(), "abc")


def test_chunk_parallel_grids_cover_every_chunk():
    table = {(r["memory"], r["D"], r["B"], r["kernel"]): r for r in chunk_parallel_rows()}
    state = table["l2 bias, l2 retention", 128, 4, "fwd_state"]
    assert state["grid"] == [4, 16, 4] and state["chunks_per_program"] == 64
    grads = table["l2 bias, l2 retention", 128, 1, "bwd_grads"]
    assert grads["grid"] == [512, 16, 4] and grads["programs"] == 32768 and grads["chunks_per_program"] == 1
    assert table["yaad_linear", 64, 4, "fwd_output"]["programs"] == 4 * 64 * 16
    blocks = -(-128 // value_block(PRESETS["memora_linear"], 128, 128))
    assert table["memora_linear", 128, 4, "bwd_state"]["programs"] == 4 * 16 * blocks == 256
    assert "## Chunk-parallel linear memory" in markdown(rows(), "abc", chunk_parallel_rows())


def test_mlp_split_forward_reads_every_chunk():
    table = {(r["memory"], r["D"], r["B"], r["kernel"]): r for r in mlp_rows()}
    assert (
        table["yaad", 64, 4, "fwd_state"]["grid"] == [4, 16]
        and table["yaad", 64, 4, "fwd_state"]["chunks_per_program"] == 64
    )
    read = table["moneta", 128, 1, "fwd_output"]
    assert read["grid"] == [512, 16] and read["chunks_per_program"] == 1
    assert table["memora", 64, 4, "fwd_output"]["grid"] == [256, 16] and ("memora", 64, 4, "fwd") not in table
    assert "## MLP memory" in markdown(rows(), "abc", None, mlp_rows())


def test_mlp_backward_read_strides_over_the_chunks():
    table = {(r["memory"], r["D"], r["B"], r["kernel"]): r for r in mlp_rows()}
    read = table["moneta", 64, 4, "bwd_read"]
    assert read["grid"] == [64, 16] and read["programs"] == 1024 and read["chunks_per_program"] == 4
    assert table["memora", 64, 1, "bwd_read"]["chunks_per_program"] == 8
    assert table["memora", 64, 1, "bwd_carry"]["grid"] == [1, 16]
    assert table["memora", 64, 1, "bwd_carry"]["chunks_per_program"] == 512
