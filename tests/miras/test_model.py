import pytest
import torch
import torch.nn.functional as F

from miras.config import MixerConfig, ModelConfig
from miras.layers.attention import Attention
from miras.models import LanguageModel, count_parameters
from miras.presets import SIZES, preset


def tiny_config(**mixer) -> ModelConfig:
    return ModelConfig(vocab_size=64, d_model=32, n_layer=2, mixer=MixerConfig(n_head=4, **mixer))


@pytest.mark.parametrize("size, label", [("340m", 340e6), ("780m", 760e6), ("1.3b", 1.3e9)])
def test_transformer_presets_match_the_paper_sizes(size, label):
    with torch.device("meta"):
        model = LanguageModel(preset(f"transformer-{size}").model)
    assert abs(count_parameters(model) - label) / label < 0.05


def test_parameter_count_formula():
    config = tiny_config()
    model = LanguageModel(config)
    d, h, v = config.d_model, config.mlp_hidden, config.vocab_size
    per_block = 4 * d * d + 3 * d * h + 2 * d
    assert count_parameters(model) == v * d + config.n_layer * per_block + d
    assert count_parameters(model, exclude_embeddings=True) == config.n_layer * per_block + d
    untied = LanguageModel(ModelConfig(**{**config.__dict__, "tie_embeddings": False}))
    assert count_parameters(untied) == count_parameters(model) + v * d
    assert SIZES["340m"].d_model == 1024


def test_tiny_model_overfits_one_batch():
    model = LanguageModel(tiny_config())
    batch = torch.randint(0, 64, (4, 33))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def masked_reference(x, layer: Attention, window=None):
    """Attention with an explicit [T, T] score matrix, as the definition reads."""
    B, T, D = x.shape
    H, K = layer.n_head, layer.head_dim
    from miras.layers.rotary import apply_rope, rope_frequencies

    cos, sin = rope_frequencies(K, torch.arange(T)[None], layer.rope_theta)
    q = apply_rope(layer.q_proj(x).view(B, T, H, K), cos, sin)
    k = apply_rope(layer.k_proj(x).view(B, T, H, K), cos, sin)
    v = layer.v_proj(x).view(B, T, H, K)
    scores = torch.einsum("bthk,bshk->bhts", q, k) / K**0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    allowed = (j <= i) & ((i - j < window) if window else True)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return layer.o_proj(torch.einsum("bhts,bshk->bthk", probs, v).reshape(B, T, D))


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("T", [1, 15, 33])
def test_attention_matches_masked_definition(window, T):
    layer = Attention(32, MixerConfig(n_head=4, window=window)).double()
    x = torch.randn(2, T, 32, dtype=torch.float64)
    y, _ = layer(x)
    torch.testing.assert_close(y, masked_reference(x, layer, window))


@pytest.mark.parametrize("window", [None, 4])
def test_cached_decoding_equals_full_forward(window):
    model = LanguageModel(tiny_config(window=window)).double()
    ids = torch.randint(0, 64, (2, 19))
    full, _ = model(ids)
    logits, states = model(ids[:, :7], states=[{} for _ in model.blocks])
    steps = [logits]
    for t in range(7, 19):
        logits, states = model(ids[:, t : t + 1], states=states)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    if window:
        assert states[0]["k"].shape[1] == window - 1


def test_varlen_equals_separate_sequences():
    model = LanguageModel(tiny_config()).double()
    lengths = [5, 11, 1, 8]
    seqs = [torch.randint(0, 64, (1, n)) for n in lengths]
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    packed, _ = model(torch.cat(seqs, dim=1), cu_seqlens=cu_seqlens)
    separate = torch.cat([model(s)[0] for s in seqs], dim=1)
    torch.testing.assert_close(packed, separate)


def test_unimplemented_mixer_fails_clearly(monkeypatch):
    from miras.layers import MIXERS

    monkeypatch.delitem(MIXERS, "moneta")
    with pytest.raises(NotImplementedError, match="mixer.name='moneta' is declared but not implemented"):
        LanguageModel(ModelConfig(vocab_size=64, d_model=32, n_layer=1, mixer=MixerConfig(name="moneta", n_head=4)))
