"""The Miras layer (section 5.4, Figure 2): Moneta, Yaad, Memora and any memory of the design space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels.miras import PRESETS, MemorySpec, naive_chunk_miras, weight_shapes
from kernels.miras.chunk import check_head_dim, check_supported, chunk_miras
from kernels.miras.decay import CHUNK_SIZES
from kernels.miras.fused_recurrent import fused_recurrent_miras
from kernels.miras.naive import simplex
from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.modules import ShortConvolution
from miras.layers.rotary import apply_rope, positions_from_cu_seqlens, rope_frequencies


class LowRankGate(nn.Module):
    """``act(up(down(x)) + bias)`` with a rank-``r`` bottleneck (RWKV-7 style; Miras section 5.4)."""

    def __init__(self, d_model: int, rank: int, out: int, bias_init: float | torch.Tensor) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, rank, bias=False)
        self.up = nn.Linear(rank, out, bias=False)
        self.bias = nn.Parameter(torch.as_tensor(bias_init, dtype=torch.get_default_dtype()).expand(out).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) + self.bias


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def retention_bias(config: MixerConfig, n_head: int, out: int) -> torch.Tensor:
    """Bias of the retention gate: head ``h`` starts at ``alpha_h``, log-uniform in ``1 - alpha`` from
    ``1 - alpha_init`` (head 0, slowest) to ``1 - alpha_init_min`` (last head), as GDN spreads its ``dt``."""
    fastest = config.alpha_init if config.alpha_init_min is None else config.alpha_init_min
    slow, fast = math.log1p(-config.alpha_init), math.log1p(-fastest)
    forget = torch.exp(torch.linspace(slow, fast, n_head, dtype=torch.float64))
    logits = torch.log1p(-forget) - torch.log(forget)
    return logits.repeat_interleave(out // n_head).to(torch.get_default_dtype())


BIAS_DEGREE = {"dot": 1.0, "l1": 1.0, "l2": 2.0, "huber": 2.0, "robust": 2.0}
"""Degree of each attentional bias' gradient in the residual's scale (``lp``: ``p``): the power of the LN gain in
the memory's step under the change of variables of ``MixerConfig.memory_ln_gain``."""


def unit_gain_inputs(spec: MemorySpec, gain: torch.Tensor, k, v, eta, delta):
    """The write of ``M(x) = x + g LN(h)`` (per-head ``gain[H]``) as a write of the unit-gain memory the op computes.

    The residual is ``g (x + LN(h) - v')`` with ``v' = k + (v - k) / g``, so the step scales by ``g^degree`` and a
    Huber or robust threshold by ``1 / g``; exact for every bias up to the smoothing of Remark 5, which then acts
    on ``r / g``. ``k, v [B, T, H, D]``; ``eta``, ``delta`` ``[B, T, H]`` or ``[B, T, H, D]``. Returns ``(v', eta',
    delta')``.
    """
    degree = spec.p if spec.bias == "lp" else BIAS_DEGREE[spec.bias]

    def per_head(x: torch.Tensor) -> torch.Tensor:
        return gain if x.dim() == 3 else gain[:, None]

    if spec.bias != "dot":
        v = k + (v - k) / gain[:, None]
    eta = eta * per_head(eta) ** degree
    if delta is not None:
        delta = delta / per_head(delta)
    return v, eta, delta


