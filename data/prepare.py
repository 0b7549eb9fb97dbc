"""Tokenise a text source once into memory-mapped token shards (read by :mod:`data.memmap`).

    python -m data.prepare fineweb-edu --name sample-100BT --tokenizer meta-llama/Llama-2-7b-hf --out DIR
    python -m data.prepare c4 --path /shared/c4/en --tokenizer tokenizer.json --out DIR --max-tokens 1e9

Documents are read in the source's order, tokenised in batches, each followed by EOS, and written to
``<split>/tokens-<k>.bin`` shards of about ``--shard-tokens`` tokens (documents are never cut). After each shard
the manifest records it and the number of documents done, so an interrupted run, started again with the same
command, skips what is written and continues; a different source or tokenizer is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from data.memmap import MANIFEST
from data.sources import SOURCES, document_sources, local_files
from data.tokenizer import eos_id, load_tokenizer, tokenizer_sha256

FORMAT_VERSION = 1
DATASETS = ("offline", "local", *SOURCES)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _revision(dataset: str, path: str | None, hub_path: str | None) -> dict:
    """What identifies the data read: file names and sizes for a folder, the Hub commit when online."""
    if path is not None:
        files = local_files(path)
        return {split: [[os.path.relpath(f, path), os.path.getsize(f)] for f in fs] for split, fs in files.items()}
    try:
        from huggingface_hub import HfApi

        return {"hub_sha": HfApi().dataset_info(hub_path).sha}
    except Exception as exc:  # offline or unauthorised: record why the revision is unknown
        return {"hub_sha": None, "why": type(exc).__name__}


class ShardWriter:
    """Collects tokenised documents and writes them as ``tokens-<k>.bin`` / ``.idx`` shards of one split.

    ``state`` is the split's manifest entry; ``save`` persists the manifest after each shard.
    """

    def __init__(self, folder: Path, state: dict, save, dtype, shard_tokens: int) -> None:
        self.folder, self.state, self.save = folder, state, save
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0

    @property
    def tokens(self) -> int:
        """Tokens written or pending in this split."""
        return self.state["tokens"] + self.pending_tokens

    def add(self, ids: np.ndarray) -> None:
        self.pending.append(ids)
        self.pending_tokens += len(ids)
        if self.pending_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        stem = self.folder / f"tokens-{len(self.state['shards']):05d}"
        lengths = np.array([len(a) for a in self.pending], dtype=np.int64)
        np.concatenate(self.pending).astype(self.dtype).tofile(stem.with_suffix(".bin"))
        np.cumsum(lengths).tofile(stem.with_suffix(".idx"))
        n = int(lengths.sum())
        self.state["shards"].append({"file": f"{self.folder.name}/{stem.name}.bin", "tokens": n, "docs": len(lengths)})
        self.state["docs"] += len(lengths)
        self.state["tokens"] += n
        self.save()
        self.pending, self.pending_tokens = [], 0


def _tokenise(docs, tok, eos: int, writer: ShardWriter, bar, limit: int | None, batch_docs: int) -> bool:
    """Tokenise ``docs`` in batches into ``writer``; False when stopped by the token ``limit``."""
    batch: list[str] = []
    for example in docs:
        batch.append(example["text"])
        if len(batch) < batch_docs:
            continue
        if not _encode(batch, tok, eos, writer, bar, limit):
            return False
        batch = []
    return _encode(batch, tok, eos, writer, bar, limit)


def _encode(texts: list[str], tok, eos: int, writer: ShardWriter, bar, limit: int | None) -> bool:
    for encoding in tok.encode_batch(texts, add_special_tokens=False) if texts else ():
        ids = np.fromiter([*encoding.ids, eos], dtype=np.int64)
        writer.add(ids)
        bar.update(len(ids))
        if limit is not None and writer.tokens >= limit:
            return False
    return True


def prepare(
    dataset: str,
    out: str | os.PathLike,
    *,
    tokenizer: str,
    path: str | None = None,
    name: str | None = None,
    text_field: str = "text",
    streaming: bool = True,
    val_fraction: float = 0.0005,
    splits: tuple[str, ...] = ("train", "validation"),
    shard_tokens: int = 1 << 28,
    max_tokens: int | None = None,
    batch_docs: int = 256,
    progress: bool = True,
) -> dict:
    """Write the token shards of ``splits`` under ``out`` and return the manifest (see module doc)."""
    from tqdm.auto import tqdm

    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is invalid; allowed values: {', '.join(DATASETS)}")
    if dataset == "offline" and path is None:
        from data.corpus import DEFAULT_OUT

        path = str(DEFAULT_OUT)
    tok = load_tokenizer(tokenizer, field="--tokenizer")
    vocab = tok.get_vocab_size()
    eos = eos_id(tok)
    dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
    sources = document_sources(
        dataset, path=path, name=name, streaming=streaming, text_field=text_field, val_fraction=val_fraction
    )
    source_info = {
        "dataset": dataset,
        "hub_path": SOURCES[dataset].hub_path if dataset in SOURCES and path is None else None,
        "name": name,
        "path": path,
        "text_field": text_field,
        "val_fraction": val_fraction,
    }
    token_info = {"spec": str(tokenizer), "sha256": tokenizer_sha256(tok), "vocab_size": vocab, "eos_id": eos}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        for key, value in (("source", source_info), ("tokenizer", token_info), ("dtype", np.dtype(dtype).name)):
            if manifest.get(key) != value:
                raise ValueError(f"{out} was prepared with another {key} ({manifest.get(key)}); use a new --out folder")
    else:
        manifest = {
            "format": FORMAT_VERSION,
            "source": source_info,
            "revision": _revision(dataset, path, source_info["hub_path"]),
            "tokenizer": token_info,
            "dtype": np.dtype(dtype).name,
            "splits": {},
        }
    for split in splits:
        state = manifest["splits"].setdefault(split, {"shards": [], "docs": 0, "tokens": 0, "complete": False})
        if state["complete"]:
            continue
        (out / split).mkdir(exist_ok=True)
        known = {shard["file"] for shard in state["shards"]}
        for stale in (out / split).glob("tokens-*"):
            if f"{split}/{stale.name.rsplit('.', 1)[0]}.bin" not in known:
                stale.unlink()
        writer = ShardWriter(out / split, state, lambda: _write_json(manifest_path, manifest), dtype, shard_tokens)
        limit = max_tokens if split == "train" else None
        bar = tqdm(desc=f"prepare {split}", unit="tok", unit_scale=True, initial=state["tokens"], disable=not progress)
        done = _tokenise(sources[split].load().skip(state["docs"]), tok, eos, writer, bar, limit, batch_docs)
        writer.flush()
        bar.close()
        state["complete"], state["truncated"] = True, not done
        _write_json(manifest_path, manifest)
        n_shards = len(state["shards"])
        print(f"prepare: {split}: {state['docs']} documents, {state['tokens']} tokens in {n_shards} shard(s)")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--out", required=True, help="folder for manifest.json and the token shards")
    parser.add_argument(
        "--tokenizer", help="tokenizer.json / SentencePiece .model path or Hub id (default: the offline BPE)"
    )
    parser.add_argument("--path", help="folder of local shards in the dataset's schema (default: the Hub)")
    parser.add_argument("--name", help="Hub config, e.g. sample-10BT, sample-100BT, en")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--no-streaming", action="store_true", help="download the Hub dataset to the cache first")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0005, help="hash-held-out share where there is no validation split"
    )
    parser.add_argument("--splits", default="train,validation")
    parser.add_argument("--shard-tokens", type=float, default=1 << 28, help="tokens per shard (about)")
    parser.add_argument("--max-tokens", type=float, help="stop the train split after this many tokens")
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer
    if tokenizer is None:
        from data.corpus import DEFAULT_OUT

        tokenizer = str(DEFAULT_OUT / "tokenizer.json")
    try:
        prepare(
            args.dataset,
            args.out,
            tokenizer=tokenizer,
            path=args.path,
            name=args.name,
            text_field=args.text_field,
            streaming=not args.no_streaming,
            val_fraction=args.val_fraction,
            splits=tuple(s for s in args.splits.split(",") if s),
            shard_tokens=int(args.shard_tokens),
            max_tokens=None if args.max_tokens is None else int(args.max_tokens),
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
