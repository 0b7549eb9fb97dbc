"""The test-time-regression layers as mixers: linear attention, RLS and higher-order (p = 1) attention."""

import pytest
import torch

from kernels.ttr import linear_attention
from miras.config import ConfigError, MixerConfig, ModelConfig
from miras.layers import build_mixer
from miras.models import LanguageModel

TTR_MIXERS = ("linear_attention", "rls", "higher_order_attention")


def mixer(name, **kw):
    return build_mixer(32, MixerConfig(name=name, n_head=2, conv_size=2, **kw), 0)


@pytest.mark.parametrize("name", TTR_MIXERS)
def test_forward_backward(name):
    m = mixer(name)
    x = torch.randn(2, 23, 32, requires_grad=True)
    y, _ = m(x)
    y.square().mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("name", TTR_MIXERS)
def test_prefix_then_suffix_equals_the_whole_sequence_and_varlen_separate_ones(name):
    m = mixer(name).double()
    x = torch.randn(2, 29, 32, dtype=torch.float64)
    whole, _ = m(x)
    parts, state = [], None
    for a, b in ((0, 6), (6, 7), (7, 20), (20, 29)):
        y, state = m(x[:, a:b], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole)
    seqs = [x[:1, :5], x[:1, 5:24], x[:1, 24:]]
    packed, _ = m(x[:1], cu_seqlens=torch.tensor([0, 5, 24, 29]))
    torch.testing.assert_close(packed, torch.cat([m(s)[0] for s in seqs], 1))


def test_keys_are_a_linear_convolution_and_the_regressor_is_the_op():
    m = mixer("linear_attention", ttr_norm="none").double()
    with torch.no_grad():
        m.k_conv.conv.weight.zero_()
        m.k_conv.conv.weight[:, 0, 0] = 1.0  # the oldest tap: k_t = W_k x_{t-1}
    x = torch.randn(1, 9, 32, dtype=torch.float64)
    shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    q, k, v = (h.view(1, 9, 2, 16) for h in (m.q_proj(x), m.k_proj(shifted), m.v_proj(x)))
    o, _ = linear_attention(q, k, v, norm="none")
    torch.testing.assert_close(m(x)[0], m.o_proj(o.reshape(1, 9, 32)))


@pytest.mark.parametrize("name", TTR_MIXERS)
def test_lm_decoding_token_by_token_equals_the_full_forward(name):
    config = ModelConfig(vocab_size=64, d_model=32, n_layer=1, mlp=False, mixer=MixerConfig(name=name, n_head=2))
    model = LanguageModel(config).double().eval()
    ids = torch.randint(0, 64, (2, 13))
    full, _ = model(ids)
    states, steps = None, []
    for t in range(ids.shape[1]):
        logits, states = model(ids[:, t : t + 1], states)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_bad_fields_name_the_field():
    with pytest.raises(ConfigError, match="mixer.ttr_norm='batch' is invalid; allowed values: 'none', 'unit'"):
        MixerConfig(name="linear_attention", ttr_norm="batch")
    with pytest.raises(ConfigError, match="mixer.ttr_forget=1.5 is invalid"):
        MixerConfig(name="rls", ttr_forget=1.5)
    with pytest.raises(ConfigError, match="mixer.backend='fla' is invalid for mixer.name='rls'"):
        mixer("rls", backend="fla")
