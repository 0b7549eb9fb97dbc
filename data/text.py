"""Text LightningDataModule: parquet/jsonl shards with a ``text`` column -> tokenised, packed sequences.

The same code reads the offline corpus, local FineWeb-schema shards and (later) Hub datasets, through
``datasets`` in streaming mode. Ranks split the shards with ``split_dataset_by_node``; the dataloader
workers of one rank split that rank's shards between them (``datasets`` does it inside each worker). Keep
``num_shards >= world_size * num_workers`` so that no worker idles.

Packing: documents are tokenised, joined with EOS and cut into consecutive ``seq_len + 1`` windows (no
overlap, no padding); a sample is ``input_ids = window[:-1]``, ``labels = window[1:]``. Training loops over
the data forever (a new shuffle per epoch); validation is one pass over the held-out documents.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def shard_files(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...]}`` from ``train-*`` / ``validation-*`` shards in ``folder``."""
    files = {}
    for split in ("train", "validation"):
        found = sorted(f for f in glob.glob(os.path.join(folder, f"{split}-*")) if Path(f).suffix in FORMATS)
        if not found:
            raise FileNotFoundError(
                f"no {split}-*.parquet or {split}-*.jsonl shards in {folder}; "
                "run `make install` to prepare the offline corpus, or set data.path to a folder of shards"
            )
        files[split] = found
    return files


def _load_stream(files: list[str]):
    import datasets

    kinds = {FORMATS[Path(f).suffix] for f in files}
    if len(kinds) != 1:
        raise ValueError(f"shards mix formats {sorted(kinds)}; use one format per split")
    return datasets.load_dataset(kinds.pop(), data_files=files, split="train", streaming=True)


class PackedTextDataset(IterableDataset):
    """Packed ``{"input_ids": [seq_len], "labels": [seq_len]}`` samples from text shards (see module doc)."""

    def __init__(
        self,
        files: list[str],
        tokenizer_path: str,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        max_samples: int | None = None,
    ) -> None:
        self.files = files
        self.tokenizer_path = tokenizer_path
        self.seq_len = seq_len
        self.rank, self.world_size = rank, world_size
        self.loop = loop
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.max_samples = max_samples

    def _rank_stream(self):
        from datasets.distributed import split_dataset_by_node

        ds = _load_stream(self.files)
        if self.shuffle_buffer:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        return split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)

    def __iter__(self):
        from tokenizers import Tokenizer

        ds = self._rank_stream()
        info = get_worker_info()
        workers = min(info.num_workers, ds.num_shards) if info else 1
        worker = info.id if info else 0
        if worker >= workers:
            return
        tokenizer = Tokenizer.from_file(self.tokenizer_path)
        eos = tokenizer.token_to_id("<|endoftext|>")
        window = self.seq_len + 1
        buffer: list[int] = []
        yielded, epoch = 0, 0
        while True:
            ds.set_epoch(epoch)
            produced = False
            for example in ds:
                buffer.extend(tokenizer.encode(example["text"]).ids)
                if eos is not None:
                    buffer.append(eos)
                n_windows = len(buffer) // window
                for i in range(n_windows):
                    produced = True
                    chunk = torch.tensor(buffer[i * window : (i + 1) * window], dtype=torch.long)
                    yield {"input_ids": chunk[:-1], "labels": chunk[1:]}
                    yielded += 1
                    if self.max_samples is not None and yielded >= self.max_samples:
                        return
                del buffer[: n_windows * window]
            if not self.loop:
                return
            if not produced:
                raise RuntimeError(f"{self.files} hold fewer than seq_len + 1 = {window} tokens for this worker")
            epoch += 1


class SkipBatches:
    """Iterates ``loader`` after discarding its first ``skip`` batches (resume at the exact batch).

    Discarding in the main process is exact for any number of workers, whose batches the DataLoader
    interleaves in turn; it re-reads the skipped data, which is cheap for local corpora.
    """

    def __init__(self, loader: DataLoader, skip: int) -> None:
        self.loader, self.skip = loader, skip

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(self.skip):
            next(batches)
        yield from batches


class TextDataModule(L.LightningDataModule):
    """Training and validation loaders over ``train-*`` / ``validation-*`` shards.

    Args:
        folder: folder holding the shards (see :func:`shard_files`).
        tokenizer_path: a ``tokenizers`` ``tokenizer.json``; documents are separated by ``<|endoftext|>``.
        seq_len: tokens per sample.
        batch_size: samples per batch (per rank).
        num_workers: dataloader workers per rank.
        shuffle_buffer: documents in the shuffle buffer (0: corpus order).
        val_batches: validation batches per rank.
        seed: data-order seed.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        tokenizer_path: str | os.PathLike,
        seq_len: int,
        batch_size: int,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        val_batches: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.files = shard_files(folder)
        self.tokenizer_path = str(tokenizer_path)
        if not Path(self.tokenizer_path).is_file():
            raise FileNotFoundError(
                f"tokenizer {self.tokenizer_path} not found; run `make install` or set data.tokenizer"
            )
        self.seq_len, self.batch_size = seq_len, batch_size
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.val_batches, self.seed = val_batches, seed
        self.skip_batches = 0

    def vocab_size(self) -> int:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(self.tokenizer_path).get_vocab_size()

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> SkipBatches:
        rank, world = self._rank()
        dataset = PackedTextDataset(
            self.files["train"],
            self.tokenizer_path,
            self.seq_len,
            rank=rank,
            world_size=world,
            loop=True,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
        )
        return SkipBatches(self._loader(dataset), self.skip_batches)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        dataset = PackedTextDataset(
            self.files["validation"],
            self.tokenizer_path,
            self.seq_len,
            rank=rank,
            world_size=world,
            loop=False,
            max_samples=self.val_batches * self.batch_size,
        )
        return self._loader(dataset)

    def _loader(self, dataset: PackedTextDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def state_dict(self) -> dict:
        """Batches this rank's training loader has yielded, so that a resumed run continues after them."""
        trainer = self.trainer
        return {"batches_seen": trainer.global_step * trainer.accumulate_grad_batches if trainer else 0}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skip_batches = int(state_dict["batches_seen"])
