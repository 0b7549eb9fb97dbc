"""MQAR (multi-query associative recall) with the language models' mixers, as zoology runs it.

    python -m experiments.miras.mqar --scale tiny [--mixers gated_deltanet,yaad] [--runs-dir runs] [--out-dir ...]

The model is zoology's (its MQAR figure, ``iclr24_zoology_figure2``): token embedding (tied with the head) ->
``n_layer`` pre-norm blocks of one mixer (Transformer++, Gated DeltaNet, DeltaNet, Moneta, Yaad or Memora) and no
MLP (an identity in the state-mixer slot) -> RMSNorm -> head; attention takes RoPE instead of zoology's learned
positions. Every mixer has the same width, heads, short convolution and chunk size; Moneta, Yaad and Memora take
the gates of their language-model presets (``miras.presets.MIRAS_GATES``).
Data and training are those of ``experiments.ttr.fig3_mqar``: MQAR from ``data.synthetic.mqar`` with train and
test seeds disjoint, AdamW (weight decay 0.1), cosine decay to 0, early stop once test accuracy exceeds 0.99, and
the best test accuracy over a learning-rate sweep. One model is trained per (mixer, P, T, learning rate).

Scales: ``paper`` takes zoology's counts on a grid that holds its (P, T) = (4, 64), (8, 128), (16, 256) (a GPU
job), ``small`` a smaller grid, ``tiny`` one cell that a CPU core trains in minutes per (mixer, lr) and that
separates the mixers, ``smoke`` checks the pipeline in seconds. Each trained cell writes
``runs/<scale>/miras/mqar/<mixer>-P<P>-T<T>/lr<lr>/result.json`` (a finished cell of the same config is not
trained again); the report goes to ``reports/miras/mqar/<scale>.{md,json}``, one file per scale.

Probes for the tiny cell (2 layers, 2 heads, vocabulary 128 unless said, one CPU thread beside two training runs;
best test accuracy, steps, wall time; the plateau before recall is 1/P):

- d 64, T 64, P 8 (an earlier session): Transformer++ 0.13, GDN 0.03 after 2000 steps at lr 3e-3.
- d 64, T 64, P 4, 64 sequences a batch, 16k examples x 8 epochs: Transformer++ 0.98 at lr 1e-3 (2048 steps,
  53 s) but 0.27 at 3e-3 (also with 1 or 4 heads) and at 1e-2 (4096 steps); with 4k examples it memorises them
  (training loss below ln 4, test at 1/P). GDN 0.998 at 1e-3 (512 steps, 58 s), 0.99 at 1e-2 (1024, 100 s).
  Yaad costs 260-380 ms a step there, and with chunks of 64 a step grows to over 1 s as its retention learns to
  forget within a chunk (the torch path then forms the explicit [n, n] decay matrix); chunks of 16 avoid that.
  Yaad at 1e-3 is at 0.06 after 512 steps (334 s).
- d 32, T 64, P 4, 64 sequences a batch: Transformer++ stays at 0.26 (lr 1e-3 and 3e-3, 2048 steps); GDN 0.998
  (lr 1e-2, 768 steps).
- d 64, T 64, P 4, 32 sequences a batch, chunks of 16: Yaad 0.91 at lr 1e-2 (2048 steps, 437 s); Transformer++
  at most 0.33 (2048 steps, lr 1e-3, 3e-3, 1e-2); GDN 0.999 (1e-2, 1024 steps, 60 s).
- The chosen cell, d 64, T 32, P 4, 64 sequences a batch, 16k examples x at most 8 epochs, chunks of 16 (the
  tiny run, ``reports/miras/mqar/tiny.md``): Transformer++ 0.999 at lr 1e-3 (768 steps, 11 s) and 0.28 at 1e-2
  (2048 steps, 29 s); GDN 0.997 at 1e-3 (768 steps, 83 s) and 1.000 at 1e-2 (512 steps, 47 s); Yaad 0.96 at 1e-3
  (2048 steps, 301 s) and 0.99 at 1e-2 (1024 steps, 240 s). Every mixer leaves the plateau; they differ in the
  learning rates that work and in the steps needed (the report gives both).
- P 8 at T 32 separates more but costs more: Transformer++ 0.20 (1e-3, 2048 steps, 32 s), GDN 0.99 (1e-2,
  512 steps, 49 s), Yaad 0.15 after 1536 steps at 1e-2 (420 s, stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data.synthetic.mqar import MQARDataModule, MQARSegment
from experiments.ttr.fig3_mqar import loss_and_accuracy, test_accuracy
from miras.config import ConfigError, MixerConfig, ModelConfig, config_hash
from miras.models import LanguageModel
from miras.presets import MIRAS_GATES

REPO = Path(__file__).resolve().parents[2]
MIXERS = {
    "transformer": "Transformer++",
    "gated_deltanet": "Gated DeltaNet",
    "deltanet": "DeltaNet",
    "moneta": "Moneta",
    "yaad": "Yaad",
    "memora": "Memora",
}


@dataclass(frozen=True)
class MQARConfig:
    """Every choice of the experiment; zoology's MQAR figure (Arora et al. 2023, ``iclr24_zoology_figure2``) where
    it has one."""

    mixers: tuple[str, ...] = tuple(MIXERS)
    """Mixers compared, one row of the report each; keys of :data:`MIXERS`."""
    d_model: int = 128
    """Residual width (zoology sweeps 64-512)."""
    n_layer: int = 2
    """Blocks of every mixer (zoology: 2 of attention, 4 of its recurrent mixers)."""
    n_head: int = 2
    """Heads of every mixer, of width ``d_model / n_head`` (zoology's attention: 1)."""
    mlp: bool = False
    """A SwiGLU MLP after each mixer; zoology's MQAR figure has none."""
    conv_size: int = 4
    """Short causal convolution on q, k, v of the recurrent mixers (Miras: 4; attention has none)."""
    chunk_size: int = 64
    """Chunk of the chunkwise Miras memories (Miras: 16 or 64)."""
    pairs: tuple[int, ...] = (4, 8, 16, 64)
    """Key-value pairs P per example; cells with ``4 P > T`` are skipped (they do not fit)."""
    seq_lens: tuple[int, ...] = (64, 128, 256, 512)
    """Sequence lengths T."""
    lrs: tuple[float, ...] = (1e-4, 4.6e-4, 2.2e-3, 1e-2)
    """Learning-rate sweep (zoology's ``np.logspace(-4, -2, 4)``); the report gives the best test accuracy."""
    vocab_size: int = 8192
    """Tokens; keys come from [1, vocab/2), values from [vocab/2, vocab) (zoology: 8192)."""
    train_examples: int = 100_000
    """Training examples per cell (zoology: 100k at T = 64)."""
    test_examples: int = 3_000
    """Test examples per cell, from seeds disjoint from the training ones."""
    epochs: int = 64
    """Passes over the training examples (zoology: 64), fewer after an early stop."""
    batch_tokens: int = 65_536
    """Batch size in tokens: ``batch_tokens // T`` sequences (at most ``max_batch``) per training and test batch."""
    max_batch: int = 512
    """Most sequences per batch; with ``batch_tokens`` zoology's 512 at T <= 128, 256 at 256 and 128 at 512."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay (zoology: 0.1)."""
    early_stop: float = 0.99
    """Stop once the test accuracy exceeds this (zoology's rule)."""
    power_a: float = 0.01
    """Power law of the gaps between the context and the queries (zoology: 0.01, short gaps likelier)."""
    random_non_queries: bool = False
    """Filler tokens uniform over the vocabulary rather than 0 (zoology's figure: False)."""
    data_seed: int = 123
    """Seed of the segment seeds (zoology: 123)."""
    seed: int = 0
    """Seed of initialisation."""

    def __post_init__(self) -> None:
        for mixer in self.mixers:
            if mixer not in MIXERS:
                raise ConfigError(f"mqar.mixers={self.mixers!r} is invalid; allowed values: {', '.join(MIXERS)}")


SCALES = {
    "paper": MQARConfig(),
    "small": MQARConfig(
        d_model=64, pairs=(4, 16), seq_lens=(64, 256), train_examples=25_000, test_examples=1_000, epochs=32
    ),
    "tiny": MQARConfig(
        d_model=64,
        chunk_size=16,
        pairs=(4,),
        seq_lens=(32,),
        lrs=(1e-3, 1e-2),
        vocab_size=128,
        train_examples=16_384,
        test_examples=256,
        epochs=8,
        batch_tokens=2048,
    ),
    "smoke": MQARConfig(
        d_model=16,
        pairs=(2,),
        seq_lens=(16,),
        lrs=(1e-2,),
        vocab_size=32,
        train_examples=16,
        test_examples=8,
        epochs=1,
        batch_tokens=128,
    ),
}


def scale_config(scale: str, mixers: tuple[str, ...] | None = None) -> MQARConfig:
    """The config of ``scale``, restricted to ``mixers`` when given."""
    if scale not in SCALES:
        raise ConfigError(f"mqar.scale={scale!r} is invalid; allowed values: {', '.join(SCALES)}")
    config = SCALES[scale]
    return config if mixers is None else dataclasses.replace(config, mixers=tuple(mixers))


def model_config(config: MQARConfig, mixer: str) -> ModelConfig:
    mixer_config = MixerConfig(
        name=mixer,
        n_head=config.n_head,
        conv_size=config.conv_size,
        chunk_size=config.chunk_size,
        **MIRAS_GATES.get(mixer, {}),
    )
    return ModelConfig(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        n_layer=config.n_layer,
        mlp=config.mlp,
        mixer=mixer_config,
    )


def cell_hash(config: MQARConfig, mixer: str, pairs: int, seq_len: int, lr: float) -> str:
    """What determines a cell's training: the config narrowed to the cell, and the model it builds (so that a
    change of a mixer's defaults or of the Miras gates trains the cell again)."""
    cell = dataclasses.replace(config, mixers=(mixer,), pairs=(pairs,), seq_lens=(seq_len,), lrs=(lr,))
    both = config_hash(cell) + config_hash(model_config(config, mixer))
    return hashlib.sha256(both.encode()).hexdigest()[:12]


def mqar_data(config: MQARConfig, pairs: int, seq_len: int) -> MQARDataModule:
    """Train and test examples of one cell, ``batch_tokens // seq_len`` (at most ``max_batch``) per batch."""
    batch = max(1, min(config.max_batch, config.batch_tokens // seq_len))
    kind = dict(power_a=config.power_a, random_non_queries=config.random_non_queries)
    data = MQARDataModule(
        config.vocab_size,
        train_segments=[MQARSegment(seq_len, pairs, config.train_examples, **kind)],
        test_segments=[MQARSegment(seq_len, pairs, config.test_examples, **kind)],
        batch_size=(batch, batch),
        seed=config.data_seed,
    )
    data.setup()
    return data


def fit(
    model: LanguageModel, data: MQARDataModule, config: MQARConfig, lr: float, device: torch.device, name: str
) -> list[dict]:
    """Zoology's schedule: AdamW and a cosine decay to 0 over all epochs, the test accuracy after each epoch, and
    a stop once it exceeds ``early_stop``. Returns one ``{"epoch", "loss", "accuracy", "wall_s"}`` per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    per_epoch = data.batches_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * per_epoch)
    batches, history, start = iter(data.train_dataloader()), [], time.time()
    while len(history) < config.epochs and not (history and history[-1]["accuracy"] > config.early_stop):
        loss = 0.0
        for batch in itertools.islice(batches, per_epoch):
            step_loss, _ = loss_and_accuracy(model, {k: v.to(device) for k, v in batch.items()})
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            optimizer.step()
            schedule.step()
            loss += float(step_loss.detach()) / per_epoch
        accuracy = test_accuracy(model, data, device)
        history.append(
            {"epoch": len(history), "loss": loss, "accuracy": accuracy, "wall_s": round(time.time() - start, 1)}
        )
        print(f"  {name} epoch {len(history) - 1}: loss {loss:.3f} accuracy {accuracy:.3f}", flush=True)
    return history


def train_cell(
    config: MQARConfig, mixer: str, pairs: int, seq_len: int, lr: float, out_dir: Path, device: torch.device
) -> dict:
    """Train one model, or read it back when ``out_dir/result.json`` holds this cell's hash; returns the result
    (per-epoch history and best test accuracy) that it writes there."""
    chash = cell_hash(config, mixer, pairs, seq_len, lr)
    result_path = out_dir / "result.json"
    if result_path.exists() and json.loads(result_path.read_text())["hash"] == chash:
        return json.loads(result_path.read_text())
    torch.manual_seed(config.seed)
    data = mqar_data(config, pairs, seq_len)
    model = LanguageModel(model_config(config, mixer)).to(device)
    history = fit(model, data, config, lr, device, f"{mixer} P={pairs} T={seq_len} lr={lr:g}")
    result = {
        "hash": chash,
        "cell": {"mixer": mixer, "pairs": pairs, "seq_len": seq_len, "lr": lr},
        "best_accuracy": max(h["accuracy"] for h in history),
        "history": history,
        "steps": len(history) * data.batches_per_epoch,
        "params": sum(p.numel() for p in model.parameters()),
        "wall_s": history[-1]["wall_s"],
        "device": str(device),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def cells(config: MQARConfig) -> list[tuple[int, int]]:
    """The (P, T) columns that fit (``4 P <= T``)."""
    return [(p, t) for p in config.pairs for t in config.seq_lens if 4 * p <= t]


def run_grid(config: MQARConfig, runs_dir: Path, device: torch.device) -> dict:
    """``{(mixer, P, T): {"accuracy": best over the sweep, "lr": its learning rate, "by_lr": {lr: {"accuracy",
    "steps"}}}}``."""
    grid = {}
    for mixer in config.mixers:
        for pairs, seq_len in cells(config):
            by_lr = {}
            for lr in config.lrs:
                out = runs_dir / f"{mixer}-P{pairs}-T{seq_len}" / f"lr{lr:g}"
                result = train_cell(config, mixer, pairs, seq_len, lr, out, device)
                by_lr[lr] = {"accuracy": result["best_accuracy"], "steps": result["steps"]}
            best = max(by_lr, key=lambda lr: by_lr[lr]["accuracy"])
            grid[mixer, pairs, seq_len] = {"accuracy": by_lr[best]["accuracy"], "lr": best, "by_lr": by_lr}
    return grid


def table(config: MQARConfig, grid: dict, header: list[str], entries) -> list[str]:
    """A markdown table with one row per mixer; ``entries(cell)`` gives a row's entries for one (P, T)."""
    lines = ["| mixer | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(header)]
    for mixer in config.mixers:
        row = [entry for p, t in cells(config) for entry in entries(grid[mixer, p, t])]
        lines.append(f"| {MIXERS[mixer]} | " + " | ".join(row) + " |")
    return lines


def command(config: MQARConfig, scale: str) -> str:
    """The command line that computes ``config``'s report."""
    subset = "" if config.mixers == SCALES[scale].mixers else f" --mixers {','.join(config.mixers)}"
    return f"python -m experiments.miras.mqar --scale {scale}{subset}"


def render_markdown(config: MQARConfig, scale: str, grid: dict, meta: dict) -> str:
    """One row per mixer, one column per (P, T): the best test accuracy over the sweep (its lr in brackets), then
    the accuracy and steps trained at every lr."""
    columns = cells(config)
    lines = [
        f"# MQAR with the Miras mixers, scale {scale}",
        "",
        f"`{command(config, scale)}`: {config.n_layer} blocks of one mixer, d_model "
        f"{config.d_model}, {config.n_head} heads, {'an' if config.mlp else 'no'} MLP; vocabulary {config.vocab_size}, "
        f"{config.train_examples} training and {config.test_examples} test examples per cell, at most "
        f"{config.epochs} epochs, learning rates {', '.join(f'{lr:g}' for lr in config.lrs)}. Test accuracy, the "
        "best over the learning rates (that learning rate in brackets).",
        "",
        *table(config, grid, [f"P={p} T={t}" for p, t in columns], lambda c: [f"{c['accuracy']:.3f} ({c['lr']:g})"]),
        "| chance (1/P) | " + " | ".join(f"{1 / p:.3f}" for p, _ in columns) + " |",
        "",
        f"Chance: 1/P for a model that answers with one of the example's P values at random (the plateau before "
        f"recall is learned), {2 / config.vocab_size:.4f} for one that answers with any value.",
        "",
        "Every learning rate: test accuracy (optimizer steps trained; training stops once the accuracy exceeds "
        f"{config.early_stop}).",
        "",
        *table(
            config,
            grid,
            [f"P={p} T={t} lr {lr:g}" for p, t in columns for lr in config.lrs],
            lambda c: [f"{r['accuracy']:.3f} ({r['steps']})" for r in c["by_lr"].values()],
        ),
        "",
        "Config (every choice is a field of `MQARConfig`):",
        "",
        "```json",
        json.dumps(dataclasses.asdict(config), indent=2),
        "```",
        "",
        f"Computed at git {meta['git']} on {meta['device']}, torch {meta['torch']}.",
        "",
    ]
    return "\n".join(lines)


def run_meta() -> dict:
    from miras.lit.callbacks import device_name, git_state

    git = git_state(REPO)
    return {
        "git": git["sha"][:12] + ("-dirty" if git.get("dirty") else ""),
        "device": device_name(),
        "torch": torch.__version__,
    }


def reproduce(
    scale: str, runs_dir: Path, out_dir: Path, device: torch.device, mixers: tuple[str, ...] | None = None
) -> dict:
    """Train (or read) every cell of ``scale`` and write ``out_dir/<scale>.{md,json}``; returns the record."""
    config = scale_config(scale, mixers)
    grid = run_grid(config, runs_dir / scale / "miras" / "mqar", device)
    meta = run_meta()
    record = {
        "scale": scale,
        "config": dataclasses.asdict(config),
        "meta": meta,
        "cells": [{"mixer": m, "pairs": p, "seq_len": t, **c} for (m, p, t), c in grid.items()],
        "chance": {f"P={p}": 1 / p for p in config.pairs},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{scale}.md").write_text(render_markdown(config, scale, grid, meta))
    (out_dir / f"{scale}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record | {"out": out_dir}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.miras.mqar", description=__doc__)
    parser.add_argument("--scale", default="tiny", help=f"one of {', '.join(SCALES)}")
    parser.add_argument("--mixers", help=f"comma-separated subset of {', '.join(MIXERS)} (default: the scale's)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--out-dir", type=Path, default=REPO / "reports" / "miras" / "mqar")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    mixers = tuple(args.mixers.split(",")) if args.mixers else None
    try:
        record = reproduce(args.scale, args.runs_dir, args.out_dir, torch.device(args.device), mixers)
    except ConfigError as err:
        parser.error(str(err))
    print(f"wrote {record['out']}/{args.scale}.md and {args.scale}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
