"""A corpus on disk as a memory-mapped token stream, its train/validation split as index maps over it, and the
cache of tokenized text. No torch (the service sizes a job's corpus with it); gdn.data batches the streams.

- Pre-tokenized ids (.bin raw uint16/uint32, .npy) are memory-mapped as they are.
- Text (builtin, a UTF-8 file or folder, a .jsonl/.parquet/.arrow table's text column) is tokenized once,
  document by document, into the token cache: `<cache>/tokens/<key>.tokens` (raw ids) and `<key>.json` (dtype, count,
  the stream's sha256). The key is the sha256 of the source's file listing (path, size, mtime: stat only, so a cache
  hit reads no text) and of the tokenizer's file. Writers race safely: each writes temporary files and renames them
  into place, the metadata first, so a `.tokens` file that exists is complete.

Fingerprints. A corpus's `sha256` (what every trial records) is the SHA-256 of its token stream, computed in 8 MiB
chunks: exact (a sampled hash would miss an edit in an unsampled stretch and call two corpora one) and memory-flat.
For pre-tokenized files it costs one sequential read per process (memoized by path, size and mtime); for text it is
computed once, while the cache file is written, and read back from its metadata.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gdn.spec import TABLE_SUFFIXES, DataSpec

BLOCK = 1 << 16          # tokens per split block
VAL_EVERY = 32           # one block in 32 (about 3 %) is validation
VAL_AT = VAL_EVERY // 2  # the middle block of each group, so both ends train
MIN_BLOCKS = 4 * VAL_EVERY  # smaller corpora are cut into this many blocks
SCAN_TOKENS = 1 << 22    # ids per chunk of a pass over a memory-mapped file
DOCS_PER_BATCH = 256     # documents tokenized at once
# A document is tokenized in pieces of about PIECE_CHARS characters, and a batch flushed at BATCH_CHARS: a tokenizer
# holds several times its input in memory (one 93 MB source file encoded whole peaked at 12.9 GB), so a corpus of
# one large file would otherwise need memory in proportion to its size.
PIECE_CHARS = 1 << 20
BATCH_CHARS = 16 << 20
# Where a piece may end: just after a newline with a non-space on either side. There the pre-tokenizers of the
# tokenizers deltamu loads (byte-level BPE's and tiktoken's patterns) always split, so the pieces' ids joined are
# the whole document's (tests/gdn/test_corpus.py checks it against encoding it whole).
_PIECE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
CACHE_ENV = "DELTAMU_CACHE_DIR"
TABLE_BUILDERS = {".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


# --- the split: index maps over the stream, no copy ------------------------------------------------------------

class SplitView:
    """The training or validation part of a token stream, as if its blocks were concatenated: every VAL_EVERY-th
    block (the VAL_AT-th of each group) is validation, the rest training. Indexing maps positions to the stream's,
    so a memory-mapped stream is read only where a window is taken."""

    def __init__(self, tokens: np.ndarray, val: bool):
        n = len(tokens)
        self.tokens, self.val = tokens, val
        self.block = min(BLOCK, max(1, n // MIN_BLOCKS))
        n_blocks = -(-n // self.block)
        n_val = max(0, (n_blocks - VAL_AT - 1) // VAL_EVERY + 1)
        val_len = n_val * self.block
        if n_blocks and (n_blocks - 1) % VAL_EVERY == VAL_AT:        # the short last block is a validation block
            val_len -= n_blocks * self.block - n
        self.length = val_len if val else n - val_len

    def __len__(self) -> int:
        return self.length

    def positions(self, idx: np.ndarray) -> np.ndarray:
        """Positions in the stream of positions in this split (all train blocks but the last are full, and so are
        the validation blocks but the last, which is why block arithmetic suffices)."""
        idx = np.asarray(idx, dtype=np.int64)
        block, offset = np.divmod(idx, self.block)
        if self.val:
            real_block = block * VAL_EVERY + VAL_AT
        else:
            group, r = np.divmod(block, VAL_EVERY - 1)
            real_block = group * VAL_EVERY + r + (r >= VAL_AT)
        return real_block * self.block + offset

    def __getitem__(self, idx) -> np.ndarray:
        return self.tokens[self.positions(idx)]


def split_views(tokens: np.ndarray) -> tuple[SplitView, SplitView]:
    return SplitView(tokens, val=False), SplitView(tokens, val=True)


# --- sources ---------------------------------------------------------------------------------------------------

def stdlib_files() -> list[Path]:
    """The standard library's own .py files (no site-packages, no test suites), sorted by relative path."""
    return python_files(Path(sysconfig.get_paths()["stdlib"]),
                        {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


def python_files(root: Path, skip_dirs: set[str]) -> list[Path]:
    """The .py files under `root` in no folder named in `skip_dirs`, sorted by relative path."""
    files = [p for p in root.rglob("*.py") if not skip_dirs & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def source_kind(spec: DataSpec) -> str:
    """builtin | tokens (pre-tokenized ids) | table (rows with a text column) | text."""
    if spec.source == "builtin":
        return "builtin"
    if spec.pretokenized:
        return "tokens"
    path = Path(spec.source)
    if path.is_file():
        return "table" if path.suffix in TABLE_SUFFIXES else "text"
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")] if path.is_dir() else []
    if files and all(p.suffix in TABLE_SUFFIXES for p in files):     # a folder of text that holds one .jsonl
        return "table"                                                 # stays a folder of text, as before
    return "text"


def source_files(spec: DataSpec) -> list[Path]:
    """The files a text or table corpus is read from, in reading order."""
    if spec.source == "builtin":
        files = stdlib_files()
        if not files:
            raise RuntimeError("found no standard-library sources for the builtin corpus")
        return files
    path = Path(spec.source)
    if not path.exists():
        raise ValueError(f"data source {spec.source!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(q for q in path.rglob("*") if q.is_file())
    if source_kind(spec) == "table":
        files = [f for f in files if not f.name.startswith(".")]
        kinds = {TABLE_BUILDERS[f.suffix] for f in files}
        if len(kinds) > 1:
            raise ValueError(f"folder {path} mixes table formats ({', '.join(sorted(kinds))}): keep one per folder")
    return files


def _source_fingerprint(spec: DataSpec) -> str:
    """Stat only: every file's path, size and mtime (and the text column of a table)."""
    files = source_files(spec)
    listing = [[str(f), (st := f.stat()).st_size, st.st_mtime_ns] for f in files]
    kind = source_kind(spec)             # a folder's kind is a walk of it: once
    return hashlib.sha256(json.dumps([kind, spec.text_column if kind == "table" else None,
                                      listing]).encode()).hexdigest()


def iter_documents(spec: DataSpec) -> Iterator[str]:
    """A text corpus document by document: each file (builtin, text), or each row's text column (table)."""
    if source_kind(spec) == "table":
        yield from _table_rows(spec)
        return
    files = source_files(spec)
    single = len(files) == 1 and Path(spec.source).is_file()
    found = False
    for f in files:
        data = f.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            if single:
                raise ValueError(f"{f} is not UTF-8 text ({e.reason} at byte {e.start})") from None
            continue                                 # a folder's non-text files are skipped
        found = True
        yield text
    if not found:
        raise ValueError(f"folder {spec.source} holds no UTF-8 text files")


def document_pieces(doc: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """`doc` in consecutive pieces of at least `size` characters (the last may be shorter), each cut at the first
    _PIECE_CUT past `size`; a document without one stays whole."""
    start = 0
    while len(doc) - start > size:
        cut = _PIECE_CUT.search(doc, start + size)
        if cut is None:
            break
        yield doc[start:cut.start()]
        start = cut.start()
    yield doc[start:]


def _table_rows(spec: DataSpec) -> Iterator[str]:
    """The text column of a .jsonl/.parquet/.arrow corpus, streamed by the `datasets` library from the local
    files (offline: nothing is looked up or downloaded; no Arrow copy is written)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    files = source_files(spec)
    if not files:
        raise ValueError(f"folder {spec.source} holds no .jsonl, .parquet or .arrow files")
    builder = TABLE_BUILDERS[files[0].suffix]
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)
        columns = ds.column_names or list(next(iter(ds)).keys())
    except StopIteration:
        raise ValueError(f"corpus {spec.source} has no rows") from None
    except Exception as e:              # the library's parse errors name the file and the line
        raise ValueError(f"corpus {spec.source} could not be read as {builder}: {type(e).__name__}: {e}") from None
    if spec.text_column not in columns:
        raise ValueError(f"corpus {spec.source} has no column {spec.text_column!r} (columns: {columns}); set "
                         f"data.text_column")
    for batch in ds.iter(batch_size=DOCS_PER_BATCH):
        for text in batch[spec.text_column]:
            if text is not None:
                if not isinstance(text, str):
                    raise ValueError(f"column {spec.text_column!r} of {spec.source} holds {type(text).__name__}, "
                                     "not text")
                yield text


# --- the token cache -------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """$DELTAMU_CACHE_DIR, else ~/.cache/deltamu."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "deltamu")


@dataclass(frozen=True)
class TokenFile:
    path: Path
    dtype: str
    count: int
    sha256: str
    vocab_size: int


def _cache_key(spec: DataSpec, tokenizer) -> str:
    return hashlib.sha256(f"{_source_fingerprint(spec)}:{tokenizer.fingerprint}".encode()).hexdigest()[:40]


def cached_tokens(spec: DataSpec, tokenizer) -> TokenFile | None:
    """The cache's token file of (corpus, tokenizer), if one was written."""
    return _cache_entry(cache_dir() / "tokens" / _cache_key(spec, tokenizer))


def _cache_entry(base: Path) -> TokenFile | None:
    meta, data = base.with_suffix(".json"), base.with_suffix(".tokens")
    if not data.exists():
        return None
    m = json.loads(meta.read_text())
    return TokenFile(data, m["dtype"], m["count"], m["sha256"], m["vocab_size"])


def tokenize_to_cache(spec: DataSpec, tokenizer, progress=None) -> TokenFile:
    """The corpus's token stream in the cache, tokenized now if no worker has done it yet. Documents are joined by
    the tokenizer's encoding of a newline (for bytes: the bytes joined by b"\\n", as the stream always was)."""
    folder = cache_dir() / "tokens"
    base = folder / _cache_key(spec, tokenizer)      # stats every source file: computed once
    found = _cache_entry(base)
    if found is not None:
        _mark_used(found.path)
        return found
    folder.mkdir(parents=True, exist_ok=True)
    dtype = tokenizer.dtype
    sep = tokenizer.encode_batch(["\n"])[0].astype(dtype)
    sha, count = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tokens-")
    try:
        with os.fdopen(fd, "wb") as out:
            batch: list[str] = []
            starts: list[bool] = []         # does batch[i] start a document (then a separator goes before it)
            chars = 0

            def flush():
                nonlocal count, chars
                for ids, first in zip(tokenizer.encode_batch(batch), starts):
                    for part in ((sep, ids) if count and first else (ids,)):
                        raw = np.ascontiguousarray(part, dtype=dtype.newbyteorder("<")).tobytes()
                        out.write(raw)
                        sha.update(raw)
                        count += len(part)
                if progress:
                    progress(sum(starts), count)
                batch.clear()
                starts.clear()
                chars = 0
            for doc in iter_documents(spec):
                for i, piece in enumerate(document_pieces(doc)):
                    batch.append(piece)
                    starts.append(i == 0)
                    chars += len(piece)
                    if len(batch) >= DOCS_PER_BATCH or chars >= BATCH_CHARS:
                        flush()
            flush()
        meta = {"dtype": dtype.name, "count": count, "sha256": sha.hexdigest(), "vocab_size": tokenizer.vocab_size,
                "source": spec.source, "tokenizer": tokenizer.name}
        fd_meta, tmp_meta = tempfile.mkstemp(dir=folder, prefix=".meta-")
        with os.fdopen(fd_meta, "w") as f:
            json.dump(meta, f)
        os.replace(tmp_meta, base.with_suffix(".json"))     # metadata first: a .tokens that exists is complete
        os.replace(tmp, base.with_suffix(".tokens"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return TokenFile(base.with_suffix(".tokens"), dtype.name, count, sha.hexdigest(), tokenizer.vocab_size)


def _mark_used(tokens: Path) -> None:
    """A cache entry's last use is its metadata's mtime (prune_cache drops the least recently used first)."""
    try:
        os.utime(tokens.with_suffix(".json"))
    except OSError:                  # a cache mounted read-only (the API's): its users do not count as uses
        pass


@dataclass(frozen=True)
class CacheEntry:
    tokens: Path                     # the ids; beside it <key>.json, the metadata
    source: str
    tokenizer: str
    count: int
    bytes: int
    last_used: float                 # unix time: written, or last read by a trial


def cache_entries() -> list[CacheEntry]:
    """The token cache's complete entries, least recently used first."""
    out = []
    for meta in (cache_dir() / "tokens").glob("*.json"):
        tokens = meta.with_suffix(".tokens")
        try:
            m, used, size = json.loads(meta.read_text()), meta.stat().st_mtime, tokens.stat().st_size
        except (OSError, ValueError):            # being written or removed right now
            continue
        out.append(CacheEntry(tokens, m.get("source", "?"), m.get("tokenizer", "?"), m["count"], size, used))
    return sorted(out, key=lambda e: e.last_used)


STALE_TEMPORARY_S = 86400     # a temporary this old is a dead worker's, not one being written


def prune_cache(*, older_than_s: float | None = None, max_bytes: int | None = None, dry_run: bool = False,
                now: float | None = None) -> list[CacheEntry]:
    """Remove the entries not used for older_than_s, then the least recently used until the rest fit max_bytes (a
    worker that needs one again tokenizes it again), and temporaries of dead workers; returns the entries removed.
    Each entry's ids go before its metadata, so an entry whose ids exist is always whole; a trial that has the ids
    mapped keeps reading them (the file lives until it is closed)."""
    now = time.time() if now is None else now
    entries = cache_entries()
    doomed = [e for e in entries if older_than_s is not None and now - e.last_used > older_than_s]
    if max_bytes is not None:
        kept = [e for e in entries if e not in doomed]
        total = sum(e.bytes for e in kept)
        for e in kept:                                           # least recently used first
            if total <= max_bytes:
                break
            doomed.append(e)
            total -= e.bytes
    if not dry_run:
        for e in doomed:
            e.tokens.unlink(missing_ok=True)
            e.tokens.with_suffix(".json").unlink(missing_ok=True)
        for tmp in (cache_dir() / "tokens").glob(".*-*"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                    tmp.unlink()
            except OSError:
                pass
    return doomed


def write_token_file(spec: DataSpec, tokenizer, out: Path) -> TokenFile:
    """The corpus's token stream (tokenize_to_cache) copied out to `out` as a raw .bin of little-endian ids, which
    trains with no tokenizer library and no text: --data out --vocab-size V. Written under a temporary name and
    renamed, so a .bin that exists is complete."""
    cached = tokenize_to_cache(spec, tokenizer)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.copyfile(cached.path, tmp)
    tmp.replace(out)
    return TokenFile(out, cached.dtype, cached.count, cached.sha256, cached.vocab_size)

# --- pre-tokenized files ---------------------------------------------------------------------------------------

def open_token_file(spec: DataSpec) -> np.ndarray:
    """A .bin or .npy of ids, memory-mapped read-only (never read whole)."""
    path = Path(spec.source)
    if not path.is_file():
        raise ValueError(f"data source {spec.source!r} does not exist")
    if spec.source.endswith(".npy"):
        try:
            tokens = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise ValueError(f"{path} is not a .npy array: {e}") from None
        if tokens.dtype not in (np.uint16, np.uint32) or tokens.ndim != 1:
            raise ValueError(f"{path} holds a {tokens.ndim}-d {tokens.dtype} array; token ids are a 1-d uint16 or "
                             "uint32 array")
        return tokens
    itemsize = np.dtype(spec.bin_dtype).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise ValueError(f"{path} has {size} bytes, not a whole number of {spec.bin_dtype} token ids")
    if size == 0:
        raise ValueError(f"{path} holds no tokens")
    return np.memmap(path, dtype=np.dtype(spec.bin_dtype).newbyteorder("<"), mode="r")


def scan_token_file(spec: DataSpec, tokens: np.ndarray) -> tuple[str, int]:
    """(sha256 of the ids, the largest id), one chunked pass; memoized by path, size and mtime."""
    st = os.stat(spec.source)
    key = (os.path.realpath(spec.source), st.st_size, st.st_mtime_ns)
    if key not in _SCANS:
        sha, top = hashlib.sha256(), 0
        for start in range(0, len(tokens), SCAN_TOKENS):
            chunk = tokens[start:start + SCAN_TOKENS]
            sha.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            top = max(top, int(chunk.max()))
        _SCANS[key] = sha.hexdigest(), top
    return _SCANS[key]


_SCANS: dict[tuple[str, int, int], tuple[str, int]] = {}


# --- what a job's corpus holds, cheaply -------------------------------------------------------------------------

def known_token_count(spec: DataSpec) -> int | None:
    """The corpus's tokens when they are known without reading it: the size of a pre-tokenized file, a byte-level
    text corpus's bytes (about: a folder's non-UTF-8 files, skipped when read, are counted), or a tokenized corpus
    already in the cache. None otherwise, or when the source cannot be read here."""
    try:
        if spec.pretokenized:
            return len(open_token_file(spec))
        from gdn.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(spec.tokenizer)
        found = cached_tokens(spec, tokenizer)
        if found is not None:
            return found.count
        if tokenizer.kind == "bytes" and source_kind(spec) != "table":
            files = source_files(spec)
            return sum(f.stat().st_size for f in files) + len(files) - 1
    except (OSError, ValueError, RuntimeError):
        return None
    return None


def known_train_tokens(spec: DataSpec) -> int | None:
    """The training split's tokens, when known_token_count knows the corpus's (memoized per process by the
    source's and the tokenizer's mtimes: the service asks for every job it shows). Not known is believed for
    UNKNOWN_RECHECK_SECONDS, then asked again: a worker may have cached the tokenized corpus since."""
    key = (spec, mtime_ns(spec.source), mtime_ns(spec.tokenizer))
    if key in _KNOWN_TRAIN_TOKENS:
        return _KNOWN_TRAIN_TOKENS[key]
    if time.monotonic() < _UNKNOWN_UNTIL.get(key, -math.inf):
        return None
    total = known_token_count(spec)
    if total is None:
        _UNKNOWN_UNTIL[key] = time.monotonic() + UNKNOWN_RECHECK_SECONDS
        return None
    _KNOWN_TRAIN_TOKENS[key] = train_token_count(total)
    return _KNOWN_TRAIN_TOKENS[key]


# A job page polls every 2 s, and each look for a count lists the corpus's files (and stats each); for a folder of
# many files that is real work, while the count only feeds a warning that can come this much later.
UNKNOWN_RECHECK_SECONDS = 30.0
_KNOWN_TRAIN_TOKENS: dict[tuple, int] = {}
_UNKNOWN_UNTIL: dict[tuple, float] = {}


def mtime_ns(path: str) -> int:
    """A file's modification time for a cache key (-1: no such file, or a name such as "builtin" / "bytes")."""
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, ValueError):
        return -1


def vocab_of(spec: DataSpec) -> int:
    """The corpus's vocabulary: a pre-tokenized file's stated vocab_size, else its tokenizer's (read from the
    tokenizer's file; a stated data.vocab_size must agree)."""
    if spec.pretokenized:
        return spec.vocab_size
    from gdn.tokenizer import load_tokenizer
    vocab = load_tokenizer(spec.tokenizer).vocab_size
    if spec.vocab_size is not None and spec.vocab_size != vocab:
        raise ValueError(f"data.vocab_size {spec.vocab_size} differs from tokenizer {spec.tokenizer!r}'s {vocab}")
    return vocab


def train_token_count(total: int) -> int:
    """Tokens of the training split of a stream of `total` tokens."""
    return len(SplitView(_Sized(total), val=False))


class _Sized:
    """A stand-in stream of a given length (SplitView needs only len() to size the split)."""
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n
