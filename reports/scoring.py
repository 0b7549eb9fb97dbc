"""How close a rendered table is to the paper at any scale: its claims, order agreement and ratios.

A tiny or partial run cannot be compared with the paper cell by cell; what it can show is whether the paper's
conclusions hold on our numbers. Three measures, each over the cells that count as results:

- **claims** (``Table.claims``): holds / fails / within noise / one seed (the rule is ``reports.noise.RULE``), or
  not measured (a run missing, stale or only a pipeline check);
- **order agreement**: per column, the share of row pairs that ours and the paper order the same way, over the
  rows that have both values, with Kendall's tau-b; pairs of ours within seed noise of each other are ties, and
  a column with no results of ours is compared on the proxy a claim checks in its place (our held-out perplexity
  for the paper's Wiki ppl), marked as such;
- **ratios**: each row divided by its group's reference row (``Table.references``), beside the paper's ratio.

An evaluation cell computed on the offline fixtures or on fewer than :data:`MIN_EXAMPLES` examples is a pipeline
check: it renders with its example count and stays out of deltas, claims and agreement.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from miras.experiment import Claim, Table
from reports import noise

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


VERDICTS = ("holds", "fails", "within noise", "one seed", "not measured")


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str
    """One of :data:`VERDICTS`."""
    detail: str


def _beats(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def group_noise(table: Table, grid: dict, key: str) -> dict[str, noise.Noise | None]:
    """``group -> Noise`` on column ``key``, fitted over the runs of the group whose cell is a result."""
    by_group: dict[str, dict] = {}
    for run in table.runs:
        cell = grid[run.name, key]
        if cell.result is not None:
            by_group.setdefault(run.group, {})[run.name] = dict(zip(cell.seeds, cell.values, strict=True))
    return {group: noise.fit(rows) for group, rows in by_group.items()}


def term(table: Table, grid: dict, key: str, name: str, coef: float, fits: dict) -> noise.Term:
    """Row (run or sweep) ``name``'s share ``coef`` in a comparison on column ``key``."""
    cell = grid[name, key]
    return noise.Term(coef, dict(zip(cell.seeds, cell.values, strict=True)), fits.get(table.run(name).group))


def compare(table: Table, grid: dict, key: str, a: str, b: str, fits: dict) -> noise.Test:
    """Row ``a`` against row ``b`` on column ``key`` (``reports.noise``; the estimate is positive where ``a`` is
    higher)."""
    return noise.test([term(table, grid, key, a, 1.0, fits), term(table, grid, key, b, -1.0, fits)])


def _drop_test(table: Table, grid: dict, key: str, fits: dict, a, b) -> noise.Test:
    """Drop ``a`` against drop ``b``: ``log(start / end)`` of ``a`` less that of ``b``."""
    terms = ((a.start, 1.0), (a.end, -1.0), (b.start, -1.0), (b.end, 1.0))
    return noise.test([term(table, grid, key, name, coef, fits) for name, coef in terms])


def _describe(a: str, b: str, found: noise.Test, labels: dict, drops: bool) -> str:
    tail = "no noise estimate" if found.p is None else f"p = {found.p:.2g}"
    seeds = f"{found.seeds} shared seed{'s' if found.seeds != 1 else ''}"
    if drops:
        return f"{labels[a]} vs {labels[b]}: log drops differ by {found.estimate:+.3f} ({seeds}), {tail}"
    return f"{labels[a]} vs {labels[b]}: {100 * math.expm1(found.estimate):+.1f} % ({seeds}), {tail}"


def check_claim(table: Table, claim: Claim, grid: dict) -> Verdict:
    """The claim on our cells (``grid``: ``(run, column key) -> Cell`` with ``result`` set where a cell counts),
    each pair of a better and a worse row compared beyond seed noise (``reports.noise``): the claim holds when
    every pair is better, fails when any is worse, and is otherwise within noise, or one seed where a pair has no
    noise estimate. The rows of a claim with drops are those drops, compared on ``log(start / end)`` (the larger
    drop is better). The detail names the deciding pair (the least certain one of a claim that holds)."""
    unmeasured: list[str] = []
    for key in (claim.metric, claim.proxy):
        if key is None:
            continue
        missing = [r for r in claim.row_names() if grid[r, key].result is None]
        if missing:
            unmeasured = missing
            continue
        column = next(c for c in table.columns if c.key == key)
        fits, higher = group_noise(table, grid, key), column.higher_is_better
        labels = {r: table.run(r).label for r in claim.row_names()}
        pairs = [(b, w) for b in claim.better for w in claim.worse]
        if claim.drops:
            drop = {d.name: d for d in claim.drops}
            labels, higher = {d.name: d.label for d in claim.drops}, True
            found = {pair: _drop_test(table, grid, key, fits, drop[pair[0]], drop[pair[1]]) for pair in pairs}
        else:
            found = {pair: compare(table, grid, key, *pair, fits) for pair in pairs}
        outcome = {pair: noise.verdict(found[pair], higher) for pair in pairs}

        def p(pair, found=found):
            return found[pair].p

        if worse := [pair for pair in pairs if outcome[pair] == "worse"]:
            status, decisive = "fails", min(worse, key=p)
        elif all(outcome[pair] == "better" for pair in pairs):
            status, decisive = "holds", max(pairs, key=p)
        elif lone := [pair for pair in pairs if outcome[pair] == "one seed"]:
            status, decisive = "one seed", lone[0]
        else:
            within = [pair for pair in pairs if outcome[pair] == "within noise"]
            status, decisive = "within noise", max(within, key=p)
        parts = [] if key == claim.metric else [f"on {column.title}, standing in for the paper's metric"]
        parts.append(_describe(*decisive, found[decisive], labels, bool(claim.drops)))
        return Verdict(claim, status, "; ".join(parts))
    labels = ", ".join(table.run(r).label for r in unmeasured)
    return Verdict(claim, "not measured", f"no result for {labels}")


