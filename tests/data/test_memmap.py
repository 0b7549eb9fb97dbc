import dataclasses
import json

import numpy as np
import pytest
import torch

import data.prepare
from data.memmap import EpochSampler, MemmapDataModule, TokenWindows, read_manifest
from data.prepare import prepare
from tests.data.test_text import corpus_tokens, stream


def shard_tokens(folder, split):
    manifest = read_manifest(folder)
    dtype = np.dtype(manifest["dtype"])
    return [np.fromfile(folder / s["file"], dtype=dtype) for s in manifest["splits"][split]["shards"]]


def test_prepare_writes_the_token_stream_with_an_index_and_manifest(tiny_corpus, prepared_corpus):
    manifest = json.loads((prepared_corpus / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 300
    assert manifest["source"]["path"] == str(tiny_corpus) and manifest["revision"]["train"]
    for split in ("train", "validation"):
        tokens, eos = corpus_tokens(tiny_corpus, split)
        shards = shard_tokens(prepared_corpus, split)
        assert np.concatenate(shards).tolist() == tokens
        info = manifest["splits"][split]
        assert info["complete"] and info["tokens"] == len(tokens) and info["docs"] == sum(t == eos for t in tokens)
        for shard, entry in zip(shards, info["shards"], strict=True):
            ends = np.fromfile(prepared_corpus / entry["file"].replace(".bin", ".idx"), dtype=np.int64)
            assert ends[-1] == len(shard) and (shard[ends - 1] == eos).all()
    assert len(manifest["splits"]["train"]["shards"]) > 2


def test_windows_are_the_streaming_windows(tiny_corpus, tmp_path):
    prepare("local", tmp_path, tokenizer=str(tiny_corpus / "tokenizer.json"), path=str(tiny_corpus), progress=False)
    windows = TokenWindows(tmp_path, "train", 16)
    streamed = list(stream(tiny_corpus))
    assert len(windows) == len(streamed)
    for i in (0, 1, len(streamed) - 1):
        assert torch.equal(windows[i]["input_ids"], streamed[i]["input_ids"])
        assert torch.equal(windows[i]["labels"], streamed[i]["labels"])


def test_interrupted_prepare_resumes_to_the_same_files(tiny_corpus, tmp_path, monkeypatch):
    args = dict(tokenizer=str(tiny_corpus / "tokenizer.json"), path=str(tiny_corpus), shard_tokens=1500)
    prepare("local", tmp_path / "whole", progress=False, **args)

    flush, calls = data.prepare.ShardWriter.flush, []

    def dying_flush(self):
        calls.append(1)
        if len(calls) == 3:
            (self.folder / "tokens-00002.bin").write_bytes(b"partial")
            raise KeyboardInterrupt
        flush(self)

    monkeypatch.setattr(data.prepare.ShardWriter, "flush", dying_flush)
    with pytest.raises(KeyboardInterrupt):
        prepare("local", tmp_path / "cut", progress=False, **args)
    with pytest.raises(RuntimeError, match="not fully prepared; rerun"):
        read_manifest(tmp_path / "cut")
    monkeypatch.setattr(data.prepare.ShardWriter, "flush", flush)
    prepare("local", tmp_path / "cut", progress=False, **args)

    whole, cut = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("whole", "cut"))
    assert whole["splits"] == cut["splits"]
    for entry in whole["splits"]["train"]["shards"]:
        assert (tmp_path / "whole" / entry["file"]).read_bytes() == (tmp_path / "cut" / entry["file"]).read_bytes()
    with pytest.raises(ValueError, match="another tokenizer"):
        other = tmp_path / "other.json"
        from data.tokenizer import train_bpe
        from tests.conftest import synthetic_documents

        train_bpe(synthetic_documents(50, seed=9), 280, other)
        prepare("local", tmp_path / "cut", progress=False, **{**args, "tokenizer": str(other)})


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_cover_each_epoch_once_and_resume_in_constant_time(shuffle):
    n, world = 11, 2
    per_rank = [
        list(EpochSampler(n, rank=r, world_size=world, shuffle=shuffle, seed=3, num_samples=11)) for r in (0, 1)
    ]
    interleaved = [i for pair in zip(*per_rank, strict=True) for i in pair]
    assert sorted(interleaved[:n]) == list(range(n)) and sorted(interleaved[n : 2 * n]) == list(range(n))
    assert (interleaved[:n] == list(range(n))) != shuffle
    resumed = list(EpochSampler(n, rank=1, world_size=world, shuffle=shuffle, seed=3, start=4, num_samples=11))
    assert resumed == per_rank[1][4:]


class FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world
        self.global_step, self.accumulate_grad_batches = 0, 1


def test_two_ranks_by_two_workers_split_the_windows(prepared_corpus):
    n = len(TokenWindows(prepared_corpus, "train", 16))
    seen, by_workers = [], {}
    for rank in (0, 1):
        for workers in (0, 2):
            dm = MemmapDataModule(prepared_corpus, 16, 3, num_workers=workers, seed=1)
            dm.trainer = FakeTrainer(rank, 2)
            batches = [b["input_ids"] for _, b in zip(range(n // 6), dm.train_dataloader(), strict=False)]
            by_workers[rank, workers] = torch.cat(batches)
        assert torch.equal(by_workers[rank, 0], by_workers[rank, 2])
        seen.extend(map(tuple, by_workers[rank, 0].tolist()))
    windows = TokenWindows(prepared_corpus, "train", 16)
    everything = [tuple(windows[i]["input_ids"].tolist()) for i in range(n)]
    assert len(seen) == len(set(seen)) == 2 * 3 * (n // 6) and set(seen) <= set(everything)
    assert len(set(everything) - set(seen)) == n - 6 * (n // 6)


def test_memmap_resume_skips_to_the_exact_batch(prepared_corpus):
    def batches(skip, packing="fixed"):
        dm = MemmapDataModule(prepared_corpus, 16, 3, packing=packing)
        dm.load_state_dict({"batches_seen": skip})
        return [b["input_ids"] for _, b in zip(range(40 - skip), dm.train_dataloader(), strict=False)]

    full, resumed = batches(0), batches(25)
    assert len(full) == 40 and all(torch.equal(a, b) for a, b in zip(full[25:], resumed, strict=True))
    varlen = batches(25, "varlen")
    assert all(torch.equal(a.reshape(1, -1), b) for a, b in zip(resumed, varlen, strict=True))


def test_validation_is_a_fixed_prefix_and_missing_folders_name_the_fix(prepared_corpus, tmp_path):
    dm = MemmapDataModule(prepared_corpus, 16, 2, val_batches=2)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == 2 and all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second, strict=True)
    )
    assert dm.vocab_size() == 300
    with pytest.raises(FileNotFoundError, match="no manifest.json; write token shards with `python -m data.prepare`"):
        MemmapDataModule(tmp_path, 16, 2)


def test_a_different_tokenizer_than_the_shards_is_a_config_error(prepared_corpus, tmp_path):
    from data.tokenizer import train_bpe
    from miras.config import ConfigError, DataConfig, RunConfig
    from miras.train import build_datamodule
    from tests.conftest import synthetic_documents

    data = DataConfig(dataset="memmap", path=str(prepared_corpus), seq_len=16, batch_size=2)
    assert build_datamodule(RunConfig(data=data)).vocab_size() == 300
    other = tmp_path / "other.json"
    train_bpe(synthetic_documents(50, seed=9), 280, other)
    with pytest.raises(ConfigError, match="data.tokenizer=.* is invalid for the token shards"):
        build_datamodule(RunConfig(data=dataclasses.replace(data, tokenizer=str(other))))
