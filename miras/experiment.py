"""Experiments as data: one file per paper table declares its runs, columns and the paper's numbers.

An experiment file (``experiments/<paper>/<table>.py``) defines a module-level ``TABLE``; nothing runs at
import. ``load_experiment(path)`` loads it by path. A run is a preset plus overrides; a scale profile
(``miras.scales``) resizes it for the machine at hand, and every report prints the scale. A run may instead be
declared at one scale with its whole config (``Run.scale``, ``Run.base``: the MQAR grids, whose cells differ from
scale to scale); ``Table.at(scale)`` is the table a command at that scale sees.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from miras.config import ConfigError, RunConfig, override
from miras.presets import preset
from miras.scales import SCALES, apply_scale

REDUCTIONS = ("mean over seeds",)


@dataclass(frozen=True)
class Column:
    """A table column: the metric key in ``summary.json`` and how the paper reports it."""

    key: str
    """Metric name as logged, e.g. ``eval/piqa/acc`` or ``val/ppl``."""
    title: str
    """Header as printed in the paper, e.g. ``PIQA acc``."""
    higher_is_better: bool = True
    """Direction of improvement (arrows in the report)."""
    scale: float = 1.0
    """Multiply our metric by this before comparing (lm-eval accuracies are fractions, papers print %)."""
    digits: int = 2
    """Decimals printed in the report."""
    only_at: tuple[str, ...] | None = None
    """The scales whose tables have this column (None: every scale); Table 3's S-NIAH lengths differ at tiny."""


@dataclass(frozen=True)
class Run:
    """A row of a table."""

    name: str
    """Unique within its table, e.g. ``transformer-340m``."""
    label: str
    """Row label as printed in the paper, e.g. ``Transformer++``."""
    group: str
    """Block of rows the run belongs to, e.g. ``340M params / 15B tokens``."""
    preset: str
    """Preset the run starts from (``miras.presets``)."""
    overrides: tuple[str, ...] = ()
    """``section.field=value`` changes on top of the preset (applied at paper scale, before scaling)."""
    params: float | None = None
    """Parameter count the paper states for this row (compared by ``dry-run``)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds to train; cells reduce over them."""
    scale: str | None = None
    """The one scale the run is declared at, its config then given whole (``base`` and ``overrides``) with no
    scale rule applied; ``None``: a paper-scale run that every scale resizes (``miras.scales``)."""
    base: RunConfig | None = None
    """The config ``overrides`` apply to, instead of ``preset``'s (runs declared at one ``scale``, whose config is
    not a paper-scale preset: the MQAR models); ``preset`` then only names where it comes from."""
    sweep: str | None = None
    """Runs sharing a sweep name are the points of one hyperparameter sweep (zoology's learning rates): the report
    adds one row per sweep, the sweep's best run on the table's first column, and claims may name the sweep."""
    only_at: tuple[str, ...] | None = None
    """The scales that train this paper-scale run (None: every scale): a figure's grid thinned for a CPU keeps
    its paper-scale configs, so a run of the thinned grid is the same run as at paper scale, resized."""

    def __post_init__(self) -> None:
        if self.scale is not None and self.scale not in SCALES:
            raise ValueError(f"run {self.name}: scale={self.scale!r} is invalid; allowed values: {', '.join(SCALES)}")
        if self.base is not None and self.scale is None:
            raise ValueError(f"run {self.name}: a base config needs the scale it is declared at (Run.scale)")
        _check_scales(f"run {self.name}", self.only_at)
        if self.only_at is not None and self.scale is not None:
            raise ValueError(f"run {self.name}: give either scale or only_at, not both")

    def at(self, scale: str) -> bool:
        """Whether a command at ``scale`` sees this run."""
        return self.scale in (None, scale) and (self.only_at is None or scale in self.only_at)

    def config(self, scale: str = "paper", extra: tuple[str, ...] = (), seed: int | None = None) -> RunConfig:
        """The resolved config at ``scale``, with ``extra`` overrides applied after scaling and ``train.seed``."""
        if self.scale is None:
            config = apply_scale(preset(self.preset, self.overrides), scale)
        elif scale != self.scale:
            raise ConfigError(f"run {self.name} is declared at scale {self.scale!r}, not {scale!r}")
        else:
            config = override(self.base, self.overrides) if self.base else preset(self.preset, self.overrides)
        # the command line's overrides and the seed are applied together and validated once, on the final config
        return override(config, [*extra, *([] if seed is None else [f"train.seed={seed}"])])

    def unavailable(self) -> str | None:
        """Why the run cannot be built yet, or None when it can."""
        from miras.layers import implemented

        base = self.base or preset(self.preset)
        mixer = override(base, self.overrides).model.mixer.name
        if not implemented(mixer):
            return f"mixer {mixer!r} is not implemented yet"
        return None


