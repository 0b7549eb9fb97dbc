"""The split forward of the MLP memory (``chunk_mlp._split_forward``: a serial state pass, then a read over every
chunk) against the one-program forward and ``naive_chunk_miras`` (fp64): output, final state, every gradient."""

import pytest
import torch

from kernels.miras import PRESETS, MemorySpec, chunk_mlp, naive_chunk_miras
from kernels.miras.chunk import chunk_miras
from kernels.utils import assert_close
from tests.kernels.miras.test_chunk import (  # noqa: F401  (the NaN-poisoned torch.empty fixture, autouse)
    MLP_RATIOS,
    _nan_poisoned_empty,
    compare,
    grads_of,
    make_inputs,
    make_state,
    widen,
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


class _Refused:
    """Stands for the one-program forward kernel where the split must run instead."""

    def __getitem__(self, grid):
        raise AssertionError("the one-program forward ran")


def check(ref, out, ratio):
    assert_close("o", ref[0], out[0], ratio)
    assert_close("final state", ref[1], out[1], ratio)
    for name, r, x in zip(NAMES, ref[2], out[2], strict=False):
        if r is None or r.abs().max() < 1e-6:  # no dependence (e.g. on alpha at T = 1 from a zero state)
            assert x is None or not x.abs().max() > 1e-6, name
        else:
            assert_close(name, r, x, ratio)


@pytest.mark.parametrize(
    ("name", "T", "chunk_size", "with_state"),
    [
        ("yaad", 37, 16, True),
        ("l2-none", 37, 16, False),
        ("moneta", 37, 16, True),
        ("moneta-row-silu", 19, 16, True),
        pytest.param("yaad", 65, 64, False, marks=pytest.mark.slow),
        pytest.param("moneta", 65, 64, True, marks=pytest.mark.slow),
    ],
)
def test_split_forward_matches_serial_and_naive(monkeypatch, name, T, chunk_size, with_state):
    spec = SPECS[name]
    assert chunk_mlp.covers(spec)
    inputs = make_inputs(T, n=2)
    state = make_state(spec, n=2) if with_state else None
    ref = grads_of(naive_chunk_miras, *widen(inputs, state), spec, chunk_size=chunk_size)
    with monkeypatch.context() as patch:
        patch.setattr(chunk_mlp, "_mlp_fwd_kernel", _Refused())
        split = grads_of(chunk_miras, inputs, state, spec, None, chunk_size=chunk_size)
    monkeypatch.setattr(chunk_mlp, "covers", lambda spec: False)
    serial = grads_of(chunk_miras, inputs, state, spec, None, chunk_size=chunk_size)
    check(ref, split, 2e-4)
    check(serial, split, 2e-5)


@pytest.mark.parametrize(
    ("name", "T", "chunk_size", "with_state", "d"),
    [
        ("memora", 37, 16, True, 12),
        ("memora-tangent", 37, 16, True, 20),
        ("memora", 1, 64, True, 12),
        ("memora-tangent", 1, 64, True, 12),
        ("memora-tangent", 19, 16, False, 12),
        ("memora", 65, 64, False, 12),
        ("memora-tangent", 65, 64, True, 12),
        pytest.param("memora", 65, 64, True, 20, marks=pytest.mark.slow),
        pytest.param("memora-tangent", 65, 64, False, 20, marks=pytest.mark.slow),
    ],
)
def test_memora_split_forward_matches_serial_and_naive(monkeypatch, name, T, chunk_size, with_state, d):
    """Memora, both reads: the state pass takes each chunk's lag step and the read starts from its weights. Against
    ``naive_chunk_miras`` with ``compare``'s Memora bounds (fp32 is ill-conditioned on either path); against the
    one-program forward, which handles the lag row apart, to rounding. From the uniform simplex at ``T = 1`` the
    gradients of the keys, values and gates are rounding that the LayerNorm of an almost constant read amplifies,
    past ``compare``'s bound on either path, so those cases start from a state."""
    spec = SPECS[name]
    assert chunk_mlp.covers(spec)
    with monkeypatch.context() as patch:
        patch.setattr(chunk_mlp, "_mlp_fwd_kernel", _Refused())
        compare(spec, T=T, with_state=with_state, chunk_size=chunk_size, d=d, ratio=MLP_RATIOS["memora"])
        inputs = make_inputs(T, n=2, eta_max=0.1, d=d)
        state = make_state(spec, n=2, d=d) if with_state else None
        split = grads_of(chunk_miras, inputs, state, spec, None, chunk_size=chunk_size)
    monkeypatch.setattr(chunk_mlp, "covers", lambda spec: False)
    serial = grads_of(chunk_miras, inputs, state, spec, None, chunk_size=chunk_size)
    check(serial, split, 2e-5)


@pytest.mark.parametrize("name", ["yaad", "memora-tangent"])
def test_split_varlen_matches_separate_sequences(name):
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


def test_launch_grids():
    split = chunk_mlp.launch_grids(PRESETS["yaad"], n_sequences=4, n_chunks=4 * 64, heads=16)
    assert split == {"fwd_state": (4, 16), "fwd_output": (256, 16), "bwd": (4, 16)}
    assert chunk_mlp.launch_grids(PRESETS["memora"], 4, 256, 16) == split
