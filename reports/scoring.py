"""How close a rendered table is to the paper at any scale: its claims, order agreement and ratios.

A tiny or partial run cannot be compared with the paper cell by cell; what it can show is whether the paper's
conclusions hold on our numbers. Three measures, each over the cells that count as results:

- **claims** (``Table.claims``): holds / fails / not measured (a run missing, stale or only a pipeline check);
- **order agreement**: per column, the share of row pairs that ours and the paper order the same way, over the
  rows that have both values, with Kendall's tau (``scipy.stats.kendalltau``);
- **ratios**: each row divided by its group's reference row (``Table.references``), beside the paper's ratio.

An evaluation cell computed on the offline fixtures or on fewer than :data:`MIN_EXAMPLES` examples is a pipeline
check: it renders with its example count and stays out of deltas, claims and agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

from scipy.stats import kendalltau

from miras.experiment import Claim, Table

MIN_EXAMPLES = 100
"""Fewest examples behind an evaluation metric for it to count as a result."""


def eval_examples(summary: dict, key: str) -> tuple[int | None, bool]:
    """``(examples, on fixtures)`` behind metric ``key`` of ``summary``; ``(None, False)`` for training metrics.

    lm-eval records its effective sample count per task (``eval.lm_eval.n_samples``); the average accuracy counts
    its smallest task; S-NIAH its samples per task and length."""
    parts = key.split("/")
    if parts[0] != "eval" or len(parts) < 2:
        return None, False
    records = summary.get("eval", {})
    if parts[1].startswith("niah_"):
        record = records.get("niah") or {}
        return record.get("samples"), False
    record = records.get("lm_eval") or {}
    counts = {task: n for task, n in (record.get("n_samples") or {}).items() if n is not None}
    fixtures = str(record.get("data", "")).startswith("offline fixtures")
    if parts[1] == "avg":
        return (min(counts.values()) if counts else None), fixtures
    return counts.get(parts[1]), fixtures


def is_pipeline_check(examples: int | None, fixtures: bool) -> bool:
    return fixtures or (examples is not None and examples < MIN_EXAMPLES)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str
    """``holds``, ``fails`` or ``not measured``."""
    detail: str


def _beats(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def check_claim(table: Table, claim: Claim, grid: dict) -> Verdict:
    """The claim on our cells (``grid``: ``(run, column key) -> Cell`` with ``result`` set where a cell counts)."""
    unmeasured: list[str] = []
    for key in (claim.metric, claim.proxy):
        if key is None:
            continue
        runs = (*claim.better, *claim.worse)
        values = {r: grid[r, key].result for r in runs}
        missing = [r for r, v in values.items() if v is None]
        if missing:
            unmeasured = missing
            continue
        column = next(c for c in table.columns if c.key == key)
        holds = all(_beats(values[b], values[w], column.higher_is_better) for b in claim.better for w in claim.worse)
        detail = "" if key == claim.metric else f"on {column.title}, standing in for the paper's metric"
        return Verdict(claim, "holds" if holds else "fails", detail)
    labels = ", ".join(table.run(r).label for r in unmeasured)
    return Verdict(claim, "not measured", f"no result for {labels}")


def paper_verdict(table: Table, claim: Claim) -> str:
    """The claim on the paper's own numbers (``holds``, ``fails``, or ``not measured`` where a value is missing)."""
    values = {r: table.paper_numbers.get((r, claim.metric)) for r in (*claim.better, *claim.worse)}
    if any(v is None for v in values.values()):
        return "not measured"
    column = next(c for c in table.columns if c.key == claim.metric)
    return (
        "holds"
        if all(_beats(values[b], values[w], column.higher_is_better) for b in claim.better for w in claim.worse)
        else "fails"
    )


@dataclass(frozen=True)
class Agreement:
    pairs: int
    share: float | None
    tau: float | None


def order_agreement(ours: dict[str, float], paper: dict[str, float]) -> Agreement:
    """Over the rows with both values: the share of row pairs ordered alike (pairs tied on either side are left
    out) and Kendall's tau-b."""
    rows = sorted(set(ours) & set(paper))
    if len(rows) < 2:
        return Agreement(0, None, None)
    same = counted = 0
    for a, b in combinations(rows, 2):
        d_ours, d_paper = ours[a] - ours[b], paper[a] - paper[b]
        if d_ours == 0 or d_paper == 0:
            continue
        counted += 1
        same += (d_ours > 0) == (d_paper > 0)
    tau = kendalltau([ours[r] for r in rows], [paper[r] for r in rows]).statistic
    return Agreement(
        counted, same / counted if counted else None, None if tau is None or math.isnan(tau) else float(tau)
    )


def column_agreement(table: Table, grid: dict) -> dict[str, Agreement]:
    """Order agreement of every column over the whole table (runs and sweeps)."""
    out = {}
    rows = [r.name for r in table.runs] + list(table.sweeps())
    for col in table.columns:
        ours = {r: grid[r, col.key].result for r in rows}
        paper = {r: grid[r, col.key].paper for r in rows}
        out[col.key] = order_agreement(
            {k: v for k, v in ours.items() if v is not None}, {k: v for k, v in paper.items() if v is not None}
        )
    return out


def reference_of(table: Table, group: str) -> str | None:
    return next((r for r in table.references if table.run(r).group == group), None)


def ratios(table: Table, grid: dict) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """``(run, column) -> (ours, paper)`` ratio to the group's reference row, for groups that declare one."""
    out = {}
    for run in table.runs:
        ref = reference_of(table, run.group)
        if ref is None:
            continue
        for col in table.columns:
            cell, base = grid[run.name, col.key], grid[ref, col.key]
            ours = cell.result / base.result if cell.result is not None and base.result else None
            paper = cell.paper / base.paper if cell.paper is not None and base.paper else None
            out[run.name, col.key] = (ours, paper)
    return out


def mean_agreement(agreement: dict[str, Agreement]) -> float | None:
    shares = [a.share for a in agreement.values() if a.share is not None]
    return sum(shares) / len(shares) if shares else None
