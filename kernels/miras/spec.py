"""The Miras design space as data: memory architecture x attentional bias x retention x algorithm.

A :class:`MemorySpec` names one point of the space (Miras section 4, spec ``papers/miras.md`` section 1.3).
Every choice the paper leaves open is a field whose docstring quotes the ambiguity; the defaults are the
ones ``kernels/miras/README.md`` argues for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ARCHS = ("linear", "mlp")
ACTIVATIONS = ("gelu", "silu")
BIASES = ("dot", "l2", "l1", "lp", "huber", "robust")
HUBER_MODES = ("mixture", "coordinate", "norm")
HUBER_SWITCHES = ("head", "channel")
RETENTIONS = ("none", "l2", "lq", "kl", "elastic")
LQ_SCOPES = ("matrix", "row")
READS = ("chunk", "token")
KL_AXES = ("fan_in", "fan_out", "matrix")
KL_READS = ("linear", "tangent")
GATE_AXES = ("key", "value")
ALGORITHMS = ("gd", "momentum")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"memory.{name}={value!r} is invalid; allowed values: {', '.join(map(repr, allowed))}")


def _check_positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"memory.{name}={value!r} is invalid; allowed values: a number {'>=' if zero_ok else '>'} 0")


@dataclass(frozen=True)
class MemorySpec:
    """One associative memory of the Miras design space (paper section 4).

    The memory ``M(W; x)`` maps keys to values; it is written with ``(k_t, v_t)`` by one step of the chosen
    algorithm on the attentional bias ``l(W; k_t, v_t)`` under the chosen retention, and read with ``q_t``.
    """

    arch: str = "mlp"
    """Memory structure: ``linear`` (``M(x) = x W``, a matrix ``[D_k, D_v]``) or ``mlp``
    (``M(x) = x + LN(W_1 act(W_2 x))``, Miras section 5.3; needs ``D_k == D_v``)."""
    depth: int = 2
    """Weight matrices of the MLP memory (the paper's models use 2)."""
    expansion: int = 4
    """Hidden width of the MLP memory as a multiple of the head dimension (paper: 4)."""
    activation: str = "gelu"
    """Hidden activation of the MLP memory (paper: GELU)."""
    residual_norm: bool = True
    """MLP memory with ``x + LN(...)`` (paper). The paper does not say whether the LN has an affine part or
    whether it would be a fast weight; ours has none (the layer's output norm carries a learned scale)."""
    ln_eps: float = 1e-5
    """Epsilon of the memory's LayerNorm (not stated; PyTorch's default)."""

    bias: str = "l2"
    """Attentional bias ``l(W; k, v)`` on the residual ``r = M(k) - v``: ``dot`` (``-<M(k), v>``, Hebbian,
    Eq. 8), ``l2`` (``1/2 ||r||^2``, delta rule, Eq. 9), ``l1`` (``||r||_1``, Eq. 12), ``lp`` (``||r||_p^p``,
    Eq. 10-11), ``huber`` (Eq. 13-16, see ``huber_mode``) or ``robust`` (value-shift robust, Eq. 17). The
    paper's ``-2<.,.>`` and ``||.||^2`` differ from ours by a factor 2 that the learned ``eta`` absorbs."""
    p: float = 2.0
    """Exponent of the ``lp`` bias (Moneta: 3; Figure 4 sweeps 1, 1.5, 2, 2.8, 3, 3.2, 4)."""
    sign_sharpness: float = 10.0
    """``Sign(x) ~ tanh(s x)`` (Remark 5). The paper never gives ``s``; 10 is the value one secondary source
    claims, and keeps ``tanh`` within 5% of the sign for ``|x| > 0.2``."""
    eps: float = 1e-6
    """``|x| ~ sqrt(x^2 + eps)`` (paper section 5.4: 1e-6); also guards norms in divisions."""
    huber_mode: str = "mixture"
    """Huber form: ``mixture`` (Yaad, Eq. 16: l2 step if the residual is small, else ``delta`` times the l1
    step), ``coordinate`` (Eq. 14) or ``norm`` (Eq. 15, per-token clipping)."""
    huber_switch: str = "head"
    """The switch of Eq. 16 compares ``||M(k) - v||`` with ``delta_t``, but ``delta_t`` is channel-wise
    (section 5.4) and the paper does not resolve the two readings: ``head`` compares the residual norm with
    the head's mean ``delta`` (one switch per token), ``channel`` compares ``|r_j|`` with ``delta_j`` (which
    makes the mixture equal to the coordinate form, Eq. 14)."""
    huber_l2: bool = True
    """Keep the l2 branch of the Huber mixture (Yaad Table 4 ablation "- l2-loss" sets it False: always l1)."""
    huber_l1: bool = True
    """Keep the l1 branch of the Huber mixture (Yaad Table 4 ablation "- l1-loss" sets it False: always l2)."""

    retention: str = "l2"
    """Retention gate: ``none``; ``l2`` (``W_t = alpha_t W_{t-1} - eta_t grad``, alpha decoupled from eta,
    section 5.3); ``lq`` (Moneta, Eq. 24: ``A_t = alpha_t A_{t-1} - eta_t grad``, ``W_t = A_t / ||A_t||_q^(q-2)``);
    ``kl`` (Memora, Eq. 27: ``W_t = c Softmax(alpha_t log W_{t-1} - eta_t grad)``); ``elastic`` (Eq. 22:
    ``W_t = S_gamma(alpha_t W_{t-1} - eta_t grad)``, soft-thresholding)."""
    q: float = 2.0
    """Exponent of the ``lq`` retention (Moneta: 4). Eq. 24 is implemented literally: the normaliser is
    ``||A||_q^(q-2)`` with ``q`` itself, not the dual exponent of section 5.2 Variant 4."""
    lq_scope: str = "matrix"
    """Tensor over which ``||A||_q`` is taken, not stated in the paper: each weight matrix of each head
    (``matrix``) or each of its rows (``row``)."""
    kl_axis: str = "fan_in"
    """Slice of the Memora softmax ("normalized per slice"; the axis is not stated): ``fan_in`` makes each
    output unit's incoming weights a scaled distribution, ``fan_out`` each input unit's outgoing weights,
    ``matrix`` the whole weight matrix."""
    kl_scale: float | None = None
    """Scale ``c`` of the simplex ``sum W = c`` (Eq. 18-21; not stated). ``None`` uses ``sqrt(slice length)``,
    so that the mean weight is ``1/sqrt(slice length)``, the size of a standard initialisation."""
    read: str = "chunk"
    """How queries inside a chunk read the memory. ``chunk`` (default): from the linearly accumulated state,
    the retention's non-linearity acting only at chunk ends ("we do not apply this non-linearity inside each
    chunk", section 5.4): Moneta divides by the chunk-start ``||A||_q^(q-2)``, Memora reads the weight-space
    linear steps of Eq. 31-32, elastic reads before its threshold; no per-token weight is ever formed.
    ``token``: every read applies the exact map to its own token's state (forms one weight per token; with
    ``chunk_size=1`` the chunk form is then the recurrence for every retention). Both agree for ``none`` and
    ``l2`` retention."""
    kl_read: str = "linear"
    """What Memora's in-chunk reads (``read='chunk'``) see of the steps after the lag token; the carried state is
    the same for both. ``linear`` (the paper's Eq. 31-32): ``b_i W - sum_j (b_i / b_j) eta_j x_j g_j^T``, steps on
    the weights themselves. ``tangent``: the first-order expansion of ``c Softmax(b_i log W - U_i)`` around ``W``,
    ``W + W * (d - <W / c, d>)`` with ``d = (b_i - 1) log W - U_i``; its write part is read with ``W`` replaced by
    its fan-in mean ``c / fan_in``, i.e. centred keys scaled by ``c / fan_in``, which keeps it a matmul. The paper
    does not say what "the linear version" is linear in; ``linear`` reads steps that the carried ``log W``
    state then applies very differently (``python -m benchmarks.recall``: 0.13 of 16 pairs against 0.79).
    ``tangent`` needs ``kl_axis='fan_in'``. The Triton chunk kernels run both; their decoding
    (``fused_recurrent_miras``) reads ``linear`` only."""
    kl_lag: bool = True
    """Memora's lag token (section 5.4, Eq. 30): the first token of every chunk takes the exact softmax step and
    the rest of the chunk takes its gradients at the weights after it. False takes them at the chunk start,
    as every other memory does."""
    kl_floor: float = 1e-30
    """Memora's chunks add up linearly in ``log W`` (``alpha log W - eta grad``; the softmax and its
    normaliser act at reads and chunk ends, which the paper leaves open: "inside a chunk it uses the linear
    version"). ``log`` of a given initial state is taken after clamping to this floor."""
    elastic_threshold: float = 1e-3
    """Soft-threshold ``gamma`` of the elastic-net retention (Eq. 22); a constant here (the paper allows it
    to be learned)."""

    algorithm: str = "gd"
    """Memory learning algorithm: ``gd`` (Eq. 5; Moneta, Yaad and Memora) or ``momentum`` (Titans:
    ``S_t = momentum S_{t-1} - eta_t grad``, ``W_t = alpha_t W_{t-1} + S_t``)."""
    momentum: float = 0.9
    """Momentum coefficient of ``algorithm='momentum'`` (a constant here; Titans makes it data-dependent)."""
    gate_axis: str = "key"
    """Which weight axis a channel-wise ``eta``/``alpha`` (``[..., D]``) scales. The paper does not say which
    dimension the channel index maps to. For the MLP memory the ``D``-sized axis of each weight is used (rows
    of the first, columns of the last, the head mean for any middle one); for the linear memory ``key`` scales
    rows as GLA's ``Diag(alpha_t)`` does, ``value`` scales columns."""

    def __post_init__(self) -> None:
        for name, allowed in (
            ("arch", ARCHS),
            ("activation", ACTIVATIONS),
            ("bias", BIASES),
            ("huber_mode", HUBER_MODES),
            ("huber_switch", HUBER_SWITCHES),
            ("retention", RETENTIONS),
            ("lq_scope", LQ_SCOPES),
            ("read", READS),
            ("kl_axis", KL_AXES),
            ("kl_read", KL_READS),
            ("algorithm", ALGORITHMS),
            ("gate_axis", GATE_AXES),
        ):
            _check_choice(name, getattr(self, name), allowed)
        if self.depth < 2 and self.arch == "mlp":
            raise ValueError(f"memory.depth={self.depth!r} is invalid; allowed values: an integer >= 2 for arch='mlp'")
        for name in ("expansion", "sign_sharpness", "eps", "ln_eps", "kl_floor"):
            _check_positive(name, getattr(self, name))
        _check_positive("elastic_threshold", self.elastic_threshold, zero_ok=True)
        if self.p < 1:
            raise ValueError(f"memory.p={self.p!r} is invalid; allowed values: a number >= 1")
        if self.q < 2:
            raise ValueError(f"memory.q={self.q!r} is invalid; allowed values: a number >= 2 (Eq. 24 as written)")
        if self.kl_scale is not None:
            _check_positive("kl_scale", self.kl_scale)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"memory.momentum={self.momentum!r} is invalid; allowed values: a number in [0, 1)")
        if self.bias == "huber" and not (self.huber_l1 or self.huber_l2):
            raise ValueError("memory.huber_l1=False and memory.huber_l2=False is invalid; allowed values: keep one")

    @property
    def needs_delta(self) -> bool:
        """Whether the update reads ``delta`` (Huber threshold or the robust radius)."""
        return self.bias in ("huber", "robust")

    def replace(self, **changes) -> MemorySpec:
        return dataclasses.replace(self, **changes)


