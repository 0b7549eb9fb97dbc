"""The Miras layer and the Moneta / Yaad / Memora mixers in the model."""

import copy

import pytest
import torch

from kernels.miras import MEMORA, MONETA, YAAD, MemorySpec
from kernels.miras.chunk import chunk_miras
from kernels.utils import assert_close, relative_rms
from miras.config import ConfigError, MixerConfig, ModelConfig, override
from miras.layers import build_mixer
from miras.layers import miras as miras_layer
from miras.layers.miras import MirasLayer, memory_spec
from miras.models import LanguageModel
from miras.presets import preset

MIXERS = ("moneta", "yaad", "memora", "miras")


def layer(name="moneta", d_model=16, **kw) -> MirasLayer:
    kw = {"n_head": 2, "chunk_size": 4, **kw}
    return build_mixer(d_model, MixerConfig(name=name, **kw), 0)


GAINED = {"memory_ln_gain": 1.0, "eta_max": 1.0, "eta_init": 0.1, "alpha_init": 0.999, "alpha_init_min": 0.9}
"""The presets' parametrisation (``miras.presets.MIRAS_GATES``) with a larger step, so that writes show."""


def test_mixers_use_their_papers_memories():
    assert memory_spec(MixerConfig(name="moneta")) == MONETA
    assert (MONETA.bias, MONETA.p, MONETA.retention, MONETA.q, MONETA.arch) == ("lp", 3.0, "lq", 4.0, "mlp")
    assert memory_spec(MixerConfig(name="yaad")) == YAAD
    assert (YAAD.bias, YAAD.huber_mode, YAAD.retention) == ("huber", "mixture", "l2")
    assert memory_spec(MixerConfig(name="memora")) == MEMORA
    assert (MEMORA.bias, MEMORA.retention) == ("l2", "kl")
    assert memory_spec(MixerConfig(name="miras", memory=MemorySpec(bias="l1"))).bias == "l1"
    assert preset("yaad-340m").model.mixer.memory == YAAD


@pytest.mark.parametrize("gates", [{}, GAINED], ids=["paper-ln", "gain"])
@pytest.mark.parametrize("name", MIXERS)
def test_prefix_then_suffix_equals_the_whole_sequence(name, gates):
    """The state keeps the chunk start and the tokens written since, so any split reproduces the whole run."""
    mixer = layer(name, **gates).double()
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    whole, _ = mixer(x)
    parts, state = [], None
    for a, b in ((0, 5), (5, 6), (6, 13), (13, 19)):
        y, state = mixer(x[:, a:b], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole)
    assert state["offset"] == 19 and state["pending"]["k"].shape[1] == 19 % 4


@pytest.mark.parametrize("gates", [{}, GAINED], ids=["paper-ln", "gain"])
def test_varlen_equals_separate_sequences(gates):
    mixer = layer("yaad", **gates).double()
    lengths = [5, 9, 2]
    seqs = [torch.randn(1, n, 16, dtype=torch.float64) for n in lengths]
    cu_seqlens = torch.tensor([0, 5, 14, 16])
    packed, _ = mixer(torch.cat(seqs, 1), cu_seqlens=cu_seqlens)
    torch.testing.assert_close(packed, torch.cat([mixer(s)[0] for s in seqs], 1))


GPU = pytest.param(
    "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
)


