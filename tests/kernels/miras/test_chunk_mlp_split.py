"""The split forward of the MLP memory (``chunk_mlp._split_forward``: a serial state pass, then a read over every
chunk) against ``naive_chunk_miras`` (fp64): output, final state, every gradient."""

import pytest
import torch

from kernels.miras import PRESETS, MemorySpec, chunk_mlp
from kernels.miras.chunk import chunk_miras
from kernels.utils import assert_close
from tests.kernels.miras.test_chunk import (  # noqa: F401  (the NaN-poisoned torch.empty fixture, autouse)
    MLP_RATIOS,
    _nan_poisoned_empty,
    compare,
    make_inputs,
    make_state,
)

NAMES = ["dq", "dk", "dv", "deta", "dalpha", "ddelta", "dW1", "dW2"]
SPECS = {
    "yaad": PRESETS["yaad"],
    "moneta": PRESETS["moneta"],
    "l2-none": MemorySpec(retention="none"),
    "moneta-row-silu": PRESETS["moneta"].replace(lq_scope="row", activation="silu"),
    "memora": PRESETS["memora"],
    "memora-tangent": PRESETS["memora"].replace(kl_read="tangent"),
}


@pytest.mark.parametrize(
    ("name", "T", "chunk_size", "with_state", "d"),
    [
        ("yaad", 37, 16, True, 12),
        ("l2-none", 37, 16, False, 12),
        ("moneta", 37, 16, True, 12),
        ("moneta-row-silu", 19, 16, True, 12),
        ("memora", 37, 16, True, 12),
        ("memora", 1, 64, True, 12),
        ("memora-tangent", 1, 64, True, 12),
        ("memora-tangent", 19, 16, False, 12),
        pytest.param("memora-tangent", 65, 64, True, 12, marks=pytest.mark.slow),
        pytest.param("memora", 65, 64, False, 12, marks=pytest.mark.slow),
        pytest.param("yaad", 65, 64, False, 12, marks=pytest.mark.slow),
        pytest.param("moneta", 65, 64, True, 12, marks=pytest.mark.slow),
        pytest.param("memora", 65, 64, True, 20, marks=pytest.mark.slow),
        pytest.param("memora-tangent", 65, 64, False, 20, marks=pytest.mark.slow),
    ],
)
def test_split_forward_matches_naive(name, T, chunk_size, with_state, d):
    """Memora, both reads, included: its state pass takes each chunk's lag step and the read starts from the lag
    weights (``compare``'s Memora bounds: fp32 is ill-conditioned on either path). From the uniform simplex at
    ``T = 1`` the gradients of Memora's keys, values and gates are rounding that the LayerNorm of an almost
    constant read amplifies past that bound (on the one-program forward the split replaced too), so those cases
    start from a state."""
    ratio = MLP_RATIOS["memora"] if SPECS[name].retention == "kl" else 2e-4
    compare(SPECS[name], T=T, with_state=with_state, chunk_size=chunk_size, d=d, ratio=ratio)


@pytest.mark.parametrize("name", ["moneta", "memora-tangent"])
def test_split_forward_without_gradients(name):
    """Without gradients the forward stores the same per-chunk states and gives the same output and final state."""
    spec = SPECS[name]
    inputs = make_inputs(37, eta_max=0.1 if spec.retention == "kl" else 0.5)
    key, h0 = make_state(spec)
    o, final = chunk_miras(*inputs[:5], spec, inputs[5], {key: h0}, True, None, chunk_size=16)
    with torch.no_grad():
        o_ng, final_ng = chunk_miras(*inputs[:5], spec, inputs[5], {key: h0}, True, None, chunk_size=16)
    assert torch.equal(o, o_ng)
    assert all(torch.equal(w, w_ng) for w, w_ng in zip(final["weights"], final_ng["weights"], strict=True))


@pytest.mark.parametrize(("name", "read_programs"), [("yaad", None), ("memora-tangent", None), ("moneta", 1)])
def test_split_varlen_matches_separate_sequences(name, read_programs, monkeypatch):
    """``read_programs = 1``: one backward ``READ`` program per head walks the chunks of both packed sequences."""
    if read_programs is not None:
        monkeypatch.setattr(chunk_mlp, "BWD_READ_PROGRAMS", read_programs)
    spec = SPECS[name]
    inputs = make_inputs(37, n=1, eta_max=0.1 if spec.retention == "kl" else 0.5)
    key, h0 = make_state(spec, n=2)
    cu = torch.tensor([0, 20, 37])
    o, final = chunk_miras(*inputs[:5], spec, inputs[5], {key: h0}, True, cu, chunk_size=16)
    out_w = torch.cat([torch.cat([w[n].flatten() for w in final["weights"]]) for n in range(2)])
    parts, finals = [], []
    for n, (a, b) in enumerate(((0, 20), (20, 37))):
        piece = [x[:, a:b] for x in inputs]
        o_n, f_n = chunk_miras(*piece[:5], spec, piece[5], {key: tuple(w[n : n + 1] for w in h0)}, True, None, 16)
        parts.append(o_n)
        finals.append(torch.cat([w.flatten() for w in f_n["weights"]]))
    ref_o, ref_w = torch.cat(parts, 1), torch.cat(finals)
    assert_close("o", ref_o, o, 1e-5)
    assert_close("final state", ref_w, out_w, 1e-5)
    do, dw = torch.randn_like(o), torch.randn_like(ref_w)
    wrt = [*inputs, *h0]
    ref = torch.autograd.grad((ref_o * do).sum() + (ref_w * dw).sum(), wrt, allow_unused=True)
    out = torch.autograd.grad((o * do).sum() + (out_w * dw).sum(), wrt, allow_unused=True)
    for name, r, x in zip(NAMES, ref, out, strict=True):
        if r is None:  # delta, which Memora's l2 bias does not read
            assert x is None, name
        else:
            assert_close(name, r, x, 1e-5)


@pytest.mark.parametrize("name", ["moneta", "memora-tangent"])
def test_backward_read_programs_stride_over_chunks(name, monkeypatch):
    """With one ``READ`` program per head, each walks every chunk of the batch: the same gradients as the naive
    path (``test_split_varlen_matches_separate_sequences`` strides over packed sequences)."""
    monkeypatch.setattr(chunk_mlp, "BWD_READ_PROGRAMS", 1)
    spec = SPECS[name]
    compare(spec, T=37, with_state=True, chunk_size=16, d=12, ratio=MLP_RATIOS["memora"] if name != "moneta" else 2e-4)


def test_launch_grids(monkeypatch):
    grids = chunk_mlp.launch_grids(n_sequences=4, n_chunks=4 * 64, heads=16)
    assert grids == {"fwd_state": (4, 16), "fwd_output": (256, 16), "bwd_read": (64, 16), "bwd_carry": (4, 16)}
    assert chunk_mlp.launch_grids(n_sequences=1, n_chunks=3, heads=16)["bwd_read"] == (3, 16)
    monkeypatch.setattr(chunk_mlp, "BWD_READ_PROGRAMS", 8)
    assert chunk_mlp.launch_grids(n_sequences=1, n_chunks=3, heads=16)["bwd_read"] == (1, 16)