def gained_read(gain: torch.Tensor, q: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """``M(q) = q + g LN(h)`` from the unit-gain read ``o = q + LN(h)``; ``gain[H]``, ``q, o [B, T, H, D]``."""
    return q + gain[:, None] * (o - q)


def triton_unsupported(spec: MemorySpec, chunk_size: int, head_dim: int) -> str | None:
    """Why the Triton chunk kernel cannot run this memory (None when it can)."""
    try:
        check_supported(spec, decoding=False)
        check_head_dim(spec, head_dim)
    except NotImplementedError as err:
        return str(err)
    if chunk_size not in CHUNK_SIZES:
        return f"mixer.chunk_size={chunk_size} is not one of the Triton kernels' chunk sizes {CHUNK_SIZES}"
    return None


def _decoding_supported(spec: MemorySpec) -> bool:
    try:
        check_supported(spec)
    except NotImplementedError:
        return False
    return True


def memory_spec(config: MixerConfig) -> MemorySpec:
    """The memory of a Miras mixer: ``config.memory`` or the mixer's preset."""
    if config.memory is not None:
        return config.memory
    return PRESETS.get(config.name, MemorySpec())


@register_mixer("miras")
@register_mixer("memora")
@register_mixer("yaad")
@register_mixer("moneta")
class MirasLayer(nn.Module):
    """A Miras sequence layer: q, k, v projections, short convolutions, l2-normalised q and k, low-rank
    channel-wise gates, the associative memory of ``config.memory`` written with ``(k_t, v_t)`` and read with
    ``q_t``, then an output RMSNorm gated by a linear layer (SiLU, as GDN) and the output projection. With
    ``config.memory_ln_gain`` the MLP memory is ``x + g LN(h)`` with a learned per-head ``g``, computed by the op
    on changed variables (:func:`unit_gain_inputs`, :func:`gained_read`).

    Args:
        d_model: width ``D`` of the residual stream.
        config: ``n_head`` heads of size ``D / n_head``; the memory, gates, chunk size, convolution and RoPE.
        layer_idx: position in the stack (unused).

    ``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)``. The state holds the memory at
    the start of the current chunk, the inputs written since, the convolution caches, the position and, after a
    call that decoded on ``fused_recurrent_miras``, its running terms (``recurrent``), so that
    running a prefix and then its continuation gives exactly the outputs of the whole sequence. Packed sequences
    (``cu_seqlens``, ``B = 1``) take one ``chunk_miras`` call on the Triton path and run one by one on the torch path.
    """

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        if config.backend == "fla":
            raise ConfigError(
                f"mixer.backend='fla' is invalid for mixer.name={config.name!r}; allowed values: 'auto', 'torch', "
                "'triton' (fla has no kernel for the Miras memories)"
            )
        self.spec = memory_spec(config)
        self.backend = config.backend
        self.n_head, self.head_dim = config.n_head, d_model // config.n_head
        self.kernel_reason = triton_unsupported(self.spec, config.chunk_size, self.head_dim)
        self.decoding_kernel = _decoding_supported(self.spec)
        if config.backend == "triton" and self.kernel_reason:
            raise ConfigError(f"mixer.backend='triton' is invalid for mixer.name={config.name!r}: {self.kernel_reason}")
        self.chunk_size = config.chunk_size
        self.rope, self.rope_theta = config.rope and config.memory_rope, config.rope_theta
        self.delta_input_dependent = config.delta_input_dependent
        inner = self.n_head * self.head_dim
        gate_out = inner if config.channel_gates else self.n_head

        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.convs = nn.ModuleDict(
            {name: ShortConvolution(inner, config.conv_size) for name in "qkv"} if config.conv_size else {}
        )
        self.eta_max = config.eta_max
        self.eta = LowRankGate(d_model, config.gate_rank, gate_out, _logit(config.eta_init / config.eta_max))
        self.alpha = (
            LowRankGate(d_model, config.gate_rank, gate_out, retention_bias(config, self.n_head, gate_out))
            if self.spec.retention != "none"
            else None
        )
        if self.spec.needs_delta:
            delta_bias = _softplus_inverse(config.delta_init)
            self.delta = (
                LowRankGate(d_model, config.gate_rank, gate_out, delta_bias)
                if config.delta_input_dependent
                else nn.Parameter(torch.full((gate_out,), delta_bias))
            )
        else:
            self.delta = None
        self.memory_init = nn.ParameterList(
            nn.Parameter(self._init_weight(fan_in, fan_out))
            for fan_in, fan_out in weight_shapes(self.spec, self.head_dim, self.head_dim)
        )
        gain = config.memory_ln_gain is not None and self.spec.arch == "mlp" and self.spec.residual_norm
        self.log_gain = (
            nn.Parameter(torch.full((self.n_head,), math.log(config.memory_ln_gain / math.sqrt(self.head_dim))))
            if gain
            else None
        )
        self.o_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.g_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)

    def _init_weight(self, fan_in: int, fan_out: int) -> torch.Tensor:
        """Learned initial memory ``W_0`` (``A_0`` for lq, logits of ``W_0`` for kl), shared across sequences.

        Not stated in the paper; as Titans/TTT. A linear memory starts at zero like linear attention; the MLP and
        the KL logits start random, since a symmetric start never leaves the symmetric point.
        """
        if self.spec.arch == "linear" and self.spec.retention != "kl":
            return torch.zeros(self.n_head, fan_in, fan_out)
        return torch.randn(self.n_head, fan_in, fan_out) / math.sqrt(fan_in)

    def initial_memory(self, batch: int) -> dict:
        """The learned ``W_0`` as a state for ``batch`` sequences."""
        weights = tuple(w.expand(batch, *w.shape) for w in self.memory_init)
        if self.spec.retention == "kl":
            weights = tuple(simplex(w, self.spec) for w in weights)
        return {"accumulator" if self.spec.retention == "lq" else "weights": weights}

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        B, T, _ = x.shape

        def heads(g: torch.Tensor) -> torch.Tensor:
            g = g.expand(B, T, g.shape[-1])
            return g.view(B, T, self.n_head, -1) if g.shape[-1] > self.n_head else g

        eta = heads(self.eta_max * torch.sigmoid(self.eta(x)))
        alpha = None if self.alpha is None else heads(torch.sigmoid(self.alpha(x)))
        delta = None
        if self.delta is not None:
            raw = self.delta(x) if self.delta_input_dependent else self.delta
            delta = heads(F.softplus(raw))
        return eta, alpha, delta

    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        spans = None
        if cu_seqlens is not None:
            if x.shape[0] != 1 or state is not None:
                raise ValueError("cu_seqlens needs a batch of size 1 and no state (sequences are packed)")
            bounds = cu_seqlens.tolist()
            spans = list(zip(bounds[:-1], bounds[1:], strict=True))
            if not self.use_triton(x):
                return torch.cat([self(x[:, a:b])[0] for a, b in spans], dim=1), None

        B, T, _ = x.shape
        state = state or {}
        conv = state.get("conv", {})
        new_conv = {}
        qkv = []
        for name, proj in (("q", self.q_proj), ("k", self.k_proj), ("v", self.v_proj)):
            h = proj(x)
            if name in self.convs and spans is None:
                h, new_conv[name] = self.convs[name](h, conv.get(name))
            elif name in self.convs:
                h = torch.cat([self.convs[name](h[:, a:b])[0] for a, b in spans], dim=1)
            qkv.append(h.view(B, T, self.n_head, self.head_dim))
        q, k, v = qkv
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        offset = state.get("offset", 0)
        if self.rope:
            positions = torch.arange(offset, offset + T, device=x.device)
            if spans is not None:
                positions = positions_from_cu_seqlens(cu_seqlens.to(x.device), T)
            cos, sin = rope_frequencies(self.head_dim, positions[None], self.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        eta, alpha, delta = self._gates(x)
        if self.log_gain is not None:
            v, eta, delta = self._unit_gain(k, v, eta, delta)

        if spans is not None:
            initial = self.initial_memory(len(spans))
            o, _ = chunk_miras(
                q, k, v, eta, alpha, self.spec, delta, initial, cu_seqlens=cu_seqlens, chunk_size=self.chunk_size
            )
            return self._output(self._read_gain(q, o), x), None
        if self.decodes(q):
            o, memory, pending, recurrent = self._decode(q, k, v, eta, alpha, delta, state)
        else:
            (o, memory, pending), recurrent = self._memory(q, k, v, eta, alpha, delta, state), None
        y = self._output(self._read_gain(q, o), x)
        state = {"memory": memory, "pending": pending, "conv": new_conv, "offset": offset + T}
        if recurrent is not None:
            state["recurrent"] = recurrent
        return y, state

    def _unit_gain(self, k, v, eta, delta):
        return unit_gain_inputs(self.spec, self.log_gain.exp().to(v.dtype), k, v, eta, delta)

    def _read_gain(self, q: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return o if self.log_gain is None else gained_read(self.log_gain.exp().to(o.dtype), q, o)

    def use_triton(self, x: torch.Tensor) -> bool:
        """Whether this call runs on the Triton kernel: ``triton`` always, ``auto`` for CUDA tensors when the
        memory has one (decided per call, so one checkpoint runs on either path)."""
        if self.backend == "triton":
            return True
        return self.backend == "auto" and x.is_cuda and self.kernel_reason is None

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The memory's read ``o[B, T, H, d]`` through the output RMSNorm, the SiLU gate of ``x`` and ``o_proj``."""
        B, T = x.shape[:2]
        o = self.o_norm(o) * F.silu(self.g_proj(x)).view(B, T, self.n_head, self.head_dim)
        return self.o_proj(o.reshape(B, T, -1))

    def decodes(self, q: torch.Tensor) -> bool:
        """Whether this call decodes on ``fused_recurrent_miras`` (O(1) per token): fewer tokens than a chunk,
        no gradients, on the Triton path, for a memory the decoding kernel reads as the chunk kernel does (else
        the chunk kernel writes the pending tokens again)."""
        short = q.shape[1] < self.chunk_size and not torch.is_grad_enabled()
        return short and self.decoding_kernel and self.use_triton(q)

    def _decode(self, q, k, v, eta, alpha, delta, state):
        """Continue from the chunk-start memory and the running terms after the pending tokens (written once
        from the chunk start when the previous call ran the chunk path and left none). Returns the output, the
        chunk-start memory, the pending inputs and the running terms (``state['recurrent']``)."""
        B = q.shape[0]
        memory = state.get("memory") or self.initial_memory(B)
        key = "accumulator" if self.spec.retention == "lq" else "weights"
        mlp = self.spec.arch == "mlp"
        pending = state.get("pending") or {}
        P = pending["k"].shape[1] if pending else 0
        recurrent = {"start": memory[key] if mlp else memory[key][0], "position": 0}
        if "recurrent" in state:
            recurrent.update(state["recurrent"], position=P)
        elif P:
            _, recurrent = self._fused(torch.zeros_like(pending["k"]), pending, recurrent)
        inputs = {"k": k, "v": v, "eta": eta, "alpha": alpha, "delta": delta}
        o, recurrent = self._fused(q, inputs, recurrent)
        keep = recurrent.pop("position")
        rest = {
            name: (torch.cat([pending[name], t], 1) if name in pending else t)[:, t.shape[1] + P - keep :]
            for name, t in inputs.items()
            if t is not None
        }
        start = recurrent.pop("start")
        return o, {key: start if mlp else (start,)}, rest, recurrent

    def _fused(self, q, inputs, recurrent):
        return fused_recurrent_miras(
            q,
            inputs["k"],
            inputs["v"],
            inputs["eta"],
            inputs.get("alpha"),
            self.spec,
            inputs.get("delta"),
            state=recurrent,
            chunk_size=self.chunk_size,
        )

    def _memory(self, q, k, v, eta, alpha, delta, state):
        """Run the memory from the last chunk start: tokens pending from a previous call are written again
        (their outputs dropped) so chunk boundaries stay where they are for the whole sequence."""
        B, T = q.shape[:2]
        memory = state.get("memory") or self.initial_memory(B)
        pending = state.get("pending") or {}
        inputs = {"k": k, "v": v, "eta": eta, "alpha": alpha, "delta": delta}
        inputs = {
            name: None if t is None else (torch.cat([pending[name], t], 1) if name in pending else t)
            for name, t in inputs.items()
        }
        P = inputs["k"].shape[1] - T
        q = torch.cat([q.new_zeros(B, P, *q.shape[2:]), q], 1)
        split = (P + T) // self.chunk_size * self.chunk_size

        chunk_fn = chunk_miras if self.use_triton(q) else naive_chunk_miras

        def run(part: slice, initial, final: bool):
            return chunk_fn(
                q[:, part],
                inputs["k"][:, part],
                inputs["v"][:, part],
                inputs["eta"][:, part],
                None if inputs["alpha"] is None else inputs["alpha"][:, part],
                self.spec,
                None if inputs["delta"] is None else inputs["delta"][:, part],
                initial_state=initial,
                output_final_state=final,
                chunk_size=self.chunk_size,
            )

        outputs = []
        if split:
            o, memory = run(slice(0, split), memory, True)
            outputs.append(o)
        if split < P + T:
            outputs.append(run(slice(split, P + T), memory, False)[0])
        o = torch.cat(outputs, 1)[:, P:]
        rest = {name: t[:, split:] for name, t in inputs.items() if t is not None}
        return o, memory, rest