def paper_verdict(table: Table, claim: Claim) -> str:
    """The claim on the paper's own numbers (``holds``, ``fails``, or ``not measured`` where a value is missing)."""
    values = {r: table.paper_numbers.get((r, claim.metric)) for r in claim.row_names()}
    if any(v is None for v in values.values()):
        return "not measured"
    higher = next(c for c in table.columns if c.key == claim.metric).higher_is_better
    if claim.drops:
        values, higher = {d.name: 1 - values[d.end] / values[d.start] for d in claim.drops}, True
    return "holds" if all(_beats(values[b], values[w], higher) for b in claim.better for w in claim.worse) else "fails"


@dataclass(frozen=True)
class Agreement:
    pairs: int
    """Row pairs ordered on both sides (neither tied)."""
    share: float | None
    tau: float | None
    ties: int = 0
    """Row pairs tied on our side: within seed noise of each other (or equal)."""
    proxy: str | None = None
    """Key of our column compared with the paper's, where it is not the paper's own metric."""


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def order_agreement(
    ours: dict[str, float], paper: dict[str, float], tie: Callable[[str, str], bool] | None = None
) -> Agreement:
    """Over the rows with both values: the share of row pairs ordered alike, and Kendall's tau-b. A pair is tied on
    our side when its values are equal or ``tie(a, b)`` says they are within noise; tied pairs on either side are
    left out of the share and count as ties in tau-b, ``(C - D) / sqrt((N - T_ours) (N - T_paper))``."""
    rows = sorted(set(ours) & set(paper))
    if len(rows) < 2:
        return Agreement(0, None, None)
    same = counted = ties = concordance = tied_paper = total = 0
    for a, b in combinations(rows, 2):
        total += 1
        s_ours = 0 if tie is not None and tie(a, b) else _sign(ours[a] - ours[b])
        s_paper = _sign(paper[a] - paper[b])
        ties += s_ours == 0
        tied_paper += s_paper == 0
        concordance += s_ours * s_paper
        if s_ours and s_paper:
            counted += 1
            same += s_ours == s_paper
    denom = math.sqrt((total - ties) * (total - tied_paper))
    return Agreement(counted, same / counted if counted else None, concordance / denom if denom else None, ties)


def proxy_of(table: Table, key: str) -> str | None:
    """The column a claim checks in place of column ``key`` (the first such claim's ``proxy``), or None."""
    return next((c.proxy for c in table.claims if c.metric == key and c.proxy), None)


def column_agreement(table: Table, grid: dict) -> dict[str, Agreement]:
    """Order agreement of every column over the whole table (runs and sweeps), pairs within seed noise tied; a
    column with fewer than two results of ours beside the paper's is compared on its proxy (:func:`proxy_of`),
    with our values negated where the proxy improves the other way."""
    out = {}
    rows = [r.name for r in table.runs] + list(table.sweeps())
    columns = {c.key: c for c in table.columns}
    for col in table.columns:
        paper = {r: grid[r, col.key].paper for r in rows if grid[r, col.key].paper is not None}
        key = col.key
        if sum(grid[r, key].result is not None for r in paper) < 2 and proxy_of(table, key):
            key = proxy_of(table, key)
        sign = 1 if columns[key].higher_is_better == col.higher_is_better else -1
        ours = {r: sign * grid[r, key].result for r in rows if grid[r, key].result is not None}
        fits = group_noise(table, grid, key)

        def tie(a, b, key=key, fits=fits):
            return noise.verdict(compare(table, grid, key, a, b, fits), True) == "within noise"

        found = order_agreement(ours, paper, tie)
        out[col.key] = found if key == col.key else dataclasses.replace(found, proxy=key)
    return out


def noise_floor(table: Table, grid: dict) -> list[tuple[str, str, float, noise.Noise | None, int, int]]:
    """``(column key, group, raw relative seed spread, fitted noise, rows, runs)`` of every group and column whose
    result rows include some with several seeds."""
    out = []
    for col in table.columns:
        fits = group_noise(table, grid, col.key)
        for group in dict.fromkeys(r.group for r in table.runs):
            cells = [grid[r.name, col.key] for r in table.runs if r.group == group]
            seeded = [c.values for c in cells if c.result is not None and len(c.values) > 1]
            raw = noise.pooled_relative_sd(seeded)
            if raw is not None:
                out.append((col.key, group, raw, fits.get(group), len(seeded), sum(map(len, seeded))))
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
