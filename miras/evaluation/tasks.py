"""The papers' downstream tasks through lm-eval, from the Hub or from local jsonl files.

Both paths use lm-eval's own task configs (prompts, metrics, ``!function`` preprocessing); the offline path only
re-points their data at ``<data_dir>/<task>.jsonl`` in the Hub dataset's schema. ``load_yaml`` is private to
lm-eval, which is why the package version is pinned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

TABLE2_TASKS = (
    "wikitext",
    "lambada_openai",
    "piqa",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "social_iqa",
    "boolq",
)
"""The commonsense-reasoning and language-modelling tasks of Miras Table 2 (and Titans, Gated DeltaNet, ...); the
metric of each column is declared once, in ``experiments/miras/table2.py``."""

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "lm_eval"
"""Offline data of every task: a few documents per task, written for this repo in the Hub datasets' schemas, so
that the whole path runs without network (the numbers they give are not comparable to the papers')."""

TASK_YAMLS = {
    "wikitext": "wikitext/wikitext.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "social_iqa": "siqa/siqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
}
"""Each task's config inside ``lm_eval/tasks`` (looked up directly: indexing every task takes seconds)."""


def official_task_config(name: str) -> dict[str, Any]:
    """lm-eval's config of task ``name`` as a dict, with ``include:`` and ``!function`` resolved."""
    if name not in TASK_YAMLS:
        raise ValueError(f"task {name!r} is unknown; allowed values: {', '.join(TASK_YAMLS)}")
    return load_yaml(Path(lm_eval.__file__).parent / "tasks" / TASK_YAMLS[name])


def eval_split(config: dict[str, Any]) -> str:
    """The split lm-eval scores a task on: its test split, else its validation split."""
    return config.get("test_split") or config["validation_split"]


def offline_task_configs(names: Sequence[str], data_dir: str | Path) -> list[dict[str, Any]]:
    """Official task configs whose evaluation split is read from ``<data_dir>/<task>.jsonl``.

    The file holds that split in the Hub dataset's schema (one JSON object per line); the task's other splits
    are dropped, so only zero-shot evaluation is possible.
    """
    configs = []
    for name in names:
        config = official_task_config(name)
        path = Path(data_dir) / f"{name}.jsonl"
        if not path.is_file():
            raise ValueError(f"task {name!r} has no local data; expected {path}")
        split = eval_split(config)
        split_key = "test_split" if config.get("test_split") else "validation_split"
        config.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {split: str(path.resolve())}},
            training_split=None,
            validation_split=None,
            test_split=None,
            fewshot_split=None,
        )
        config[split_key] = split
        configs.append(config)
    return configs


def evaluate(
    lm: LM,
    tasks: Sequence[str] = TABLE2_TASKS,
    data_dir: str | Path | None = None,
    limit: int | float | None = None,
    bootstrap_iters: int = 100_000,
) -> dict[str, Any]:
    """Zero-shot ``lm_eval.simple_evaluate`` of ``lm`` on ``tasks``.

    Args:
        lm: e.g. :class:`miras.evaluation.MirasLM`.
        tasks: names from :data:`TASK_YAMLS`.
        data_dir: folder of ``<task>.jsonl`` files, or None for the Hub datasets (cached or downloaded).
        limit: at most this many documents per task (a fraction when < 1); for tests only.
        bootstrap_iters: resamples for the perplexities' standard errors (lm-eval's default; 0 skips stderrs).

    Returns lm-eval's results dict (``results[task]["acc,none"]``, ...); see :func:`flatten_metrics`.
    """
    configs = (
        offline_task_configs(tasks, data_dir)
        if data_dir is not None
        else [official_task_config(name) for name in tasks]
    )
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=configs,
        limit=limit,
        bootstrap_iters=bootstrap_iters,
        log_samples=False,
        task_manager=TaskManager(include_defaults=False),
    )


def flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"eval/<task>/<metric>": value}`` from lm-eval's results, without standard errors.

    lm-eval names metrics ``<metric>,<filter>``; the default filter ``none`` is dropped, others become
    ``<metric>/<filter>``.
    """
    flat = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if not filt or name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            flat[f"eval/{task}/{name if filt == 'none' else f'{name}/{filt}'}"] = float(value)
    return flat
