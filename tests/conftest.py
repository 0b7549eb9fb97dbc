"""Test-wide setup: the Triton interpreter on machines without a GPU, offline Hub, fixed seeds."""

import os

import torch

if not torch.cuda.is_available():
    # read when @triton.jit decorates a kernel, so it must be set before any kernel module is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

try:
    import datasets.config
except ImportError:  # a GPU image that runs only the kernel tests may lack it
    pass
else:
    # datasets waits 5 s whenever a parquet stream is closed early, for a pyarrow crash at interpreter exit
    # (apache/arrow#45214); the tests close many streams and exit only once
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


WORDS = (
    "the a memory key value query learns retains forgets token chunk state gate model river stone light "
    "winter garden reads writes small large quick slow green old new bright"
).split()


def synthetic_documents(n: int, seed: int) -> list[str]:
    """Deterministic English-like documents (sentences over a small vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        n_sentences = int(torch.randint(3, 12, (1,), generator=g))
        sentences = []
        for _ in range(n_sentences):
            idx = torch.randint(0, len(WORDS), (int(torch.randint(4, 12, (1,), generator=g)),), generator=g)
            sentences.append(" ".join(WORDS[i] for i in idx).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A folder with 4 train shards, 1 validation shard (FineWeb schema) and a 300-token BPE tokenizer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("corpus")
    train = synthetic_documents(240, seed=0)
    val = synthetic_documents(40, seed=1)
    for i in range(4):
        part = train[i::4]
        table = pa.table({"text": part, "id": [f"train-{i}-{j}" for j in range(len(part))]})
        pq.write_table(table, root / f"train-{i:05d}-of-00004.parquet")
    pq.write_table(
        pa.table({"text": val, "id": [f"val-{j}" for j in range(len(val))]}), root / "validation-00000-of-00001.parquet"
    )
    train_bpe(train, vocab_size=300, path=root / "tokenizer.json")
    return root


@pytest.fixture(scope="session")
def prepared_corpus(tiny_corpus, tmp_path_factory):
    """``tiny_corpus`` tokenised by ``python -m data.prepare`` into memory-mapped shards of ~1500 tokens."""
    from data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(
        "local",
        out,
        tokenizer=str(tiny_corpus / "tokenizer.json"),
        path=str(tiny_corpus),
        shard_tokens=1500,
        progress=False,
    )
    return out
