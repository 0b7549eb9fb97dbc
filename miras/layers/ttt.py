"""TTT (Sun et al. 2024, "Learning to (Learn at Test Time)"): a layer whose state is a model trained online.

TTT-Linear (the Table 2 / Table 3 row) runs fla's ``chunk_ttt_linear`` on CUDA and its exact torch twin
(:func:`kernels.ttt.naive_chunk_ttt_linear`) elsewhere; TTT-MLP (``mixer.ttt_model='mlp'``) runs the torch
mini-batch form everywhere (fla has no TTT-MLP kernel).
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.ttt import naive_chunk_ttt_linear, naive_chunk_ttt_mlp
from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.modules import check_backend, split_varlen, use_fla
from miras.layers.rotary import apply_rope, rope_frequencies

TTT_MLP_EXPANSION = 4
"""Hidden width of the TTT-MLP inner model as a multiple of the head width (TTT paper, section 2.7)."""


@register_mixer("ttt")
class TTT(nn.Module):
    """TTT layer with the Transformer backbone of the TTT paper: q, k, v projections (``theta_Q, theta_K,
    theta_V``), RoPE on q and k, a learned per-token inner learning rate ``eta_t = ttt_base_lr * sigmoid(x
    theta_lr) / head_dim`` per head, an inner model per head trained on ``||f(k) - v||^2`` in mini-batches of
    ``chunk_size`` tokens (16), a LayerNorm on the output and ``o_proj``.

    The initial inner weights are learned (normal, std 0.02; the paper's ``W_0``); the inner LayerNorm's affine
    ``w, b`` per head are learned too. Not taken from the paper's code: its learnable token-index scaling of
    ``eta`` inside a mini-batch (fla's kernel scales the cumulative gradient by the reading token's ``eta``).

    ``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y, state)``. The state holds the inner weights at the
    last mini-batch boundary, the inputs written since and the position, so a prefix and its continuation give
    exactly the outputs of the whole sequence.
    """

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        check_backend(config)
        if config.ttt_model == "mlp" and config.backend == "fla":
            raise ConfigError(
                "mixer.backend='fla' is invalid for mixer.ttt_model='mlp'; allowed values: 'auto', 'torch'"
            )
        H, K = config.n_head, d_model // config.n_head
        self.backend, self.mlp = config.backend, config.ttt_model == "mlp"
        self.n_head, self.head_dim, self.chunk_size = H, K, config.chunk_size
        self.base_lr, self.rope, self.rope_theta = config.ttt_base_lr, config.rope, config.rope_theta
        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, H * K, bias=False)
        self.lr_proj = nn.Linear(d_model, H, bias=True)
        self.ttt_norm_weight = nn.Parameter(torch.ones(H, K))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(H, K))
        shapes = (
            [(K, TTT_MLP_EXPANSION * K), (1, TTT_MLP_EXPANSION * K), (TTT_MLP_EXPANSION * K, K), (1, K)]
            if self.mlp
            else [(K, K), (1, K)]
        )
        self.weights_init = nn.ParameterList(
            nn.Parameter(torch.randn(H, *shape) * 0.02 if shape[0] > 1 else torch.zeros(H, *shape)) for shape in shapes
        )
        self.post_norm = nn.LayerNorm(H * K, eps=1e-6)
        self.o_proj = nn.Linear(H * K, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        if cu_seqlens is not None:
            return split_varlen(lambda part: self(part)[0], x, cu_seqlens, state), None
        B, T, _ = x.shape
        state = state or {}
        q, k, v = (p(x).view(B, T, self.n_head, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        offset = state.get("offset", 0)
        if self.rope:
            cos, sin = rope_frequencies(
                self.head_dim, torch.arange(offset, offset + T, device=x.device)[None], self.rope_theta
            )
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        eta = (self.base_lr / self.head_dim) * torch.sigmoid(self.lr_proj(x))[..., None]
        o, weights, pending = self._inner(q, k, v, eta, state, use_fla(self.backend, x))
        y = self.o_proj(self.post_norm(o.reshape(B, T, -1)))
        return y, {"weights": weights, "pending": pending, "offset": offset + T}

    def _inner(self, q, k, v, eta, state, fla: bool):
        """Run the inner model from the last mini-batch boundary: tokens pending from a previous call are
        written again (their outputs dropped), so mini-batches stay aligned with the whole sequence."""
        B, T = q.shape[:2]
        weights = state.get("weights") or tuple(w.expand(B, *w.shape) for w in self.weights_init)
        pending = state.get("pending") or {}
        inputs = {"k": k, "v": v, "eta": eta}
        inputs = {n: torch.cat([pending[n], t], 1) if n in pending else t for n, t in inputs.items()}
        P = inputs["k"].shape[1] - T
        q = torch.cat([q.new_zeros(B, P, *q.shape[2:]), q], 1)
        split = (P + T) // self.chunk_size * self.chunk_size
        outputs = []
        if split:
            o, weights = self._run(q[:, :split], *(inputs[n][:, :split] for n in "k v eta".split()), weights, fla)
            outputs.append(o)
        if split < P + T:
            outputs.append(self._run(q[:, split:], *(inputs[n][:, split:] for n in "k v eta".split()), weights, fla)[0])
        rest = {n: t[:, split:] for n, t in inputs.items()}
        return torch.cat(outputs, 1)[:, P:], weights, rest

    def _run(self, q, k, v, eta, weights, fla: bool):
        w, b = self.ttt_norm_weight, self.ttt_norm_bias
        if self.mlp:
            return naive_chunk_ttt_mlp(
                q,
                k,
                v,
                w,
                b,
                eta,
                scale=1.0,
                chunk_size=self.chunk_size,
                initial_state=weights,
                output_final_state=True,
            )
        if fla:
            from fla.ops.ttt import chunk_ttt_linear as op

            weights = tuple(t.contiguous() for t in weights)  # the learned W_0 is broadcast over the batch
        else:
            op = naive_chunk_ttt_linear
        o, W, c = op(
            q,
            k,
            v,
            w,
            b,
            eta,
            scale=self.head_dim**-0.5,
            chunk_size=self.chunk_size,
            initial_state=weights[0],
            initial_state_bias=weights[1],
            output_final_state=True,
        )
        return o, (W, c)