MONETA = MemorySpec(arch="mlp", bias="lp", p=3.0, retention="lq", q=4.0)
"""(p, q)-Moneta with (3, 4): l_p bias, hybrid l_q / l_2 retention, 2-layer MLP memory, GD (Eq. 24-25)."""
YAAD = MemorySpec(arch="mlp", bias="huber", huber_mode="mixture", retention="l2")
"""Yaad: Huber mixture bias with a learned channel-wise delta, Titans-style l2 retention, MLP memory (Eq. 26)."""
MEMORA = MemorySpec(arch="mlp", bias="l2", retention="kl")
"""Memora: l2 bias, KL (softmax) retention, MLP memory (Eq. 27)."""

PRESETS: dict[str, MemorySpec] = {
    "moneta": MONETA,
    "yaad": YAAD,
    "memora": MEMORA,
    "moneta_linear": MONETA.replace(arch="linear"),
    "yaad_linear": YAAD.replace(arch="linear"),
    "memora_linear": MEMORA.replace(arch="linear"),
}
"""Named memories; the ``*_linear`` entries are the "linear memory" ablations (Table 4, ICLR ablation)."""


def weight_shapes(spec: MemorySpec, d_k: int, d_v: int) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each fast weight, in the order the memory applies them."""
    if spec.arch == "linear":
        return [(d_k, d_v)]
    if d_k != d_v:
        raise ValueError(f"the MLP memory needs d_k == d_v (residual connection), got {d_k} and {d_v}")
    hidden = spec.expansion * d_k
    dims = [d_k] + [hidden] * (spec.depth - 1) + [d_v]
    return list(zip(dims[:-1], dims[1:], strict=True))
