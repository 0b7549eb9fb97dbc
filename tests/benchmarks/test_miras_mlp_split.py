"""The MLP split count adds up the products of the chunk kernels as the module lists them."""

from benchmarks.miras_mlp_split import (
    BACKWARD,
    FORWARD,
    MEMORIES,
    SPLIT_BACKWARD,
    SPLIT_FORWARD,
    decay_product,
    markdown,
    rows,
    split,
)


def test_decay_products_halve_down_to_blocks():
    assert decay_product(16, 1) == 256 and decay_product(32, 1) == 3 * 256 and decay_product(64, 1) == 2560


def test_l2_forward_and_backward_counts():
    b, D, E = 64, 64, 256
    unit = b * D * E
    fwd = split(FORWARD, MEMORIES["yaad"], b, D)
    assert fwd["a"] == 2560 * D
    assert fwd["b"] == 4 * unit + 2560 * D and fwd["c"] == 6 * unit + 2 * D * E and fwd["c_repeat"] == unit
    bwd = split(BACKWARD, MEMORIES["yaad"], b, D)
    assert bwd["c"] == 18 * unit + 2 * D * E and bwd["b_dW"] == 3 * unit + 2 * D * E
    assert bwd["b"] == 26 * unit + 5 * 2560 * D + 2 * D * E
    split_fwd = split(SPLIT_FORWARD, MEMORIES["yaad"], b, D)
    assert split_fwd["c"] == fwd["c"] and split_fwd["b"] == fwd["b"] + unit and split_fwd["b_repeat"] == unit
    split_bwd = split(SPLIT_BACKWARD, MEMORIES["yaad"], b, D)
    assert split_bwd["c"] == 17 * unit + 6 * D * E and split_bwd["a"] == fwd["a"] and split_bwd["b_dW"] == 0
    assert split_bwd["b"] == 33 * unit + 5 * 2560 * D


def test_memora_split_forward_reads_the_lag_row_as_any_other():
    b, D, E = 64, 64, 256
    fwd, split_fwd = (split(ops, MEMORIES["memora"], b, D) for ops in (FORWARD, SPLIT_FORWARD))
    assert split_fwd["c"] == fwd["c"] and split_fwd["a"] == fwd["a"]
    assert split_fwd["b"] == fwd["b"] - b * D * E  # H_1 formed again, the lag row's two products gone


def test_every_memory_and_direction_has_a_row():
    table = rows()
    assert len(table) == 3 * 4 * 2 and all(0 < r["serial_share"] < 1 for r in table)
    assert any(r["memory"] == "memora" and r["direction"] == "forward (split)" for r in table)
    assert "| yaad | l2 | 64 | forward |" in markdown(table, "abc")
