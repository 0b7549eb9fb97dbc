"""Seed noise: when a gap between rows of a table is a result and when it is a coin flip.

Rows trained with the same seed read the same documents in the same order, and at the tiny scale that order moves
every row's perplexity alike (by several percent from one seed to the next), so seeds are blocks. Within a group of
rows (same table, scale and column), the value of row ``i`` at seed ``s`` is modelled as

    log y_is = a_i + b_s + e_is,        e_is ~ N(0, sigma^2)

(``b_s``: what seed ``s`` does to every row alike; on the raw values instead of their logs where a value is not
positive). ``sigma`` is fitted by least squares over every value of the group, with ``values - rank`` residual
degrees of freedom: only rows with several seeds inform it, and a row with one seed is compared through it.

A comparison is a contrast ``sum_r c_r log y_rs`` (``log y_a - log y_b`` for two rows; ``(log y_a,start - log y_a,end)
- (log y_b,start - log y_b,end)`` for two drops along a context) averaged over the seeds its rows share, ``k`` of
them: the seed effects cancel, its variance is ``sum_r c_r^2 sigma_r^2 / k`` and it is tested with Student's t at
the residual degrees of freedom (Welch-Satterthwaite when its rows come from groups of different noise). Between two
rows of a group that are its only rows, this is the paired t-test on the logs.
Two-sided p < :data:`ALPHA` is a difference beyond noise. A comparison with no shared seed, or whose group has no
residual degrees of freedom (no row with two seeds), has no noise estimate: ``one seed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

ALPHA = 0.05
"""Two-sided significance level of a comparison."""

RULE = (
    "a claim **holds** when every pair of its rows differs in the claimed direction beyond seed noise, **fails** "
    "when some pair differs beyond noise the other way, is **within noise** when neither, and **one seed** when "
    "some pair has no noise estimate; a pair is compared on the seeds both rows trained, each seed's shared effect "
    "cancelled, by a t-test (two-sided p < "
    f"{ALPHA}) against the noise that is left, fitted over the rows of the group that have several seeds "
    "(`reports/noise.py`)"
)
"""The verdict rule in words, printed under every table with claims."""


@dataclass(frozen=True)
class Noise:
    """The fitted noise of a group of rows on one column."""

    sigma: float
    """Residual standard deviation (of the logs: a relative spread)."""
    df: int
    log: bool
    """Fitted on log values (else raw values)."""


@dataclass(frozen=True)
class Term:
    """A row's share in a comparison: ``coef`` times its per-seed values, with the noise of its group."""

    coef: float
    values: Mapping[int, float]
    """Seed -> value."""
    noise: Noise | None


@dataclass(frozen=True)
class Test:
    estimate: float
    """Mean of the contrast over the shared seeds (in logs where the noise is)."""
    seeds: int
    """Seeds shared by every row of the comparison."""
    p: float | None
    """Two-sided p-value; None without a noise estimate."""


def sample_sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation (``ddof=1``); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pooled_relative_sd(rows: Sequence[Sequence[float]]) -> float | None:
    """``sqrt(sum_i (n_i - 1) (s_i / m_i)^2 / sum_i (n_i - 1))`` over the rows with two or more values: the raw seed
    spread, seed effects included; None when no row has two values or a mean is 0."""
    num = df = 0
    for values in rows:
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        if mean == 0:
            return None
        num += (len(values) - 1) * (sample_sd(values) / mean) ** 2
        df += len(values) - 1
    return math.sqrt(num / df) if df else None


def fit(rows: Mapping[str, Mapping[int, float]]) -> Noise | None:
    """The residual noise of the additive row + seed model over ``rows`` (name -> seed -> value); None without
    residual degrees of freedom."""
    cells = [(r, s, v) for r, values in rows.items() for s, v in values.items()]
    log = all(v > 0 for _, _, v in cells)
    names, seeds = sorted(rows), sorted({s for _, s, _ in cells})
    design = np.zeros((len(cells), len(names) + len(seeds)))
    for i, (r, s, _) in enumerate(cells):
        design[i, names.index(r)] = design[i, len(names) + seeds.index(s)] = 1.0
    y = np.array([math.log(v) if log else v for _, _, v in cells])
    rank = np.linalg.matrix_rank(design) if cells else 0
    df = len(cells) - int(rank)
    if df <= 0:
        return None
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return Noise(math.sqrt(float(np.sum((y - design @ coef) ** 2)) / df), df, log)


def test(terms: Sequence[Term]) -> Test:
    """The contrast ``sum coef * value`` (logs where every term's noise is on logs) over the seeds every term
    shares, and its two-sided p-value."""
    shared = sorted(set.intersection(*(set(t.values) for t in terms)))
    noises = [t.noise for t in terms]
    log = all(n is not None and n.log for n in noises) or all(v > 0 for t in terms for v in t.values.values())
    if not shared:
        return Test(math.nan, 0, None)

    def value(v: float) -> float:
        return math.log(v) if log else v

    estimate = sum(sum(t.coef * value(t.values[s]) for t in terms) for s in shared) / len(shared)
    if any(n is None or n.log != log for n in noises):
        return Test(estimate, len(shared), None)
    groups: dict[int, list] = {}  # the terms of one group share one estimate of sigma: their variances add first
    for t in terms:
        groups.setdefault(id(t.noise), [0.0, t.noise.df])[0] += t.coef**2 * t.noise.sigma**2 / len(shared)
    var = sum(v for v, _ in groups.values())
    if var == 0:
        return Test(estimate, len(shared), 1.0 if estimate == 0 else 0.0)
    df = var**2 / sum(v**2 / d for v, d in groups.values() if v)
    return Test(estimate, len(shared), float(2 * student_t.sf(abs(estimate) / math.sqrt(var), df)))


def verdict(found: Test, higher_is_better: bool) -> str:
    """``better`` or ``worse`` when the contrast differs from 0 beyond noise in that direction (positive: the
    first row is higher), ``within noise``, or ``one seed`` without a noise estimate."""
    if found.p is None:
        return "one seed"
    if found.p >= ALPHA:
        return "within noise"
    return "better" if (found.estimate > 0) == higher_is_better else "worse"