@pytest.mark.parametrize("memory", [YAAD, MEMORA.replace(arch="linear")], ids=["yaad", "memora_linear"])
@pytest.mark.parametrize("device", ["cpu", GPU])
def test_triton_varlen_is_one_kernel_call_equal_to_separate_sequences(memory, device, monkeypatch):
    """Packed sequences on the Triton path go to ``chunk_miras`` once, with ``cu_seqlens`` (convolutions and RoPE
    restart at each boundary): outputs and every parameter gradient against the torch layer run per sequence."""
    torch_layer = layer("miras", memory=memory, chunk_size=16, backend="torch").to(device)
    triton_layer = layer("miras", memory=memory, chunk_size=16, backend="triton").to(device)
    with torch.no_grad():
        for w in torch_layer.memory_init:
            w.normal_(0, 0.3)
    triton_layer.load_state_dict(torch_layer.state_dict())
    seqs = [torch.randn(1, n, 16, device=device) for n in (5, 21, 2)]
    ref = torch.cat([torch_layer(s)[0] for s in seqs], 1)
    calls = []
    monkeypatch.setattr(miras_layer, "chunk_miras", lambda *a, **kw: calls.append(kw) or chunk_miras(*a, **kw))
    out, state = triton_layer(torch.cat(seqs, 1), cu_seqlens=torch.tensor([0, 5, 26, 28], device=device))
    assert state is None and len(calls) == 1 and calls[0]["cu_seqlens"].tolist() == [0, 5, 26, 28]
    assert_close("y", ref, out, 1e-4)
    ref.square().sum().backward()
    out.square().sum().backward()
    for (name, a), b in zip(torch_layer.named_parameters(), triton_layer.parameters(), strict=True):
        assert_close(name, a.grad, b.grad, 1e-4)


@pytest.mark.parametrize("gates", [{}, GAINED], ids=["paper-ln", "gain"])
@pytest.mark.parametrize("name", MIXERS)
def test_layer_gradcheck_fp64(name, gates):
    """Gradients through the whole layer (inner-loop gradients included) w.r.t. the input, a gate bias and one
    entry row of the learned initial memory."""
    mixer = layer(name, d_model=8, gate_rank=2, conv_size=2, chunk_size=2, **gates).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    eta_bias = mixer.eta.bias.detach().clone().requires_grad_()
    w0 = mixer.memory_init[0].detach().clone()
    row = w0[:, 0].clone().requires_grad_()

    def run(x, eta_bias, row):
        init = torch.cat([row[:, None], w0[:, 1:]], 1)
        return torch.func.functional_call(mixer, {"eta.bias": eta_bias, "memory_init.0": init}, (x,))[0]

    assert torch.autograd.gradcheck(run, (x, eta_bias, row), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["moneta", "yaad", "memora"])
def test_long_random_inputs_stay_finite(name):
    mixer = layer(name, d_model=32, chunk_size=64)
    x = torch.randn(1, 2048, 32)
    y, _ = mixer(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters() if p.grad is not None)


def test_ablation_fields():
    assert layer("yaad", delta_input_dependent=False).delta.dim() == 1
    assert layer("yaad").delta is not None and layer("moneta").delta is None
    no_retention = layer("moneta", memory=MONETA.replace(retention="none"))
    assert no_retention.alpha is None
    linear = layer("memora", memory=MEMORA.replace(arch="linear"))
    assert len(linear.memory_init) == 1
    config = override(preset("yaad-340m"), ["model.mixer.memory.huber_l2=False", "model.mixer.rope=False"])
    assert not config.model.mixer.memory.huber_l2 and not config.model.mixer.rope


def test_bad_choices_name_the_field():
    with pytest.raises(ConfigError, match=r"memory.retention='l3' is invalid; allowed values: 'none'"):
        override(preset("moneta-340m"), ["model.mixer.memory.retention=l3"])
    with pytest.raises(ConfigError, match="mixer.backend='fla' is invalid for mixer.name='moneta'"):
        layer("moneta", backend="fla")
    with pytest.raises(ConfigError, match="model.mixer.memory is None, so model.mixer.memory.p cannot be set"):
        override(preset("transformer-340m"), ["model.mixer.memory.p=2"])
    with pytest.raises(ConfigError, match="mixer.backend='triton' is invalid for mixer.name='miras'.*'momentum'"):
        layer("miras", memory=MemorySpec(algorithm="momentum"), backend="triton", chunk_size=16)
    with pytest.raises(ConfigError, match=r"mixer.chunk_size=4 is not one of the Triton kernels. chunk sizes"):
        layer("yaad", memory=YAAD.replace(arch="linear"), backend="triton")
    with pytest.raises(ConfigError, match=r"head_dim=160 \(padded to 256\) is wider than the 128"):
        layer("moneta", d_model=320, memory=MONETA.replace(arch="linear"), backend="triton", chunk_size=64)
    assert layer("memora", d_model=192, backend="triton", chunk_size=64).kernel_reason is None
    assert layer("memora", d_model=192, memory=MEMORA.replace(arch="linear"), chunk_size=64).kernel_reason is None
    assert layer("yaad", d_model=192, backend="triton", chunk_size=64).kernel_reason is None
    assert layer("yaad", d_model=192, memory=YAAD.replace(arch="linear"), chunk_size=16).kernel_reason is None
    assert "head_dim=160" in layer("yaad", d_model=320, memory=YAAD.replace(arch="linear"), chunk_size=16).kernel_reason


