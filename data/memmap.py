"""Memory-mapped token shards written by ``python -m data.prepare``, read at GPU speed with O(1) resume.

A prepared folder holds ``manifest.json`` and, per split, ``<split>/tokens-<k>.bin`` (the token stream of
whole documents, each followed by EOS; ``uint16`` when the vocabulary fits, else ``uint32``) with
``<split>/tokens-<k>.idx`` (``int64`` document end offsets). Samples are the same consecutive
``seq_len + 1`` windows the streaming path cuts (a window never crosses a shard), so both paths train on the
same samples when shuffling is off.

Order: epoch ``e`` visits every window of the split once, in a permutation seeded by ``seed + e`` (or in
order without shuffling); the epochs are concatenated into one global sequence, and rank ``r`` of ``W``
takes its elements ``r, r + W, r + 2W, ...``. Every window is seen exactly once per epoch by exactly one rank,
and a resumed run jumps straight to sample ``batches_seen * batch_size`` of its rank. Workers receive whole
batches from the sampler, so the order does not depend on ``num_workers``.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.position import ResumableDataModule
from data.text import PACKINGS, VarlenCollate

MANIFEST = "manifest.json"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a prepared folder; a clear error when it is missing or unfinished."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"data.path={str(folder)!r} has no {MANIFEST}; write token shards with `python -m data.prepare`"
        )
    manifest = json.loads(path.read_text())
    unfinished = [split for split, info in manifest["splits"].items() if not info.get("complete")]
    if unfinished:
        raise RuntimeError(
            f"data.path={str(folder)!r}: split(s) {unfinished} are not fully prepared; "
            "rerun the same `python -m data.prepare` command to finish them"
        )
    return manifest


class TokenWindows(Dataset):
    """``{"input_ids": [seq_len], "labels": [seq_len]}`` windows of the token shards of one split."""

    def __init__(self, folder: str | os.PathLike, split: str, seq_len: int) -> None:
        manifest = read_manifest(folder)
        if split not in manifest["splits"]:
            prepared = list(manifest["splits"])
            raise FileNotFoundError(f"data.path={str(folder)!r} has no {split!r} split; prepared: {prepared}")
        self.paths = [Path(folder) / shard["file"] for shard in manifest["splits"][split]["shards"]]
        self.dtype = np.dtype(manifest["dtype"])
        self.window = seq_len + 1
        sizes = [shard["tokens"] // self.window for shard in manifest["splits"][split]["shards"]]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)])
        if self.bounds[-1] == 0:
            raise RuntimeError(f"{split} split of {folder} has no shard of seq_len + 1 = {self.window} tokens")

    @cached_property
    def _shards(self) -> list[np.memmap]:
        # opened lazily, so that each dataloader worker maps the files itself
        return [np.memmap(p, dtype=self.dtype, mode="r") for p in self.paths]

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def __getitem__(self, index: int) -> dict:
        shard = int(np.searchsorted(self.bounds, index, side="right")) - 1
        start = (index - int(self.bounds[shard])) * self.window
        chunk = torch.from_numpy(self._shards[shard][start : start + self.window].astype(np.int64))
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}


class EpochSampler(Sampler):
    """Rank ``rank``'s share of the endless epoch sequence (see module doc), from its sample ``start`` on.

    Args:
        n: windows per epoch.
        shuffle: a new permutation per epoch (seed ``seed + epoch``), else the corpus order.
        num_samples: stop after this many samples of this rank (``None``: never stop).
    """

    def __init__(
        self,
        n: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
        num_samples: int | None = None,
    ) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size
        self.seed, self.shuffle, self.start, self.num_samples = seed, shuffle, start, num_samples

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self):
        j = self.start
        epoch, order = -1, None
        while self.num_samples is None or j < self.num_samples:
            g = j * self.world_size + self.rank
            if g // self.n != epoch:
                epoch = g // self.n
                order = self._order(epoch)
            yield int(order[g % self.n])
            j += 1

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.num_samples - self.start)


class MemmapDataModule(ResumableDataModule):
    """Training and validation loaders over a folder prepared by ``python -m data.prepare``.

    Args:
        folder: the prepared folder (``manifest.json``, ``train/``, ``validation/``).
        seq_len, batch_size, num_workers, val_batches, seed, packing: as :class:`data.text.TextDataModule`.
        shuffle: visit each epoch's windows in a seeded random order.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        seq_len: int,
        batch_size: int,
        num_workers: int = 0,
        val_batches: int = 16,
        seed: int = 0,
        packing: str = "fixed",
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if packing not in PACKINGS:
            raise ValueError(f"data.packing={packing!r} is invalid; allowed values: {', '.join(PACKINGS)}")
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.seq_len, self.batch_size, self.num_workers = seq_len, batch_size, num_workers
        self.val_batches, self.seed, self.packing, self.shuffle = val_batches, seed, packing, shuffle

    @property
    def tokenizer(self) -> str:
        """The tokenizer the shards were written with (as the manifest records it)."""
        return self.manifest["tokenizer"]["spec"]

    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def _loader(self, dataset: TokenWindows, shuffle: bool, start: int, num_samples: int | None) -> DataLoader:
        rank, world = self._rank()
        sampler = EpochSampler(
            len(dataset),
            rank=rank,
            world_size=world,
            seed=self.seed,
            shuffle=shuffle,
            start=start,
            num_samples=num_samples,
        )
        collate = VarlenCollate(self.manifest["tokenizer"]["eos_id"]) if self.packing == "varlen" else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = TokenWindows(self.folder, "train", self.seq_len)
        return self._loader(dataset, self.shuffle, self.skip_batches * self.batch_size, None)

    def val_dataloader(self) -> DataLoader:
        dataset = TokenWindows(self.folder, "validation", self.seq_len)
        per_rank = min(self.val_batches * self.batch_size, len(dataset) // self._rank()[1])
        return self._loader(dataset, False, 0, per_rank)


def main(argv: list[str] | None = None) -> int:
    """``python -m data.memmap DIR``: tokens/s the training loader of a prepared folder feeds, one process."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m data.memmap", description=main.__doc__)
    parser.add_argument("folder")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--packing", default="fixed", choices=PACKINGS)
    args = parser.parse_args(argv)
    dm = MemmapDataModule(args.folder, args.seq_len, args.batch_size, packing=args.packing)
    loader = iter(dm.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(loader)
    seconds = time.perf_counter() - start
    tokens = args.batches * args.batch_size * args.seq_len
    shape = f"{args.batches} batches of {args.batch_size} x {args.seq_len}, {args.packing}"
    print(f"{tokens / seconds:,.0f} tokens/s ({shape})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
