import itertools

import pytest
import torch

from data.text import PackedTextDataset, TextDataModule, shard_files


def stream(corpus, **kwargs):
    files = shard_files(corpus)
    defaults = dict(seq_len=16, loop=False)
    return PackedTextDataset(files["train"], str(corpus / "tokenizer.json"), **{**defaults, **kwargs})


def test_packing_is_a_contiguous_cut_of_the_token_stream(tiny_corpus):
    from tokenizers import Tokenizer

    samples = list(stream(tiny_corpus))
    assert all(s["input_ids"].shape == (16,) for s in samples)
    for s in samples:
        torch.testing.assert_close(s["input_ids"][1:], s["labels"][:-1])
    tokenizer = Tokenizer.from_file(str(tiny_corpus / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    import datasets

    docs = datasets.load_dataset("parquet", data_files=shard_files(tiny_corpus)["train"], split="train")
    tokens = [t for d in docs["text"] for t in [*tokenizer.encode(d).ids, eos]]
    assert len(samples) == len(tokens) // 17
    assert samples[0]["input_ids"].tolist() == tokens[:16]
    assert samples[1]["input_ids"].tolist() == tokens[17:33]


def test_ranks_split_documents_without_overlap(tiny_corpus):
    per_rank = [{tuple(s["input_ids"].tolist()) for s in stream(tiny_corpus, rank=r, world_size=2)} for r in (0, 1)]
    single = {tuple(s["input_ids"].tolist()) for s in stream(tiny_corpus)}
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
    assert len(per_rank[0]) + len(per_rank[1]) >= 0.9 * len(single)


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


def test_missing_shards_or_tokenizer_name_the_fix(tmp_path, tiny_corpus):
    with pytest.raises(FileNotFoundError, match="no train-.*make install"):
        shard_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer .* not found"):
        TextDataModule(tiny_corpus, tmp_path / "tokenizer.json", seq_len=8, batch_size=2)
