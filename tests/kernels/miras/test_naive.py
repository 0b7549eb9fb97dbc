"""The Miras references: chunk vs recurrent, the unification claims against fla's own references, gradients."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from kernels.miras import MEMORA, MONETA, YAAD, MemorySpec, naive_chunk_miras, naive_recurrent_miras, weight_shapes
from kernels.miras.naive import bias_grad, memory_forward, memory_grads, simplex
from kernels.utils import assert_close, relative_rms

B, T, H, D = 2, 13, 2, 4
ARCHS = ("linear", "mlp")
BIASES = ("dot", "l2", "l1", "lp", "huber", "robust")
RETENTIONS = ("none", "l2", "lq", "kl", "elastic")


def make_inputs(channel: bool, t: int = T, d: int = D, dtype=torch.float64, eta_max: float = 0.5):
    q = F.normalize(torch.randn(B, t, H, d, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, t, H, d, dtype=dtype), dim=-1)
    v = torch.randn(B, t, H, d, dtype=dtype)
    shape = (B, t, H, d) if channel else (B, t, H)
    eta = eta_max * torch.rand(shape, dtype=dtype)
    alpha = 0.8 + 0.2 * torch.rand(shape, dtype=dtype)
    delta = 0.1 + torch.rand(shape, dtype=dtype)
    return q, k, v, eta, alpha, delta


def make_spec(arch, bias, retention, algorithm="gd", read="token", **kw):
    return MemorySpec(
        read=read,
        arch=arch,
        bias=bias,
        retention=retention,
        algorithm=algorithm,
        p=3.0 if bias == "lp" else 2.0,
        q=4.0 if retention == "lq" else 2.0,
        **kw,
    )


def random_state(spec, d=D, scale=0.3):
    if spec.retention == "kl":
        return {"weights": tuple(torch.rand(B, H, *s, dtype=torch.float64) for s in weight_shapes(spec, d, d))}
    key = "accumulator" if spec.retention == "lq" else "weights"
    return {key: tuple(scale * torch.randn(B, H, *s, dtype=torch.float64) for s in weight_shapes(spec, d, d))}


def run_both(spec, inputs, initial_state, chunk_size):
    q, k, v, eta, alpha, delta = inputs
    ref = naive_recurrent_miras(q, k, v, eta, alpha, spec, delta, initial_state, output_final_state=True)
    out = naive_chunk_miras(q, k, v, eta, alpha, spec, delta, initial_state, True, chunk_size=chunk_size)
    return ref, out


def assert_same(ref, out, ratio):
    assert_close("o", ref[0], out[0], ratio)
    for key in ref[1]:
        for i, (a, b) in enumerate(zip(ref[1][key], out[1][key], strict=True)):
            assert_close(f"{key}[{i}]", a, b, ratio)


GRID = list(itertools.product(ARCHS, BIASES, RETENTIONS))


@pytest.mark.parametrize("arch,bias,retention", GRID)
def test_chunk_size_one_is_the_recurrence(arch, bias, retention):
    spec = make_spec(arch, bias, retention)
    inputs = make_inputs(channel=True, eta_max=0.1 if bias == "lp" else 0.5)
    assert_same(*run_both(spec, inputs, random_state(spec), chunk_size=1), ratio=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("channel", [False, True])
@pytest.mark.parametrize("algorithm", ["gd", "momentum"])
@pytest.mark.parametrize("arch,bias,retention", GRID)
def test_chunk_size_one_is_the_recurrence_full_grid(arch, bias, retention, algorithm, channel):
    spec = make_spec(arch, bias, retention, algorithm)
    inputs = make_inputs(channel, eta_max=0.1 if bias == "lp" else 0.5)
    assert_same(*run_both(spec, inputs, random_state(spec), chunk_size=1), ratio=1e-10)


@pytest.mark.parametrize("algorithm", ["gd", "momentum"])
@pytest.mark.parametrize("retention", ["none", "l2", "lq"])
@pytest.mark.parametrize("channel", [False, True])
@pytest.mark.parametrize("chunk_size", [4, 16])
def test_chunk_algebra_is_exact_when_the_gradient_ignores_the_state(chunk_size, channel, retention, algorithm):
    """A linear memory with the dot-product bias has ``grad = -k v^T`` at any state, so the E_b * B_b sums of
    the chunk form must equal the recurrence for every chunk size (this checks the within-chunk algebra)."""
    spec = make_spec("linear", "dot", retention, algorithm, gate_axis="value" if channel else "key")
    assert_same(*run_both(spec, make_inputs(channel, t=37), random_state(spec), chunk_size), ratio=1e-10)


@pytest.mark.parametrize("algorithm", ["gd", "momentum"])
@pytest.mark.parametrize("channel", [False, True])
@pytest.mark.parametrize("arch,bias,retention", [("linear", "l2", "l2"), ("mlp", "huber", "l2"), ("mlp", "lp", "none")])
def test_chunk_reads_equal_token_reads_for_linear_retention(arch, bias, retention, channel, algorithm):
    """Without a retention non-linearity the read-from-accumulation (dual) form must equal reading per-token
    weights, for every chunk size: this checks the dual form that never forms a per-token weight."""
    inputs = make_inputs(channel, t=21, eta_max=0.1)
    token = make_spec(arch, bias, retention, algorithm, read="token")
    state = random_state(token)
    for chunk_size in (1, 8):
        ref = naive_chunk_miras(*inputs[:5], token, inputs[5], state, True, chunk_size=chunk_size)
        out = naive_chunk_miras(*inputs[:5], token.replace(read="chunk"), inputs[5], state, True, chunk_size=chunk_size)
        assert_same(ref, out, ratio=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_memora_lag_token_makes_chunk_size_one_exact_with_chunk_reads(arch):
    spec = make_spec(arch, "l2", "kl", read="chunk")
    assert_same(*run_both(spec, make_inputs(True), random_state(spec), chunk_size=1), ratio=1e-10)


def _kl_read_error(kl_read: str, part: str, eps: float, channel: bool) -> float:
    """How far Memora's chunk read is from its exact per-token read, with steps (``part='write'``, from the
    uniform simplex) or decays (``part='decay'``, from a random simplex) of size ``eps``. Without the LN, which
    would scale the reads of a near-uniform memory up to its writes' size."""
    torch.manual_seed(0)
    q, k, v, eta, alpha, delta = make_inputs(channel, t=16, d=8)
    spec = make_spec("mlp", "l2", "kl", read="chunk", kl_read=kl_read, residual_norm=False)
    if part == "write":
        eta, alpha, state = eps * eta / eta.max(), torch.ones_like(alpha), None
    else:
        eta, alpha = torch.zeros_like(eta), 1 - eps * torch.rand_like(alpha)
        shapes = weight_shapes(spec, 8, 8)
        state = {"weights": tuple(simplex(torch.randn(B, H, *s, dtype=q.dtype), spec) for s in shapes)}
    out = naive_chunk_miras(q, k, v, eta, alpha, spec, initial_state=state, chunk_size=8)[0]
    ref = naive_chunk_miras(q, k, v, eta, alpha, spec.replace(read="token"), initial_state=state, chunk_size=8)[0]
    return relative_rms(ref, out)


