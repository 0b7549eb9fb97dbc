"""Zoology's MQAR training, shared by the MQAR experiments (``miras/mqar.py``, ``ttr/fig3_mqar.py``).

A cell is one (P, T); every (model, P, T, learning rate) is a run declared at its scale, and the runs of one
(model, P, T) form a learning-rate sweep that the report gives by its best run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from miras.config import DataConfig, ModelConfig, MQARConfig, OptimConfig, RunConfig, TrainConfig
from miras.experiment import Run


def zoology_run(model: ModelConfig, task: MQARConfig, seq_len: int, batch: int, epochs: int) -> RunConfig:
    """``model`` trained on ``task`` as zoology trains MQAR: AdamW (betas 0.9, 0.999), cosine decay to 0 without
    warmup or clipping, ``batch`` examples a step, at most ``epochs`` passes over the training examples, a test
    after every epoch and an early stop once its accuracy exceeds 0.99. The learning rate is left to the run."""
    epoch = math.ceil(task.train_examples / batch)
    return RunConfig(
        model=model,
        optim=OptimConfig(beta2=0.999, warmup_fraction=0.0, min_lr_ratio=0.0, grad_clip=0.0),
        data=DataConfig(
            dataset="mqar",
            seq_len=seq_len,
            batch_size=batch,
            val_batches=math.ceil(task.test_examples / batch),
            mqar=task,
        ),
        train=TrainConfig(
            tokens=epochs * epoch * batch * seq_len,
            batch_tokens=batch * seq_len,
            precision="32-true",
            val_every=epoch,
            ckpt_every=epoch,
            log_every=max(1, min(50, epoch // 4)),
            early_stop=0.99,
        ),
    )


def sweep_name(model: str, pairs: int, seq_len: int) -> str:
    return f"{model}-P{pairs}-T{seq_len}"


def sweep_runs(
    scale: str,
    cells: Iterable[tuple[int, int]],
    labels: dict[str, str],
    lrs: Iterable[float],
    base: Callable[[str, int, int], RunConfig],
    seeded: Iterable[str] = (),
) -> tuple[Run, ...]:
    """One run per (P, T) of ``cells``, model of ``labels`` (name -> row label) and learning rate, on the config
    ``base(model, P, T)``; the runs of one (model, P, T) are a sweep, grouped by (P, T). The runs of the models
    in ``seeded`` train seeds 0, 1 and 2, the others seed 0."""
    seeded = set(seeded)
    return tuple(
        Run(
            f"{sweep_name(model, pairs, seq_len)}-lr{lr:g}",
            label,
            f"P={pairs}, T={seq_len}",
            f"{model}-mqar",
            overrides=(f"optim.lr={lr:g}",),
            scale=scale,
            base=base(model, pairs, seq_len),
            sweep=sweep_name(model, pairs, seq_len),
            seeds=(0, 1, 2) if model in seeded else (0,),
        )
        for pairs, seq_len in cells
        for model, label in labels.items()
        for lr in lrs
    )