def _check_scales(what: str, scales: tuple[str, ...] | None) -> None:
    if scales is not None and (not scales or set(scales) - set(SCALES)):
        raise ValueError(f"{what}: only_at={scales!r} is invalid; allowed values: non-empty subsets of {SCALES}")


@dataclass(frozen=True)
class Drop:
    """A derived row of a claim: the relative drop of the claim's column from run ``start`` to run ``end``,
    ``1 - end / start`` (how much perplexity falls as the context grows from ``start``'s to ``end``'s); the
    larger drop is the better one whatever the column's direction."""

    name: str
    """Unique among the table's runs and drops; claims name it in ``better`` and ``worse``."""
    label: str
    """As printed, e.g. ``Moneta, 2K to 16K``."""
    start: str
    end: str


@dataclass(frozen=True)
class Claim:
    """A conclusion the paper draws from its numbers, checked on ours: every run of ``better`` beats every run
    of ``worse`` on ``metric`` (in the direction of that column), or every :class:`Drop` of ``better`` falls
    further than every one of ``worse``."""

    text: str
    """The claim in words, e.g. ``at 340M Moneta has the lowest Wiki ppl of all models``."""
    source: str
    """Where the paper makes it or shows it, e.g. ``Table 2`` or ``section 6.1``."""
    metric: str
    """Column key the claim is about."""
    better: tuple[str, ...]
    worse: tuple[str, ...]
    proxy: str | None = None
    """Column key checked instead where ``metric`` is not measured on every run (our held-out perplexity for the
    paper's Wiki ppl at scales whose downstream evaluation is only a pipeline check); the verdict names it."""
    from_text: bool = False
    """The paper states it in words over a figure whose values are not recoverable, so its own numbers cannot be
    checked against it (every other claim must hold on the paper's numbers, which a test checks)."""
    drops: tuple[Drop, ...] = ()
    """The derived rows ``better`` and ``worse`` name (a claim about slopes); empty: they name runs and sweeps."""
    only_at: tuple[str, ...] | None = None
    """The scales whose tables check this claim (None: every scale whose runs it names)."""

    def __post_init__(self) -> None:
        _check_scales(f"claim {self.text!r}", self.only_at)

    def row_names(self) -> tuple[str, ...]:
        """The runs and sweeps the claim reads: those of its drops, or ``better`` and ``worse``."""
        if self.drops:
            return tuple(dict.fromkeys(n for d in self.drops for n in (d.start, d.end)))
        return (*self.better, *self.worse)