@pytest.mark.parametrize("channel", [False, True], ids=["head", "channel"])
@pytest.mark.parametrize("part", ["write", "decay"])
def test_memora_tangent_read_is_the_softmax_step_to_first_order(part, channel):
    """The tangent read differs from the exact read by O(eps^2) (halving eps quarters it); the paper's linear
    steps on the weights differ by O(eps), so the same check fails on them."""
    tangent = _kl_read_error("tangent", part, 1e-2, channel) / _kl_read_error("tangent", part, 5e-3, channel)
    linear = _kl_read_error("linear", part, 1e-2, channel) / _kl_read_error("linear", part, 5e-3, channel)
    assert 3.5 < tangent < 4.5
    assert linear < 2.5


def test_memora_tangent_read_needs_the_fan_in_softmax():
    spec = make_spec("mlp", "l2", "kl", read="chunk", kl_read="tangent", kl_axis="fan_out")
    with pytest.raises(NotImplementedError, match="memory.kl_axis='fan_in'"):
        naive_chunk_miras(*make_inputs(False)[:5], spec, chunk_size=8)


@pytest.mark.parametrize("retention", ["lq", "elastic"])
def test_chunk_reads_of_nonlinear_retention_differ_from_token_reads(retention):
    spec = make_spec("mlp", "l2", retention, read="chunk")
    inputs, state = make_inputs(True, t=16), random_state(spec)
    ref = naive_chunk_miras(*inputs[:5], spec.replace(read="token"), inputs[5], state, chunk_size=8)
    out = naive_chunk_miras(*inputs[:5], spec, inputs[5], state, chunk_size=8)
    assert torch.isfinite(out[0]).all() and relative_rms(ref[0], out[0]) > 1e-6


