"""Seed noise: when a gap between two rows of a table is a result and when it is a coin flip.

A row's cell is the mean of its seeds' values. Its noise is the sample standard deviation over those seeds; a
row trained with one seed borrows the **pooled relative seed spread** of the rows of its group (same table,
scale and column) that have several seeds::

    r = sqrt( sum_i (n_i - 1) (s_i / m_i)^2 / sum_i (n_i - 1) )      (degrees of freedom: sum_i (n_i - 1))

so its standard deviation is ``r`` times its value. Two rows differ beyond noise when Welch's t-test on their
means rejects equality at :data:`ALPHA` (two-sided): ``t = (m_a - m_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with
Welch-Satterthwaite degrees of freedom, each side counting ``n - 1`` of its own or the pooled degrees of freedom
of the spread it borrows. Between two rows with several seeds each this is ``scipy.stats.ttest_ind(a, b,
equal_var=False)``. A pair with a side that has neither several seeds nor a pooled spread has no noise estimate:
``one seed``, never a difference nor a tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

ALPHA = 0.05
"""Two-sided significance level of the pair test."""

RULE = (
    "a claim **holds** when every pair of its rows differs in the claimed direction beyond seed noise (Welch's "
    f"t-test on the per-seed values, two-sided p < {ALPHA}; a row with one seed takes the pooled relative seed "
    "spread of the rows of its group that have several), **fails** when some pair differs beyond noise the other "
    "way, is **within noise** when neither, and **one seed** when some pair has no noise estimate (one seed and "
    "no seeded row in its group)"
)
"""The verdict rule in words, printed under every table with claims."""


@dataclass(frozen=True)
class Spread:
    """A row's value and its seed noise on one column."""

    mean: float
    n: int
    """Seeds behind ``mean``."""
    sd: float | None
    """Sample standard deviation over the seeds, or the pooled spread times ``mean`` for a one-seed row; None
    when there is no estimate."""
    df: int
    """Degrees of freedom behind ``sd`` (``n - 1``, or the pooled ones)."""
    pooled: bool = False


def sample_sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation (``ddof=1``); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pooled_relative_sd(rows: Iterable[Sequence[float]]) -> tuple[float, int] | None:
    """``(r, degrees of freedom)`` of the rows with two or more values (module docstring); None when there are
    none, or a mean is 0."""
    num = df = 0
    for values in rows:
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        if mean == 0:
            return None
        num += (len(values) - 1) * (sample_sd(values) / mean) ** 2
        df += len(values) - 1
    return (math.sqrt(num / df), df) if df else None


def spread(values: Sequence[float], pooled: tuple[float, int] | None) -> Spread:
    """The :class:`Spread` of a row with per-seed ``values``, borrowing ``pooled`` when it has one seed."""
    mean = sum(values) / len(values)
    if len(values) >= 2:
        return Spread(mean, len(values), sample_sd(values), len(values) - 1)
    if pooled is None:
        return Spread(mean, 1, None, 0)
    return Spread(mean, 1, pooled[0] * abs(mean), pooled[1], pooled=True)


def p_value(a: Spread, b: Spread) -> float | None:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have the same mean; None without an estimate."""
    if a.sd is None or b.sd is None:
        return None
    va, vb = a.sd**2 / a.n, b.sd**2 / b.n
    diff = a.mean - b.mean
    if va + vb == 0:
        return 1.0 if diff == 0 else 0.0
    df = (va + vb) ** 2 / ((va**2 / a.df if va else 0.0) + (vb**2 / b.df if vb else 0.0))
    return float(2 * student_t.sf(abs(diff) / math.sqrt(va + vb), df))


def compare(a: Spread, b: Spread, higher_is_better: bool) -> str:
    """``better`` or ``worse`` when ``a`` differs from ``b`` beyond noise in that direction, ``within noise``,
    or ``one seed`` when a side has no noise estimate."""
    p = p_value(a, b)
    if p is None:
        return "one seed"
    if p >= ALPHA:
        return "within noise"
    return "better" if (a.mean > b.mean) == higher_is_better else "worse"


def drop(start: Spread, end: Spread) -> Spread:
    """The relative drop ``1 - end / start`` of two rows' means, with its standard error by the delta method,
    ``(m_e / m_s) sqrt(s_e^2 / (n_e m_e^2) + s_s^2 / (n_s m_s^2))``, and Welch-Satterthwaite degrees of freedom;
    no estimate when a side has none. As a :class:`Spread` of one "seed" whose ``sd`` is that standard error, it
    enters :func:`p_value` like a row."""
    ratio = end.mean / start.mean
    if start.sd is None or end.sd is None:
        return Spread(1 - ratio, 1, None, 0)
    parts = [(end.sd / end.mean) ** 2 / end.n, (start.sd / start.mean) ** 2 / start.n]
    total = sum(parts)
    df = total**2 / sum(v**2 / d for v, d in zip(parts, (end.df, start.df), strict=True) if v) if total else 1
    return Spread(1 - ratio, 1, abs(ratio) * math.sqrt(total), df, pooled=start.pooled or end.pooled)
