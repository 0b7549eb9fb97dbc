"""Harvest run summaries into ``reports/`` and render every table from them: ours beside the paper's numbers,
the paper's claims checked on ours, order agreement and ratios to a reference row (``reports.scoring``).

``harvest`` copies ``runs/<scale>/<paper>/<table>/<run>/seed<k>/summary.json`` to the tracked
``reports/<paper>/<table>/summaries/<scale>/<run>.seed<k>.json``, and the run's training-loss curve from its
TensorBoard event files to ``reports/<paper>/<table>/curves/<scale>/<run>.seed<k>.json`` (``reports.plots``).
``render`` reads only those tracked copies and the experiment file, so any clone regenerates every report and
its figures; rendering twice changes nothing.

Cells: ``-`` where there is no number (run unavailable, not trained, or column not evaluated yet);
``stale`` where every summary of the cell was trained with a config that no longer matches the declaration.
A sweep (``Run.sweep``) adds a row whose cells are those of its best run on the table's first column.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from miras.config import config_hash
from miras.experiment import Table, experiment_files, load_experiment
from miras.scales import SCALES
from reports import noise, plots, scoring

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"


def summaries_dir(reports_dir: Path, table: Table, scale: str) -> Path:
    return reports_dir / table.paper / table.runs_key / "summaries" / scale


def harvest(runs_dir: Path, reports_dir: Path = REPORTS) -> list[Path]:
    """Copy every finished run's summary under ``runs_dir`` into ``reports_dir``; returns the new paths.

    A copied summary (or one whose curve file is missing) also gets its training curve saved beside the
    summaries folder, under ``curves/``.
    """
    copied = []
    for src in sorted(Path(runs_dir).glob("*/*/*/*/seed*/summary.json")):
        scale, paper, table, run, seed = src.parts[-6:-1]
        dst = reports_dir / paper / table / "summaries" / scale / f"{run}.{seed}.json"
        curve = reports_dir / paper / table / "curves" / scale / f"{run}.{seed}.json"
        unchanged = dst.exists() and dst.read_bytes() == src.read_bytes()
        if not (unchanged and curve.exists()):
            plots.save_curve(src.parent, json.loads(src.read_text()), curve)
        if unchanged:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied


def load_summaries(reports_dir: Path, table: Table, scale: str) -> list[dict]:
    """The table's harvested summaries at ``scale``, and for each (run, seed) with no summary of the declared
    config in them, a summary of that same config (same config hash) from another table of the paper, marked
    ``borrowed`` with where it comes from (Table 4's full Yaad is Table 2's Yaad 340M, trained once)."""
    folder = summaries_dir(reports_dir, table, scale)
    names = {run.name for run in table.runs}
    own = [s for s in (json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))) if s["run"] in names]
    others = {}
    for path in sorted((reports_dir / table.paper).glob(f"*/summaries/{scale}/*.json")):
        if path.parent != folder:
            s = json.loads(path.read_text())
            others.setdefault(s["config_hash"], s)
    if not others:
        return own
    have = {(s["run"], s["seed"], s["config_hash"]) for s in own}
    seeds = sorted({s["seed"] for s in others.values()})
    borrowed = []
    for run in table.runs:
        if not run.at(scale):
            continue
        for seed in seeds:
            chash = config_hash(run.config(scale, seed=seed))
            if chash in others and (run.name, seed, chash) not in have:
                source = others[chash]
                borrowed.append({**source, "run": run.name, "borrowed": f"{source['table']}/{source['run']}"})
    return own + borrowed


def default_scale(reports_dir: Path, table: Table) -> str:
    """The largest scale that has harvested summaries for ``table`` (``paper`` when none has)."""
    for scale in SCALES:
        if any(summaries_dir(reports_dir, table, scale).glob("*.json")):
            return scale
    return "paper"


@dataclasses.dataclass
class Cell:
    ours: float | None
    paper: float | None
    status: str
    n: int
    examples: int | None = None
    """Fewest evaluation examples behind the value over its seeds (None for training metrics)."""
    pipeline: bool = False
    """Computed on the offline fixtures or on too few examples: a pipeline check, not a result."""
    best: str | None = None
    """The run a sweep's cell comes from."""
    values: tuple[float, ...] = ()
    """Every seed's value (scaled as the column prints it), in the order of ``seeds``."""
    seeds: tuple[int, ...] = ()

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over the seeds (None for one seed)."""
        return noise.sample_sd(self.values)

    @property
    def result(self) -> float | None:
        """Our value where it counts as a result (not a pipeline check)."""
        return None if self.pipeline else self.ours

    @property
    def delta(self) -> float | None:
        return None if self.result is None or self.paper is None else self.result - self.paper


SUMMARY_FIELDS = ("steps", "tokens", "wall_s")
"""Numbers of a summary outside its metrics that a column may name (``steps``: optimizer steps trained, fewer than
declared after an early stop)."""


def metric(summary: dict, key: str) -> float | None:
    """Metric ``key`` of a run summary, or one of :data:`SUMMARY_FIELDS`; None when absent."""
    if key in summary["metrics"]:
        return summary["metrics"][key]
    return summary.get(key) if key in SUMMARY_FIELDS else None


def cells(table: Table, summaries: list[dict], scale: str) -> dict[tuple[str, str], Cell]:
    """Every (run, column) cell, reduced as the table declares, and every (sweep, column) cell."""
    by_run: dict[str, list[dict]] = {}
    for s in summaries:
        by_run.setdefault(s["run"], []).append(s)
    out = {}
    for run in table.runs:
        fresh, stale = [], []
        for s in by_run.get(run.name, []):
            (fresh if s["config_hash"] == config_hash(run.config(scale, seed=s["seed"])) else stale).append(s)
        for col in table.columns:
            paper = table.paper_numbers.get((run.name, col.key))
            measured = sorted((s for s in fresh if metric(s, col.key) is not None), key=lambda s: s["seed"])
            values = tuple(metric(s, col.key) * col.scale for s in measured)
            if values:
                counts = [scoring.eval_examples(s, col.key) for s in measured]
                examples = [n for n, _ in counts if n is not None]
                fewest = min(examples) if examples else None
                pipeline = any(scoring.is_pipeline_check(n, fixtures) for n, fixtures in counts)
                seeds = tuple(s["seed"] for s in measured)
                mean = sum(values) / len(values)
                out[run.name, col.key] = Cell(mean, paper, "ok", len(values), fewest, pipeline, None, values, seeds)
            elif any(metric(s, col.key) is not None for s in stale):
                out[run.name, col.key] = Cell(None, paper, "stale", 0)
            else:
                out[run.name, col.key] = Cell(None, paper, "missing", 0)
    first = table.columns[0]
    for sweep, runs in table.sweeps().items():
        measured = [r for r in runs if out[r.name, first.key].ours is not None]
        sign = 1 if first.higher_is_better else -1
        best = max(measured, key=lambda r: sign * out[r.name, first.key].ours, default=None)
        for col in table.columns:
            paper = table.paper_numbers.get((sweep, col.key))
            if best is None:
                status = "stale" if any(out[r.name, col.key].status == "stale" for r in runs) else "missing"
                out[sweep, col.key] = Cell(None, paper, status, 0)
            else:
                out[sweep, col.key] = dataclasses.replace(out[best.name, col.key], paper=paper, best=best.name)
    return out


def row_label(table: Table, name: str) -> str:
    """A row's label; a sweep's run adds what sets it apart (``Gated DeltaNet, optim.lr=0.001``)."""
    run = table.run(name)
    label = run.label if run.unavailable() is None else f"{run.label} (unavailable)"
    return f"{label}, {table.sweep_point(name)}" if run.sweep and run.name == name else label


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def verdict_counts(verdicts: Sequence[scoring.Verdict]) -> dict[str, int]:
    """How many of ``verdicts`` reach each of :data:`reports.scoring.VERDICTS`."""
    return {status: sum(v.status == status for v in verdicts) for status in scoring.VERDICTS}


def _claims_section(table: Table, grid: dict) -> list[str]:
    if not table.claims:
        return []
    verdicts = [scoring.check_claim(table, claim, grid) for claim in table.claims]
    counts = ", ".join(f"{n} {status}" for status, n in verdict_counts(verdicts).items())
    lines = ["## The paper's claims on our numbers", "", f"Claims: {len(verdicts)}; {counts}.", ""]
    for v in verdicts:
        detail = f"; {v.detail}" if v.detail else ""
        lines.append(f"- **{v.status}**: {v.claim.text} ({v.claim.source}{detail})")
    return lines + ["", f"The rule: {noise.RULE}.", ""]


def _noise_line(table: Table, grid: dict) -> list[str]:
    floor = scoring.noise_floor(table, grid)
    if not floor:
        return ["Seed spread: not measured (no row has results from several seeds).", ""]
    titles = {c.key: c.title for c in table.columns}
    parts = []
    for key, group, raw, fitted, rows, runs in floor:
        size = f"{rows} rows x {runs // rows} seeds" if runs % rows == 0 else f"{rows} rows, {runs} runs"
        left = "-" if fitted is None else f"{100 * fitted.sigma:.1f} %" if fitted.log else f"{fitted.sigma:.3g}"
        parts.append(f"{titles[key]} {100 * raw:.1f} %, {left} once each seed's shared effect is taken out "
                     f"({group}, {size})")  # fmt: skip
    return ["Seed spread (relative standard deviation over seeds): " + "; ".join(parts) + ".", ""]


def _agreement_line(table: Table, grid: dict) -> list[str]:
    agreement = scoring.column_agreement(table, grid)
    titles = {c.key: c.title for c in table.columns}
    parts = []
    for c in table.columns:
        if (a := agreement[c.key]).share is None:
            continue
        name = c.title if a.proxy is None else f"{c.title} on our {titles[a.proxy]} (a proxy)"
        tau = "-" if a.tau is None else f"{a.tau:+.2f}"
        parts.append(f"{name} {a.share:.2f} (tau {tau}, {a.pairs} pairs, {a.ties} ties within noise)")
    if not parts:
        return ["Order agreement with the paper: not measured (no column has two rows with both values).", ""]
    mean = scoring.mean_agreement(agreement)
    return [f"Order agreement with the paper (share of row pairs ordered alike; pairs of ours within seed noise are "
            f"ties, counted in neither): {'; '.join(parts)}; mean {mean:.2f}.", ""]  # fmt: skip


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}"


def _row(table: Table, grid: dict, name: str, extra: Sequence[str] = ()) -> str:
    row = [row_label(table, name)]
    for col in table.columns:
        cell = grid[name, col.key]
        ours = "stale" if cell.status == "stale" else _fmt(cell.ours, col.digits)
        notes = []
        if cell.n > 1:
            ours += f" ± {_fmt(cell.sd, col.digits)}"
            notes.append(f"{cell.n} seeds")
        if cell.pipeline:
            notes.append(f"n={cell.examples if cell.examples is not None else '?'}")
        if notes:
            ours += f" [{', '.join(notes)}]"
        row.append(ours if cell.paper is None else f"{ours} ({_fmt(cell.paper, col.digits)})")
    return "| " + " | ".join([*row, *extra]) + " |"


def render_markdown(table: Table, summaries: list[dict], scale: str, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The report page; ``figures`` are ``(caption, path relative to the page)`` of the PNGs it shows."""
    grid = cells(table, summaries, scale)
    lines = [
        f"# {table.title}",
        "",
        f"Source: {table.source}. Scale: **{scale}**. Cells: {table.reduce} (± their standard deviation and "
        "`[k seeds]` where there are several), with the paper's value in brackets where it reports one; the "
        "differences and every seed's value are in the CSV.",
        "",
    ]
    header = ["Model"] + [f"{c.title} {'↑' if c.higher_is_better else '↓'}" for c in table.columns]
    ratio = scoring.ratios(table, grid)
    groups = list(dict.fromkeys(r.group for r in table.runs))
    for group in groups:
        lines += [f"## {group}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        runs = [r for r in table.runs if r.group == group]
        lines += [_row(table, grid, run.name) for run in runs] + [""]
        sweeps = [name for name, members in table.sweeps().items() if members[0].group == group]
        if sweeps:
            lines += [f"Best of each sweep on {table.columns[0].title}:", ""]
            lines += ["| " + " | ".join([*header, "best"]) + " |", "|" + "---|" * (len(header) + 1)]
            for name in sweeps:
                best = grid[name, table.columns[0].key].best
                lines.append(_row(table, grid, name, [table.sweep_point(best) if best else "-"]))
            lines.append("")
        ref = scoring.reference_of(table, group)
        if ref is not None:
            lines += [f"Ratio to {table.run(ref).label}, ours (paper's):", ""]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for run in runs:
                pairs = [ratio[run.name, col.key] for col in table.columns]
                shown = [_fmt_ratio(o) if p is None else f"{_fmt_ratio(o)} ({_fmt_ratio(p)})" for o, p in pairs]
                lines.append("| " + " | ".join([run.label, *shown]) + " |")
            lines.append("")
    if any(c.pipeline for c in grid.values()):
        lines += [
            f"`[n=...]`: a pipeline check, not a result: computed on the offline fixtures or on fewer than "
            f"{scoring.MIN_EXAMPLES} examples (n: the examples), and left out of ratios, claims and agreement.",
            "",
        ]
    lines += _claims_section(table, grid)
    lines += _noise_line(table, grid)
    lines += _agreement_line(table, grid)
    if figures:
        lines += ["## Figures", ""] + [line for caption, src in figures for line in (f"![{caption}]({src})", "")]
    borrowed = [f"{s['run']} seed {s['seed']} as {s['borrowed']}" for s in summaries if "borrowed" in s]
    shas = sorted({f"{s['git']['sha'][:10]}{'+dirty' if s['git'].get('dirty') else ''}" for s in summaries})
    devices = sorted({s["device"] for s in summaries})
    lines += [
        "## Provenance",
        "",
        f"- summaries: {len(summaries) - len(borrowed)} "
        f"(from `reports/{table.paper}/{table.runs_key}/summaries/{scale}/`)",
        *([f"- the same configs trained for other tables: {', '.join(borrowed)}"] if borrowed else []),
        f"- git: {', '.join(shas) or '-'}",
        f"- devices: {', '.join(devices) or '-'}",
        f"- tokens per run: {', '.join(sorted({str(s['tokens']) for s in summaries})) or '-'}",
    ]
    lines += [f"- eval: {source}" for source in eval_sources(summaries, table)]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def eval_sources(summaries: list[dict], table: Table) -> list[str]:
    """Where the downstream metrics of the table's columns come from (task data, lm-eval version, counts)."""
    tasks = {c.key.split("/")[1] for c in table.columns if c.key.startswith("eval/")}
    niah = {t for t in tasks if t.startswith("niah_")}
    found = set()
    for s in summaries:
        for name, record in s.get("eval", {}).items():
            if name == "lm_eval" and tasks - niah:
                limit = f", at most {record['limit']} documents per task" if record.get("limit") else ""
                found.add(f"lm-eval {record['lm_eval']} zero-shot on {record['data']}{limit}")
            elif name == "niah" and niah:
                found.add(f"S-NIAH from the {record['data']}, {record['samples']} samples per task and length")
    return sorted(found)


def render_csv(table: Table, summaries: list[dict], scale: str) -> str:
    grid = cells(table, summaries, scale)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "paper",
            "table",
            "scale",
            "group",
            "run",
            "label",
            "column",
            "ours",
            "paper_value",
            "delta",
            "seeds",
            "status",
            "examples",
            "pipeline_check",
            "ratio_ours",
            "ratio_paper",
            "order_agreement",
            "kendall_tau",
            "agreement_proxy",
            "std",
            "per_seed",
        ]
    )
    ratio = scoring.ratios(table, grid)
    agreement = scoring.column_agreement(table, grid)
    for name in [r.name for r in table.runs] + list(table.sweeps()):
        run = table.run(name)
        for col in table.columns:
            c = grid[name, col.key]
            r_ours, r_paper = ratio.get((name, col.key), (None, None))
            a = agreement[col.key]
            writer.writerow(
                [
                    table.paper,
                    table.key,
                    scale,
                    run.group,
                    name,
                    row_label(table, name),
                    col.key,
                    "" if c.ours is None else f"{c.ours:.4f}",
                    "" if c.paper is None else c.paper,
                    "" if c.delta is None else f"{c.delta:.4f}",
                    c.n,
                    c.status,
                    "" if c.examples is None else c.examples,
                    int(c.pipeline),
                    "" if r_ours is None else f"{r_ours:.4f}",
                    "" if r_paper is None else f"{r_paper:.4f}",
                    "" if a.share is None else f"{a.share:.4f}",
                    "" if a.tau is None else f"{a.tau:.4f}",
                    a.proxy or "",
                    "" if c.sd is None else f"{c.sd:.4f}",
                    ";".join(f"seed{k}={v:.4f}" for k, v in zip(c.seeds, c.values, strict=True)),
                ]
            )
    return buf.getvalue()


