"""Build data, model and Trainer from a :class:`RunConfig` and train one run into its run folder.

A run folder is ``runs/<paper>/<table>/<run>/seed<k>/`` and holds ``config.json``, the TensorBoard event
files, ``checkpoints/last.ckpt`` (the newest checkpoint; ``last-1.ckpt``, ... the ones before it, see
:mod:`miras.checkpoint`), ``train.lock`` while a trainer holds it (:mod:`miras.runlock`) and, once finished,
``summary.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from miras.checkpoint import checkpoint_files, find_checkpoint, remove_partial_writes, warn_line
from miras.config import ConfigError, RunConfig, config_hash, to_dict
from miras.lit import LanguageModelModule, RunSummary, Throughput
from miras.lit.callbacks import EarlyStop, ProgressLog
from miras.lit.checkpoint_io import AtomicCheckpointIO
from miras.models import LanguageModel
from miras.runlock import LOCK_NAME, RunLock, launcher_rank


def offline_corpus_dir() -> Path:
    """Where ``make install`` writes the offline corpus and its tokenizer."""
    from data.corpus import DEFAULT_OUT

    return DEFAULT_OUT


def build_datamodule(config: RunConfig):
    """The DataModule of ``config.data``: token shards (``memmap``), the MQAR task (``mqar``) or a text source
    packed on the fly."""
    from data.memmap import MemmapDataModule
    from data.sources import document_sources
    from data.text import TextDataModule
    from data.tokenizer import load_tokenizer, tokenizer_sha256

    d = config.data
    if d.dataset == "mqar":
        return mqar_datamodule(config)
    common = dict(
        seq_len=d.seq_len,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        val_batches=d.val_batches,
        seed=config.train.seed,
        packing=d.packing,
    )
    if d.dataset == "memmap":
        dm = MemmapDataModule(d.path, shuffle=d.shuffle_buffer > 0, **common)
        tokenizer = dm.tokenizer
        if d.tokenizer and tokenizer_sha256(load_tokenizer(d.tokenizer)) != dm.manifest["tokenizer"]["sha256"]:
            raise ConfigError(
                f"data.tokenizer={d.tokenizer!r} is invalid for the token shards in {d.path}; allowed values: "
                f"None or the tokenizer they were written with ({tokenizer})"
            )
    else:
        path = d.path if d.path or d.dataset != "offline" else offline_corpus_dir()
        sources = document_sources(
            d.dataset,
            path=path,
            name=d.name,
            streaming=d.streaming,
            text_field=d.text_field,
            val_fraction=d.val_fraction,
        )
        tokenizer = d.tokenizer or str(offline_corpus_dir() / "tokenizer.json")
        dm = TextDataModule(sources, tokenizer, shuffle_buffer=d.shuffle_buffer, **common)
    if dm.vocab_size() > config.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={config.model.vocab_size} is invalid for tokenizer {tokenizer}; allowed values: "
            f">= {dm.vocab_size()}"
        )
    return dm


def mqar_datamodule(config: RunConfig):
    """Zoology's MQAR train and test sets of ``config.data.mqar`` over the model's vocabulary, ``data.batch_size``
    examples a batch (test batches too)."""
    from data.synthetic.mqar import MQARDataModule, MQARSegment

    d, task = config.data, config.data.mqar
    kind = dict(power_a=task.power_a, random_non_queries=task.random_non_queries)
    return MQARDataModule(
        config.model.vocab_size,
        train_segments=[MQARSegment(d.seq_len, task.pairs, task.train_examples, **kind)],
        test_segments=[MQARSegment(d.seq_len, task.pairs, task.test_examples, **kind)],
        batch_size=(d.batch_size, d.batch_size),
        seed=task.seed,
        num_workers=d.num_workers,
    )


def _world_size(accelerator: str, devices: int | str, num_nodes: int) -> int:
    if isinstance(devices, int):
        return devices * num_nodes
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count() * num_nodes
    return num_nodes


def train(
    config: RunConfig,
    out_dir: str | Path,
    meta: dict,
    *,
    resume: bool = False,
    force: bool = False,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    callbacks: Sequence[L.Callback] = (),
    progress: bool = True,
) -> dict:
    """Train ``config`` into ``out_dir`` and return its summary.

    The launching process (rank 0) holds the run folder's lock throughout (:class:`miras.runlock.RunLock`): a
    second trainer of the same folder raises :class:`miras.runlock.RunLocked` before touching anything.

    Args:
        config: the resolved run config (scale already applied).
        out_dir: the run folder ``.../<run>/seed<k>``.
        meta: identity written into ``summary.json`` (paper, table, run, seed, scale).
        resume: continue from the run folder's newest checkpoint that loads and matches ``config`` (a killed run
            ends as if never stopped); start fresh when it has none.
        force: delete an existing run folder first.
        progress: a progress bar (terminals); otherwise one log line per 5% of the steps.
        strategy: Lightning strategy (``auto``: DDP for several processes; ``fsdp`` for the largest models).
        callbacks: extra Lightning callbacks.
    """
    out_dir = Path(out_dir)
    rank_zero = launcher_rank() == 0
    with RunLock(out_dir) if rank_zero else nullcontext():
        ckpt_path = _start_point(config, out_dir, resume=resume, force=force, rank_zero=rank_zero)
        chash, ckpt_dir = config_hash(config), out_dir / "checkpoints"
        L.seed_everything(config.train.seed, workers=True, verbose=False)
        datamodule = build_datamodule(config)
        module = LanguageModelModule(LanguageModel(config.model), config)
        world = _world_size(accelerator, devices, num_nodes)
        accumulate, steps = config.accumulation(world), config.steps()

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(
            json.dumps({"config_hash": chash, "meta": meta, "config": to_dict(config)}, indent=2) + "\n"
        )
        logger = TensorBoardLogger(
            save_dir=out_dir.parent.parent, name=out_dir.parent.name, version=out_dir.name, default_hp_metric=False
        )
        t = config.train
        early_stop = None if t.early_stop is None else EarlyStop("val/accuracy", t.early_stop)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            # Lightning writes (and resumes from) hpc_ckpt_*.ckpt in its root dir: keep them in the run folder
            default_root_dir=out_dir,
            precision=t.precision,
            max_steps=steps,
            max_epochs=-1,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=config.optim.grad_clip or None,
            val_check_interval=t.val_every * accumulate,
            check_val_every_n_epoch=None,
            limit_val_batches=config.data.val_batches,
            num_sanity_val_steps=0,
            log_every_n_steps=t.log_every,
            logger=logger,
            enable_progress_bar=progress,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO(t.keep_checkpoints)],
            callbacks=[
                *callbacks,
                *([] if early_stop is None else [early_stop]),
                Throughput(t.batch_tokens, t.log_every),
                *([] if progress else [ProgressLog(steps, max(t.log_every, steps // 20))]),
                RunSummary(out_dir, meta, chash, steps, t.batch_tokens),
                ModelCheckpoint(
                    dirpath=ckpt_dir,
                    every_n_train_steps=t.ckpt_every,
                    save_top_k=0,
                    save_last=True,
                    enable_version_counter=False,
                ),
            ],
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.global_step % t.val_every and not (early_stop and early_stop.stopped):
            trainer.validate(module, datamodule=datamodule, verbose=False)
        # rank 0 writes the summary; every rank returns it (a rank that read too early would report a failed run)
        trainer.strategy.barrier("summary")
        summary_path = out_dir / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.exists() else {}


def _start_point(config: RunConfig, out_dir: Path, *, resume: bool, force: bool, rank_zero: bool) -> str | None:
    """The checkpoint to resume from (None: a fresh start), after ``force`` emptied the folder; one-line errors for
    a folder that has checkpoints without ``resume``, was trained under another config, or has none that loads."""
    if force:
        if rank_zero and out_dir.exists():
            _clear(out_dir, keep=out_dir / LOCK_NAME)
        return None
    if rank_zero:
        remove_partial_writes(out_dir)
    if not resume:
        if checkpoint_files(out_dir):
            raise FileExistsError(f"{out_dir} already has checkpoints; pass --resume to continue or --force to restart")
        return None
    chash = config_hash(config)
    if (out_dir / "config.json").exists():
        saved = json.loads((out_dir / "config.json").read_text())
        if saved.get("config_hash") != chash:
            raise ConfigError(f"--resume: {out_dir} was trained with config {saved.get('config_hash')}, not {chash}")
    # every rank picks the same file from the same folder; rank 0 alone warns and sets unusable files aside
    found = find_checkpoint(
        out_dir, chash, resumable=True, set_aside=rank_zero, warn=warn_line if rank_zero else lambda message: None
    )
    return None if found is None else str(found)


def _clear(out_dir: Path, keep: Path) -> None:
    """Delete everything in ``out_dir`` but ``keep`` (the lock file, which must stay while it is held)."""
    for child in out_dir.iterdir():
        if child == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
