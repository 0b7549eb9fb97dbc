"""Evaluate a trained run and merge the metrics into its ``summary.json``.

``python -m miras eval <run folder | last.ckpt> [--tasks ...]`` comes here. The harness's results JSON is written
to ``<run>/eval/<name>.json``; the metrics named like the experiment's columns (``eval/<task>/<metric>``) go into
``summary.json`` under ``metrics``, and ``summary["eval"][<name>]`` records where the data came from (Hub or the
offline fixtures), the lm-eval version and the example limit, which the reports print.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from miras.evaluation.adapter import MirasLM
from miras.evaluation.tasks import FIXTURES, TABLE2_TASKS, TASK_YAMLS, evaluate, flatten_metrics

NIAH_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3")
"""RULER's single-needle tasks (Miras Table 3: S-NIAH-PK, -N, -W)."""
NIAH_SAMPLES = {"paper": 500, "small": 100, "tiny": 100, "smoke": 2}
"""S-NIAH samples per task and length at each scale (RULER generates 500; the small scales cut decoding time, down
to the fewest that count as a result, ``reports.scoring.MIN_EXAMPLES``; smoke only checks the pipeline)."""
NIAH_LENGTHS = (1024, 2048, 4096, 8192)
"""Context lengths of an S-NIAH task named without lengths (Miras section 6.3: 1K to 8K)."""


def average_accuracy(metrics: dict[str, float]) -> dict[str, float]:
    """``{"eval/avg/acc": mean}`` of Miras Table 2's accuracy columns (those printed in %: LMB, PIQA, Hella,
    Wino, ARC-e, ARC-c, SIQA, BoolQ) when all are in ``metrics``: the papers' "Avg." and Table 4's "Avg. LM"."""
    from miras.experiment import load_experiment

    table = load_experiment(Path(__file__).resolve().parents[2] / "experiments" / "miras" / "table2.py")
    keys = [c.key for c in table.columns if c.key.startswith("eval/") and c.scale == 100 and c.key != "eval/avg/acc"]
    if not all(k in metrics for k in keys):
        return {}
    return {"eval/avg/acc": sum(metrics[k] for k in keys) / len(keys)}


def table_tasks(table) -> tuple[list[str], dict[str, list[int]]]:
    """What a table's columns evaluate: lm-eval tasks (``eval/<task>/<metric>``) and S-NIAH tasks with their
    lengths (``eval/niah_single_k/<length>``). The columns are the one declaration of the mapping."""
    harness, niah = [], {}
    for column in table.columns:
        kind, task, metric = (column.key.split("/") + ["", ""])[:3]
        if kind != "eval":
            continue
        if task in NIAH_TASKS:
            niah.setdefault(task, []).append(int(metric))
        elif task == "avg":
            harness += [t for t in TABLE2_TASKS if t not in harness]
        elif task not in harness:
            harness.append(task)
    return harness, niah


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False under ``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def checkpoint_of(target: str | Path) -> tuple[Path, Path]:
    """``(run folder, what to load)`` of a run folder (the folder itself: its newest checkpoint that loads, see
    :func:`miras.checkpoint.find_checkpoint`) or of one of its checkpoint files (that file)."""
    from miras.checkpoint import run_of

    target = Path(target)
    return (target, target) if target.is_dir() else (run_of(target), target)


def check_run_config(run: Path, checkpoint: Path, config) -> None:
    """One-line ``ValueError`` when the checkpoint's ``config`` is not the one its run folder was trained with."""
    from miras.config import config_hash

    saved = run / "config.json"
    if not saved.exists():
        return
    expected = json.loads(saved.read_text()).get("config_hash")
    if config_hash(config) != expected:
        raise ValueError(f"{checkpoint} holds a model of another config than {saved} ({expected})")