def report_base(reports_dir: Path, table: Table, scale: str) -> Path:
    """Where the report of ``table`` at ``scale`` goes (without suffix): ``reports/<paper>/<table>`` for the largest
    scale that has summaries (the one tracked), ``reports/<paper>/<table>/<scale>/<table>`` for any smaller one, so
    that a smoke or tiny render never overwrites the report of a larger scale."""
    tracked = default_scale(reports_dir, table)
    if SCALES.index(scale) <= SCALES.index(tracked):
        return reports_dir / table.paper / table.key
    return reports_dir / table.paper / table.key / scale / table.key


def render(table: Table, reports_dir: Path = REPORTS, scale: str | None = None) -> list[Path]:
    """Write the report of ``table`` at ``scale`` (default: the largest with summaries): ``<base>.md``, ``.csv``
    and the figures under ``<base>/`` (:func:`report_base`); returns their paths."""
    scale = scale or default_scale(reports_dir, table)
    table = table.at(scale)
    summaries = load_summaries(reports_dir, table, scale)
    base = report_base(reports_dir, table, scale)
    base.parent.mkdir(parents=True, exist_ok=True)
    first = table.columns[0].key
    values = {r: c.ours for (r, k), c in cells(table, summaries, scale).items() if k == first and c.ours is not None}
    values = {r: v for r, v in values.items() if r in table.sweeps() or not table.run(r).sweep}
    drawn = plots.figures(table, reports_dir, scale, values, folder=base)
    links = [(caption, path.relative_to(base.parent).as_posix()) for caption, path in drawn]
    md, csv_path = base.with_suffix(".md"), base.with_suffix(".csv")
    md.write_text(render_markdown(table, summaries, scale, links))
    csv_path.write_text(render_csv(table, summaries, scale))
    return [md, csv_path, *(path for _, path in drawn)]


