"""Corpora -> deterministic (x, y) batches.

Sources (gdn.corpus reads them; DataSpec names them):
- "builtin": the source files of the running Python's standard library, in sorted order. Present on any machine
  with Python, no download; it differs between Python versions, so every result records its sha256.
- a UTF-8 text file, or a folder of them (read recursively, sorted; files that are not UTF-8 are skipped).
- a .jsonl / .parquet / .arrow file (or a folder of only such files) with a text column, read with `datasets`.
- pre-tokenized ids: a raw .bin (uint16 or uint32) or a .npy, memory-mapped, with its vocab size stated.
Text is tokenized by the job's tokenizer (gdn.tokenizer: bytes by default) into gdn.corpus's cache, then
memory-mapped like pre-tokenized ids: a worker's memory does not grow with the corpus.

The token stream is cut into blocks; every VAL_EVERY-th block is held back for validation, the rest is training
data (index maps over the stream, no copy). Training batch `step` of seed `s` is a pure function of (s, step); the
validation slice depends on nothing.
"""
from __future__ import annotations

import functools
import sysconfig
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from gdn.corpus import (BLOCK, MIN_BLOCKS, VAL_EVERY, SplitView, mtime_ns, open_token_file, scan_token_file,
                        split_views, stdlib_files, tokenize_to_cache, vocab_of)
from gdn.spec import DataSpec
from gdn.tokenizer import load_tokenizer

__all__ = ["BLOCK", "MIN_BLOCKS", "VAL_EVERY", "Corpus", "decode", "encode", "load_corpus", "stdlib_files"]


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def decode(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


@dataclass
class Corpus:
    train: SplitView
    val: SplitView
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


def _windows(stream: SplitView, starts: np.ndarray, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = torch.from_numpy(stream[idx].astype(np.int64)).to(device)   # (B, T + 1)
    return w[:, :-1], w[:, 1:]


def load_corpus(spec: DataSpec, seq_len: int = 0) -> Corpus:
    """Load (cached per process) and split a corpus. `seq_len` only checks that both splits hold a window."""
    key = (spec, mtime_ns(spec.source), mtime_ns(spec.tokenizer))
    corpus = _load(key)
    for split in ("train", "val"):
        if len(getattr(corpus, split)) < seq_len + 2:
            raise ValueError(f"corpus {corpus.description}: the {split} split has {len(getattr(corpus, split))} "
                             f"tokens, fewer than one window of seq_len {seq_len}")
    return corpus


@functools.lru_cache(maxsize=4)
def _load(key) -> Corpus:
    spec: DataSpec = key[0]
    if spec.pretokenized:
        tokens = open_token_file(spec)
        sha, top = scan_token_file(spec, tokens)
        if top >= spec.vocab_size:
            raise ValueError(f"{spec.source} holds token id {top} >= vocab_size {spec.vocab_size}")
        vocab_size, description = spec.vocab_size, f"tokens: {spec.source}"
    else:
        vocab_size = vocab_of(spec)              # a stated data.vocab_size must be the tokenizer's
        cached = tokenize_to_cache(spec, load_tokenizer(spec.tokenizer))
        tokens = np.memmap(cached.path, dtype=np.dtype(cached.dtype).newbyteorder("<"), mode="r") if cached.count \
            else np.zeros(0, dtype=cached.dtype)
        sha = cached.sha256
        what = (f"builtin: Python {sysconfig.get_python_version()} standard library" if spec.source == "builtin"
                else f"text: {spec.source}")
        description = what if spec.tokenizer == "bytes" else f"{what}, tokenizer {spec.tokenizer}"
    train, val = split_views(tokens)
    return Corpus(train=train, val=val, vocab_size=vocab_size, sha256=sha, description=description)