@pytest.mark.parametrize(
    "memory",
    [YAAD.replace(arch="linear"), MONETA.replace(arch="linear"), MEMORA.replace(arch="linear"), YAAD, MONETA, MEMORA],
    ids=["yaad_linear", "moneta_linear", "memora_linear", "yaad", "moneta", "memora"],
)
def test_triton_backend_equals_torch(memory, gates=None):
    """The layer on the Triton kernel (interpreted on a CPU) against the same layer on the torch path: outputs,
    the gradient of every parameter, and a run continued from a prefix's state. Memora's log/softmax carry costs
    fp32 precision on both paths (each is up to 5e-3 from the fp64 layer in some gradients), hence its ratio."""
    ratio = 1e-2 if memory.retention == "kl" and memory.arch == "mlp" else 1e-4
    gates = gates or {}
    torch.manual_seed(0)
    torch_layer = layer("miras", memory=memory, chunk_size=16, backend="torch", **gates)
    triton_layer = layer("miras", memory=memory, chunk_size=16, backend="triton", **gates)
    triton_layer.load_state_dict(torch_layer.state_dict())
    if memory.arch == "linear":
        with torch.no_grad():
            for w in torch_layer.memory_init:
                w.normal_(0, 0.3)  # a linear memory starts at zero; a random start exercises the initial state
        triton_layer.load_state_dict(torch_layer.state_dict())
    x = torch.randn(2, 37, 16)
    ref, _ = torch_layer(x)
    out, _ = triton_layer(x)
    assert_close("y", ref, out, ratio)
    ref.square().sum().backward()
    out.square().sum().backward()
    for (name, a), b in zip(torch_layer.named_parameters(), triton_layer.parameters(), strict=True):
        assert_close(name, a.grad, b.grad, ratio)
    with torch.no_grad():
        head, state = triton_layer(x[:, :20])
        tail, _ = triton_layer(x[:, 20:], state)
    torch.testing.assert_close(torch.cat([head, tail], 1), out.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_triton_backend_with_the_ln_gain_equals_torch():
    test_triton_backend_equals_torch(MEMORA, {**GAINED, "eta_init": 0.01})


@pytest.mark.parametrize(
    "memory",
    [
        YAAD.replace(arch="linear"),
        MONETA.replace(arch="linear"),
        MemorySpec(arch="linear", retention="elastic"),
        MEMORA.replace(arch="linear"),
        pytest.param(YAAD, marks=pytest.mark.slow),
        pytest.param(MONETA, marks=pytest.mark.slow),
        MEMORA,
    ],
    ids=["yaad_linear", "moneta_linear", "elastic", "memora_linear", "yaad", "moneta", "memora"],
)
@pytest.mark.parametrize("device", ["cpu", GPU])
def test_triton_decoding_token_by_token_equals_the_whole_sequence(memory, device):
    """Calls shorter than a chunk decode on ``fused_recurrent_miras`` (the state then carries its running terms);
    from a prefix run on the chunk kernel, across chunk boundaries, and back to a chunk-kernel call."""
    triton_layer = layer("miras", memory=memory, chunk_size=16, backend="triton").to(device)
    with torch.no_grad():
        for w in triton_layer.memory_init:
            w.normal_(0, 0.3)
        x = torch.randn(2, 60, 16, device=device)
        whole, _ = triton_layer(x)
        pieces, state = [], None
        for a, b in ((0, 20), *((t, t + 1) for t in range(20, 35)), (35, 36), (36, 40), (40, 60)):
            y, state = triton_layer(x[:, a:b], state)
            pieces.append(y)
            assert ("recurrent" in state) == (b - a < 16)
        if memory.retention != "kl":
            torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-4, atol=1e-5)
            return
        # Memora is ill-conditioned in fp32 (test_chunk.compare): both against the layer in fp64 on the torch path
        reference = copy.deepcopy(triton_layer).double()
        reference.backend = "torch"
        wide, _ = reference(x.double())
    assert_close("decoded", wide, torch.cat(pieces, 1), max(1e-5, 4 * relative_rms(wide, whole)))


