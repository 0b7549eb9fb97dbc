"""The baselines of the papers' tables as mixers: the torch path everywhere, fla's kernels on a GPU."""

import dataclasses

import pytest
import torch

from miras.config import ConfigError, MixerConfig, ModelConfig
from miras.layers import MIXERS, PATTERNS, build_mixer, implemented, layer_mixer
from miras.models import LanguageModel, count_parameters
from miras.presets import preset
from miras.scales import apply_scale

BASELINES = ("retnet", "gla", "mamba", "mamba2", "deltanet", "gated_deltanet", "ttt")
FLA_MIXERS = ("retnet", "gla", "mamba2", "deltanet", "gated_deltanet", "ttt")


def small(name: str, **kw) -> MixerConfig:
    """The mixer's paper-scale preset fields at width 32 (the smoke scale)."""
    return dataclasses.replace(apply_scale(preset(f"{name}-340m"), "smoke").model.mixer, **kw)


def mixer(name: str, **kw):
    return build_mixer(32, small(name, **kw), 0)


def test_every_mixer_and_pattern_of_the_tables_is_implemented():
    for name in (*BASELINES, *PATTERNS):
        assert implemented(name), name


@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_on_cpu(name):
    m = mixer(name, backend="torch")
    x = torch.randn(2, 37, 32, requires_grad=True)
    y, _ = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BASELINES)
def test_prefix_then_suffix_equals_the_whole_sequence(name):
    m = mixer(name).double()
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    whole, _ = m(x)
    parts, state = [], None
    for a, b in ((0, 7), (7, 8), (8, 33), (33, 41)):
        y, state = m(x[:, a:b], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole)


@pytest.mark.parametrize("name", BASELINES)
def test_varlen_equals_separate_sequences(name):
    m = mixer(name).double()
    seqs = [torch.randn(1, n, 32, dtype=torch.float64) for n in (5, 19, 2)]
    packed, _ = m(torch.cat(seqs, 1), cu_seqlens=torch.tensor([0, 5, 24, 26]))
    torch.testing.assert_close(packed, torch.cat([m(s)[0] for s in seqs], 1))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_patterns_interleave_their_mixers(name):
    config = apply_scale(preset(f"{name}-780m"), "smoke").model
    config = dataclasses.replace(config, n_layer=len(PATTERNS[name]) + 1)
    model = LanguageModel(config)
    kinds = [layer_mixer(config.mixer, i).name for i in range(config.n_layer)]
    assert kinds == [*PATTERNS[name], PATTERNS[name][0]]
    assert all(b.mlp is not None for b in model.blocks)
    attention = [b.mixer for i, b in enumerate(model.blocks) if kinds[i] == "swa"]
    assert attention and all(a.window == config.mixer.swa_window for a in attention)


@pytest.mark.parametrize("name", [*BASELINES, *sorted(PATTERNS)])
def test_lm_decoding_token_by_token_equals_the_full_forward(name):
    config = apply_scale(preset(f"{name}-340m"), "smoke").model
    model = LanguageModel(config).double().eval()
    ids = torch.randint(0, config.vocab_size, (2, 21))
    full, _ = model(ids)
    states, steps = None, []
    for t in range(ids.shape[1]):
        logits, states = model(ids[:, t : t + 1], states)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_mamba_blocks_have_no_mlp():
    config = preset("mamba2-340m").model
    assert not config.mlp and config.n_layer == 48
    with torch.device("meta"):
        model = LanguageModel(config)
    assert all(block.mlp is None for block in model.blocks)


@pytest.mark.parametrize(
    "name, label",
    [(f"{m}-340m", 340e6) for m in BASELINES]
    + [(f"{m}-780m", 760e6) for m in (*BASELINES, *PATTERNS)]
    + [(f"{m}-1.3b", 1.3e9) for m in ("retnet", "mamba2", "deltanet", "gated_deltanet", "samba", "gated_deltanet_h2")],
)
def test_baseline_presets_are_within_5_percent_of_the_label(name, label):
    with torch.device("meta"):
        n = count_parameters(LanguageModel(preset(name).model))
    assert abs(n / label - 1) < 0.05, f"{name}: {n / 1e6:.1f}M"


