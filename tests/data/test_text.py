import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from data.sources import document_sources
from data.text import PackedTextDataset, TextDataModule, VarlenCollate, shard_files


def stream(corpus, **kwargs):
    files = shard_files(corpus)
    defaults = dict(seq_len=16, loop=False)
    return PackedTextDataset(files["train"], str(corpus / "tokenizer.json"), **{**defaults, **kwargs})


def corpus_tokens(corpus, split="train"):
    import datasets
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(corpus / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    docs = datasets.load_dataset("parquet", data_files=shard_files(corpus)[split], split="train")
    return [t for d in docs["text"] for t in [*tokenizer.encode(d).ids, eos]], eos


def test_packing_is_a_contiguous_cut_of_the_token_stream(tiny_corpus):
    samples = list(stream(tiny_corpus))
    assert all(s["input_ids"].shape == (16,) for s in samples)
    for s in samples:
        torch.testing.assert_close(s["input_ids"][1:], s["labels"][:-1])
    tokens, _ = corpus_tokens(tiny_corpus)
    assert len(samples) == len(tokens) // 17
    assert samples[0]["input_ids"].tolist() == tokens[:16]
    assert samples[1]["input_ids"].tolist() == tokens[17:33]


def test_ranks_split_documents_without_overlap(tiny_corpus):
    per_rank = [{tuple(s["input_ids"].tolist()) for s in stream(tiny_corpus, rank=r, world_size=2)} for r in (0, 1)]
    single = {tuple(s["input_ids"].tolist()) for s in stream(tiny_corpus)}
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
    assert len(per_rank[0]) + len(per_rank[1]) >= 0.9 * len(single)


class Documents(PackedTextDataset):
    """The documents a rank's dataloader workers read, instead of packed windows."""

    def __iter__(self):
        from torch.utils.data import get_worker_info

        for text in self.documents():
            yield get_worker_info().id, text


def test_two_ranks_by_two_workers_read_every_document_once(tiny_corpus):
    import datasets

    everything = datasets.load_dataset("parquet", data_files=shard_files(tiny_corpus)["train"], split="train")["text"]
    seen, workers = [], set()
    for rank in (0, 1):
        docs = Documents(shard_files(tiny_corpus)["train"], "unused", 16, rank=rank, world_size=2, shuffle_buffer=8)
        for worker, text in DataLoader(docs, batch_size=None, num_workers=2):
            seen.append(text)
            workers.add((rank, int(worker)))
    assert workers == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert sorted(seen) == sorted(everything)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_batches_resumes_the_loader_where_it_stopped(tiny_corpus, workers):
    def batches(skip):
        dm = TextDataModule(
            tiny_corpus,
            tiny_corpus / "tokenizer.json",
            seq_len=16,
            batch_size=3,
            num_workers=workers,
            shuffle_buffer=20,
        )
        dm.load_state_dict({"batches_seen": skip})
        return [b["input_ids"] for b in itertools.islice(dm.train_dataloader(), 9 - skip)]

    full, resumed = batches(0), batches(5)
    for a, b in zip(full[5:], resumed, strict=True):
        torch.testing.assert_close(a, b)


def test_varlen_collate_cuts_at_each_eos_and_masks_the_cross_document_label():
    eos = 0
    window = torch.tensor([5, 6, 0, 7, 8, 9, 0, 4, 3])
    samples = [{"input_ids": window[:-1], "labels": window[1:]}, {"input_ids": window[1:], "labels": window[1:] + 1}]
    batch = VarlenCollate(eos)(samples)
    assert batch["input_ids"].shape == batch["labels"].shape == (1, 16)
    assert batch["cu_seqlens"].tolist() == [0, 3, 7, 8, 10, 14, 16]
    assert batch["cu_seqlens"].dtype == torch.int32
    labels = batch["labels"][0]
    assert labels[2] == labels[6] == -100 and labels[9] == labels[13] == -100
    assert labels[:2].tolist() == [6, 0] and labels[3:6].tolist() == [8, 9, 0]


def test_varlen_batches_hold_the_fixed_batches_tokens(tiny_corpus):
    def first(packing):
        dm = TextDataModule(tiny_corpus, tiny_corpus / "tokenizer.json", 16, 3, shuffle_buffer=0, packing=packing)
        return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))

    (fixed, fixed_val), (varlen, varlen_val) = first("fixed"), first("varlen")
    torch.testing.assert_close(fixed["input_ids"].reshape(1, -1), varlen["input_ids"])
    torch.testing.assert_close(fixed_val["input_ids"].reshape(1, -1), varlen_val["input_ids"])
    kept = varlen["labels"] != -100
    assert (varlen["labels"][kept] == fixed["labels"].reshape(1, -1)[kept]).all()


def test_validation_samples_are_computed_once(tiny_corpus):
    dm = TextDataModule(tiny_corpus, tiny_corpus / "tokenizer.json", 16, 2, val_batches=3)
    first = [b["input_ids"] for b in dm.val_dataloader()]
    dm.sources = None  # a second pass must not read the source again
    second = [b["input_ids"] for b in dm.val_dataloader()]
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_missing_shards_or_tokenizer_name_the_fix(tmp_path, tiny_corpus):
    with pytest.raises(FileNotFoundError, match="no train shards .*make install"):
        shard_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="data.tokenizer=.*no tokenizer file"):
        TextDataModule(tiny_corpus, tmp_path / "tokenizer.json", seq_len=8, batch_size=2)
    with pytest.raises(ValueError, match="data.packing='padded' is invalid; allowed values: 'fixed'|fixed"):
        TextDataModule(tiny_corpus, tiny_corpus / "tokenizer.json", seq_len=8, batch_size=2, packing="padded")
    with pytest.raises(ValueError, match="data.dataset='pile' needs data.path"):
        document_sources("pile")