@pytest.mark.parametrize("name", ["moneta", pytest.param("yaad", marks=pytest.mark.slow), "memora"])
def test_tiny_model_learns(name):
    config = ModelConfig(vocab_size=32, d_model=16, n_layer=2, mixer=MixerConfig(name=name, n_head=2, chunk_size=8))
    model = LanguageModel(config)
    batch = torch.randint(0, 32, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_model_decoding_token_by_token_equals_the_full_forward():
    config = ModelConfig(vocab_size=32, d_model=16, n_layer=2, mixer=MixerConfig(name="memora", n_head=2, chunk_size=4))
    model = LanguageModel(config).double()
    ids = torch.randint(0, 32, (2, 11))
    full, _ = model(ids)
    logits, states = model(ids[:, :6], states=[{} for _ in model.blocks])
    steps = [logits]
    for t in range(6, 11):
        logits, states = model(ids[:, t : t + 1], states=states)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_diagnostics_report_the_gradient_norm(capsys):
    from miras.diagnostics import main

    assert main(["moneta-340m", "--scale", "smoke", "--set", "model.mixer.eta_init=0.01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("moneta-340m: loss ") and "grad norm" in out


GAIN_SPECS = [
    MemorySpec(bias="l2"),
    MemorySpec(bias="dot"),
    MemorySpec(bias="lp", p=3.0, sign_sharpness=1e5, eps=1e-14),
    MemorySpec(bias="huber", huber_mode="mixture", sign_sharpness=1e5, eps=1e-14),
    MemorySpec(bias="huber", huber_mode="norm", eps=1e-14),
]


@pytest.mark.parametrize("spec", GAIN_SPECS, ids=lambda s: f"{s.bias}-{s.huber_mode}")
def test_ln_gain_change_of_variables_equals_the_gained_memory(spec):
    """``M(x) = x + g LN(h)`` written token by token through autograd equals the unit-gain op on the changed
    variables (``unit_gain_inputs``, ``gained_read``); Remark 5's smoothing is made negligible here."""
    from kernels.miras import naive_recurrent_miras, weight_shapes
    from kernels.miras.naive import bias_grad, memory_forward

    B, T, H, d = 2, 7, 2, 4
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k = (torch.nn.functional.normalize(rand(B, T, H, d), dim=-1) for _ in range(2))
    v = rand(B, T, H, d) * 0.5
    eta = 0.3 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    alpha = 0.9 + 0.1 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    delta = 0.2 + torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    gain = torch.tensor([0.3, 1.7], dtype=torch.float64)
    weights = [rand(B, H, a, b) / a**0.5 for a, b in weight_shapes(spec, d, d)]
    unit = spec.replace(residual_norm=True)

    def gained(ws, x):
        out, _ = memory_forward(tuple(ws), x, unit)
        return x + gain[:, None] * (out - x)

    ws, reads = list(weights), []
    for t in range(T):
        ws = [w.detach().requires_grad_() for w in ws]
        y = gained(ws, k[:, t])
        grads = torch.autograd.grad(y, ws, bias_grad(y, v[:, t], delta[:, t], spec).detach())
        a, e = alpha[:, t, :, None, None], eta[:, t, :, None, None]
        ws = [a * w.detach() - e * g for w, g in zip(ws, grads, strict=True)]
        reads.append(gained(ws, q[:, t]))
    reference = torch.stack(reads, 1)

    v2, eta2, delta2 = miras_layer.unit_gain_inputs(spec, gain, k, v, eta, delta)
    delta2 = delta2 if spec.needs_delta else None
    o, _ = naive_recurrent_miras(q, k, v2, eta2, alpha, spec, delta2, {"weights": weights})
    torch.testing.assert_close(miras_layer.gained_read(gain, q, o), reference, rtol=1e-7, atol=1e-9)


def test_retention_gate_starts_spread_over_heads():
    mixer = layer("yaad", d_model=32, n_head=4, alpha_init=0.999, alpha_init_min=0.9)
    alpha = torch.sigmoid(mixer.alpha.bias).view(4, 8)
    assert torch.allclose(alpha[:, 0], torch.tensor([0.999, 0.99536, 0.97846, 0.9]), atol=1e-4)
    assert (alpha == alpha[:, :1]).all()
    assert torch.sigmoid(layer("yaad").alpha.bias).allclose(torch.tensor(0.95))


def test_presets_carry_the_working_parametrisation_and_the_paper_ln_stays_selectable():
    for name in ("moneta", "yaad", "memora"):
        mixer = preset(f"{name}-340m").model.mixer
        assert mixer.memory_ln_gain == 1.0 and mixer.eta_max == 1.0
        built = MirasLayer(64, override(preset(f"{name}-340m"), ["model.mixer.n_head=2"]).model.mixer)
        assert built.log_gain.exp().allclose(torch.tensor(32**-0.5))
    assert not built.rope and layer("yaad").rope
    hybrid = LanguageModel(override(preset("yaad_h-780m"), ["model.n_layer=2", "model.mixer.n_head=2"]).model)
    assert not hybrid.blocks[0].mixer.rope and hybrid.blocks[1].mixer.rope
    faithful = override(preset("yaad-340m"), ["model.mixer.memory_ln_gain=None", "model.mixer.n_head=2"])
    assert MirasLayer(64, faithful.model.mixer).log_gain is None
    assert layer("yaad").log_gain is None and layer("moneta", memory=MONETA.replace(arch="linear")).log_gain is None
    with pytest.raises(ConfigError, match="mixer.alpha_init_min=0.99 is invalid"):
        MixerConfig(alpha_init=0.9, alpha_init_min=0.99)


def test_memoras_tangent_read_trains_on_the_chunk_kernel_and_decodes_by_writing_its_chunk_again():
    """The decoding kernel reads a chunk linearly, so the preset's tangent read decodes through the chunk kernel,
    which writes the pending tokens again from the chunk start: token by token equals the whole sequence."""
    memory = MEMORA.replace(kl_read="tangent")
    triton_layer = layer("miras", memory=memory, chunk_size=16, backend="triton")
    assert triton_layer.kernel_reason is None and not triton_layer.decoding_kernel
    assert layer("miras", memory=MEMORA, chunk_size=16, backend="triton").decoding_kernel
    with torch.no_grad():
        for w in triton_layer.memory_init:
            w.normal_(0, 0.3)
        x = torch.randn(2, 40, 16)
        whole, _ = triton_layer(x)
        pieces, state = [], None
        for a, b in ((0, 20), (20, 21), (21, 22), (22, 40)):
            y, state = triton_layer(x[:, a:b], state)
            pieces.append(y)
            assert "recurrent" not in state
        reference = copy.deepcopy(triton_layer).double()
        reference.backend = "torch"
        wide, _ = reference(x.double())
    assert_close("whole", wide, whole, 1e-3)
    assert_close("decoded", wide, torch.cat(pieces, 1), max(1e-5, 4 * relative_rms(wide, whole)))
