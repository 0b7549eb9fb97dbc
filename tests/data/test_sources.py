"""Local shards written in each Hub dataset's schema and layout go through the same code path as the Hub."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.sources import SOURCES, document_sources, held_out, local_files
from miras.config import ConfigError, DataConfig, RunConfig, override
from miras.train import build_datamodule
from tests.conftest import synthetic_documents


def fineweb_rows(docs, prefix):
    n = len(docs)
    return {
        "text": docs,
        "id": [f"<urn:uuid:{prefix}-{i}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{prefix}/{i}" for i in range(n)],
        "date": ["2024-02-21T00:00:00Z"] * n,
        "file_path": ["s3://commoncrawl/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": [0.9] * n,
        "token_count": [len(d.split()) for d in docs],
    }


def write_fineweb(root, edu=False):
    """FineWeb's layout: ``sample/10BT/<k>_00000.parquet``, no validation split."""
    folder = root / "sample" / "10BT"
    folder.mkdir(parents=True)
    docs = synthetic_documents(400, seed=3)
    for k in range(2):
        rows = fineweb_rows(docs[k::2], k)
        if edu:
            rows = {**rows, "score": [3.1] * len(rows["text"]), "int_score": [3] * len(rows["text"])}
        pq.write_table(pa.table(rows), folder / f"{k:03d}_00000.parquet")
    return docs


def write_slimpajama(root):
    """SlimPajama's layout: ``train/chunk1/example_train_<k>.jsonl`` and ``validation/chunk1/...``."""
    docs = {"train": synthetic_documents(200, seed=4), "validation": synthetic_documents(20, seed=5)}
    for split, texts in docs.items():
        folder = root / split / "chunk1"
        folder.mkdir(parents=True)
        with open(folder / f"example_{split}_0.jsonl", "w") as f:
            for text in texts:
                f.write(json.dumps({"text": text, "meta": {"redpajama_set_name": "RedPajamaC4"}}) + "\n")
    return docs


def write_c4(root):
    """C4's layout: ``en/c4-train.<k>-of-<n>.json.gz`` and ``en/c4-validation.<k>-of-<n>.json.gz``."""
    (root / "en").mkdir(parents=True)
    docs = {"train": synthetic_documents(200, seed=6), "validation": synthetic_documents(20, seed=7)}
    for split, texts in docs.items():
        with gzip.open(root / "en" / f"c4-{split}.00000-of-00001.json.gz", "wt") as f:
            for i, text in enumerate(texts):
                row = {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"}
                f.write(json.dumps(row) + "\n")
    return docs


def texts(source):
    return [row["text"] for row in source.load()]


def test_fineweb_folder_holds_out_validation_by_hash(tmp_path):
    docs = write_fineweb(tmp_path)
    sources = document_sources("fineweb", path=tmp_path, val_fraction=0.1)
    train, val = texts(sources["train"]), texts(sources["validation"])
    assert val and not set(train) & set(val)
    assert sorted(train) == sorted(d for d in docs if not held_out(d, 0.1))
    assert sorted(val) == sorted(d for d in docs[1::2] if held_out(d, 0.1))  # validation reads the last shard


@pytest.mark.parametrize("dataset, write", [("slimpajama", write_slimpajama), ("c4", write_c4)])
def test_sources_with_a_validation_split_use_it(tmp_path, dataset, write):
    docs = write(tmp_path)
    sources = document_sources(dataset, path=tmp_path)
    assert texts(sources["train"]) == docs["train"] and texts(sources["validation"]) == docs["validation"]


def test_held_out_is_a_stable_fraction():
    docs = synthetic_documents(2000, seed=8)
    share = sum(held_out(d, 0.05) for d in docs) / len(docs)
    assert 0.03 < share < 0.07
    assert [held_out(d, 0.05) for d in docs] == [held_out(d, 0.05) for d in docs]


@pytest.mark.parametrize(
    "dataset, write", [("fineweb-edu", write_fineweb), ("slimpajama", write_slimpajama), ("c4", write_c4)]
)
def test_each_dataset_trains_through_the_datamodule(tmp_path, tiny_corpus, dataset, write):
    write(tmp_path)
    config = RunConfig(
        data=DataConfig(
            dataset=dataset,
            path=str(tmp_path),
            tokenizer=str(tiny_corpus / "tokenizer.json"),
            seq_len=32,
            batch_size=2,
            val_batches=1,
            val_fraction=0.1,
        ),
    )
    dm = build_datamodule(config)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"].max() < 300
    assert next(iter(dm.val_dataloader()))["input_ids"].shape == (2, 32)


def test_hub_datasets_without_network_name_the_fix():
    assert set(SOURCES) == {"fineweb", "fineweb-edu", "slimpajama", "c4"}
    with pytest.raises(FileNotFoundError, match="HuggingFaceFW/fineweb-edu .*set data.path"):
        document_sources("fineweb-edu", name="sample-10BT")["train"].load()


def test_tokenizer_from_an_unreachable_hub_names_the_field(tiny_corpus):
    config = override(RunConfig(), [f"data.path={tiny_corpus}", "data.dataset=local"])
    with pytest.raises(FileNotFoundError, match="data.tokenizer='meta-llama/Llama-2-7b-hf'.*local tokenizer.json"):
        build_datamodule(override(config, ["data.tokenizer=meta-llama/Llama-2-7b-hf"]))


def test_folder_rules(tmp_path):
    for name in ("train-00000.parquet", "validation-00000.parquet", "test-00000.parquet", "tokenizer.json"):
        (tmp_path / name).touch()
    files = local_files(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in files["train"]] == ["train-00000.parquet"]
    assert [p.rsplit("/", 1)[1] for p in files["validation"]] == ["validation-00000.parquet"]
    with pytest.raises(ConfigError, match="data.packing='rows' is invalid"):
        DataConfig(packing="rows")
    with pytest.raises(ConfigError, match="data.path is required when data.dataset='memmap'"):
        DataConfig(dataset="memmap")


def test_downloaded_hub_dataset_is_read_like_a_stream(tmp_path, monkeypatch):
    import datasets

    docs = write_c4(tmp_path)
    files = {split: str(tmp_path / "en" / f"c4-{split}.00000-of-00001.json.gz") for split in docs}
    calls = []

    def load_dataset(path, name, split, streaming):
        calls.append((path, name, split, streaming))
        return datasets.Dataset.from_json(files[split])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    sources = document_sources("c4", streaming=False)
    assert texts(sources["train"]) == docs["train"] and texts(sources["validation"]) == docs["validation"]
    assert calls == [("allenai/c4", "en", "train", False), ("allenai/c4", "en", "validation", False)]
