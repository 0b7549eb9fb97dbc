"""Figures of the rendered reports: training curves, and a table's column against the quantity it sweeps.

``harvest`` saves each finished run's training-loss curve from its TensorBoard event files as a small JSON
(``reports/<paper>/<table>/curves/<scale>/<run>.seed<k>.json``), since ``runs/`` is not tracked; ``render``
reads only those files and the harvested summaries, so any clone redraws the same PNGs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from miras.config import ModelConfig, RunConfig, config_hash  # noqa: E402
from miras.experiment import Run, Table  # noqa: E402

TRAIN_TAG = "train/loss"
"""The scalar ``miras.lit.lm_module`` logs every ``log_every`` steps."""
DPI = 100
# no Software/date metadata, so that rendering twice writes the same bytes
PNG_METADATA = {"Software": None}


def curves_dir(reports_dir: Path, table: Table, scale: str) -> Path:
    return reports_dir / table.paper / table.runs_key / "curves" / scale


def read_curve(run_dir: Path, tag: str = TRAIN_TAG) -> dict | None:
    """``{"tag", "step", "value"}`` of ``tag`` over every event file in ``run_dir`` (None when none has it).

    A resumed run writes a new event file that repeats the steps after its checkpoint; the later write wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            events += acc.Scalars(tag)
    if not events:
        return None
    by_step = {e.step: e.value for e in sorted(events, key=lambda e: e.wall_time)}
    steps = sorted(by_step)
    return {"tag": tag, "step": steps, "value": [float(f"{by_step[s]:.6g}") for s in steps]}


def save_curve(run_dir: Path, summary: dict, dst: Path) -> bool:
    """Write the curve of ``run_dir`` (stamped with its summary's config hash) to ``dst``; whether it changed."""
    curve = read_curve(run_dir)
    if curve is None:
        return False
    text = json.dumps({"config_hash": summary.get("config_hash"), **curve}, separators=(",", ":")) + "\n"
    if dst.exists() and dst.read_text() == text:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    return True


def load_curves(reports_dir: Path, table: Table, scale: str) -> dict[tuple[str, int], dict]:
    """``(run, seed) -> curve`` of the table's runs whose curve comes from the declared config."""
    out = {}
    for run in table.runs:
        for seed in run.seeds:
            path = curves_dir(reports_dir, table, scale) / f"{run.name}.seed{seed}.json"
            if path.exists():
                curve = json.loads(path.read_text())
                if curve.get("config_hash") == config_hash(run.config(scale, seed=seed)):
                    out[run.name, seed] = curve
    return out


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def _legend(ax) -> None:
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def plot_curves(table: Table, curves: dict[tuple[str, int], dict], scale: str, path: Path) -> Path | None:
    """Training loss against step, one panel per group of rows and one line per run and seed."""
    groups = [g for g in dict.fromkeys(r.group for r in table.runs) if any(k[0] in _names(table, g) for k in curves)]
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        for run in (r for r in table.runs if r.group == group):
            for seed in run.seeds:
                if (run.name, seed) in curves:
                    curve = curves[run.name, seed]
                    label = ", ".join(filter(None, (run.label, table.sweep_point(run.name))))
                    label = label if seed == run.seeds[0] else f"{label} (seed {seed})"
                    ax.plot(curve["step"], curve["value"], label=label, linewidth=1)
        ax.set(title=f"{group} ({scale} scale)", xlabel="step", ylabel=TRAIN_TAG)
        _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def _names(table: Table, group: str) -> set[str]:
    return {r.name for r in table.runs if r.group == group}


@dataclass(frozen=True)
class Panel:
    """One axis of a sweep figure: which runs it shows, where each lies on x, and which line it joins."""

    title: str
    xlabel: str
    select: Callable[[Run], bool]
    x: Callable[[Run, RunConfig], float]
    series: Callable[[Run, RunConfig], str]
    logx: int | None = 2
    """Log base of the x axis (None: linear)."""


def _context(run: Run, config: RunConfig) -> float:
    """The declared context: smoke trains every run at 64 tokens, which would stack the sweep on one x."""
    return run.config().data.seq_len


def _memory(field: str) -> Callable[[Run, RunConfig], str]:
    return lambda run, config: f"{field}={getattr(config.model.mixer.memory, field):g}"


def _mixer(run: Run, config: RunConfig) -> str:
    return config.model.mixer.name


