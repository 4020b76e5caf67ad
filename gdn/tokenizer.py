"""Tokenizers a job can name (DataSpec.tokenizer), all local and offline: "bytes" (byte-level, vocab 256), a
`tokenizer.json` of the `tokenizers` library, or a tiktoken-format BPE file (one "base64-token rank" per line,
loaded from the path with tiktoken, nothing downloaded). And `train_bpe`, the byte-level BPE behind
`deltamu tokenizer train`. No torch: the service reads a tokenizer's vocabulary when it accepts a job.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from gdn.spec import BYTE_VOCAB, BYTES_TOKENIZER

# tiktoken needs the pre-tokenizer's split pattern besides the ranks; a .tiktoken file does not hold it. This is the
# usual GPT-4-style split (contractions, letter runs, 1-3 digit runs, punctuation runs, whitespace).
TIKTOKEN_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                    r"""\s*[\r\n]|\s+(?!\S)|\s+""")
HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Tokenizer:
    name: str                   # "bytes", or the file's path
    kind: str                   # bytes | hf | tiktoken
    vocab_size: int
    fingerprint: str            # sha256 of the kind and the file's bytes: the token cache's key
    encode_batch: Callable[[Sequence[str]], list[np.ndarray]]
    decode_ids: Callable[[list[int]], str]

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned type that holds every id."""
        return np.dtype(np.uint8 if self.vocab_size <= 1 << 8 else np.uint16 if self.vocab_size <= 1 << 16
                        else np.uint32)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file read in chunks: memory does not grow with the file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _encode_bytes(texts: Sequence[str]) -> list[np.ndarray]:
    return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]


def _decode_bytes(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


BYTES = Tokenizer(BYTES_TOKENIZER, "bytes", BYTE_VOCAB, hashlib.sha256(b"bytes").hexdigest(), _encode_bytes,
                  _decode_bytes)


def tokenizer_kind(name: str) -> str:
    """bytes | hf (a .json) | tiktoken (any other file)."""
    return "bytes" if name == BYTES_TOKENIZER else "hf" if name.endswith(".json") else "tiktoken"


def load_tokenizer(name: str) -> Tokenizer:
    """The tokenizer a DataSpec names (cached per process by path, size and mtime)."""
    if name == BYTES_TOKENIZER:
        return BYTES
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"tokenizer {name!r} is neither 'bytes' nor an existing file")
    st = path.stat()
    return _load_file(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_file(name: str, _size: int, _mtime_ns: int) -> Tokenizer:
    kind = tokenizer_kind(name)
    fingerprint = hashlib.sha256(kind.encode() + bytes.fromhex(file_sha256(Path(name)))).hexdigest()
    if kind == "hf":
        from tokenizers import Tokenizer as HFTokenizer
        try:
            tok = HFTokenizer.from_file(name)
        except Exception as e:           # the library's own error names what is wrong in the file
            raise ValueError(f"tokenizer {name!r} is not a tokenizer.json the tokenizers library reads: {e}") from None

        def encode_hf(texts):
            return [np.asarray(e.ids, dtype=np.uint32) for e in tok.encode_batch(list(texts), add_special_tokens=False)]
        return Tokenizer(name, kind, tok.get_vocab_size(with_added_tokens=True), fingerprint, encode_hf, tok.decode)
    enc = _tiktoken_encoding(name)

    def encode_tiktoken(texts):
        return [np.asarray(ids, dtype=np.uint32) for ids in enc.encode_ordinary_batch(list(texts))]
    return Tokenizer(name, kind, enc.n_vocab, fingerprint, encode_tiktoken, enc.decode)


def _tiktoken_encoding(name: str):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    try:
        ranks = load_tiktoken_bpe(name)          # a local path: read from disk, no download and no hash check
    except Exception as e:
        raise ValueError(f"tokenizer {name!r} is not a tiktoken BPE file (base64 token, space, rank per line): "
                         f"{type(e).__name__}: {e}") from None
    if not ranks:
        raise ValueError(f"tokenizer {name!r} holds no tokens")
    return tiktoken.Encoding(name=Path(name).stem, pat_str=TIKTOKEN_PATTERN, mergeable_ranks=ranks,
                             special_tokens={})


def decode(name: str, ids) -> str:
    """Token ids back to text (for checks and examples), with the tokenizer load_tokenizer caches."""
    return load_tokenizer(name).decode_ids([int(i) for i in ids])


def train_bpe(texts: Iterable[str], vocab_size: int, out: Path, show_progress: bool = True,
              length: int | None = None) -> int:
    """Train a byte-level BPE on `texts` (every byte is in its alphabet, so any text encodes) and write its
    tokenizer.json atomically. Returns the vocabulary size reached (smaller than asked on a small corpus)."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet):
        raise ValueError(f"--vocab must be at least {len(alphabet)} (the byte alphabet), got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=show_progress,
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer, length=length)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tok.save(str(tmp))
    os.replace(tmp, out)
    return tok.get_vocab_size()
