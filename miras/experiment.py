"""Experiments as data: one file per paper table declares its runs, columns and the paper's numbers.

An experiment file (``experiments/<paper>/<table>.py``) defines a module-level ``TABLE``; nothing runs at
import. ``load_experiment(path)`` loads it by path. A run is a preset plus overrides; a scale profile
(``miras.scales``) resizes it for the machine at hand, and every report prints the scale.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from miras.config import RunConfig, override
from miras.presets import preset
from miras.scales import apply_scale

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

    def config(self, scale: str = "paper", extra: tuple[str, ...] = (), seed: int | None = None) -> RunConfig:
        """The resolved config at ``scale``, with ``extra`` overrides applied after scaling and ``train.seed``."""
        config = override(apply_scale(preset(self.preset, self.overrides), scale), extra)
        return config if seed is None else override(config, [f"train.seed={seed}"])

    def unavailable(self) -> str | None:
        """Why the run cannot be built yet, or None when it can."""
        from miras.layers import implemented

        mixer = preset(self.preset, self.overrides).model.mixer.name
        if not implemented(mixer):
            return f"mixer {mixer!r} is not implemented yet"
        return None


@dataclass(frozen=True)
class Claim:
    """A conclusion the paper draws from its numbers, checked on ours: every run of ``better`` beats every run
    of ``worse`` on ``metric`` (in the direction of that column)."""

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
        names = [r.name for r in self.runs]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.paper}/{self.key}: duplicate run names")
        keys = {c.key for c in self.columns}
        unknown = {k for k in self.paper_numbers if k[0] not in names or k[1] not in keys}
        if unknown:
            raise ValueError(f"{self.paper}/{self.key}: paper numbers for unknown cells {sorted(unknown)}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce={self.reduce!r} is invalid; allowed values: {REDUCTIONS}")
        for claim in self.claims:
            missing = [r for r in (*claim.better, *claim.worse) if r not in names]
            unknown_keys = [k for k in (claim.metric, claim.proxy) if k is not None and k not in keys]
            if missing or unknown_keys or not claim.better or not claim.worse:
                raise ValueError(
                    f"{self.paper}/{self.key}: claim {claim.text!r} names unknown runs {missing} or columns "
                    f"{unknown_keys}, or has an empty side"
                )
        groups = [self.run(r).group for r in self.references if r in names]
        if len(groups) != len(self.references) or len(groups) != len(set(groups)):
            raise ValueError(f"{self.paper}/{self.key}: references must be runs of the table, one per group")

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
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