@pytest.mark.parametrize(
    "spec",
    [MONETA.replace(q=2.0), YAAD, MEMORA.replace(read="token"), MemorySpec(arch="linear")],
    ids=["lp", "yaad", "memora", "linear"],
)
def test_chunk_form_tends_to_the_recurrence_as_the_learning_rate_vanishes(spec):
    """Stale gradients are the only approximation: with tiny steps the chunk form must approach the recurrence,
    and with real steps it must differ (the test can fail both ways)."""
    q, k, v, eta, alpha, delta = make_inputs(True, t=48, d=8)
    alpha = 0.99 + 0.01 * alpha
    state = random_state(spec, d=8, scale=8**-0.5)
    errors = []
    for eta_max in (1e-3, 0.3):
        ref, _ = naive_recurrent_miras(q, k, v, eta_max * eta, alpha, spec, delta, state)
        out, _ = naive_chunk_miras(q, k, v, eta_max * eta, alpha, spec, delta, state, chunk_size=16)
        errors.append(relative_rms(ref, out))
    assert errors[0] < 0.02 < errors[1]


@pytest.mark.slow
@pytest.mark.parametrize("arch,bias,retention", GRID)
def test_report_chunk_vs_recurrent_difference(arch, bias, retention, record_property):
    """Reported, not asserted: how far the stale-gradient chunk form is from the recurrence (section 5.4)."""
    spec = make_spec(arch, bias, retention)
    inputs = make_inputs(True, t=128, d=8, eta_max=0.1 if bias == "lp" else 0.5)
    state = random_state(spec, d=8)
    ref = naive_recurrent_miras(*inputs[:5], spec, inputs[5], state)[0]
    for chunk_size in (16, 64):
        out = naive_chunk_miras(*inputs[:5], spec, inputs[5], state, chunk_size=chunk_size)[0]
        record_property(f"relative_rms_chunk{chunk_size}", relative_rms(ref, out))
        assert torch.isfinite(out).all()


# The unification claims of section 4 (Eq. 8-9), against flash-linear-attention's own references. fla's
# references scale q by K^-0.5 and compute in fp32, so our q is pre-scaled and the tolerance is fp32's.


def fla_inputs():
    q, k, v, _, _, _ = make_inputs(False, t=29, d=8, dtype=torch.float32)
    return q, k, v, q * 8**-0.5


def test_dot_bias_with_l2_retention_is_gated_linear_attention():
    from fla.ops.gla.naive import naive_recurrent_gla

    q, k, v, q_scaled = fla_inputs()
    log_alpha = -torch.rand(B, 29, H, 8)
    h0 = torch.randn(B, H, 8, 8)
    ref, ref_state = naive_recurrent_gla(q, k, v, log_alpha, initial_state=h0, output_final_state=True)
    spec = MemorySpec(arch="linear", bias="dot", retention="l2", gate_axis="key")
    out, state = naive_recurrent_miras(
        q_scaled, k, v, torch.ones(B, 29, H), log_alpha.exp(), spec, initial_state=h0, output_final_state=True
    )
    assert_close("o", ref, out, 1e-5)
    assert_close("state", ref_state, state["weights"][0], 1e-5)


