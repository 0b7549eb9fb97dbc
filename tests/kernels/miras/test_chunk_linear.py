"""The chunk-parallel kernels of the linear memory (``chunk_linear.py``) against ``naive_chunk_miras`` (fp64):
output, final state and every gradient. ``test_chunk.py`` runs the same kernels through ``chunk_miras`` on every
bias and retention."""

import pytest
import torch

from kernels.miras import PRESETS, naive_chunk_miras
from kernels.miras import chunk as chunk_module
from kernels.miras.chunk import chunk_miras, value_block
from kernels.miras.chunk_linear import ChunkLinearFunction, covers, launch_grids, whole_rows
from kernels.utils import assert_close
from tests.kernels.miras.test_chunk import (  # noqa: F401  (the NaN-poisoned torch.empty fixture, autouse)
    _nan_poisoned_empty,
    compare,
    grads_of,
    linear,
    make_inputs,
    make_state,
    widen,
)

CHUNK = 16
NAMES = ["dq", "dk", "dv", "deta", "dalpha", "ddelta", "dinitial"]


def check(ref, out, ratio):
    assert_close("o", ref[0], out[0], ratio)
    assert_close("final state", ref[1], out[1], ratio)
    for name, r, x in zip(NAMES, ref[2], out[2], strict=False):
        if r is None or r.abs().max() < 1e-6:  # no dependence (e.g. on alpha at T = 1 from a zero state)
            assert x is None or not x.abs().max() > 1e-6, name
        else:
            assert_close(name, r, x, ratio)


def against_naive(spec, T, channel=True, with_state=True, chunk_size=CHUNK, d=12):
    """One sequence of two heads (the interpreter's time grows with the programs)."""
    inputs = make_inputs(T, channel, n=1, d=d)
    state = make_state(spec, n=1, d=d) if with_state else None
    ref = grads_of(naive_chunk_miras, *widen(inputs, state), spec, chunk_size=chunk_size)
    check(ref, grads_of(chunk_miras, inputs, state, spec, None, chunk_size=chunk_size), 2e-5)