def scorecard_row(table: Table, reports_dir: Path) -> list[str]:
    """``[report, scale, claims per verdict (holds, fails, within noise, one seed, not measured), mean order
    agreement, command]`` of ``table``'s tracked report."""
    scale = default_scale(reports_dir, table)
    table = table.at(scale)
    grid = cells(table, load_summaries(reports_dir, table, scale), scale)
    verdicts = [scoring.check_claim(table, claim, grid) for claim in table.claims]
    claims = [str(n) if verdicts else "-" for n in verdict_counts(verdicts).values()]
    mean = scoring.mean_agreement(scoring.column_agreement(table, grid))
    verb = "eval" if table.trained_in else "train"
    runs = "" if table.trained_in else " --all"
    command = f"`python -m miras {verb} experiments/{table.paper}/{table.key}.py{runs} --scale {scale}`"
    link = f"[{table.paper}/{table.key}]({table.paper}/{table.key}.md)"
    return [link, scale, *claims, "-" if mean is None else f"{mean:.2f}", command]


FIGURE_COMMANDS = {"ttr/fig2": "`python -m experiments.ttr.fig2_online_regression`"}
"""How the figures that train nothing and have their own renderer are reproduced."""


def figure_rows(reports_dir: Path) -> list[list[str]]:
    """Scorecard rows of the figures that write their paper's orderings to ``<figure>.json`` (``ordering``: claim
    -> holds); they have no table of paper numbers, so no order agreement."""
    rows = []
    for path in sorted(reports_dir.glob("*/*.json")):
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("ordering"), dict):
            continue
        key = f"{path.parent.name}/{path.stem}"
        ordering = record["ordering"]
        scale = record.get("scale", "-")
        command = FIGURE_COMMANDS.get(key, "-").format(scale=scale)
        held = sum(bool(v) for v in ordering.values())
        claims = [str(held), str(len(ordering) - held), "0", "0", "0"]
        rows.append([f"[{key}]({key}.md)", scale, *claims, "-", command])
    return rows