def resolve_tasks(names: Sequence[str]) -> list[str]:
    """Task names, with ``niah`` expanded; unknown ones raise a one-line ``ValueError``."""
    out = []
    for name in names:
        if name == "niah":
            out += NIAH_TASKS
        elif name in TASK_YAMLS or name in NIAH_TASKS:
            out.append(name)
        else:
            allowed = ", ".join([*TASK_YAMLS, "niah", *NIAH_TASKS])
            raise ValueError(f"task {name!r} is unknown; allowed values: {allowed}")
    return list(dict.fromkeys(out))


def evaluate_run(
    target: str | Path,
    tasks: Sequence[str],
    *,
    niah: Mapping[str, Sequence[int]] | None = None,
    offline: bool | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    niah_samples: int = 50,
    batch_size: int = 8,
    device: str = "cpu",
    bootstrap_iters: int = 1000,
) -> dict[str, float]:
    """Evaluate the run at ``target`` on ``tasks`` and merge the metrics into its ``summary.json``.

    Args:
        target: a run folder (its newest checkpoint that loads) or one of its checkpoint files.
        tasks: lm-eval task names (:data:`~miras.evaluation.tasks.TASK_YAMLS`) and/or RULER ``niah_single_*``
            (``niah`` for all three), the latter at :data:`NIAH_LENGTHS`.
        niah: S-NIAH tasks with their context lengths, added to those of ``tasks``.
        offline: read the lm-eval tasks from ``data_dir`` (default: ``data/lm_eval``, small fixtures in the Hub
            schemas) instead of the Hub; ``None``: offline exactly when the Hub is unreachable.
        limit: at most this many documents per lm-eval task.
        niah_samples: samples per S-NIAH task and length.
        bootstrap_iters: resamples for lm-eval's standard errors.

    Returns the merged metrics (``eval/<task>/<metric>``; S-NIAH: ``eval/<task>/<length>``).
    """
    run, source = checkpoint_of(target)
    lm = MirasLM.from_checkpoint(source, batch_size=batch_size, device=device)
    check_run_config(run, lm.checkpoint, lm.run_config)
    tasks = resolve_tasks(tasks)
    harness = [t for t in tasks if t in TASK_YAMLS]
    niah = {**{t: list(NIAH_LENGTHS) for t in tasks if t in NIAH_TASKS}, **dict(niah or {})}
    resolve_tasks(list(niah))
    metrics: dict[str, float] = {}
    records: dict[str, dict] = {}
    (run / "eval").mkdir(parents=True, exist_ok=True)
    if harness:
        offline = (not hub_reachable()) if offline is None else offline
        source = Path(data_dir) if data_dir else FIXTURES
        results = evaluate(
            lm, harness, data_dir=source if offline else None, limit=limit, bootstrap_iters=bootstrap_iters
        )
        (run / "eval" / "lm_eval.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        metrics.update(flatten_metrics(results))
        metrics.update(average_accuracy(metrics))
        records["lm_eval"] = {
            "tasks": harness,
            "data": f"offline fixtures ({_relative(source)})" if offline else "Hub",
            "lm_eval": results.get("lm_eval_version") or _lm_eval_version(),
            "n_samples": {task: n.get("effective") for task, n in results.get("n-samples", {}).items()},
            "limit": limit,
        }
    if niah:
        from miras.evaluation.niah import evaluate_niah

        scores = evaluate_niah(lm, niah, num_samples=niah_samples)
        (run / "eval" / "niah.json").write_text(json.dumps(scores, indent=1) + "\n")
        metrics.update(scores["metrics"])
        records["niah"] = {"tasks": list(niah), "lengths": niah, "samples": niah_samples, "data": "offline generator"}
    merge_summary(run, metrics, records)
    return metrics


def merge_summary(run: Path, metrics: dict[str, float], records: dict[str, dict]) -> None:
    """Add ``metrics`` and the evaluation ``records`` to ``run/summary.json`` (if the run has finished)."""
    path = run / "summary.json"
    if not path.exists():
        return
    summary = json.loads(path.read_text())
    summary["metrics"].update(metrics)
    summary.setdefault("eval", {}).update(records)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def _relative(path: Path) -> str:
    repo = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(repo))
    except ValueError:
        return path.name


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")