def test_dot_bias_with_scalar_retention_is_mamba2_retnet_style():
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

    q, k, v, q_scaled = fla_inputs()
    log_alpha = -torch.rand(B, 29, H)
    ref, ref_state = naive_recurrent_simple_gla(q, k, v, log_alpha, output_final_state=True)
    spec = MemorySpec(arch="linear", bias="dot", retention="l2")
    out, state = naive_recurrent_miras(q_scaled, k, v, torch.ones(B, 29, H), log_alpha.exp(), spec, None, None, True)
    assert_close("o", ref, out, 1e-5)
    assert_close("state", ref_state, state["weights"][0], 1e-5)


def test_l2_bias_without_retention_is_deltanet():
    from fla.ops.delta_rule.naive import delta_rule_recurrence

    q, k, v, q_scaled = fla_inputs()
    beta = torch.rand(B, 29, H)
    ref, ref_state = delta_rule_recurrence(*(x.transpose(1, 2) for x in (q, k, v, beta)))
    spec = MemorySpec(arch="linear", bias="l2", retention="none")
    out, state = naive_recurrent_miras(q_scaled, k, v, beta, None, spec, output_final_state=True)
    assert_close("o", ref.transpose(1, 2), out, 1e-5)
    assert_close("state", ref_state, state["weights"][0], 1e-5)


def test_l2_bias_with_l2_retention_is_gated_deltanet_under_reparameterisation():
    """Gated DeltaNet decays first and then measures the error: ``S_t = a(I - b k k^T) S + b k v^T``. Ours takes
    the gradient at the undecayed state (Titans' "cold start"): ``W_t = a W - eta k (k^T W - v^T)``. They are the
    same map under ``eta_t = a_t b_t`` and ``v'_t = v_t / a_t``."""
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    q, k, v, q_scaled = fla_inputs()
    beta, g = torch.rand(B, 29, H), -torch.rand(B, 29, H)
    h0 = torch.randn(B, H, 8, 8)
    ref, ref_state = naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    a = g.exp()
    spec = MemorySpec(arch="linear", bias="l2", retention="l2")
    out, state = naive_recurrent_miras(q_scaled, k, v / a[..., None], a * beta, a, spec, None, h0, True)
    assert_close("o", ref, out, 1e-5)
    assert_close("state", ref_state, state["weights"][0], 1e-5)


def smooth_loss(y, v, spec):
    """The bias whose gradient ``bias_grad`` returns, as a scalar (l1 through its log-cosh smoothing)."""
    if spec.bias == "dot":
        return -(y * v).sum()
    r = y - v
    if spec.bias == "l2":
        return 0.5 * r.pow(2).sum()
    s = spec.sign_sharpness
    return (torch.log(torch.cosh(s * r)) / s).sum()


@pytest.mark.parametrize("residual_norm", [True, False])
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("bias", ["dot", "l2", "l1"])
def test_mlp_memory_gradients_equal_torch_func_grad(bias, depth, residual_norm):
    spec = MemorySpec(arch="mlp", bias=bias, depth=depth, residual_norm=residual_norm)
    weights = tuple(0.5 * torch.randn(*s, dtype=torch.float64) for s in weight_shapes(spec, 6, 6))
    k, v = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)

    def loss(ws, k_t, v_t):
        return smooth_loss(memory_forward(ws, k_t, spec)[0], v_t, spec)

    expected = torch.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(weights, k, v)
    y, cache = memory_forward(weights, k, spec)
    factors = memory_grads(weights, cache, bias_grad(y, v, None, spec), spec)
    for layer, (x, g) in enumerate(factors):
        assert_close(f"W{layer}", expected[layer], x[:, :, None] * g[:, None, :], 1e-12)


