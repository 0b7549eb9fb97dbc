"""Test-time regression layers as mixers: linear attention, recursive least squares, higher-order attention.

The layer of the test-time-regression paper (Wang, Shi, Fox 2025, section 6): per head, a regressor fitted at
test time to the pairs ``(k_i, v_i)`` of the causal prefix and read at ``q_t``. Keys come from a linear causal
convolution of ``mixer.conv_size`` taps over a key projection (the paper: length 2, so that a layer can store
the bigrams ``(x_{t-1}, x_t)``); q and v are plain projections; an output projection follows.

| mixer | regressor (``kernels`` op) | fields |
| --- | --- | --- |
| ``linear_attention`` | one batch-gradient step (``ttr.linear_attention``) | ``mixer.ttr_norm`` |
| ``rls`` | exact (weighted) least squares (``ttr.rls_*``) | ``mixer.ttr_ridge``, ``ttr_forget``, ``chunk_size`` |
| ``higher_order_attention`` | local-linear (p = 1) softmax regression (``hosa``) | ``mixer.ttr_ridge`` |

``forward(x[B, T, D], state=None, cu_seqlens=None) -> (y[B, T, D], state)``; a prefix and its continuation give
the outputs of the whole sequence. Linear attention carries ``S [B, H, K, V]``, RLS ``(S, P)`` (Sherman-Morrison
for single tokens, chunkwise Woodbury updates otherwise; the same function), higher-order attention a KV cache
over which each continuation recomputes the attention (quadratic decoding; it has no recurrent form).
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.hosa import naive_hosa, parallel_hosa
from kernels.ttr import linear_attention, rls_chunk, rls_recurrent
from miras.config import ConfigError, MixerConfig
from miras.layers import register_mixer
from miras.layers.modules import ShortConvolution, check_backend, split_varlen


class RegressionMixer(nn.Module):
    """q, k, v projections -> a linear short convolution on the keys -> heads -> :meth:`regress` -> ``o_proj``."""

    backends = ("auto", "torch")

    def __init__(self, d_model: int, config: MixerConfig, layer_idx: int = 0) -> None:
        super().__init__()
        check_backend(config, self.backends)
        if d_model % config.n_head:
            raise ConfigError(
                f"mixer.n_head={config.n_head} is invalid for d_model={d_model}; allowed values: a divisor of it"
            )
        self.config, self.n_head = config, config.n_head
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_conv = ShortConvolution(d_model, config.conv_size, activation=False) if config.conv_size else None
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def regress(self, q, k, v, state):
        """``(o[B, T, H, V], state)`` of the regressor over ``q, k, v [B, T, H, .]`` continuing ``state``."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: dict | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict | None]:
        if cu_seqlens is not None:
            return split_varlen(lambda part: self(part)[0], x, cu_seqlens, state), None
        B, T, _ = x.shape
        state = state or {}
        k, conv = self.k_proj(x), None
        if self.k_conv is not None:
            k, conv = self.k_conv(k, state.get("conv"))
        q, k, v = (h.view(B, T, self.n_head, -1) for h in (self.q_proj(x), k, self.v_proj(x)))
        o, memory = self.regress(q, k, v, state.get("memory"))
        return self.o_proj(o.reshape(B, T, -1)), {"memory": memory, "conv": conv}


@register_mixer("linear_attention")
class LinearAttention(RegressionMixer):
    """Linear attention as one batch-gradient step of least squares, with Qin et al.'s output normalisation."""

    def regress(self, q, k, v, state):
        return linear_attention(q, k, v, norm=self.config.ttr_norm, initial_state=state, output_final_state=True)


@register_mixer("rls")
class RecursiveLeastSquares(RegressionMixer):
    """Recursive least squares (eq. "ols", or exponentially weighted with ``mixer.ttr_forget < 1``)."""

    def regress(self, q, k, v, state):
        c = self.config
        kwargs = {"ridge": c.ttr_ridge, "forget": c.ttr_forget, "initial_state": state, "output_final_state": True}
        if q.shape[1] == 1:
            return rls_recurrent(q, k, v, **kwargs)
        return rls_chunk(q, k, v, chunk_size=c.chunk_size, **kwargs)


@register_mixer("higher_order_attention")
class HigherOrderAttention(RegressionMixer):
    """Higher-order (p = 1, local-linear) softmax attention; the Triton kernel on CUDA (``backend`` ``auto`` or
    ``triton``), the exact batched solve elsewhere."""

    backends = ("auto", "torch", "triton")

    def regress(self, q, k, v, cache):
        T = q.shape[1]
        if cache is not None:
            q = torch.cat([cache[0].new_zeros(cache[0].shape[0], cache[0].shape[1], *q.shape[2:]), q], dim=1)
            k, v = torch.cat([cache[0], k], dim=1), torch.cat([cache[1], v], dim=1)
        backend = self.config.backend
        if backend == "triton" or (backend == "auto" and q.is_cuda):
            o = parallel_hosa(q, k, v, ridge=self.config.ttr_ridge)
        else:
            o = naive_hosa(q, k, v, ridge=self.config.ttr_ridge)
        return o[:, -T:], (k, v)