@functools.cache
def _parameters(model: ModelConfig) -> int:
    import torch

    from miras.models import LanguageModel, count_parameters

    with torch.device("meta"):
        return count_parameters(LanguageModel(model))


def _flops(run: Run, config: RunConfig) -> float:
    """Training FLOPs estimated as 6 x parameters x tokens."""
    return 6.0 * _parameters(config.model) * config.train.tokens


def _memory_is(field: str, value: float) -> Callable[[Run], bool]:
    return lambda run: getattr(run.config().model.mixer.memory, field) == value


def _size_panel(run: Run) -> bool:
    return run.config().data.seq_len == 4096


def _length(run: Run, config: RunConfig) -> float:
    return config.data.seq_len


def _mqar_series(run: Run, config: RunConfig) -> str:
    return f"{run.label}, P={config.data.mqar.pairs}"


MQAR_PANEL = Panel("best learning rate", "sequence length T", lambda run: True, _length, _mqar_series)
CONTEXT = "training context at paper scale (tokens)"
SWEEPS: dict[tuple[str, str], tuple[Panel, ...]] = {
    ("miras", "fig4_pq"): (
        Panel("p at q = 4", CONTEXT, _memory_is("q", 4.0), _context, _memory("p")),
        Panel("q at p = 3", CONTEXT, _memory_is("p", 3.0), _context, _memory("q")),
    ),
    ("miras", "fig3_scaling"): (
        Panel("model size, 4K context", "training FLOPs (6 N D)", _size_panel, _flops, _mixer, logx=10),
        Panel("340M", CONTEXT, lambda r: r.preset.endswith("-340m"), _context, _mixer),
        Panel("760M", CONTEXT, lambda r: r.preset.endswith("-780m"), _context, _mixer),
    ),
    ("miras", "mqar"): (MQAR_PANEL,),
    ("ttr", "fig3_mqar"): (MQAR_PANEL,),
}
"""The panels of each experiment that sweeps a quantity; the selections read the paper-scale config."""


def sweep_points(panel: Panel, table: Table, values: dict[str, float], scale: str) -> dict[str, list]:
    """``series -> [(x, y), ...]`` sorted by x, for the rows of ``panel`` that have a value: the runs, or the
    sweeps (``Run.sweep``, their best run's value) of a table that has them."""
    sweeps = table.sweeps()
    rows = [(name, runs[0]) for name, runs in sweeps.items()] if sweeps else [(r.name, r) for r in table.runs]
    out: dict[str, list] = {}
    for name, run in rows:
        if name in values and panel.select(run):
            config = run.config(scale)
            out.setdefault(panel.series(run, config), []).append((panel.x(run, config), values[name]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def plot_sweep(table: Table, values: dict[str, float], scale: str, path: Path) -> Path | None:
    """The table's first column against the swept quantity of each panel (None when nothing to draw)."""
    panels = [(p, sweep_points(p, table, values, scale)) for p in SWEEPS.get((table.paper, table.key), ())]
    panels = [(p, pts) for p, pts in panels if pts]
    if not panels:
        return None
    column = table.columns[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (panel, points) in zip(axes[0], panels, strict=True):
        for series, pts in points.items():
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=series, linewidth=1)
        xs = [x for pts in points.values() for x, _ in pts]
        if panel.logx and max(xs) >= panel.logx * min(xs):  # within one step of the base, log ticks crowd
            ax.set_xscale("log", base=panel.logx)
        ax.set(title=f"{panel.title} ({scale} scale)", xlabel=panel.xlabel, ylabel=column.title)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def figures(
    table: Table, reports_dir: Path, scale: str, values: dict[str, float], folder: Path | None = None
) -> list[tuple[str, Path]]:
    """Draw the table's figures under ``folder`` (default ``reports/<paper>/<table>/``); ``(caption, path)`` of each
    one drawn.

    ``values`` maps run names to the table's first column (ours). Tables that evaluate another table's runs
    draw no training curves: those are the other table's.
    """
    folder = folder or reports_dir / table.paper / table.key
    drawn = []
    if table.trained_in is None:
        curve = plot_curves(table, load_curves(reports_dir, table, scale), scale, folder / "train_loss.png")
        if curve:
            drawn.append((f"Training loss ({TRAIN_TAG}) against step", curve))
    sweep = plot_sweep(table, values, scale, folder / "sweep.png")
    if sweep:
        drawn.append((f"{table.columns[0].title} against the swept quantity", sweep))
    return drawn
