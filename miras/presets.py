"""Named model sizes as data: ``preset("transformer-340m", overrides)`` -> :class:`RunConfig`.

A preset is ``<mixer>-<size>``. The sizes come from Miras Table 5 (App. C); the 1.3B layout is not in the
paper. Fields the paper does not state (optimizer, schedule, batch, tokenizer) follow the Titans recipe that
Miras builds on: AdamW, cosine decay, weight decay 0.1, 0.5M-token batches, Llama-2 32K vocabulary, and are
marked "not from Miras" in ``SIZES[...].source``.

Embedding tying is not stated either. With tied embeddings the Transformer++ counts are 341M (label 340M),
729M (Table 2 label 760M, Table 5 label 780M) and 1.30B (label 1.3B); untied ones would be 374M, 778M and
1.36B. Tying matches two of the three labels and keeps one rule for all sizes, so it is the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kernels.miras import PRESETS as MEMORY_PRESETS
from kernels.miras import MemorySpec
from miras.config import (
    KNOWN_MIXERS,
    ConfigError,
    DataConfig,
    MixerConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    override,
)


@dataclass(frozen=True)
class Size:
    n_layer: int
    d_model: int
    n_head: int
    lr: float
    tokens: int
    label: str
    source: str


SIZES: dict[str, Size] = {
    "170m": Size(12, 768, 16, 3e-3, 15_000_000_000, "170M", "Miras Table 5 (labelled 170M; the text says 120M)"),
    "340m": Size(24, 1024, 16, 1.5e-3, 15_000_000_000, "340M", "Miras Table 5"),
    "780m": Size(24, 1536, 16, 1.25e-3, 30_000_000_000, "780M", "Miras Table 5 (labelled 780M; Table 2 says 760M)"),
    "1.3b": Size(
        24,
        2048,
        32,
        4e-4,
        100_000_000_000,
        "1.3B",
        "not from Miras: Transformer++ 1.3B layout of the Gated DeltaNet paper (flame transformer_1B: "
        "2048 wide, 24 blocks, 32 heads); lr 4e-4 is the Titans/GDN recipe",
    ),
}


MEMORIES: dict[str, MemorySpec] = {
    "moneta": MEMORY_PRESETS["moneta"],
    "yaad": MEMORY_PRESETS["yaad"],
    "memora": MEMORY_PRESETS["memora"],
    "miras": MemorySpec(),
}
"""The memory each Miras mixer's preset spells out, so that ``model.mixer.memory.<field>=...`` overrides work."""


def preset_names() -> list[str]:
    return [f"{mixer}-{size}" for mixer in KNOWN_MIXERS for size in SIZES]


def preset(name: str, overrides: Iterable[str] = ()) -> RunConfig:
    """The paper-scale config of ``<mixer>-<size>`` with ``section.field=value`` overrides applied."""
    mixer, _, size_key = name.rpartition("-")
    if mixer not in KNOWN_MIXERS or size_key not in SIZES:
        raise ConfigError(
            f"preset {name!r} is unknown; allowed values: <mixer>-<size> with mixer in {', '.join(KNOWN_MIXERS)} "
            f"and size in {', '.join(SIZES)}"
        )
    size = SIZES[size_key]
    config = RunConfig(
        model=ModelConfig(
            d_model=size.d_model,
            n_layer=size.n_layer,
            mixer=MixerConfig(name=mixer, n_head=size.n_head, memory=MEMORIES.get(mixer)),
        ),
        optim=OptimConfig(lr=size.lr),
        data=DataConfig(seq_len=4096, batch_size=8),
        train=TrainConfig(tokens=size.tokens, batch_tokens=524_288),
    )
    return override(config, overrides)