def test_bad_backend_and_widths_name_the_field():
    with pytest.raises(ConfigError, match="mixer.backend='triton' is invalid for mixer.name='gla'"):
        mixer("gla", backend="triton")
    with pytest.raises(ConfigError, match="mixer.backend='fla' is invalid for mixer.name='mamba'"):
        mixer("mamba", backend="fla")
    with pytest.raises(ConfigError, match="mixer.ssm_head_dim=48 is invalid"):
        mixer("mamba2", ssm_head_dim=48)
    with pytest.raises(ConfigError, match="mixer.n_head=3 is invalid"):
        build_mixer(32, MixerConfig(name="swa", n_head=3), 0)
    with pytest.raises(ConfigError, match="model.d_model=32 is invalid"):
        ModelConfig(d_model=32, mixer=MixerConfig(name="gla", n_head=3))


def test_fla_backend_refuses_cpu_tensors():
    m = mixer("gla", backend="fla")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        m(torch.randn(1, 4, 32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", FLA_MIXERS)
def test_torch_path_matches_fla_kernels_on_gpu(name):
    """Same parameters on both backends: outputs and every gradient within fla's own test tolerances."""
    torch.manual_seed(0)
    config = apply_scale(preset(f"{name}-340m"), "tiny").model.mixer
    fast = build_mixer(128, dataclasses.replace(config, backend="fla"), 0).cuda()
    slow = build_mixer(128, dataclasses.replace(config, backend="torch"), 0).cuda()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 200, 128, device="cuda")
    results = []
    for m in (fast, slow):
        xi = x.clone().requires_grad_()
        y, state = m(xi)
        (y * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
        results.append((y, xi.grad, *(p.grad for p in m.parameters())))
    for a, b in zip(*results, strict=True):
        err = (a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-8)
        assert err < 5e-3, f"{name}: relative rmse {err:.2e}"


def test_mixer_registry_covers_the_baselines():
    assert set(BASELINES) <= set(MIXERS)


def test_ttt_mlp_carries_its_state():
    m = mixer("ttt", ttt_model="mlp", ttt_base_lr=0.1).double()
    x = torch.randn(1, 37, 32, dtype=torch.float64)
    whole, _ = m(x)
    a, state = m(x[:, :21])
    b, _ = m(x[:, 21:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), whole)
    assert len(state["weights"]) == 4 and state["pending"]["k"].shape[1] == 21 % 16


def test_benchmark_writes_a_table(tmp_path):
    from miras.benchmark import main

    out = tmp_path / "bench.md"
    args = ["--mixers", "gla", "mamba2", "--size", "340m", "--layers", "1", "--seq-len", "32", "--batch", "1"]
    assert main([*args, "--warmup", "0", "--steps", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| gla |" in text and "| mamba2 |" in text and "Git:" in text and "torch" in text


@pytest.mark.parametrize("name", FLA_MIXERS)
def test_a_checkpoint_moves_between_backends(name):
    """A model built for fla's kernels loads strictly into the torch path (same parameter names and shapes)."""
    config = apply_scale(preset(f"{name}-340m"), "smoke").model

    def with_backend(backend: str) -> LanguageModel:
        return LanguageModel(dataclasses.replace(config, mixer=dataclasses.replace(config.mixer, backend=backend)))

    fast, slow, auto = with_backend("fla"), with_backend("torch"), with_backend("auto")
    slow.load_state_dict(fast.state_dict(), strict=True)
    auto.load_state_dict(fast.state_dict(), strict=True)
    ids = torch.randint(0, config.vocab_size, (1, 9))
    torch.testing.assert_close(slow(ids)[0], auto(ids)[0])