@dataclass(frozen=True)
class Table:
    """A paper table: its runs (rows), columns and the paper's numbers."""

    paper: str
    """Short paper key, the first folder under ``runs/`` and ``reports/`` (``miras``, ``ttr``)."""
    key: str
    """Table key, e.g. ``table2``."""
    title: str
    source: str
    """Where the numbers come from (paper version, table number)."""
    columns: tuple[Column, ...]
    runs: tuple[Run, ...]
    paper_numbers: dict[tuple[str, str], float] = field(default_factory=dict)
    """``(run name, column key) -> value`` as printed in the paper."""
    reduce: str = "mean over seeds"
    """How a cell combines several summaries."""
    notes: tuple[str, ...] = ()
    """Caveats printed under the rendered table."""
    trained_in: str | None = None
    """Key of the table (same paper) whose trained runs this table evaluates instead of training its own; each
    run must be declared there with the same name, preset and overrides (Miras Table 3 evaluates Table 2's
    models)."""
    claims: tuple[Claim, ...] = ()
    """What the paper concludes from this table, checked on our numbers under the rendered table."""
    references: tuple[str, ...] = ()
    """Reference run of each group (at most one per group): every row is also reported as its ratio to it, beside
    the paper's same ratio (Gated DeltaNet for Miras Tables 2 and 3, the full model for the ablations)."""

    @property
    def runs_key(self) -> str:
        """The table folder under ``runs/`` and ``reports/.../summaries`` that holds this table's runs."""
        return self.trained_in or self.key

    def __post_init__(self) -> None:
        for scale in SCALES:
            names = [r.name for r in self.runs if r.at(scale)]
            if len(names) != len(set(names)):
                raise ValueError(f"{self.paper}/{self.key}: duplicate run names at scale {scale}")
        names = [r.name for r in self.runs] + list(self.sweeps())
        keys = {c.key for c in self.columns}
        unknown = {k for k in self.paper_numbers if k[0] not in names or k[1] not in keys}
        clash = {r.sweep for r in self.runs if r.sweep} & {r.name for r in self.runs}
        if clash:
            raise ValueError(f"{self.paper}/{self.key}: sweep names {sorted(clash)} are also run names")
        for scale in SCALES:
            points: dict[str, set] = {}
            for r in self.runs:
                if r.sweep and r.at(scale):
                    points.setdefault(r.sweep, set()).add((r.label, r.group))
            for sweep, kinds in points.items():
                if len(kinds) > 1:
                    raise ValueError(f"{self.paper}/{self.key}: the runs of sweep {sweep!r} differ in label or group")
        if unknown:
            raise ValueError(f"{self.paper}/{self.key}: paper numbers for unknown cells {sorted(unknown)}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce={self.reduce!r} is invalid; allowed values: {REDUCTIONS}")
        for claim in self.claims:
            drops = {d.name for d in claim.drops}
            missing = [r for r in claim.row_names() if r not in names]
            missing += [r for r in (*claim.better, *claim.worse) if r not in (drops or names)]
            unknown_keys = [k for k in (claim.metric, claim.proxy) if k is not None and k not in keys]
            if missing or unknown_keys or not claim.better or not claim.worse:
                raise ValueError(
                    f"{self.paper}/{self.key}: claim {claim.text!r} names unknown runs {missing} or columns "
                    f"{unknown_keys}, or has an empty side"
                )
        groups = [self.run(r).group for r in self.references if r in names]
        if len(groups) != len(self.references) or len(groups) != len(set(groups)):
            raise ValueError(f"{self.paper}/{self.key}: references must be runs of the table, one per group")

    def sweeps(self) -> dict[str, list[Run]]:
        """``sweep name -> its runs`` in declaration order."""
        out: dict[str, list[Run]] = {}
        for run in self.runs:
            if run.sweep:
                out.setdefault(run.sweep, []).append(run)
        return out

    def sweep_point(self, name: str) -> str:
        """What sets run ``name`` apart from the other runs of its sweep: its overrides that not all of them share
        (all of them in a sweep of one run, none outside a sweep)."""
        run = self.run(name)
        if not run.sweep:
            return ""
        runs = self.sweeps()[run.sweep]
        shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
        return ", ".join(o for o in run.overrides if o not in shared)

    def at(self, scale: str) -> Table:
        """The table as a command at ``scale`` sees it: the runs declared for every scale or for this one, and the
        claims, references and paper numbers of those runs and sweeps."""
        everywhere = (*self.runs, *self.columns, *self.claims)
        if all(r.scale is None for r in self.runs) and all(x.only_at is None for x in everywhere):
            return self
        runs = tuple(r for r in self.runs if r.at(scale))
        columns = tuple(c for c in self.columns if c.only_at is None or scale in c.only_at)
        names, keys = {r.name for r in runs} | {r.sweep for r in runs if r.sweep}, {c.key for c in columns}
        return dataclasses.replace(
            self,
            runs=runs,
            columns=columns,
            paper_numbers={k: v for k, v in self.paper_numbers.items() if k[0] in names and k[1] in keys},
            claims=tuple(
                c
                for c in self.claims
                if (c.only_at is None or scale in c.only_at)
                and set(c.row_names()) <= names
                and {c.metric, c.proxy} - {None} <= keys
            ),
            references=tuple(r for r in self.references if r in names),
        )

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        for sweep, runs in self.sweeps().items():
            if sweep == name:
                return runs[0]
        raise KeyError(f"no run {name!r} in {self.paper}/{self.key}; runs: {', '.join(r.name for r in self.runs)}")

    def select(self, patterns: list[str] | None) -> list[Run]:
        """Runs whose names match any glob in ``patterns`` (all runs when None)."""
        if not patterns:
            return list(self.runs)
        chosen = [r for r in self.runs if any(fnmatch.fnmatch(r.name, p) for p in patterns)]
        if not chosen:
            raise KeyError(f"no run of {self.paper}/{self.key} matches {patterns}")
        return chosen


def load_experiment(path: str | Path) -> Table:
    """Load the ``TABLE`` declared by an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {path} not found")
    name = "_experiment_" + "_".join(path.resolve().with_suffix("").parts[-3:])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "TABLE", None), Table):
        raise TypeError(f"{path} does not define TABLE = Table(...)")
    return module.TABLE


def experiment_files(root: str | Path) -> list[Path]:
    """Every training experiment under ``root``: ``experiments/<paper>/<table>.py`` files that declare a ``TABLE``.

    Files without one compute a figure directly (TTR Figure 2 has no parameters to train) and run as modules.
    """
    found = (p for p in Path(root).glob("*/*.py") if not p.name.startswith("_"))
    return sorted(p for p in found if re.search(r"^TABLE\s*=", p.read_text(), flags=re.M))


def run_dir(runs_dir: str | Path, scale: str, table: Table, run: Run, seed: int) -> Path:
    """``<runs_dir>/<scale>/<paper>/<table>/<run>/seed<k>``: the folder is fixed by the declaration."""
    return Path(runs_dir) / scale / table.paper / table.runs_key / run.name / f"seed{seed}"