SPECS = {
    "dot-l2": linear("dot"),
    "lp-l2": linear("lp"),
    "huber-head": linear("huber"),
    "robust-none": linear("robust", "none"),
    "l2-elastic": linear(retention="elastic", elastic_threshold=0.02),
    "huber-kl": linear("huber", "kl"),
    **{
        name: pytest.param(spec, marks=pytest.mark.slow)
        for name, spec in {
            "l2-none": linear(retention="none"),
            "huber-coordinate": linear("huber", huber_mode="coordinate"),
            "l1-l2": linear("l1"),
            "l2-l2": linear(),
            "huber-norm": linear("huber", huber_mode="norm"),
            "huber-no-l1": linear("huber", huber_l1=False),
            "dot-none": linear("dot", "none"),
            "huber-elastic": linear("huber", "elastic", elastic_threshold=0.02),
        }.items()
    },
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_matches_naive(spec):
    """Every retention with a few biases; ``huber-kl`` reads ``delta`` on Memora's lag token."""
    assert covers(spec)
    if spec.retention == "kl":
        compare(spec, T=37, d=12)
    else:
        against_naive(spec, T=37)


@pytest.mark.parametrize(
    ("T", "with_state"),
    [(1, True), (65, True), *(pytest.param(T, s, marks=pytest.mark.slow) for T, s in
                              ((63, True), (64, False), (130, True), (130, False), (1, False)))],
)  # fmt: skip
def test_odd_lengths_per_head_gates(T, with_state):
    """Lengths around the 64-token chunk, per-head gates (Yaad's linear ablation)."""
    against_naive(PRESETS["yaad_linear"], T, channel=False, with_state=with_state, chunk_size=64)


@pytest.mark.parametrize(
    ("preset", "T", "with_state"),
    [("moneta_linear", 65, False), ("memora_linear", 65, True), ("memora_linear", 1, False),
     *(pytest.param(p, T, s, marks=pytest.mark.slow) for p, T, s in
       (("moneta_linear", 1, True), ("moneta_linear", 130, True), ("memora_linear", 130, False)))],
)  # fmt: skip
def test_lq_and_kl_odd_lengths(preset, T, with_state):
    """Moneta's lq scale and Memora's lag token around the 64-token chunk: Memora's one-token chunks are the lag
    token alone; per-head gates."""
    compare(PRESETS[preset], T=T, channel=False, with_state=with_state, chunk_size=64)


def test_covers_every_linear_retention():
    assert all(covers(linear(retention=r)) for r in ("none", "l2", "lq", "elastic", "kl"))
    assert not any(covers(PRESETS[name]) for name in ("moneta", "yaad", "memora"))


def test_without_initial_or_final_state():
    """No ``h0`` and no final state (no ``dh0``, no incoming ``dht``): output gradients alone, against fp64."""
    spec = linear("huber", huber_mode="coordinate")
    inputs = make_inputs(37, n=1)
    wide = widen(inputs, None)[0]
    gen = torch.Generator().manual_seed(3)
    do = torch.randn(inputs[2].shape, generator=gen)
    outs = []
    for fn, x in ((naive_chunk_miras, wide), (chunk_miras, inputs)):
        o, final = fn(*x[:5], spec, x[5], None, False, chunk_size=CHUNK)
        assert final is None
        outs.append((o, torch.autograd.grad((o * do.to(o)).sum(), x)))
    assert_close("o", outs[0][0], outs[1][0], 2e-5)
    for name, r, x in zip(NAMES, outs[0][1], outs[1][1], strict=False):
        assert_close(name, r, x, 2e-5)


def test_half_inputs():
    """fp16 inputs, fp32 states and accumulation, fp16 output and gradients: against fp64 on the rounded inputs."""
    spec = PRESETS["yaad_linear"]
    half = [x.detach().half().requires_grad_() for x in make_inputs(33, n=1)]
    state = make_state(spec, n=1)
    ref = grads_of(naive_chunk_miras, *widen(half, state), spec)
    out = grads_of(chunk_miras, half, state, spec, None)
    assert out[0].dtype == out[2][0].dtype == torch.float16
    check(ref, out, 2e-3)


@pytest.mark.parametrize(
    "spec",
    [linear("lp"), PRESETS["yaad_linear"], PRESETS["moneta_linear"], PRESETS["memora_linear"]],
    ids=["lp-l2", "yaad-linear", "moneta-linear", "memora-linear"],
)
def test_varlen_matches_per_sequence(spec):
    """Packed sequences (one shorter than a chunk, one of several chunks, one partial) give each sequence's own
    outputs, final states and gradients: Moneta's scale and Memora's lag token restart with every sequence."""
    lengths = [5, 35, 17]
    inputs = make_inputs(sum(lengths), n=1)
    key, (h0,) = make_state(spec, n=len(lengths))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    o, final = chunk_miras(*inputs[:5], spec, inputs[5], {key: (h0,)}, True, cu, chunk_size=CHUNK)
    parts, finals = [], []
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        piece = [x[:, a:b] for x in inputs]
        o_n, f_n = naive_chunk_miras(*piece[:5], spec, piece[5], {key: (h0[n : n + 1],)}, True, CHUNK)
        parts.append(o_n)
        finals.append(f_n["weights"][0])
    ref_o, ref_w = torch.cat(parts, 1), torch.cat(finals, 0)
    do, dw = torch.randn_like(o), torch.randn_like(ref_w)
    wrt = [*inputs, h0]
    ref = torch.autograd.grad((ref_o * do).sum() + (ref_w * dw).sum(), wrt, allow_unused=True)
    out = torch.autograd.grad((o * do).sum() + (final["weights"][0] * dw).sum(), wrt, allow_unused=True)
    check((ref_o, ref_w, ref), (o, final["weights"][0], out), 2e-5)


@pytest.mark.parametrize(
    ("spec", "block"),
    [(linear("l1"), 16), (linear("huber", huber_mode="coordinate", retention="none"), 16),
     pytest.param(linear("huber"), 64, marks=pytest.mark.slow)],
    ids=["l1-l2", "huber-coordinate-none", "huber-head-whole-rows"],
)  # fmt: skip
def test_value_blocks(spec, block, monkeypatch):
    """``D = 40`` in 16-column value blocks (the last one partial), whose key-side shares add up; the head-switch
    Huber keeps whole rows."""
    monkeypatch.setattr(chunk_module, "VALUE_BLOCK", 16)
    assert value_block(spec, 40, 40) == block
    against_naive(spec, T=37, d=40)


def test_whole_row_memories_refuse_value_blocks():
    """Moneta's scale and the norm-based biases read whole value rows: split rows would race on them."""
    assert whole_rows(PRESETS["moneta_linear"]) and whole_rows(linear("robust")) and not whole_rows(linear("l1"))
    x = torch.zeros(1, 4, 1, 32)
    with pytest.raises(ValueError, match="need whole value rows in a program; got block 16"):
        ChunkLinearFunction.apply(x, x, x, x, x, None, None, PRESETS["moneta_linear"], 16, None, False, 16)


def test_launch_grids():
    grids = launch_grids(n_sequences=4, n_chunks=4 * 64, heads=16, value_blocks=2)
    assert grids["fwd_state"] == grids["bwd_state"] == (4, 16, 2)
    assert grids["fwd_output"] == grids["bwd_read"] == grids["bwd_grads"] == (256, 16, 2)
