"""How far the chunkwise Miras memory is from the per-token recurrence (section 5.4 reports no such number).

``python -m benchmarks.miras_staleness`` prints a Markdown table of the relative RMS difference of the outputs
of ``naive_chunk_miras`` and ``naive_recurrent_miras`` on random inputs in fp64, for the paper's memories and
their linear variants, at chunk sizes 16 and 64 and both read modes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.miras.naive import naive_chunk_miras, naive_recurrent_miras
from kernels.miras.spec import PRESETS, MemorySpec, weight_shapes
from kernels.utils import relative_rms

B, T, H, D = 2, 256, 2, 16
ETAS, ALPHA = (0.001, 0.1), 0.95


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q, k = (F.normalize(randn(B, T, H, D), dim=-1) for _ in range(2))
    v = randn(B, T, H, D)
    eta = 2 * torch.sigmoid(randn(B, T, H, D))
    alpha = torch.sigmoid(torch.logit(torch.tensor(ALPHA, dtype=torch.float64)) + randn(B, T, H, D))
    delta = F.softplus(randn(B, T, H, D) + 0.5)
    return q, k, v, eta, alpha, delta


def initial_state(spec: MemorySpec, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    weights = tuple(
        torch.randn(B, H, *s, generator=g, dtype=torch.float64) / s[0] ** 0.5 for s in weight_shapes(spec, D, D)
    )
    if spec.retention == "kl":
        weights = tuple(torch.softmax(w, -2) * w.shape[-2] ** 0.5 for w in weights)
    return {"accumulator" if spec.retention == "lq" else "weights": weights}


def table() -> str:
    q, k, v, eta, alpha, delta = inputs()
    lines = [
        f"Relative RMS of chunk vs per-token outputs; fp64, B={B}, T={T}, H={H}, D={D}, "
        f"eta ~ scale * 2 sigmoid(N), alpha ~ sigmoid(logit {ALPHA} + N).",
        "",
        "| memory | read | eta scale | chunk 16 | chunk 64 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, spec in PRESETS.items():
        state = initial_state(spec)
        for scale in ETAS:
            ref, _ = naive_recurrent_miras(q, k, v, scale * eta, alpha, spec, delta, state)
            for read in ("chunk", "token"):
                chunked = spec.replace(read=read)
                errors = [
                    relative_rms(
                        ref, naive_chunk_miras(q, k, v, scale * eta, alpha, chunked, delta, state, chunk_size=c)[0]
                    )
                    for c in (16, 64)
                ]
                lines.append(f"| {name} | {read} | {scale:g} | {errors[0]:.3f} | {errors[1]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
