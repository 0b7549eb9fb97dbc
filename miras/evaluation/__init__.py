"""Downstream evaluation of trained models through lm-evaluation-harness."""

from miras.evaluation.adapter import MirasLM
from miras.evaluation.tasks import (
    FIXTURES,
    TABLE2_TASKS,
    evaluate,
    flatten_metrics,
    official_task_config,
    offline_task_configs,
)

__all__ = [
    "FIXTURES",
    "TABLE2_TASKS",
    "MirasLM",
    "evaluate",
    "flatten_metrics",
    "offline_task_configs",
    "official_task_config",
]
