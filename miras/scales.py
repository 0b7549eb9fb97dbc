"""Scale profiles: map a paper-scale run to what a machine can afford, by one declared rule per scale.

| scale | where | rule |
| --- | --- | --- |
| ``paper`` | SLURM, many GPUs | unchanged |
| ``small`` | one GPU, < 1 h | width / 2, depth / 2 (>= 4), 64-wide heads, context / 2, 200M tokens, 256K/step |
| ``tiny`` | a laptop CPU, minutes | width / 8, depth / 6 (>= 2), 32-wide heads, context / 16, 1M tokens, offline |
| ``smoke`` | tests and CI, seconds | width 32, 2 blocks, context 64, 8 steps, offline corpus |

Sizes keep their order under ``small`` and ``tiny`` (340M > 760M > 1.3B stay ordered), and so do contexts
(the papers' 4096 becomes 2048 and 256; a context sweep stays a sweep), at a fixed number of tokens per step.
A preset with an explicit ``head_dim`` (Gated DeltaNet) keeps its head count and shrinks ``head_dim`` like the
width; the SWA window of the hybrids shrinks like the context. The tiny and smoke scales train on the offline
corpus with its BPE tokenizer (vocabulary 8192) in fp32.
"""

from __future__ import annotations

import dataclasses

from miras.config import ConfigError, DataConfig, MixerConfig, ModelConfig, RunConfig

SCALES = ("paper", "small", "tiny", "smoke")
OFFLINE_VOCAB = 8192
TINY_BATCH_TOKENS = 4096
# tiny and smoke read the offline corpus, whatever corpus the paper-scale run names
OFFLINE_SOURCE = {
    name: getattr(DataConfig(), name) for name in ("dataset", "name", "path", "tokenizer", "text_field", "streaming")
}


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def _mixer(mixer: MixerConfig, old: ModelConfig, width: int, n_head: int, seq_ratio: float) -> MixerConfig:
    """The mixer at a new width: ``n_head`` heads, or the preset's heads with ``head_dim`` shrunk like the width
    when it is set (Gated DeltaNet keeps its head count); SWA windows shrink like the context."""
    fields = {"n_head": n_head, "swa_window": max(16, round(mixer.swa_window * seq_ratio))}
    if mixer.head_dim is not None:
        fields = {**fields, "n_head": mixer.n_head, "head_dim": max(4, round(mixer.head_dim * width / old.d_model))}
    return dataclasses.replace(mixer, **fields)


def apply_scale(config: RunConfig, scale: str) -> RunConfig:
    """``config`` (paper scale) resized by the rule of ``scale``."""
    if scale not in SCALES:
        raise ConfigError(f"scale={scale!r} is invalid; allowed values: {', '.join(SCALES)}")
    if scale == "paper":
        return config
    m, d, t, o = config.model, config.data, config.train, config.optim
    if scale == "small":
        width = _round(m.d_model / 2, 64)
        model = dataclasses.replace(
            m,
            d_model=width,
            n_layer=max(4, m.n_layer // 2),
            mixer=_mixer(m.mixer, m, width, width // 64, 0.5),
        )
        data = dataclasses.replace(d, seq_len=max(64, d.seq_len // 2), batch_size=16)
        train = dataclasses.replace(t, tokens=200_000_000, batch_tokens=262_144, val_every=250, ckpt_every=250)
        optim = o
    elif scale == "tiny":
        width = _round(m.d_model / 8, 32)
        model = dataclasses.replace(
            m,
            d_model=width,
            n_layer=max(2, m.n_layer // 6),
            vocab_size=OFFLINE_VOCAB,
            mixer=_mixer(m.mixer, m, width, width // 32, 1 / 16),
        )
        data = dataclasses.replace(
            d,
            **OFFLINE_SOURCE,
            seq_len=(seq_len := max(64, d.seq_len // 16)),
            batch_size=max(1, TINY_BATCH_TOKENS // seq_len),
            val_batches=8,
        )
        train = dataclasses.replace(
            t,
            tokens=1_048_576,
            batch_tokens=TINY_BATCH_TOKENS,
            precision="32-true",
            val_every=64,
            ckpt_every=64,
            log_every=8,
        )
        optim = dataclasses.replace(o, warmup_fraction=0.05)
    else:
        model = dataclasses.replace(
            m, d_model=32, n_layer=2, vocab_size=OFFLINE_VOCAB, mixer=_mixer(m.mixer, m, 32, 2, 64 / d.seq_len)
        )
        data = dataclasses.replace(
            d,
            **OFFLINE_SOURCE,
            seq_len=64,
            batch_size=4,
            val_batches=2,
            num_workers=0,
        )
        train = dataclasses.replace(
            t, tokens=2048, batch_tokens=256, precision="32-true", val_every=4, ckpt_every=4, log_every=1
        )
        optim = dataclasses.replace(o, warmup_fraction=0.25)
    return dataclasses.replace(config, model=model, data=data, train=train, optim=optim)
