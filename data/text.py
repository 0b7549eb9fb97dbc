"""Text LightningDataModule: documents from a :mod:`data.sources` source -> tokenised, packed sequences.

The same code reads the offline corpus, local shards in a Hub dataset's schema and the Hub itself, through
``datasets`` in streaming mode. Ranks split the documents with ``split_dataset_by_node`` (whole shards when
their number divides by the world size, else every ``world_size``-th document); the dataloader workers of one
rank split that rank's shards between them (``datasets`` does it inside each worker). Keep
``num_shards >= world_size * num_workers`` so that no worker idles.

Packing: documents are tokenised, each followed by EOS, joined and cut into consecutive ``seq_len + 1`` windows
(no overlap, no padding); a sample is ``input_ids = window[:-1]``, ``labels = window[1:]``. With
``packing="varlen"`` the same windows are batched by :class:`VarlenCollate` into one row with ``cu_seqlens`` at
the document ends, so no token attends across documents (a document longer than a window is split at
``seq_len``). Training loops over the data forever (a new shuffle per epoch); validation is one pass over the
held-out documents, computed once and kept in memory.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.position import ResumableDataModule
from data.sources import DocumentSource, document_sources, local_files
from data.tokenizer import eos_id, load_tokenizer

PACKINGS = ("fixed", "varlen")


def shard_files(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...]}`` shards of a folder that must hold both splits."""
    files = local_files(folder)
    if not files["validation"]:
        raise FileNotFoundError(f"no validation-* shards in {folder}; run `make install` or set data.path")
    return files


class PackedTextDataset(IterableDataset):
    """Packed ``{"input_ids": [seq_len], "labels": [seq_len]}`` samples of one split (see module doc).

    Args:
        source: the split's documents; a list of local files is read as they are.
        tokenizer: a tokenizer.json path, a SentencePiece .model path or a Hub id (:func:`load_tokenizer`).
        loop: start a new epoch (reshuffled) when the documents run out, forever.
        max_samples: stop after this many samples.
    """

    def __init__(
        self,
        source: DocumentSource | list[str],
        tokenizer: str,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        max_samples: int | None = None,
    ) -> None:
        self.source = source if isinstance(source, DocumentSource) else DocumentSource(tuple(source))
        self.tokenizer = str(tokenizer)
        self.seq_len = seq_len
        self.rank, self.world_size = rank, world_size
        self.loop = loop
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.max_samples = max_samples

    def _rank_stream(self):
        from datasets.distributed import split_dataset_by_node

        ds = self.source.load()
        if self.shuffle_buffer:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        return split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)

    def documents(self, epoch: int = 0):
        """The texts this rank (and dataloader worker, inside one) reads in ``epoch``, in order."""
        ds = self._rank_stream()
        ds.set_epoch(epoch)
        for example in ds:
            yield example["text"]

    def __iter__(self):
        tokenizer = load_tokenizer(self.tokenizer)
        eos = eos_id(tokenizer)
        window = self.seq_len + 1
        buffer: list[int] = []
        yielded, epoch = 0, 0
        info = get_worker_info()
        while True:
            produced = False
            for text in self.documents(epoch):
                buffer.extend(tokenizer.encode(text, add_special_tokens=False).ids)
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
                who = f"rank {self.rank}" + (f", worker {info.id}" if info else "")
                raise RuntimeError(f"{who} reads fewer than seq_len + 1 = {window} tokens from {self.source}")
            epoch += 1


class VarlenCollate:
    """Batch packed windows as one row: ``input_ids``/``labels`` ``[1, B * seq_len]`` and ``cu_seqlens``.

    A sequence ends after each EOS input token and at every window end; the label of an EOS input (the first
    token of the next document) is ``-100``, since the model's state restarts there.
    """

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id

    def __call__(self, samples: list[dict]) -> dict:
        input_ids = torch.stack([s["input_ids"] for s in samples])
        labels = torch.stack([s["labels"] for s in samples])
        B, T = input_ids.shape
        is_eos = input_ids == self.eos_id
        labels = labels.masked_fill(is_eos, -100)
        ends = is_eos.clone()
        ends[:, -1] = True
        offsets = (torch.arange(B)[:, None] * T + torch.arange(T)[None] + 1)[ends]
        cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), offsets]).to(torch.int32)
        return {"input_ids": input_ids.reshape(1, -1), "labels": labels.reshape(1, -1), "cu_seqlens": cu_seqlens}


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


class TextDataModule(ResumableDataModule):
    """Training and validation loaders over a text source (see module doc).

    Args:
        sources: ``{"train": DocumentSource, "validation": DocumentSource}`` from
            :func:`data.sources.document_sources`, or a folder of local shards.
        tokenizer: a tokenizer.json path, a SentencePiece .model path or a Hub id; documents end with its EOS.
        seq_len: tokens per sample.
        batch_size: samples per batch (per rank).
        num_workers: dataloader workers per rank.
        shuffle_buffer: documents in the shuffle buffer (0: corpus order).
        val_batches: validation batches per rank.
        seed: data-order seed.
        packing: ``fixed`` (``[B, seq_len]`` batches) or ``varlen`` (one row with ``cu_seqlens``).
    """

    def __init__(
        self,
        sources: dict[str, DocumentSource] | str | os.PathLike,
        tokenizer: str | os.PathLike,
        seq_len: int,
        batch_size: int,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        val_batches: int = 16,
        seed: int = 0,
        packing: str = "fixed",
    ) -> None:
        super().__init__()
        if packing not in PACKINGS:
            raise ValueError(f"data.packing={packing!r} is invalid; allowed values: {', '.join(PACKINGS)}")
        self.sources = sources if isinstance(sources, dict) else document_sources("local", path=sources)
        self.tokenizer = str(tokenizer)
        self._eos = eos_id(load_tokenizer(self.tokenizer))
        self.seq_len, self.batch_size = seq_len, batch_size
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.val_batches, self.seed = val_batches, seed
        self.packing = packing
        self._val_samples: list[dict] | None = None

    def vocab_size(self) -> int:
        return load_tokenizer(self.tokenizer).get_vocab_size()

    def train_dataloader(self) -> SkipBatches:
        rank, world = self._rank()
        dataset = PackedTextDataset(
            self.sources["train"],
            self.tokenizer,
            self.seq_len,
            rank=rank,
            world_size=world,
            loop=True,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
        )
        return SkipBatches(self._loader(dataset, self.num_workers), self.skip_batches)

    def val_dataloader(self) -> DataLoader:
        if self._val_samples is None:
            rank, world = self._rank()
            dataset = PackedTextDataset(
                self.sources["validation"],
                self.tokenizer,
                self.seq_len,
                rank=rank,
                world_size=world,
                loop=False,
                max_samples=self.val_batches * self.batch_size,
            )
            self._val_samples = list(dataset)
        return self._loader(self._val_samples, 0)

    def _loader(self, dataset, num_workers: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=num_workers,
            collate_fn=VarlenCollate(self._eos) if self.packing == "varlen" else None,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )
