"""The intra-chunk decay products of ``kernels.miras.decay`` against the explicit ``[BT, BT, F]`` decay (fp64)."""

import pytest
import torch
import triton
import triton.language as tl

from kernels.miras.decay import check_chunk_size, mix, mix_t, scores
from kernels.utils import assert_close


@triton.jit
def _products(a_ptr, b_ptr, g_ptr, w_ptr, s_ptr, z_ptr, zt_ptr, BT: tl.constexpr, F: tl.constexpr):
    i, f = tl.arange(0, BT), tl.arange(0, F)
    rows = i[:, None] * F + f[None, :]
    a, b, g = tl.load(a_ptr + rows), tl.load(b_ptr + rows), tl.load(g_ptr + rows)
    W = tl.load(w_ptr + i[:, None] * BT + i[None, :])
    tl.store(s_ptr + i[:, None] * BT + i[None, :], scores(a, b, g, BT, F))
    tl.store(z_ptr + rows, mix(W, b, g, BT, F))
    tl.store(zt_ptr + rows, mix_t(W, a, g, BT, F))


def explicit(a, b, g, W):
    """The three products from ``E[i, j, f] = e^{g_if - g_jf}`` (``j <= i``), in fp64."""
    a, b, g, W = (x.double() for x in (a, b, g, W))
    causal = torch.ones(len(g), len(g), dtype=torch.bool).tril()
    E = torch.where(causal[:, :, None], (g[:, None, :] - g[None, :, :]).clamp_max(0), float("-inf")).exp()
    S = torch.einsum("if,jf,ijf->ij", a, b, E)
    Wc = W.tril()
    return S, torch.einsum("ij,jf,ijf->if", Wc, b, E), torch.einsum("ij,if,ijf->jf", Wc, a, E)


@pytest.mark.parametrize("BT", [16, 32, 64])
@pytest.mark.parametrize("gates", ["mild", "extreme"])
def test_products_match_the_explicit_decay(BT, gates):
    """``extreme``: channels that decay by up to ``e^-87`` per token, where ``e^{g_i} / e^{g_j}`` overflows."""
    F = 32
    a, b, W = torch.randn(BT, F), torch.randn(BT, F), torch.randn(BT, BT)
    log_alpha = -0.2 * torch.rand(BT, F)
    if gates == "extreme":
        log_alpha[:, ::3] = -87.0 * torch.rand(BT, (F + 2) // 3)
    g = log_alpha.cumsum(0)
    outs = [torch.full((BT, BT), float("nan")), torch.full((BT, F), float("nan")), torch.full((BT, F), float("nan"))]
    _products[(1,)](a, b, g, W, *outs, BT, F)
    for name, ref, out in zip(("scores", "mix", "mix_t"), explicit(a, b, g, W), outs, strict=True):
        assert_close(name, ref, out, 1e-6)
    assert (outs[0].triu(1) == 0).all()


def test_chunk_sizes_outside_the_kernels_name_the_allowed_values():
    check_chunk_size(64)
    with pytest.raises(ValueError, match="chunk_size=128 is invalid for the Triton kernels; allowed values: 16, 32"):
        check_chunk_size(128)
