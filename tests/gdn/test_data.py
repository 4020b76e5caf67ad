"""Corpora: fingerprinted, split deterministically, batched as a pure function of (seed, step)."""
import numpy as np
import pytest
import torch

from gdn.spec import DataSpec
from gdn.corpus import BLOCK, MIN_BLOCKS, VAL_EVERY, split_views
from gdn.data import decode, encode, load_corpus, stdlib_files


def test_builtin_corpus_is_fingerprinted_and_split():
    corpus = load_corpus(DataSpec())
    assert len(corpus.sha256) == 64 and corpus.vocab_size == 256
    assert len(corpus.train) > 1_000_000 and len(corpus.val) > 10_000
    assert 0.01 < len(corpus.val) / (len(corpus.train) + len(corpus.val)) < 0.06
    files = stdlib_files()
    assert files and all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)


def copied_split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The split as it was first written, by concatenating blocks: the reference of the index maps."""
    block = min(BLOCK, max(1, len(tokens) // MIN_BLOCKS))
    n_blocks = -(-len(tokens) // block)
    is_val = (np.arange(n_blocks) % VAL_EVERY) == VAL_EVERY // 2
    blocks = [tokens[i * block:(i + 1) * block] for i in range(n_blocks)]
    pick = lambda v: np.concatenate([b for b, x in zip(blocks, is_val) if x == v] or [tokens[:0]])   # noqa: E731
    return pick(False), pick(True)


@pytest.mark.parametrize("n", [1, 5, 128, 129, 2100, 10_000, 16 * 4096 + 7, 33 * BLOCK * 4 + 5, 144 * BLOCK + 3])
def test_split_views_are_the_copied_split_without_a_copy(n):
    """Index maps over the stream give the tokens the concatenated blocks gave, for every length (short last block
    in training or in validation), so batches and results did not change; they are a partition in order."""
    tokens = np.arange(n, dtype=np.uint32)
    train, val = split_views(tokens)
    ref_train, ref_val = copied_split(tokens)
    assert (len(train), len(val)) == (len(ref_train), len(ref_val))
    assert np.array_equal(train[np.arange(len(train))], ref_train)
    assert np.array_equal(val[np.arange(len(val))], ref_val)
    assert np.array_equal(np.sort(np.concatenate([ref_train, ref_val])), tokens)


def test_batches_are_a_pure_function_of_seed_and_step():
    corpus = load_corpus(DataSpec())
    x1, y1 = corpus.batch(5, seed=1, batch_size=4, seq_len=32)
    x2, _ = corpus.batch(5, seed=1, batch_size=4, seq_len=32)
    x3, _ = corpus.batch(6, seed=1, batch_size=4, seq_len=32)
    x4, _ = corpus.batch(5, seed=2, batch_size=4, seq_len=32)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert torch.equal(x1[:, 1:], y1[:, :-1]) and x1.dtype == torch.int64
    v1 = corpus.val_batches(2, 4, 32)
    v2 = corpus.val_batches(2, 4, 32)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(v1, v2))


def test_validation_batches_are_streamed():
    """One batch at a time (10,000 batches of 512 x 4096 tokens held at once would need ~336 GB), the same
    windows in the same order as slicing the evenly spaced starts."""
    import types
    corpus = load_corpus(DataSpec())
    stream = corpus.val_batches(3, 4, 32)
    assert isinstance(stream, types.GeneratorType)
    batches = list(stream)
    starts = np.linspace(0, len(corpus.val) - 32 - 1, 12).astype(np.int64)
    assert len(batches) == 3
    for i, (x, y) in enumerate(batches):
        assert torch.equal(x[:, 0], torch.from_numpy(corpus.val[starts[4 * i:4 * i + 4]].astype(np.int64)))
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_text_file_folder_and_bin(tmp_path):
    text = "héllo wörld, " * 2000
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(DataSpec(str(tmp_path / "a.txt")), seq_len=16)
    assert decode(encode("héllo")) == "héllo"
    assert len(corpus.train) + len(corpus.val) == len(text.encode())
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "1.md").write_text("alpha " * 500)
    (folder / "2.bin.dat").write_bytes(b"\xff\xfe\x00\x81" * 100)  # not UTF-8: skipped
    assert load_corpus(DataSpec(str(folder)), seq_len=8).vocab_size == 256
    ids = np.random.default_rng().integers(0, 1000, 50_000).astype(np.uint16)
    ids.tofile(tmp_path / "tok.bin")
    corpus = load_corpus(DataSpec(str(tmp_path / "tok.bin"), vocab_size=1000), seq_len=16)
    assert corpus.vocab_size == 1000 and int(corpus.train[np.arange(len(corpus.train))].max()) < 1000


def test_bad_sources_are_clear_errors(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(DataSpec(str(tmp_path / "bad.txt")))
    with pytest.raises(ValueError, match="does not exist"):
        load_corpus(DataSpec(str(tmp_path / "missing.txt")))
    np.array([5, 7000], dtype=np.uint16).tofile(tmp_path / "t.bin")
    with pytest.raises(ValueError, match="vocab_size"):
        load_corpus(DataSpec(str(tmp_path / "t.bin"), vocab_size=1000))
    with pytest.raises(ValueError, match="needs its vocab_size"):
        DataSpec(str(tmp_path / "t.bin"))
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(ValueError, match="fewer than one window"):
        load_corpus(DataSpec(str(tmp_path / "short.txt")), seq_len=128)
