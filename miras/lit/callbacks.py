"""Callbacks: throughput logging and the ``summary.json`` every report reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

from kernels.utils import device_name, git_state


class Throughput(L.Callback):
    """Logs ``train/tokens`` (tokens seen over all ranks) and ``train/tokens_per_s`` (wall clock, all ranks)."""

    def __init__(self, batch_tokens: int, log_every: int) -> None:
        self.batch_tokens = batch_tokens
        self.log_every = log_every
        self._t0: float | None = None
        self._step0 = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._t0 is None:
            self._t0, self._step0 = time.perf_counter(), step
            return
        if step % self.log_every == 0 and step > self._step0:
            elapsed = time.perf_counter() - self._t0
            pl_module.log("train/tokens", float(step * self.batch_tokens))
            pl_module.log("train/tokens_per_s", (step - self._step0) * self.batch_tokens / elapsed)


class RunSummary(L.Callback):
    """Writes ``summary.json`` into the run folder once the final validation after the last step has run.

    The summary holds the run's identity (``meta``: paper, table, run, seed, scale), git sha and dirty flag,
    config hash, device, world size, tokens seen, wall time (summed over resumed segments) and the final
    values of every logged metric.
    """

    def __init__(self, out_dir: str | Path, meta: dict, config_hash: str, total_steps: int, batch_tokens: int):
        self.out_dir = Path(out_dir)
        self.meta = meta
        self.config_hash = config_hash
        self.total_steps = total_steps
        self.batch_tokens = batch_tokens
        self.wall_s = 0.0
        self._t0 = time.perf_counter()
        # the code that runs is the checkout at the start, whatever happens to the tree meanwhile
        self.git = git_state()
        self._train_metrics: dict[str, float] = {}

    def state_dict(self) -> dict:
        return {"wall_s": self.wall_s + time.perf_counter() - self._t0}

    def load_state_dict(self, state_dict: dict) -> None:
        self.wall_s = state_dict["wall_s"]
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        # a separate `trainer.validate` after fit starts with fresh callback metrics
        self._train_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    def on_validation_end(self, trainer, pl_module) -> None:
        finished = trainer.global_step >= self.total_steps or trainer.should_stop
        if not finished or trainer.sanity_checking or not trainer.is_global_zero:
            return
        current = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics = dict(sorted({**self._train_metrics, **current}.items()))
        summary = {
            **self.meta,
            "config_hash": self.config_hash,
            "git": self.git,
            "device": device_name(),
            "world_size": trainer.world_size,
            "steps": trainer.global_step,
            "tokens": trainer.global_step * self.batch_tokens,
            "wall_s": round(self.wall_s + time.perf_counter() - self._t0, 2),
            "metrics": metrics,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


class EarlyStop(L.Callback):
    """Stops training at the first validation where ``metric`` exceeds ``threshold`` (zoology's MQAR rule).

    Registered before :class:`RunSummary`, so the summary of that validation is written as the run's last."""

    def __init__(self, metric: str, threshold: float) -> None:
        self.metric, self.threshold = metric, threshold
        self.stopped = False

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or float(value) <= self.threshold:
            return
        self.stopped = True
        trainer.should_stop = True


class ProgressLog(L.Callback):
    """One line per ``every`` optimizer steps on rank 0, for logs that are not terminals (SLURM, CI)."""

    def __init__(self, total_steps: int, every: int) -> None:
        self.total_steps, self.every = total_steps, every
        self._last = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last or (step % self.every and step != self.total_steps):
            return
        self._last = step
        metrics = trainer.callback_metrics
        fields = [f"step {step}/{self.total_steps}"]
        fields += [
            f"{key} {float(metrics[key]):.4g}"
            for key in ("train/loss", "val/loss", "train/tokens_per_s")
            if key in metrics
        ]
        print("  " + "  ".join(fields), flush=True)
