"""The launch-grid report counts the programs the chunk kernels really launch."""

from benchmarks.miras_grid import markdown, rows
from kernels.miras import PRESETS
from kernels.miras.chunk import program_grid, value_block


def test_grid_counts_programs_and_serial_chunks():
    table = {(r["preset"], r["D"], r["B"]): r for r in rows()}
    mlp = table["moneta", 64, 4]
    assert mlp["grid"] == [4, 16] and mlp["programs"] == 64 and mlp["chunks_per_program"] == 64
    assert table["moneta", 64, 1]["chunks_per_program"] == 512
    linear = table["yaad_linear", 128, 4]
    blocks = -(-128 // value_block(PRESETS["yaad_linear"], 128, 128))
    assert linear["programs"] == 4 * 16 * blocks and program_grid(PRESETS["moneta"], 4, 16, 64, 64) == (4, 16)
    assert "| moneta | 64 | 4 x 4096 x 16 | (4, 16) | 64 | 0.48 | 64 | 64 |" in markdown(rows(), "abc")
