"""Corpora and the byte-level tokenizer -> deterministic (x, y) batches.

Sources:
- "builtin": the source files of the running Python's standard library, in sorted order. Present on any machine
  with Python, no download; it differs between Python versions, so every result records its sha256.
- a UTF-8 text file, or a folder of them (read recursively, sorted; files that are not UTF-8 are skipped).
- a ".bin" file of uint16 token ids, with its vocab size stated.

The token stream is cut into blocks; every VAL_EVERY-th block is held back for validation, the rest is training
data. Training batch `step` of seed `s` is a pure function of (s, step); the validation slice depends on nothing.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from gdn.spec import BYTE_VOCAB, DataSpec

BLOCK = 1 << 16          # tokens per split block
VAL_EVERY = 32           # one block in 32 (about 3 %) is validation
MIN_BLOCKS = 4 * VAL_EVERY  # smaller corpora are cut into this many blocks


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def decode(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


@dataclass
class Corpus:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    sha256: str                 # fingerprint of the whole token stream, before the split
    description: str

    def batch(self, step: int, seed: int, batch_size: int, seq_len: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch number `step` for data seed `seed`: x, y (B, T) int64, y = x shifted by one."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step])))
        starts = rng.integers(0, len(self.train) - seq_len - 1, size=batch_size)
        return _windows(self.train, starts, seq_len, device)

    def val_batches(self, num_batches: int, batch_size: int, seq_len: int,
                    device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed held-back slice: num_batches * batch_size windows evenly spaced over the validation stream,
        yielded one batch at a time (only the starts are held: num_batches may be large)."""
        n = num_batches * batch_size
        starts = np.linspace(0, len(self.val) - seq_len - 1, n).astype(np.int64)
        for i in range(num_batches):
            yield _windows(self.val, starts[i * batch_size:(i + 1) * batch_size], seq_len, device)


def _windows(stream: np.ndarray, starts: np.ndarray, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = torch.from_numpy(stream[idx].astype(np.int64)).to(device)   # (B, T + 1)
    return w[:, :-1], w[:, 1:]


def load_corpus(spec: DataSpec, seq_len: int = 0) -> Corpus:
    """Load (cached per process) and split a corpus. `seq_len` only checks that both splits hold a window."""
    key = (spec.source, spec.vocab_size, _mtime(spec.source))
    corpus = _load(key)
    for split in ("train", "val"):
        if len(getattr(corpus, split)) < seq_len + 2:
            raise ValueError(f"corpus {corpus.description}: the {split} split has {len(getattr(corpus, split))} "
                             f"tokens, fewer than one window of seq_len {seq_len}")
    return corpus


def _mtime(source: str) -> float:
    return 0.0 if source == "builtin" else os.path.getmtime(source) if os.path.exists(source) else -1.0


@functools.lru_cache(maxsize=4)
def _load(key) -> Corpus:
    source, vocab_size, _ = key
    if source == "builtin":
        tokens, description = _stdlib_tokens(), f"builtin: Python {sysconfig.get_python_version()} standard library"
        vocab_size = BYTE_VOCAB
    elif source.endswith(".bin"):
        tokens, description = _bin_tokens(Path(source), vocab_size), f"tokens: {source}"
    else:
        tokens, description = _text_tokens(Path(source)), f"text: {source}"
        vocab_size = BYTE_VOCAB
    sha = hashlib.sha256(tokens.tobytes()).hexdigest()
    train, val = split(tokens)
    return Corpus(train=train, val=val, vocab_size=vocab_size, sha256=sha, description=description)


def split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every VAL_EVERY-th block goes to validation (the middle one of each group, so both ends train)."""
    block = min(BLOCK, max(1, len(tokens) // MIN_BLOCKS))
    n_blocks = -(-len(tokens) // block)
    is_val = (np.arange(n_blocks) % VAL_EVERY) == VAL_EVERY // 2
    blocks = [tokens[i * block:(i + 1) * block] for i in range(n_blocks)]
    train = [b for b, v in zip(blocks, is_val) if not v]
    val = [b for b, v in zip(blocks, is_val) if v]
    empty = tokens[:0]
    return (np.concatenate(train) if train else empty), (np.concatenate(val) if val else empty)


def stdlib_files() -> list[Path]:
    """The standard library's own .py files (no site-packages, no test suites), sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _stdlib_tokens() -> np.ndarray:
    parts = [p.read_bytes() for p in stdlib_files()]
    if not parts:
        raise RuntimeError("found no standard-library sources for the builtin corpus")
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8)


def _text_tokens(path: Path) -> np.ndarray:
    if not path.exists():
        raise ValueError(f"data source {str(path)!r} does not exist")
    if path.is_file():
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        parts = [data]
    else:
        parts = []
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            data = p.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            parts.append(data)
        if not parts:
            raise ValueError(f"folder {path} holds no UTF-8 text files")
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8)


def _bin_tokens(path: Path, vocab_size: int) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"data source {str(path)!r} does not exist")
    if path.stat().st_size % 2:
        raise ValueError(f"{path} has an odd number of bytes: not a uint16 token file")
    tokens = np.fromfile(path, dtype=np.uint16)
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise ValueError(f"{path} holds token id {int(tokens.max())} >= vocab_size {vocab_size}")
    return tokens
