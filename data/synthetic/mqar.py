"""Multi-query associative recall (MQAR), as defined by zoology (Arora, Eyuboglu et al. 2023).

An example is a context of key-value pairs ``k1 v1 k2 v2 ...`` (repeated ``num_passes`` times) followed by
a query region in which every key appears once more, at an even offset drawn from a power law (short gaps
likelier). ``inputs[t]`` is the token at position t and ``labels[t]`` the next-token target there: the
key's value where ``inputs[t]`` is a queried key, -100 everywhere else. The value itself never follows the
query in the inputs. Keys are drawn from ``[1, vocab/2)``, values from ``[vocab/2, vocab)``, both without
replacement within an example; filler positions hold 0, or uniform tokens from ``[0, vocab)`` (which may
coincide with keys or values, as in zoology) when ``random_non_queries``.

Data come in segments (one sequence length and number of pairs each), each generated from its own seed.
As in zoology, train segment seeds are drawn from [0, 2^31) and test ones from [2^31, 2^32) with a
``RandomState(seed)``, so the two splits never share a seed. A batch never mixes segments either
(zoology's layout), so nothing is padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from data.position import ResumableDataModule

IGNORE_INDEX = -100
_MAX_SEED = 2**32


def _check_args(
    vocab_size: int, num_examples: int, input_seq_len: int, power_a: float, num_kv_pairs: int, num_passes: int
) -> None:
    if input_seq_len < 2 or input_seq_len % 2:
        raise ValueError(f"input_seq_len must be an even integer >= 2, got {input_seq_len}")
    if vocab_size <= input_seq_len:
        raise ValueError(f"vocab_size must be > input_seq_len = {input_seq_len}, got {vocab_size}")
    if num_passes < 1:
        raise ValueError(f"num_passes must be >= 1, got {num_passes}")
    max_pairs = input_seq_len // (2 * num_passes + 2)
    if not 1 <= num_kv_pairs <= max_pairs:
        raise ValueError(
            f"num_kv_pairs must be in [1, {max_pairs}] so that num_kv_pairs*2*num_passes + num_kv_pairs*2 <= "
            f"input_seq_len = {input_seq_len} (num_passes = {num_passes}), got {num_kv_pairs}"
        )
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if not power_a > 0:
        raise ValueError(f"power_a must be > 0 (1 is uniform gaps), got {power_a}")


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    """Probabilities ``p_i ∝ a·i^(a−1)``, i = 1..space, of a query sitting at slot i−1 of the query region."""
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    return p / p.sum()


def _distinct(rng: np.random.Generator, n: int, population: int, k: int) -> np.ndarray:
    """[n, k] integers from [0, population), distinct within a row, in uniformly random order."""
    out = np.empty((n, k), dtype=np.int64)
    # Floyd's subset sampling, vectorised over rows; it leaves the order biased, hence the shuffle after
    for i, j in enumerate(range(population - k, population)):
        t = rng.integers(0, j + 1, size=n)
        out[:, i] = np.where((out[:, :i] == t[:, None]).any(axis=1), j, t)
    return np.take_along_axis(out, rng.random((n, k)).argsort(axis=1), axis=1)


def _draw_fast(seed: int, n: int, k: int, vocab_size: int, p: np.ndarray, random_non_queries: bool, shape):
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    keys = 1 + _distinct(rng, n, half - 1, k)
    values = half + _distinct(rng, n, vocab_size - half, k)
    # exponential race: the order of arrival is successive sampling without replacement with weights p,
    # the law of numpy's choice(replace=False, p=p) that zoology uses
    gaps = np.argsort(rng.exponential(size=(n, len(p))) / p, axis=1, kind="stable")[:, :k]
    filler = torch.from_numpy(rng.integers(0, vocab_size, size=shape)) if random_non_queries else None
    return keys, values, gaps, filler


def _draw_zoology(seed: int, n: int, k: int, vocab_size: int, p: np.ndarray, random_non_queries: bool, shape):
    # zoology's call sequence: all key rows, then all value rows, then all gap rows, from the legacy
    # RandomState it seeds with np.random.seed(seed), then one torch.randint over the whole input shape
    rs = np.random.RandomState(seed)
    half = vocab_size // 2
    key_choices, value_choices, slots = np.arange(1, half), np.arange(half, vocab_size), np.arange(len(p))
    keys = np.stack([rs.choice(key_choices, size=k, replace=False) for _ in range(n)])
    values = np.stack([rs.choice(value_choices, size=k, replace=False) for _ in range(n)])
    gaps = np.stack([rs.choice(slots, size=k, replace=False, p=p) for _ in range(n)])
    filler = None
    if random_non_queries:
        filler = torch.randint(vocab_size, size=shape, generator=torch.Generator().manual_seed(seed))
    return keys, values, gaps, filler


def multiquery_ar(
    vocab_size: int,
    num_examples: int,
    input_seq_len: int,
    seed: int,
    power_a: float = 0.01,
    num_kv_pairs: int = 8,
    num_passes: int = 1,
    random_non_queries: bool = True,
    zoology_rng: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR examples: ``(inputs, labels)``, both [num_examples, input_seq_len] int64 (see module doc).

    For example, with ``vocab_size=20, num_kv_pairs=2, input_seq_len=16, random_non_queries=False``::

        inputs: 2    13   4    17   0    0    4    0    0    0    0    0    2    0    0    0
        labels: -100 -100 -100 -100 -100 -100 17   -100 -100 -100 -100 -100 13   -100 -100 -100

    The query region after the ``2·num_kv_pairs·num_passes`` context tokens has ``space`` even-offset slots
    (``space = (input_seq_len − context) / 2``); ``num_kv_pairs`` of them are drawn without replacement with
    ``p_i ∝ a·i^(a−1)`` (``a = power_a``; 1 is uniform) and the j-th drawn slot holds the j-th key.

    Args:
        vocab_size, num_examples, input_seq_len, seed, power_a, num_kv_pairs, num_passes, random_non_queries:
            zoology's arguments, with its meaning and defaults.
        zoology_rng: draw with zoology's exact numpy call sequence (a legacy ``RandomState(seed)``, one
            ``choice`` per example for keys, then values, then gaps). Keys, values, gaps, hence labels and
            the inputs without filler, are then bit-identical to zoology's ``multiquery_ar`` for the same
            seed. Zoology draws the filler from the process-wide torch RNG (whatever state model creation
            left it in), which cannot be reproduced from the seed; here it comes from a ``torch.Generator``
            seeded with ``seed``, equal to zoology's when ``torch.manual_seed(seed)`` ran just before it.
            That path costs about 0.2 ms per example. The default draws the same distribution from a
            ``np.random.default_rng(seed)``, vectorised (about 0.3 s per 100k examples of length 64).

    For ``num_passes > 1`` zoology's code fails (it writes ``num_kv_pairs`` keys into the
    ``num_kv_pairs·num_passes`` key slots); this implements its documented intent, the ``k1 v1 ... kP vP``
    block repeated ``num_passes`` times.

    Raises:
        ValueError: for an odd ``input_seq_len``, ``vocab_size <= input_seq_len``, or
            ``num_kv_pairs*2*num_passes + num_kv_pairs*2 > input_seq_len`` (zoology's asserts), or other
            out-of-range arguments.
    """
    _check_args(vocab_size, num_examples, input_seq_len, power_a, num_kv_pairs, num_passes)
    n, k, T = num_examples, num_kv_pairs, input_seq_len
    context = 2 * k * num_passes
    p = gap_probabilities((T - context) // 2, power_a)
    draw = _draw_zoology if zoology_rng else _draw_fast
    keys, values, gaps, filler = draw(int(seed), n, k, vocab_size, p, random_non_queries, (n, T))

    inputs = np.zeros((n, T), dtype=np.int64)
    inputs[:, :context] = np.tile(np.stack([keys, values], axis=2).reshape(n, 2 * k), (1, num_passes))
    rows, positions = np.arange(n)[:, None], context + 2 * gaps
    inputs[rows, positions] = keys
    labels = np.full((n, T), IGNORE_INDEX, dtype=np.int64)
    labels[rows, positions] = values
    inputs = torch.from_numpy(inputs)
    if filler is not None:
        inputs = torch.where(inputs == 0, filler, inputs)
    return inputs, torch.from_numpy(labels)


def segment_seeds(seed: int, n_train: int, n_test: int) -> tuple[list[int], list[int]]:
    """Zoology's per-segment seeds: ``n_train`` from [0, 2^31), then ``n_test`` from [2^31, 2^32).

    Same draws as zoology's ``prepare_data`` (``np.random.seed(seed)`` then two ``randint`` calls).
    """
    rs = np.random.RandomState(seed)
    train = rs.randint(0, _MAX_SEED // 2, size=n_train, dtype=np.int64)
    test = rs.randint(_MAX_SEED // 2, _MAX_SEED, size=n_test, dtype=np.int64)
    return [int(s) for s in train], [int(s) for s in test]


@dataclass(frozen=True)
class MQARSegment:
    """One block of examples sharing a length and a number of pairs (zoology's ``MQARConfig``)."""

    input_seq_len: int
    num_kv_pairs: int
    num_examples: int
    power_a: float = 0.01
    num_passes: int = 1
    random_non_queries: bool = True

    def generate(self, vocab_size: int, seed: int, zoology_rng: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)``, [num_examples, input_seq_len] each (see :func:`multiquery_ar`)."""
        return multiquery_ar(
            vocab_size,
            self.num_examples,
            self.input_seq_len,
            seed,
            power_a=self.power_a,
            num_kv_pairs=self.num_kv_pairs,
            num_passes=self.num_passes,
            random_non_queries=self.random_non_queries,
            zoology_rng=zoology_rng,
        )


TRAIN_SEGMENTS = (
    MQARSegment(64, 4, 100_000),
    MQARSegment(128, 8, 20_000),
    MQARSegment(256, 16, 20_000),
    MQARSegment(256, 32, 20_000),
    MQARSegment(256, 64, 20_000),
)
TEST_SEGMENTS = tuple(
    MQARSegment(T, kv, 1_000) for T, kv in ((64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256))
)


def mqar_accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Recall accuracy over the labelled positions (``labels != -100``).

    Args:
        logits_or_preds: [B, T, V] logits (argmax taken) or [B, T] predicted tokens.
        labels: [B, T], -100 where unscored.
        reduction: ``"mean"``: zoology's reported metric, each example's accuracy over its queries, averaged
            over examples (within one segment this equals the pooled ``(pred == target)[target != -100].mean()``);
            ``"none"``: the [B] per-example accuracies (for per-``num_kv_pairs`` slices);
            ``"pooled"``: ``(pred == target)[target != -100].mean()`` over the whole batch.

    Returns:
        A float scalar, or [B] for ``"none"``. Examples without labels count as NaN.
    """
    preds = logits_or_preds.argmax(-1) if logits_or_preds.dim() == labels.dim() + 1 else logits_or_preds
    scored = labels != IGNORE_INDEX
    hits = (preds == labels) & scored
    if reduction == "pooled":
        return hits.sum().double() / scored.sum()
    per_example = hits.sum(-1).double() / scored.sum(-1)
    if reduction == "none":
        return per_example
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"reduction must be 'mean', 'none' or 'pooled', got {reduction!r}")


@dataclass
class _Split:
    inputs: list[torch.Tensor]  # per segment, [n_s, T_s] int32 (halves the memory of int64)
    labels: list[torch.Tensor]
    num_kv_pairs: list[int]

    def batch(self, segment: int, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        inputs = self.inputs[segment][index].long()
        return {
            "input_ids": inputs,
            "labels": self.labels[segment][index].long(),
            "num_kv_pairs": torch.full((len(inputs),), self.num_kv_pairs[segment], dtype=torch.long),
        }


class _TrainStream(IterableDataset):
    """Endless training batches: epoch e is one pass over every segment in an order seeded by ``seed + e``.

    Global batch g is batch ``g % per_epoch`` of epoch ``g // per_epoch``; a rank yields g = m·world + rank
    for its m-th batch, m = skip, skip + 1, ...; dataloader workers take every num_workers-th m, which the
    DataLoader interleaves back into order.
    """

    def __init__(self, split: _Split, batch_size: int, seed: int, shuffle: bool, skip: int, rank: int, world: int):
        self.split, self.batch_size, self.seed, self.shuffle = split, batch_size, seed, shuffle
        self.skip, self.rank, self.world = skip, rank, world
        self.sizes = [len(x) for x in split.inputs]
        self.per_epoch = sum(math.ceil(n / batch_size) for n in self.sizes)

    def epoch_batches(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        """The epoch's batches as (segment, example indices), in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        batches = []
        for segment, n in enumerate(self.sizes):
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            batches += [(segment, idx) for idx in order.split(self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        return batches

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        m, epoch, batches = self.skip + worker, None, None
        while True:
            g = m * self.world + self.rank
            if g // self.per_epoch != epoch:
                epoch = g // self.per_epoch
                batches = self.epoch_batches(epoch)
            segment, idx = batches[g % self.per_epoch]
            yield self.split.batch(segment, idx)
            m += workers


class _EvalBatches(Dataset):
    """Every test segment in order, in consecutive batches (zoology's evaluation order)."""

    def __init__(self, split: _Split, batch_size: int):
        self.split = split
        self.index = [
            (segment, slice(start, start + batch_size))
            for segment, x in enumerate(split.inputs)
            for start in range(0, len(x), batch_size)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.split.batch(*self.index[i])


class MQARDataModule(ResumableDataModule):
    """Zoology's MQAR train and test sets as Lightning loaders of ``{"input_ids", "labels", "num_kv_pairs"}``.

    ``input_ids`` and ``labels`` are [B, T] int64 and ``num_kv_pairs`` is [B] int64. Every batch comes from
    one segment (zoology's layout; T varies between batches, nothing is padded); a segment's last batch may
    be short. Training is an endless stream (the repo trains by steps): epoch e visits every training example
    once, shuffled within segments and then in batch order by a ``torch.Generator`` seeded with ``seed + e``;
    ``shuffle=False`` gives zoology's fixed order (segment after segment). One zoology epoch is
    :attr:`batches_per_epoch` steps. The test loader visits every test segment in order.

    Args:
        vocab_size: tokens; keys use [1, vocab/2), values [vocab/2, vocab).
        train_segments, test_segments: the segments; ``None`` gives zoology's canonical MQAR config
            (:data:`TRAIN_SEGMENTS`, :data:`TEST_SEGMENTS`).
        batch_size: ``(train, test)`` examples per batch, or one int for both.
        seed: zoology's data seed; segment seeds come from :func:`segment_seeds`.
        num_workers: dataloader workers.
        shuffle: shuffle the training order each epoch.
        zoology_rng: generate with zoology's exact numpy call sequence (see :func:`multiquery_ar`; slow:
            about 40 s for the canonical config instead of about 2 s).
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        train_segments: list[MQARSegment] | None = None,
        test_segments: list[MQARSegment] | None = None,
        batch_size: int | tuple[int, int] = (256, 32),
        seed: int = 123,
        num_workers: int = 0,
        shuffle: bool = True,
        zoology_rng: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.train_segments = list(TRAIN_SEGMENTS if train_segments is None else train_segments)
        self.test_segments = list(TEST_SEGMENTS if test_segments is None else test_segments)
        self.train_batch_size, self.test_batch_size = (
            (batch_size, batch_size) if isinstance(batch_size, int) else tuple(batch_size)
        )
        self.seed, self.num_workers, self.shuffle, self.zoology_rng = seed, num_workers, shuffle, zoology_rng
        self.train: _Split | None = None
        self.test: _Split | None = None

    def _generate(self, segments: list[MQARSegment], seeds: list[int]) -> _Split:
        pairs = [s.generate(self.vocab_size, seed, self.zoology_rng) for s, seed in zip(segments, seeds, strict=True)]
        return _Split([x.int() for x, _ in pairs], [y.int() for _, y in pairs], [s.num_kv_pairs for s in segments])

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            train_seeds, test_seeds = segment_seeds(self.seed, len(self.train_segments), len(self.test_segments))
            self.train = self._generate(self.train_segments, train_seeds)
            self.test = self._generate(self.test_segments, test_seeds)

    @property
    def batches_per_epoch(self) -> int:
        """Training batches in one pass over every training example (all ranks together)."""
        return sum(math.ceil(s.num_examples / self.train_batch_size) for s in self.train_segments)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank()
        stream = _TrainStream(
            self.train, self.train_batch_size, self.seed, self.shuffle, self.skip_batches, rank, world
        )
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        self.setup()
        batches = _EvalBatches(self.test, self.test_batch_size)
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
