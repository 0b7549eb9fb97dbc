"""``python -m benchmarks.hosa_cg_accuracy``: how many CG steps ``parallel_hosa`` needs (the README's tables).

A torch fp32 transcription of the kernel's arithmetic (the centred ``S_kk`` products and the CG recurrences,
every query in lockstep, the softmax weights materialised) is compared with ``naive_hosa`` in fp64: relative RMS
error of ``y`` over all tokens and the worst per-token relative error, per number of CG steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.hosa.naive import naive_hosa


def cg_outputs(q, k, v, ridge: float, scale: float, steps: int) -> dict[int, torch.Tensor]:
    """``{i: y after i CG steps}`` for ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, computed in fp32."""
    q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))
    T = q.shape[2]
    logits = scale * q @ k.transpose(-1, -2)
    w = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    kbar, vbar = w @ k, w @ v

    def weighted(x):
        """``w_ts (k_s - kbar_t) . x_t`` for every pair."""
        return w * (x @ k.transpose(-1, -2) - (kbar * x).sum(-1, keepdim=True))

    def matvec(x):
        wc = weighted(x)
        return wc @ k - kbar * wc.sum(-1, keepdim=True) + ridge * x

    b = q - kbar
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), (r * r).sum(-1, keepdim=True)
    out = {}
    for i in range(1, steps + 1):
        Ap = matvec(p)
        pAp = (p * Ap).sum(-1, keepdim=True)
        alpha = torch.where(pAp > 0, rr / pAp, torch.zeros_like(rr))
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = (r * r).sum(-1, keepdim=True)
        p = r + torch.where(rr > 0, rr_new / rr, torch.zeros_like(rr)) * p
        rr = rr_new
        wc = weighted(x)
        out[i] = (vbar + wc @ v - vbar * wc.sum(-1, keepdim=True)).transpose(1, 2)
    return out


def errors(ref: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Relative RMS over all tokens and the worst per-token relative error."""
    y = y.double()
    rms = ((y - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
    worst = ((y - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)).max().item()
    return rms, worst


def unit_keys(K: int, T: int, seed: int = 1, normalise: bool = True) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, T, 2, K, generator=g, dtype=torch.float64) for _ in range(2))
    if normalise:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return q, k, torch.randn(1, T, 2, K, generator=g, dtype=torch.float64)


def ar1_keys(K: int = 64, T: int = 256, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Test-time regression Figure 2's stream: AR(1) keys (0.9, then 0.999), equicorrelated noise (0.5)."""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.full((K, K), 0.5, dtype=torch.float64) + 0.5 * torch.eye(K))
    keys = [torch.randn(K, generator=g, dtype=torch.float64)]
    for t in range(T):
        decay = 0.9 if t < T // 4 else 0.999
        keys.append(decay * keys[-1] + 0.02 * chol @ torch.randn(K, generator=g, dtype=torch.float64))
    keys = torch.stack(keys)
    q = keys[1:]
    return q[None, :, None], keys[:-1][None, :, None], F.normalize(q, dim=-1)[None, :, None]


def main() -> None:
    steps = (16, 24, 32, 40)
    print("| data, ridge = 1e-3 | " + " | ".join(map(str, steps)) + " |")
    cases = {
        "unit keys, K = 32, T = 512": unit_keys(32, 512),
        "unit keys, K = 64, T = 1024": unit_keys(64, 1024),
        "unit keys, K = 128, T = 512": unit_keys(128, 512),
        "Figure 2 data, K = 64, T = 256": ar1_keys(),
    }
    for name, (q, k, v) in cases.items():
        K = q.shape[-1]
        ref = naive_hosa(q, k, v, ridge=1e-3)
        ys = cg_outputs(q, k, v, 1e-3, K**-0.5, max(steps))
        print(f"| {name} | " + " | ".join("{:.1e} / {:.1e}".format(*errors(ref, ys[i])) for i in steps) + " |")
    steps = (8, 16, 24, 32, 48)
    print("\n| data, K = V = 64, T = 512 | ridge | " + " | ".join(map(str, steps)) + " |")
    for name, normalise in (("unit keys", True), ("raw Gaussian keys", False)):
        q, k, v = unit_keys(64, 512, normalise=normalise)
        for ridge in (1e-3, 1e-2, 1e-1):
            ref = naive_hosa(q, k, v, ridge=ridge)
            ys = cg_outputs(q, k, v, ridge, 64**-0.5, max(steps))
            print(f"| {name} | {ridge:g} | " + " | ".join(f"{errors(ref, ys[i])[0]:.1e}" for i in steps) + " |")


if __name__ == "__main__":
    main()
