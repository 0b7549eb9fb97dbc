"""Text sources: the Hugging Face pretraining corpora of the papers, or local shards in the same schema.

| ``data.dataset`` | Hub dataset | configs (``data.name``) | validation |
| --- | --- | --- | --- |
| ``fineweb`` | ``HuggingFaceFW/fineweb`` | default, sample-10BT, sample-100BT, sample-350BT | hash held-out |
| ``fineweb-edu`` | ``HuggingFaceFW/fineweb-edu`` | default, sample-10BT, sample-100BT, sample-350BT | hash held-out |
| ``slimpajama`` | ``cerebras/SlimPajama-627B`` | default | the ``validation`` split |
| ``c4`` | ``allenai/c4`` | en (default), en.noblocklist, realnewslike | the ``validation`` split |
| ``offline``, ``local`` | - | - | ``validation-*`` shards |

Schemas: FineWeb(-Edu) rows hold ``text``, ``id``, ``dump``, ``url``, ... (Edu adds ``score``, ``int_score``);
SlimPajama ``text`` and ``meta.redpajama_set_name``; C4 ``text``, ``timestamp``, ``url``. Only ``text`` (or
``data.text_field``) is read.

A source reads the Hub (streamed, or downloaded to the ``datasets`` cache) unless ``data.path`` names a folder
of pre-downloaded shards (parquet, jsonl, or json / jsonl compressed with ``.gz`` / ``.zst`` as C4 ships), which
go through the same ``datasets`` loaders. In a folder, files whose path has a component holding the word
``validation``, ``valid`` or ``val`` (``validation/``, ``c4-validation.00000-of-00008.json.gz``) are the
validation split, those holding ``test`` are ignored, the rest are train.

Where a source has no validation split, a document is held out when the hash of its text falls below
``data.val_fraction``: the split depends on the text alone, not on order, sharding or the number of ranks.
Validation then reads the last shard only (the first held-out documents found there suffice).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
COMPRESSION = (".gz", ".zst", ".bz2", ".xz")


@dataclass(frozen=True)
class Source:
    """A pretraining corpus on the Hub."""

    hub_path: str
    default_name: str | None
    has_validation: bool


SOURCES = {
    "fineweb": Source("HuggingFaceFW/fineweb", None, has_validation=False),
    "fineweb-edu": Source("HuggingFaceFW/fineweb-edu", None, has_validation=False),
    "slimpajama": Source("cerebras/SlimPajama-627B", None, has_validation=True),
    "c4": Source("allenai/c4", "en", has_validation=True),
}


def _data_format(path: str) -> str | None:
    """``parquet`` / ``json`` for a data file; a plain ``.json`` is not one (tokenizer.json, manifest.json)."""
    name = path
    for ext in COMPRESSION:
        if name.endswith(ext):
            return FORMATS.get(Path(name[: -len(ext)]).suffix)
    return FORMATS.get(Path(name).suffix) if not name.endswith(".json") else None


def _split_of(relative: str) -> str:
    parts = [p.lower() for p in Path(relative).parts]
    if any(re.search(r"(^|[-_.])(validation|valid|val)([-_.]|$)", p) for p in parts):
        return "validation"
    if any(re.search(r"(^|[-_.])test([-_.]|$)", p) for p in parts):
        return "test"
    return "train"


def local_files(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...]}`` data files under ``folder`` (validation may be empty)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.path={str(folder)!r} is not a folder of shards")
    files: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _data_format(path.name) is not None:
            files[_split_of(str(path.relative_to(folder)))].append(str(path))
    if not files["train"]:
        raise FileNotFoundError(
            f"no train shards (*.parquet, *.jsonl, *.json.gz, ...) under data.path={str(folder)!r}; "
            "run `make install` for the offline corpus, or point data.path at a folder of shards"
        )
    return {"train": files["train"], "validation": files["validation"]}


def held_out(text: str, fraction: float) -> bool:
    """Whether a document belongs to the hash-held-out validation split."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


@dataclass(frozen=True)
class DocumentSource:
    """Where one split's documents come from; picklable, so dataloader workers rebuild the stream.

    Args:
        files: local data files, or ``None`` for the Hub dataset ``hub_path`` / ``name``.
        split: the split to read from the files or the Hub (``train`` or ``validation``).
        holdout: ``"exclude"`` drops hash-held-out documents, ``"only"`` keeps only them, ``None`` keeps all.
    """

    files: tuple[str, ...] | None
    split: str = "train"
    hub_path: str | None = None
    name: str | None = None
    streaming: bool = True
    text_field: str = "text"
    holdout: str | None = None
    val_fraction: float = 0.0

    def load(self):
        """The documents as a ``datasets`` dataset (an ``IterableDataset`` when streaming)."""
        import datasets

        if self.files is not None:
            kinds = {_data_format(f) for f in self.files}
            if len(kinds) != 1:
                raise ValueError(f"shards mix formats {sorted(kinds)}; use one format per split")
            ds = datasets.load_dataset(kinds.pop(), data_files=list(self.files), split="train", streaming=True)
        else:
            try:
                ds = datasets.load_dataset(self.hub_path, self.name, split=self.split, streaming=self.streaming)
            except (ConnectionError, FileNotFoundError, ValueError) as exc:
                raise FileNotFoundError(
                    f"cannot read the Hub dataset {self.hub_path} ({self.name or 'default'}, {self.split}): "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; when offline, download its "
                    "shards and set data.path to their folder"
                ) from exc
            if not self.streaming:
                # ranks and workers split an iterable dataset by shards: enough of them for any cluster
                ds = ds.to_iterable_dataset(num_shards=max(1, min(1024, len(ds) // 10_000)))
        if self.text_field != "text":
            ds = ds.rename_column(self.text_field, "text")
        if self.holdout == "only" and self.files is None and ds.num_shards > 1:
            ds = ds.shard(num_shards=ds.num_shards, index=ds.num_shards - 1)
        if self.holdout is not None:
            keep = self.holdout == "only"
            fraction, field = self.val_fraction, "text"
            ds = ds.filter(lambda example: held_out(example[field], fraction) == keep)
        return ds


def document_sources(
    dataset: str,
    *,
    path: str | os.PathLike | None = None,
    name: str | None = None,
    streaming: bool = True,
    text_field: str = "text",
    val_fraction: float = 0.0005,
) -> dict[str, DocumentSource]:
    """The train and validation :class:`DocumentSource` of ``data.dataset`` (see the module table)."""
    common = dict(text_field=text_field, val_fraction=val_fraction)
    if path is not None:
        files = local_files(path)
        if files["validation"]:
            return {
                "train": DocumentSource(tuple(files["train"]), **common),
                "validation": DocumentSource(tuple(files["validation"]), **common),
            }
        return {
            "train": DocumentSource(tuple(files["train"]), holdout="exclude", **common),
            "validation": DocumentSource(tuple(files["train"][-1:]), holdout="only", **common),
        }
    if dataset not in SOURCES:
        raise ValueError(f"data.dataset={dataset!r} needs data.path; allowed values without one: {sorted(SOURCES)}")
    source = SOURCES[dataset]
    hub = dict(hub_path=source.hub_path, name=name or source.default_name, streaming=streaming, **common)
    if source.has_validation:
        return {"train": DocumentSource(None, **hub), "validation": DocumentSource(None, split="validation", **hub)}
    return {
        "train": DocumentSource(None, holdout="exclude", **hub),
        "validation": DocumentSource(None, holdout="only", **hub),
    }
