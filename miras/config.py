"""The one configuration schema: frozen dataclasses, validated at construction.

Every field has a type, a default and a docstring below it. Choices are strings (``mixer="transformer"``)
resolved by registries, so a config serialises to JSON and greps. A resolved :class:`RunConfig` is written
next to every result as ``config.json`` together with :func:`config_hash`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from kernels.miras.spec import MemorySpec


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the allowed values."""


def _check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{owner}.{name}={value!r} is invalid; allowed values: {', '.join(map(repr, allowed))}")


def _check_positive(owner: str, name: str, value: float, *, zero_ok: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{owner}.{name}={value!r} is invalid; allowed values: a number {bound}")


# Every mixer of the papers' tables. A name here but not in `miras.layers.MIXERS` is declared, not yet
# implemented: experiments list such runs as unavailable instead of faking them.
KNOWN_MIXERS = (
    "transformer",
    "swa",
    "retnet",
    "gla",
    "mamba",
    "mamba2",
    "deltanet",
    "gated_deltanet",
    "ttt",
    "samba",
    "gated_deltanet_h2",
    "moneta",
    "yaad",
    "memora",
    "miras",
    "moneta_h",
    "yaad_h",
    "memora_h",
    "linear_attention",
    "rls",
    "higher_order_attention",
)
BACKENDS = ("auto", "torch", "triton", "fla")
TTT_MODELS = ("linear", "mlp")
TTR_NORMS = ("none", "unit", "rms", "layer")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")


@dataclass(frozen=True)
class MixerConfig:
    """Token mixer of every block (the attention slot of a Llama block)."""

    name: str = "transformer"
    """Registry name of the mixer; one of ``KNOWN_MIXERS``."""
    n_head: int = 16
    """Number of heads; ``d_model`` must be divisible by it."""
    backend: str = "auto"
    """Kernel path: ``auto`` (fast path on CUDA, torch elsewhere), ``torch``, ``triton`` or ``fla``."""
    window: int | None = None
    """Sliding-window size for attention mixers (``None``: full causal attention)."""
    rope: bool = True
    """Apply rotary position embeddings to q and k (mixers that use positions)."""
    memory_rope: bool = True
    """RoPE on the q and k of a Miras memory as well (``rope`` and this). Miras puts RoPE in its macro
    architecture without saying where a recurrent layer applies it; on the MLP memory a rotation by absolute
    position makes the key written at ``i`` and the query at ``t`` differ, and the residual passes the rotated
    query to the output. The presets turn it off (96-step validation perplexity at tiny scale, 340M: Moneta 646 ->
    625, Yaad 644 -> 636; GDN 658, which has none); attention layers of the hybrids keep ``rope``."""
    rope_theta: float = 10_000.0
    """RoPE base; 10k is Llama-2's value (the papers do not state one)."""
    memory: MemorySpec | None = None
    """Memory of the Miras mixers (``moneta``, ``yaad``, ``memora``, ``miras``); ``None`` means the mixer's own
    (``kernels.miras.spec.PRESETS``; the generic ``miras`` mixer then uses ``MemorySpec()``). Override fields as
    ``model.mixer.memory.p=2``."""
    chunk_size: int = 64
    """Tokens per chunk of the chunkwise memories (Miras section 5.4: "usually 16 or 64"; the size used for
    each experiment is not reported)."""
    conv_size: int = 4
    """Kernel of the depthwise causal convolution after the q, k, v projections (Miras: 4; 0 disables)."""
    gate_rank: int = 32
    """Rank of the low-rank projections ``d -> rank -> d`` that make the channel-wise gates (Miras: "usually
    32 or 64", after RWKV-7)."""
    channel_gates: bool = True
    """Channel-wise ``eta``, ``alpha``, ``delta`` (``[.., D]``, Miras section 5.4) or one value per head."""
    eta_max: float = 0.1
    """``eta_t = eta_max * sigmoid(.)``; the squashing of the gates is not stated. titans-pytorch caps at 1, TTT
    uses ``0.1 / head_dim``. This default and ``eta_init`` suit the paper's LN without gain
    (``memory_ln_gain=None``), whose write strength grows as the weights shrink: inner steps near 1 make the outer
    gradients explode across chunks. The Moneta, Yaad and Memora presets use 1 with the LN gain
    (``miras.presets.MIRAS_GATES``), as GDN's ``beta`` lies in (0, 1)."""
    eta_init: float = 0.001
    """Initial memory learning rate ``eta_t`` (through the gate bias; not stated in the paper; TTT's size). Every
    token of a chunk steps from the chunk-start weights, so correlated keys add up to ``chunk_size * eta``."""
    alpha_init: float = 0.95
    """Initial retention ``alpha_t = sigmoid(.)`` (through the gate bias; not stated in the paper); with
    ``alpha_init_min`` that of the slowest head. At 0.95 the MLP memories' weights decay to nothing within ~60
    tokens and their LN'd output collapses; the presets start near 1, as GDN's ``exp(-A softplus(dt))`` does."""
    alpha_init_min: float | None = None
    """Initial retention of the fastest head: the heads' initial ``alpha`` spread log-uniformly in ``1 - alpha``
    between this and ``alpha_init`` (GDN's ``dt`` spread; not in the paper). ``None``: every head at
    ``alpha_init``."""
    memory_ln_gain: float | None = None
    """Learned per-head gain ``g`` of the MLP memory's LayerNorm, ``M(x) = x + g LN(h)``, initialised so that
    ``||g LN(h)|| = memory_ln_gain`` (``g = memory_ln_gain / sqrt(head_dim)``). The paper does not say whether its
    LN has an affine part; without one (``None``, the paper as written) the read lies at distance
    ``sqrt(head_dim)`` from ``x`` whatever the values, and no write can reach a value of norm ~1. Implemented
    outside the memory op by an exact change of variables (values ``k + (v - k) / g``, step ``eta g^e`` with
    ``e`` the bias' degree, ``delta / g``, read ``q + g (o - q)``), so the kernels are unchanged; the smoothing of
    Remark 5 then acts on ``r / g``."""
    delta_init: float = 1.0
    """Initial Huber threshold ``delta_t = softplus(.)`` (Yaad; not stated in the paper)."""
    delta_input_dependent: bool = True
    """Yaad's ``delta_t`` from the input (paper) or one learned value per channel (Table 4 ablation)."""
    head_dim: int | None = None
    """Key width per head of the linear-recurrent baselines (``None``: ``d_model * expand_k / n_head``); Gated
    DeltaNet uses ``n_head=6`` heads of 256 (its paper and flame's configs)."""
    ssm_head_dim: int = 64
    """Value width per head of Mamba2 (64); its head count is ``expand_v * d_model / ssm_head_dim``."""
    expand_k: float = 1.0
    """Key width of the linear-recurrent baselines as a multiple of ``d_model`` (GLA: 0.5)."""
    expand_v: float = 1.0
    """Value width as a multiple of ``d_model`` (RetNet and Gated DeltaNet: 2; for Mamba and Mamba2 the inner
    expansion, 2)."""
    state_size: int = 16
    """State size ``N`` per channel of Mamba (16) and per head of Mamba2 (128)."""
    swa_window: int = 2048
    """Window of the sliding-window attention layers inside the hybrid patterns (``samba``,
    ``gated_deltanet_h2``, ``*_h``). Miras does not report it; 2048 is the window of Samba and of the Gated
    DeltaNet hybrids."""
    ttt_model: str = "linear"
    """Inner model of ``ttt``: ``linear`` (TTT-Linear, the Table 2 row) or ``mlp`` (TTT-MLP)."""
    ttt_base_lr: float = 1.0
    """TTT's inner learning rate ``eta_t = ttt_base_lr * sigmoid(.) / head_dim`` (TTT paper: 1.0 for Linear,
    0.1 for MLP)."""
    ttr_norm: str = "unit"
    """Output normalisation of ``linear_attention`` (Qin et al. 2022; the test-time-regression paper does not give
    its form): ``none``, ``unit``, ``rms`` or ``layer``."""
    ttr_ridge: float = 1e-3
    """Ridge of ``rls`` and ``higher_order_attention`` (the paper gives none; without one the solves are singular
    while a prefix spans fewer directions than the key width)."""
    ttr_forget: float = 1.0
    """Forgetting factor of ``rls`` in (0, 1] (1: the unweighted least squares of eq. "ols")."""

    def __post_init__(self) -> None:
        _check_choice("mixer", "name", self.name, KNOWN_MIXERS)
        _check_choice("mixer", "ttr_norm", self.ttr_norm, TTR_NORMS)
        _check_positive("mixer", "ttr_ridge", self.ttr_ridge)
        if not 0 < self.ttr_forget <= 1:
            raise ConfigError(f"mixer.ttr_forget={self.ttr_forget!r} is invalid; allowed values: a number in (0, 1]")
        _check_choice("mixer", "backend", self.backend, BACKENDS)
        _check_positive("mixer", "n_head", self.n_head)
        if self.window is not None:
            _check_positive("mixer", "window", self.window)
        _check_positive("mixer", "rope_theta", self.rope_theta)
        for name in ("chunk_size", "gate_rank", "eta_max", "delta_init"):
            _check_positive("mixer", name, getattr(self, name))
        _check_positive("mixer", "conv_size", self.conv_size, zero_ok=True)
        for name in ("expand_k", "expand_v", "state_size", "ssm_head_dim", "swa_window", "ttt_base_lr"):
            _check_positive("mixer", name, getattr(self, name))
        if self.head_dim is not None:
            _check_positive("mixer", "head_dim", self.head_dim)
        _check_choice("mixer", "ttt_model", self.ttt_model, TTT_MODELS)
        if not 0 < self.eta_init < self.eta_max:
            raise ConfigError(
                f"mixer.eta_init={self.eta_init!r} is invalid; allowed values: a number in (0, eta_max={self.eta_max})"
            )
        if not 0 < self.alpha_init < 1:
            raise ConfigError(f"mixer.alpha_init={self.alpha_init!r} is invalid; allowed values: a number in (0, 1)")
        if self.alpha_init_min is not None and not 0 < self.alpha_init_min <= self.alpha_init:
            raise ConfigError(
                f"mixer.alpha_init_min={self.alpha_init_min!r} is invalid; allowed values: a number in "
                f"(0, alpha_init={self.alpha_init}]"
            )
        if self.memory_ln_gain is not None:
            _check_positive("mixer", "memory_ln_gain", self.memory_ln_gain)


@dataclass(frozen=True)
class ModelConfig:
    """Llama-style pre-norm decoder: embedding -> n_layer x (mixer, SwiGLU MLP) -> RMSNorm -> LM head."""

    vocab_size: int = 32_000
    """Vocabulary size; 32000 is the Llama-2 tokenizer of the Titans/Miras recipe (Miras does not state it)."""
    d_model: int = 1024
    """Residual stream width."""
    n_layer: int = 24
    """Number of blocks."""
    mixer: MixerConfig = field(default_factory=MixerConfig)
    """The token mixer used in every block."""
    mlp: bool = True
    """Every block has a SwiGLU MLP after its mixer; Mamba and Mamba2 as published stack mixer-only blocks."""
    mlp_ratio: float = 4.0
    """SwiGLU hidden size is ``mlp_ratio * 2/3 * d_model`` rounded up to ``mlp_multiple_of`` (fla's rule)."""
    mlp_multiple_of: int = 256
    """Rounding multiple of the SwiGLU hidden size."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    tie_embeddings: bool = True
    """Share the input embedding with the LM head (not stated by the paper; see ``miras.presets``)."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of linear and embedding weights."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layer", "mlp_ratio", "mlp_multiple_of", "norm_eps", "init_std"):
            _check_positive("model", name, getattr(self, name))
        if self.mixer.head_dim is None and self.d_model % self.mixer.n_head:
            raise ConfigError(
                f"model.d_model={self.d_model} is invalid; allowed values: a multiple of "
                f"mixer.n_head={self.mixer.n_head}"
            )

    @property
    def mlp_hidden(self) -> int:
        hidden = int(self.d_model * self.mlp_ratio * 2 / 3)
        return self.mlp_multiple_of * math.ceil(hidden / self.mlp_multiple_of)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay (the Titans recipe that Miras follows; Miras states only LRs)."""

    lr: float = 3e-4
    """Peak learning rate (Miras Table 5 gives it per size)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices; norms, biases and embeddings are not decayed."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_fraction: float = 0.01
    """Fraction of the optimizer steps spent in linear warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule as a fraction of ``lr``."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""

    def __post_init__(self) -> None:
        _check_positive("optim", "lr", self.lr)
        _check_positive("optim", "weight_decay", self.weight_decay, zero_ok=True)
        _check_positive("optim", "grad_clip", self.grad_clip, zero_ok=True)
        for name in ("beta1", "beta2", "warmup_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"optim.{name}={value!r} is invalid; allowed values: a number in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"optim.min_lr_ratio={self.min_lr_ratio!r} is invalid; allowed values: a number in [0, 1]"
            )


DATASETS = ("offline", "local", "fineweb", "fineweb-edu", "slimpajama", "c4", "memmap", "mqar")
PACKINGS = ("fixed", "varlen")


@dataclass(frozen=True)
class MQARConfig:
    """Zoology's multi-query associative recall (``data.synthetic.mqar``): one segment of ``train_examples``
    training and ``test_examples`` test examples of ``data.seq_len`` tokens and ``pairs`` key-value pairs over
    the model's vocabulary; the test set is the validation set."""

    pairs: int = 8
    """Key-value pairs per example (``4 pairs <= data.seq_len``)."""
    train_examples: int = 100_000
    """Training examples; one epoch is ``train_examples / data.batch_size`` steps (zoology: 100k at T = 64)."""
    test_examples: int = 3_000
    """Test examples, from segment seeds disjoint from the training ones (zoology: 3k)."""
    power_a: float = 0.01
    """Power law of the gaps between the context and the queries (zoology: 0.01, short gaps likelier)."""
    random_non_queries: bool = False
    """Filler tokens uniform over the vocabulary rather than 0 (zoology's MQAR figure: False)."""
    seed: int = 123
    """Seed of the segment seeds (zoology: 123)."""

    def __post_init__(self) -> None:
        for name in ("pairs", "train_examples", "test_examples", "power_a"):
            _check_positive("data.mqar", name, getattr(self, name))


@dataclass(frozen=True)
class DataConfig:
    """Text data: documents from a corpus (see ``data/sources.py``), tokenised and packed to ``seq_len``."""

    dataset: str = "offline"
    """``offline``: the corpus ``make install`` prepares; ``local``: parquet/jsonl shards under ``path``;
    ``fineweb``, ``fineweb-edu``, ``slimpajama``, ``c4``: that Hub dataset, or its shards under ``path``;
    ``memmap``: token shards written by ``python -m data.prepare`` under ``path``; ``mqar``: the synthetic recall
    task of ``mqar``."""
    name: str | None = None
    """Hub config of the dataset (FineWeb: ``sample-10BT``, ``sample-100BT``, ``sample-350BT``; C4: ``en``);
    ``None``: the dataset's default."""
    path: str | None = None
    """Folder of shards (``local``, ``memmap``, or a Hub dataset downloaded beforehand); ``None``: the offline
    corpus folder (``offline``) or the Hub."""
    tokenizer: str | None = None
    """A ``tokenizer.json`` path, a SentencePiece ``.model`` path or a Hub repo id; ``None``: the BPE tokenizer of
    the offline corpus (``memmap`` uses the tokenizer its manifest records)."""
    text_field: str = "text"
    """Column holding the document text."""
    streaming: bool = True
    """Hub datasets: stream them (True) or download them to the ``datasets`` cache first (False)."""
    val_fraction: float = 0.0005
    """Share of documents held out for validation (chosen by a hash of the text) when the source has no
    validation split (FineWeb, FineWeb-Edu, a folder without ``validation`` shards)."""
    packing: str = "fixed"
    """``fixed``: ``[B, seq_len]`` windows of the EOS-joined token stream; ``varlen``: the same windows as one row
    with ``cu_seqlens`` at document ends, so that no token sees another document."""
    seq_len: int = 4096
    """Tokens per training sequence (the papers' context length is 4096)."""
    batch_size: int = 8
    """Sequences per device per micro-batch."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""
    shuffle_buffer: int = 1000
    """Documents held in the shuffle buffer (0 disables shuffling; ``memmap`` shuffles windows when > 0)."""
    val_batches: int = 16
    """Validation batches per evaluation (per rank)."""
    mqar: MQARConfig | None = None
    """The task of ``dataset="mqar"`` (required there, ``None`` elsewhere)."""

    def __post_init__(self) -> None:
        _check_choice("data", "dataset", self.dataset, DATASETS)
        if (self.dataset == "mqar") != (self.mqar is not None):
            raise ConfigError(
                f"data.mqar={self.mqar!r} is invalid with data.dataset={self.dataset!r}; allowed values: an "
                "MQARConfig exactly when data.dataset='mqar'"
            )
        if self.mqar is not None and 4 * self.mqar.pairs > self.seq_len:
            raise ConfigError(
                f"data.mqar.pairs={self.mqar.pairs} is invalid at data.seq_len={self.seq_len}; allowed values: "
                f"at most seq_len / 4 = {self.seq_len // 4}"
            )
        _check_choice("data", "packing", self.packing, PACKINGS)
        if self.dataset in ("local", "memmap") and not self.path:
            raise ConfigError(
                f"data.path is required when data.dataset={self.dataset!r}; allowed values: a folder of shards"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction={self.val_fraction!r} is invalid; allowed values: a number in (0, 1)")
        for name in ("seq_len", "batch_size", "val_batches"):
            _check_positive("data", name, getattr(self, name))
        for name in ("num_workers", "shuffle_buffer"):
            _check_positive("data", name, getattr(self, name), zero_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    """How long and on what the run trains."""

    tokens: int = 15_000_000_000
    """Training tokens; optimizer steps = tokens / batch_tokens (rounded up)."""
    batch_tokens: int = 524_288
    """Tokens per optimizer step over all devices (0.5M, the Titans recipe); gradient accumulation fills it."""
    precision: str = "bf16-mixed"
    """Lightning precision."""
    val_every: int = 1000
    """Validate every this many optimizer steps (and at the end)."""
    ckpt_every: int = 1000
    """Save a checkpoint every this many optimizer steps (``checkpoints/last.ckpt``, the newest, for resume)."""
    keep_checkpoints: int = 2
    """Checkpoints kept: ``last.ckpt`` and the ``keep_checkpoints - 1`` it replaced (``last-1.ckpt``, ...), so
    that a checkpoint torn by a dying node or a full disk costs one interval of training, not the run."""
    log_every: int = 10
    """Log training metrics every this many optimizer steps."""
    seed: int = 0
    """Seed of initialisation and data order."""
    early_stop: float | None = None
    """Stop at the first validation whose ``val/accuracy`` exceeds this (zoology's MQAR rule: 0.99); ``None``:
    train every step."""

    def __post_init__(self) -> None:
        _check_choice("train", "precision", self.precision, PRECISIONS)
        if self.early_stop is not None and not 0 < self.early_stop <= 1:
            raise ConfigError(f"train.early_stop={self.early_stop!r} is invalid; allowed values: None or (0, 1]")
        for name in ("tokens", "batch_tokens", "val_every", "ckpt_every", "log_every", "keep_checkpoints"):
            _check_positive("train", name, getattr(self, name))
        _check_positive("train", "seed", self.seed, zero_ok=True)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def steps(self) -> int:
        """Optimizer steps to train ``train.tokens``."""
        return max(1, math.ceil(self.train.tokens / self.train.batch_tokens))

    def accumulation(self, world_size: int = 1) -> int:
        """Micro-batches per optimizer step so that one step sees ``train.batch_tokens`` tokens."""
        micro = self.data.batch_size * self.data.seq_len * world_size
        if self.train.batch_tokens % micro:
            raise ConfigError(
                f"train.batch_tokens={self.train.batch_tokens} is invalid; allowed values: a multiple of "
                f"data.batch_size * data.seq_len * world_size = {micro}"
            )
        return self.train.batch_tokens // micro


def to_dict(config: Any) -> dict:
    """A config as plain JSON-able data."""
    return dataclasses.asdict(config)


# Fields added after results were recorded, with the value that reproduces the behaviour from before they
# existed. A field at that value is left out of the hash, so adding it does not make old summaries stale;
# changing its default later means removing it from this table.
ADDED_FIELDS: dict[str, Any] = {
    "data.name": None,
    "data.text_field": "text",
    "data.streaming": True,
    "data.packing": "fixed",
    "data.val_fraction": 0.0005,
    "data.mqar": None,
    "train.early_stop": None,
    "model.mixer.ttr_norm": "unit",
    "model.mixer.ttr_ridge": 1e-3,
    "model.mixer.ttr_forget": 1.0,
    "model.mixer.alpha_init_min": None,
    "model.mixer.memory_ln_gain": None,
    "model.mixer.memory_rope": True,
    "model.mixer.memory.kl_read": "linear",
    "train.keep_checkpoints": 2,
}


def _drop_added(data: dict) -> dict:
    data = copy.deepcopy(data)
    for path, neutral in ADDED_FIELDS.items():
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == neutral:
            del node[leaf]
    return data


def config_hash(config: Any) -> str:
    """Short stable hash of a config's content (12 hex digits of sha256 over sorted JSON).

    Fields of :data:`ADDED_FIELDS` at their neutral value are left out, so hashes survive schema growth."""
    blob = json.dumps(_drop_added(to_dict(config)), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_dict` output; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)} for {cls.__name__}; allowed values: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = _dataclass_in(hints[key])
        kwargs[key] = from_dict(hint, value) if hint is not None and isinstance(value, dict) else value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    found = [arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]
    return found[0] if found else None


def override(config: Any, assignments: Iterable[str]) -> Any:
    """Apply ``section.field=value`` overrides, each value parsed by its field's declared type, then validate the
    result once, so the order of the assignments never changes the outcome (a repeated key: the last one wins).

    >>> override(RunConfig(), ["model.d_model=64", "optim.lr=1e-3"]).model.d_model
    64
    """
    parsed = []
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"override {assignment!r} is invalid; allowed values: 'section.field=value'")
        path = key.strip().split(".")
        parsed.append((path, parse_value(".".join(path), _field_type(type(config), path), raw.strip())))
    if not parsed:
        return config
    data = to_dict(config)
    # a whole sub-config first, then its fields, whatever the order given
    for path, value in sorted(parsed, key=lambda item: len(item[0])):
        node = data
        for depth, name in enumerate(path[:-1]):
            if not isinstance(node.get(name), dict):
                owner = ".".join(path[: depth + 1])
                raise ConfigError(f"{owner} is {node.get(name)!r}, so {'.'.join(path)} cannot be set")
            node = node[name]
        node[path[-1]] = value
    try:
        return from_dict(type(config), data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # validation of a dataclass outside miras.config (MemorySpec)
        raise ConfigError(str(err)) from err


def _field_type(cls: type, path: list[str]) -> Any:
    """The declared type of the field at ``path`` below dataclass ``cls``; unknown names are one-line errors."""
    hint: Any = cls
    for depth, name in enumerate(path):
        owner = _dataclass_in(hint)
        if owner is None:
            raise ConfigError(f"{'.'.join(path[:depth])} is not a section, so {'.'.join(path)} cannot be set")
        hints = typing.get_type_hints(owner)
        if name not in hints:
            names = ", ".join(f.name for f in fields(owner))
            raise ConfigError(f"{owner.__name__} has no field {name!r}; allowed values: {names}")
        hint = hints[name]
    return hint


def parse_value(key: str, hint: Any, raw: str) -> Any:
    """``raw`` (command-line text) as a value of type ``hint``: int, float (finite), bool, str, a tuple, a
    ``Literal``, a dataclass (a dict literal) or any of them ``| None``. A one-line :class:`ConfigError` names
    ``key``, the value and the allowed values when it does not parse."""
    value, allowed = _parse(hint, raw)
    if value is _INVALID:
        raise ConfigError(f"{key}={raw!r} is invalid; allowed values: {allowed}")
    return value


_INVALID = object()


def _literal(raw: str) -> Any:
    import ast

    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _INVALID


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse(hint: Any, raw: Any) -> tuple[Any, str]:
    """``(value or _INVALID, what is allowed)``; ``raw`` is text, or an element of a parsed tuple literal."""
    args = typing.get_args(hint)
    literal = _literal(raw) if isinstance(raw, str) else raw
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if literal is None:
            return None, ""
        value, allowed = _parse(rest[0] if len(rest) == 1 else Any, raw)
        return value, f"None or {allowed}"
    if typing.get_origin(hint) is typing.Literal:
        matches = [choice for choice in args if _parse(type(choice), raw)[0] == choice]
        return (matches[0] if matches else _INVALID), ", ".join(map(repr, args))
    if dataclasses.is_dataclass(hint):
        return (literal if isinstance(literal, dict) else _INVALID), f"a dict of {hint.__name__} fields"
    if hint is bool:
        return _BOOLS.get(str(raw).lower(), _INVALID), "True or False"
    if hint is int:
        if isinstance(literal, float) and literal.is_integer():
            literal = int(literal)
        ok = isinstance(literal, int) and not isinstance(literal, bool)
        return (literal if ok else _INVALID), "an integer"
    if hint is float:
        if literal is _INVALID and raw in ("nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"):
            literal = float(raw)  # named in the error below, with the allowed values
        # an int stays an int (a float field takes one), so that configs and their hashes keep their values
        ok = isinstance(literal, (int, float)) and not isinstance(literal, bool) and math.isfinite(literal)
        return (literal if ok else _INVALID), "a finite number"
    if hint is str:
        return (literal if isinstance(literal, str) else str(raw)), "a string"
    if typing.get_origin(hint) is tuple:
        if isinstance(literal, (tuple, list)):
            kinds = args[:1] * len(literal) if len(args) == 2 and args[1] is Ellipsis else args
            if len(kinds) == len(literal):
                items = [_parse(kind, item)[0] for kind, item in zip(kinds, literal, strict=True)]
                if _INVALID not in items:
                    return tuple(items), ""
        return _INVALID, f"a tuple of {', '.join(getattr(t, '__name__', str(t)) for t in args)}"
    return (raw if literal is _INVALID else literal), ""
