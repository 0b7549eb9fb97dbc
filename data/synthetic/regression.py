"""The non-stationary online-regression stream of the test-time-regression paper (Wang, Shi, Fox 2025, Fig. 2).

Keys follow an AR(1) process whose decay switches from fast to slow a quarter of the way in::

    k_{t+1} = a_t k_t + s ε_t,   a_t = decays[0] for t < switch, decays[1] after,   ε_t ~ N(0, Σ)

with s = ``noise_scale``. The layer regresses ``v_t = k_{t+1} / ||k_{t+1}||`` on ``k_t`` (mimicking
next-token prediction) and is queried with ``q_t = k_{t+1}``, so its output at step t is an out-of-sample
one-step-ahead prediction, scored against the next value ``v_{t+1}``.

Indexing is 0-based: ``keys[:, t]`` is k_t with k_0 the initial key (the paper's k_1). At step t a causal
layer sees ``keys[:, :t+1]``, ``values[:, :t+1]`` and ``queries[:, t]``, and its output is scored against
``targets[:, t] = v_{t+1} = values[:, t+1]``. The stream therefore holds keys k_0 ... k_{T+1}.

Choices the paper leaves open, each a keyword of :func:`online_regression`:

- Σ: unit diagonal and non-zero off-diagonals, values not given; default equicorrelated, ρ = 0.5.
- k_0: not given; default N(0, I), which reproduces the shape of the paper's naive-forecast curve.
- The switch step: the paper writes "t < T/4" with 1-based t. Here the first ``switch`` transitions
  (k_0 → ... → k_switch) use ``decays[0]``; the literal 1-based reading gives ``switch − 1`` of them.
"""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset, get_worker_info


def equicorrelated(dim: int, corr: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[dim, dim] covariance with unit diagonal and ``corr`` off the diagonal."""
    if not -1 / max(dim - 1, 1) <= corr < 1:
        raise ValueError(f"noise_corr must be in [-1/(d_k-1), 1) = [{-1 / max(dim - 1, 1):.4g}, 1), got {corr}")
    return torch.full((dim, dim), corr, dtype=dtype).fill_diagonal_(1.0)


def online_regression(
    batch: int,
    seq_len: int = 256,
    d_k: int = 64,
    decays: tuple[float, float] = (0.9, 0.999),
    switch: int | None = None,
    noise_scale: float = 0.02,
    noise_corr: float = 0.5,
    k1: str | torch.Tensor = "normal",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """``batch`` independent streams of length ``seq_len`` (indexing in the module doc).

    Args:
        batch: B, independent sequences.
        seq_len: T (the paper: 256).
        d_k: D, key dimension (the paper: 64).
        decays: AR(1) decay before and after the switch (the paper: 0.9 then 0.999).
        switch: transitions that use ``decays[0]``; default ``seq_len // 4`` (the paper's T/4).
        noise_scale: s (the paper: 0.02).
        noise_corr: off-diagonal of the equicorrelated noise covariance Σ (unit diagonal). The paper only
            says the off-diagonals are non-zero, so that keys are not orthogonal.
        k1: the initial key k_0 (the paper's k_1, not stated there): ``"normal"`` for N(0, I), ``"zeros"``,
            or a [D] or [B, D] tensor.
        seed: seeds the ``torch.Generator`` (CPU) that draws k_0 and the noise.
        dtype: floating dtype of every output.

    Returns:
        ``keys`` [B, T, D]: k_t. ``values`` [B, T, D]: v_t = k_{t+1} / ||k_{t+1}||.
        ``queries`` [B, T, D]: q_t = k_{t+1}. ``targets`` [B, T, D]: v_{t+1}, what the step-t output is
        scored against. ``noise`` [B, T + 1, D]: s ε_t, so that k_{t+1} = decay[t] k_t + noise[t].
        ``decay`` [T + 1]: a_t.
    """
    switch = seq_len // 4 if switch is None else switch
    if seq_len < 1 or d_k < 1 or batch < 1:
        raise ValueError(f"batch, seq_len and d_k must be >= 1, got {batch}, {seq_len}, {d_k}")
    if not 0 <= switch <= seq_len + 1:
        raise ValueError(f"switch must be in [0, seq_len + 1] = [0, {seq_len + 1}], got {switch}")
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(equicorrelated(d_k, noise_corr))
    if isinstance(k1, torch.Tensor):
        k = k1.to(torch.float64).expand(batch, d_k).clone()
    elif k1 == "normal":
        k = torch.randn(batch, d_k, generator=g, dtype=torch.float64)
    elif k1 == "zeros":
        k = torch.zeros(batch, d_k, dtype=torch.float64)
    else:
        raise ValueError(f"k1 must be 'normal', 'zeros' or a tensor, got {k1!r}")
    noise = noise_scale * torch.randn(batch, seq_len + 1, d_k, generator=g, dtype=torch.float64) @ chol.T
    decay = torch.full((seq_len + 1,), float(decays[1]), dtype=torch.float64)
    decay[:switch] = decays[0]

    ks = [k]
    for t in range(seq_len + 1):
        ks.append(decay[t] * ks[-1] + noise[:, t])
    ks = torch.stack(ks, dim=1)  # [B, T + 2, D]: k_0 ... k_{T+1}
    unit = ks / ks.norm(dim=-1, keepdim=True)
    out = {
        "keys": ks[:, :seq_len],
        "values": unit[:, 1 : seq_len + 1],
        "queries": ks[:, 1 : seq_len + 1],
        "targets": unit[:, 2:],
        "noise": noise,
        "decay": decay,
    }
    return {name: x.to(dtype) for name, x in out.items()}


def one_step_mse(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[T] squared L2 error ``||targets_t − pred_t||²`` per step, averaged over the batch ([B, T, D] inputs)."""
    return (pred - targets).pow(2).sum(-1).mean(0)


def naive_forecast(values: torch.Tensor) -> torch.Tensor:
    """[B, T, D] naive forecast: at step t, the last value seen, v_t (scored against v_{t+1})."""
    return values.clone()


class OnlineRegressionDataset(IterableDataset):
    """Fresh :func:`online_regression` batches, the i-th drawn with ``seed + i`` (endless if ``num_batches`` is None).

    Dataloader workers split the indices between them; use it with ``batch_size=None``.
    """

    def __init__(self, batch: int, num_batches: int | None = None, seed: int = 0, **kwargs) -> None:
        self.batch, self.num_batches, self.seed, self.kwargs = batch, num_batches, seed, kwargs

    def __iter__(self):
        info = get_worker_info()
        i, step = (info.id, info.num_workers) if info else (0, 1)
        while self.num_batches is None or i < self.num_batches:
            yield online_regression(self.batch, seed=self.seed + i, **self.kwargs)
            i += step