@pytest.mark.parametrize("p", [1.5, 3.0, 4.0])
def test_lp_bias_gradient_tends_to_the_exact_one(p):
    spec = MemorySpec(bias="lp", p=p, sign_sharpness=1e4, eps=1e-14)
    y, v = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    r = y - v
    exact = p * torch.sign(r) * r.abs() ** (p - 1)
    assert_close("lp", exact, bias_grad(y, v, None, spec), 1e-3)


def test_huber_forms():
    r = torch.tensor([[0.1, -0.2, 3.0]], dtype=torch.float64)
    v, delta = torch.zeros_like(r), torch.full_like(r, 0.5)
    sharp = dict(bias="huber", sign_sharpness=1e6)
    coord = bias_grad(r, v, delta, MemorySpec(huber_mode="coordinate", **sharp))
    torch.testing.assert_close(coord, torch.tensor([[0.1, -0.2, 0.5]], dtype=torch.float64))
    # one switch per token: ||r|| > delta, so the whole step is delta * sign(r)
    mix = bias_grad(r, v, delta, MemorySpec(huber_mode="mixture", **sharp))
    torch.testing.assert_close(mix, torch.tensor([[0.5, -0.5, 0.5]], dtype=torch.float64))
    channel = bias_grad(r, v, delta, MemorySpec(huber_mode="mixture", huber_switch="channel", **sharp))
    torch.testing.assert_close(channel, coord)
    clip = bias_grad(r, v, delta, MemorySpec(huber_mode="norm", **sharp))
    torch.testing.assert_close(clip.norm(), torch.tensor(0.5, dtype=torch.float64))
    only_l2 = bias_grad(r, v, delta, MemorySpec(huber_l1=False, **sharp))
    torch.testing.assert_close(only_l2, r)


def test_lq_retention_normalises_the_accumulator():
    spec = MemorySpec(arch="linear", bias="dot", retention="lq", q=4.0)
    q, k, v, eta, alpha, _ = make_inputs(False)
    _, state = naive_recurrent_miras(q, k, v, eta, alpha, spec, output_final_state=True)
    a, w = state["accumulator"][0], state["weights"][0]
    norm = a.pow(4).sum((-2, -1), keepdim=True) ** 0.25
    torch.testing.assert_close(w, a / norm**2)


def test_kl_retention_keeps_weights_on_the_scaled_simplex():
    spec = MemorySpec(arch="mlp", bias="l2", retention="kl", kl_scale=2.0)
    q, k, v, eta, alpha, _ = make_inputs(True)
    _, state = naive_recurrent_miras(q, k, v, eta, alpha, spec, output_final_state=True)
    for w in state["weights"]:
        assert (w > 0).all()
        torch.testing.assert_close(w.sum(-2), torch.full_like(w.sum(-2), 2.0))


def test_missing_inputs_are_named():
    q, k, v, eta, alpha, _ = make_inputs(False)
    with pytest.raises(ValueError, match="needs delta"):
        naive_recurrent_miras(q, k, v, eta, alpha, MemorySpec(bias="huber"))
    with pytest.raises(ValueError, match="needs alpha"):
        naive_chunk_miras(q, k, v, eta, None, MemorySpec(retention="l2"))
    with pytest.raises(ValueError, match="memory.bias='l3'"):
        MemorySpec(bias="l3")


def test_chunk_reads_survive_decays_too_strong_for_the_ratio_form():
    """Decays below ``1 / max float`` within a chunk take the explicit decay-matrix path; it must agree too."""
    q, k, v, eta, alpha, delta = make_inputs(True, t=16)
    alpha = torch.where(torch.rand_like(alpha) < 0.5, torch.full_like(alpha, 1e-60), alpha)
    spec = make_spec("mlp", "l2", "l2")
    state = random_state(spec)
    ref = naive_chunk_miras(q, k, v, eta, alpha, spec, delta, state, True, chunk_size=16)
    out = naive_chunk_miras(q, k, v, eta, alpha, spec.replace(read="chunk"), delta, state, True, chunk_size=16)
    assert_same(ref, out, ratio=1e-10)
