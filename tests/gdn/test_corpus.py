"""Bring your own data and tokenizer: memory-mapped token files (uint16 and uint32, .bin and .npy) whose loading
does not grow with their size, JSONL / Parquet tables through `datasets`, tokenizer.json and tiktoken files, the
token cache keyed by (corpus, tokenizer), and `deltamu tokenizer train`."""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
import types

import numpy as np
import pytest

from gdn import corpus as corpus_mod
from gdn.corpus import cache_dir, known_train_tokens, tokenize_to_cache, vocab_of
from gdn.data import load_corpus
from gdn.spec import DataSpec
from gdn.tokenizer import decode, load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = "gated delta rule state decay write read key value query head chunk width learning rate the of".split()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAMU_CACHE_DIR", str(tmp_path / "cache"))


def some_text(n_lines: int = 2000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "\n".join(" ".join(rng.choice(WORDS, 10)) for _ in range(n_lines))


def train_tokenizer(data: str, out, vocab: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gdn", "tokenizer", "train", "--vocab", str(vocab), data,
                           "-o", str(out), "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300)


def load_peak_bytes(spec: DataSpec) -> int:
    """Peak Python/numpy allocation while loading a corpus and drawing a batch from each split."""
    tracemalloc.start()
    try:
        corpus = load_corpus(spec, seq_len=64)
        corpus.batch(0, seed=0, batch_size=8, seq_len=64)
        next(corpus.val_batches(1, 8, 64))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_uint32_bin_over_65535_loads_memory_mapped_with_flat_peak_memory(tmp_path):
    """A 20 MB and an 80 MB uint32 file of ids up to 150,000: loading (the fingerprint pass, the max check, the
    split) and batching allocate the same few MB, not the file (the old loader held about 3x the file)."""
    vocab = 150_000
    peaks = {}
    for mb in (20, 80):
        ids = np.random.default_rng(mb).integers(0, vocab, mb * 2**20 // 4, dtype=np.uint32)
        ids[123] = vocab - 1
        path = tmp_path / f"ids{mb}.bin"
        ids.tofile(path)
        sha = hashlib.sha256(ids.tobytes()).hexdigest()
        del ids
        spec = DataSpec(str(path), vocab_size=vocab)
        assert spec.bin_dtype == "uint32"
        peaks[mb] = load_peak_bytes(spec)
        corpus = load_corpus(spec)
        assert corpus.vocab_size == vocab and corpus.sha256 == sha
        assert isinstance(corpus.train.tokens, np.memmap)
        x, _ = corpus.batch(3, seed=1, batch_size=4, seq_len=16)
        assert int(x.max()) < vocab and x.dtype.is_floating_point is False
    assert max(peaks.values()) < 2**20, peaks                      # measured ~40 KB: no part of a file is copied
    assert peaks[80] < peaks[20] + 2**18, peaks                    # 4x the file, not more memory


def test_npy_and_uint16_bin_and_their_errors(tmp_path):
    ids = np.random.default_rng(0).integers(0, 70_000, 40_000, dtype=np.uint32)
    np.save(tmp_path / "ids.npy", ids)
    corpus = load_corpus(DataSpec(str(tmp_path / "ids.npy"), vocab_size=70_000), seq_len=16)
    assert corpus.sha256 == hashlib.sha256(ids.tobytes()).hexdigest()
    assert len(corpus.train) + len(corpus.val) == len(ids)
    small = ids.astype(np.uint16) % 1000
    small.tofile(tmp_path / "ids16.bin")
    assert load_corpus(DataSpec(str(tmp_path / "ids16.bin"), vocab_size=1000)).sha256 == \
        hashlib.sha256(small.tobytes()).hexdigest()
    np.save(tmp_path / "f.npy", ids.astype(np.float32))
    with pytest.raises(ValueError, match="uint16 or uint32"):
        load_corpus(DataSpec(str(tmp_path / "f.npy"), vocab_size=10))
    with pytest.raises(ValueError, match="token id 69"):
        load_corpus(DataSpec(str(tmp_path / "ids.npy"), vocab_size=60_000))
    with pytest.raises(ValueError, match="use uint32"):
        DataSpec(str(tmp_path / "ids16.bin"), vocab_size=70_000, token_dtype="uint16")
    with pytest.raises(ValueError, match="takes no tokenizer"):
        DataSpec(str(tmp_path / "ids.npy"), vocab_size=70_000, tokenizer="tok.json")


def test_jsonl_and_parquet_corpora_read_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"id": i, "body": some_text(20, seed=i)} for i in range(60)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    expected = "\n".join(r["body"] for r in rows).encode()
    for name in ("c.jsonl", "c.parquet"):
        corpus = load_corpus(DataSpec(str(tmp_path / name), text_column="body"), seq_len=32)
        assert corpus.sha256 == hashlib.sha256(expected).hexdigest(), name     # the rows' text, in order
        assert corpus.vocab_size == 256
    folder = tmp_path / "shards"
    folder.mkdir()
    for k in range(2):
        pq.write_table(pa.Table.from_pylist(rows[30 * k:30 * (k + 1)]), folder / f"part-{k}.parquet")
    assert load_corpus(DataSpec(str(folder), text_column="body")).sha256 == hashlib.sha256(expected).hexdigest()
    with pytest.raises(ValueError, match="no column 'text'"):
        load_corpus(DataSpec(str(tmp_path / "c.jsonl")))
    (folder / "README.json").write_text('{"not": "a shard"}')       # a folder that is not only tables is text
    assert corpus_mod.source_kind(DataSpec(str(folder))) == "text"


def test_tokenizer_train_then_a_corpus_tokenized_once_and_cached(tmp_path, monkeypatch):
    text = tmp_path / "small.txt"
    text.write_text(some_text())
    tok = tmp_path / "tok.json"
    r = train_tokenizer(str(text), tok)
    assert r.returncode == 0, r.stderr
    assert "vocab 300" in r.stdout and load_tokenizer(str(tok)).vocab_size == 300
    spec = DataSpec(str(text), tokenizer=str(tok))
    assert vocab_of(spec) == 300
    corpus = load_corpus(spec, seq_len=32)
    assert corpus.vocab_size == 300 and len(corpus.train) < len(text.read_bytes()) / 2     # merges compress
    n = len(corpus.train) + len(corpus.val)
    ids = corpus.train[np.arange(200)]
    assert int(ids.max()) >= 256 and decode(str(tok), ids) in text.read_text()
    assert known_train_tokens(spec) == len(corpus.train)           # from the cache's metadata, nothing read
    files = sorted(p.name for p in (cache_dir() / "tokens").iterdir())
    assert len(files) == 2 and not any(f.startswith(".") for f in files)          # no temporary left behind

    def no_reading(_spec):
        raise AssertionError("the corpus was read again")
    monkeypatch.setattr(corpus_mod, "iter_documents", no_reading)
    again = tokenize_to_cache(spec, load_tokenizer(str(tok)))       # a second job: a cache hit
    assert again.count == n and again.sha256 == corpus.sha256
    text.write_text(some_text(seed=1))                              # another corpus: another key
    with pytest.raises(AssertionError, match="read again"):
        tokenize_to_cache(spec, load_tokenizer(str(tok)))


def test_builtin_corpus_trains_a_tokenizer(tmp_path):
    r = train_tokenizer("builtin", tmp_path / "b.json", vocab=260)
    assert r.returncode == 0 and load_tokenizer(str(tmp_path / "b.json")).vocab_size == 260, r.stderr


def test_a_tiktoken_file_is_loaded_from_its_path(tmp_path):
    """A tiktoken BPE file (base64 token, rank): the 256 bytes and a few merges; read from disk, no download."""
    tokens = [bytes([b]) for b in range(256)] + [b"ga", b"te", b"gate", b" d"]
    path = tmp_path / "mini.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    tok = load_tokenizer(str(path))
    assert tok.kind == "tiktoken" and tok.vocab_size == 260
    (ids,) = tok.encode_batch(["gate delta"])
    assert 258 in ids.tolist() or 259 in ids.tolist()
    assert decode(str(path), ids) == "gate delta"
    (tmp_path / "c.txt").write_text(some_text(500))
    assert load_corpus(DataSpec(str(tmp_path / "c.txt"), tokenizer=str(path)), seq_len=16).vocab_size == 260


def test_bad_tokenizers_are_clear_errors(tmp_path):
    (tmp_path / "c.txt").write_text(some_text(300))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        vocab_of(DataSpec(str(tmp_path / "c.txt"), tokenizer=str(tmp_path / "bad.json")))
    with pytest.raises(ValueError, match="neither 'bytes' nor an existing file"):
        vocab_of(DataSpec(str(tmp_path / "c.txt"), tokenizer=str(tmp_path / "none.json")))
    (tmp_path / "bad.tiktoken").write_text("not base64 at all\n")
    with pytest.raises(ValueError, match="tiktoken"):
        vocab_of(DataSpec(str(tmp_path / "c.txt"), tokenizer=str(tmp_path / "bad.tiktoken")))
    with pytest.raises(ValueError, match="byte-level"):
        DataSpec(str(tmp_path / "c.txt"), vocab_size=300)


def test_an_unknown_token_count_is_believed_for_a_while_then_asked_again(tmp_path, monkeypatch):
    text = tmp_path / "a.txt"
    text.write_text("hello\n")
    spec = DataSpec(str(text), tokenizer=str(tmp_path / "not-trained-yet.json"))     # no count without it
    asked, real = [], corpus_mod.known_token_count
    monkeypatch.setattr(corpus_mod, "known_token_count", lambda s: asked.append(s) or real(s))
    clock = [1000.0]
    monkeypatch.setattr(corpus_mod, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    assert known_train_tokens(spec) is None and known_train_tokens(spec) is None and len(asked) == 1
    clock[0] += corpus_mod.UNKNOWN_RECHECK_SECONDS + 1
    assert known_train_tokens(spec) is None and len(asked) == 2


def test_a_long_document_tokenized_in_pieces_gives_the_ids_of_it_whole(tmp_path, monkeypatch):
    lines = some_text(400).split("\n")
    for i in range(0, len(lines), 7):          # the cuts' hard neighbours: indents, blank lines, trailing spaces
        lines[i] = ["  " + lines[i], "", lines[i] + "  ", lines[i] + ".", "\t" + lines[i]][i % 5]
    text = tmp_path / "one-file.txt"
    text.write_text("\n".join(lines))
    tok = tmp_path / "tok.json"
    assert train_tokenizer(str(text), tok).returncode == 0
    pieces = list(corpus_mod.document_pieces(text.read_text(), 100))
    assert "".join(pieces) == text.read_text() and len(pieces) > 50
    assert all(len(p) >= 100 and p.endswith("\n") and not p[-2].isspace() for p in pieces[:-1])

    def ids(piece_chars: int, cache: str) -> np.ndarray:
        monkeypatch.setattr(corpus_mod, "PIECE_CHARS", piece_chars)
        monkeypatch.setenv("DELTAMU_CACHE_DIR", str(tmp_path / cache))
        found = tokenize_to_cache(DataSpec(str(text), tokenizer=str(tok)), load_tokenizer(str(tok)))
        return np.fromfile(found.path, dtype=found.dtype)
    whole, in_pieces = ids(1 << 30, "whole"), ids(100, "pieces")
    assert len(whole) > 1000 and np.array_equal(whole, in_pieces)


def test_the_token_cache_is_listed_and_pruned_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAMU_CACHE_DIR", str(tmp_path / "cache"))
    files = []
    for name, size in (("old.txt", 3000), ("used.txt", 2000), ("new.txt", 1000)):
        (tmp_path / name).write_text("x" * size)
        files.append(tokenize_to_cache(DataSpec(str(tmp_path / name)), load_tokenizer("bytes")).path)
    now = 1_000_000_000.0
    for path, days_ago in zip(files, (30, 20, 1)):
        os.utime(path.with_suffix(".json"), (now - days_ago * 86400,) * 2)
    stale = cache_dir() / "tokens" / ".tokens-dead"                  # a dead worker's temporary
    stale.write_bytes(b"x")
    os.utime(stale, (now - 2 * 86400,) * 2)
    # reading an entry for a trial is a use: "used" becomes the most recent
    assert tokenize_to_cache(DataSpec(str(tmp_path / "used.txt")), load_tokenizer("bytes")).path == files[1]
    assert [e.tokens for e in corpus_mod.cache_entries()] == [files[0], files[2], files[1]]

    assert [e.tokens for e in corpus_mod.prune_cache(older_than_s=10 * 86400, dry_run=True, now=now)] == [files[0]]
    assert [e.tokens for e in corpus_mod.prune_cache(max_bytes=2999, dry_run=True, now=now)] == [files[0], files[2]]
    assert files[0].exists() and stale.exists()                                       # a dry run removes nothing
    r = subprocess.run([sys.executable, "-m", "gdn", "cache", "prune", "--older-than", "10", "--max-size", "2.5K"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert r.returncode == 0, r.stderr
    assert "removed 2 entries" in r.stdout and "1 left" in r.stdout     # today, "new" (2001) is old too
    left = [e.tokens for e in corpus_mod.cache_entries()]
    assert files[0] not in left and files[1] in left and not files[0].with_suffix(".json").exists()
    assert sum(e.bytes for e in corpus_mod.cache_entries()) <= 2560 and not stale.exists()
    listing = subprocess.run([sys.executable, "-m", "gdn", "cache", "list"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0 and "used.txt" in listing.stdout and "old.txt" not in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "gdn", "cache", "prune"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--older-than DAYS and/or --max-size SIZE" in bad.stderr