def render_index(reports_dir: Path = REPORTS, tables: Sequence[Table] | None = None) -> Path:
    """Write ``reports/README.md``: the scorecard of ``tables`` (default: every experiment file's), then every
    rendered table and figure report under ``reports_dir``, with its title."""
    if tables is None:
        tables = [load_experiment(p) for p in experiment_files(REPO / "experiments")]
    lines = [
        "# Reports",
        "",
        "Generated by `python -m reports render` (`make report`) from the tracked summaries; do not edit by hand.",
        "",
        "## Scorecard",
        "",
        "How close each table is to the paper at the scale it is tracked: how many of the paper's claims hold on "
        "our numbers beyond seed noise, fail beyond it, are within it, rest on single seeds with no noise estimate, "
        "or are not measured (a row missing, or only a pipeline check); and the mean share of row pairs ordered "
        f"as the paper orders them. The rule: {noise.RULE}.",
        "",
        "| report | scale | holds | fails | within noise | one seed | not measured | order agreement "
        "| reproduce (then `make eval`, `make report`) |",
        "|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(scorecard_row(t, reports_dir)) + " |" for t in tables),
        *("| " + " | ".join(row) + " |" for row in figure_rows(reports_dir)),
        "",
    ]
    for folder in sorted(p for p in reports_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        pages = sorted(folder.glob("*.md"))
        if not pages:
            continue
        lines += [f"## {folder.name}", ""]
        for page in pages:
            title = next((line[2:] for line in page.read_text().splitlines() if line.startswith("# ")), page.stem)
            lines.append(f"- [{page.stem}]({folder.name}/{page.name}): {title}")
        lines.append("")
    index = reports_dir / "README.md"
    index.write_text("\n".join(lines))
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    hv = sub.add_parser("harvest", help="copy finished run summaries into reports/")
    hv.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    rd = sub.add_parser("render", help="render tables from the harvested summaries")
    rd.add_argument("experiments", nargs="*", type=Path)
    rd.add_argument("--scale", choices=SCALES, help="default: the largest scale with summaries")
    rp = sub.add_parser("report", help="harvest finished summaries from runs/, then render every report")
    rp.add_argument("experiments", nargs="*", type=Path)
    rp.add_argument("--scale", choices=SCALES, help="default: the largest scale with summaries")
    rp.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    args = p.parse_args(argv)
    if args.command in ("harvest", "report"):
        for path in harvest(args.runs_dir):
            print(f"harvested {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        if args.command == "harvest":
            return 0
    for path in args.experiments or experiment_files(REPO / "experiments"):
        for out in render(load_experiment(path), scale=args.scale):
            print(f"rendered {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    print(f"rendered {render_index().relative_to(REPO)}")
    return 0
