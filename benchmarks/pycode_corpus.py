"""A corpus of Python source larger than `builtin`, for the transfer study at a BPE vocabulary (docs/transfer.md,
issue 18): at 32k tokens `builtin` holds 2.9M tokens, so a 1000-step GPU trial (4.1M tokens) would repeat it; this
one keeps a trial under one epoch.

    python3 benchmarks/pycode_corpus.py -o pycode.txt        # the standard library + the packages below, one file
    python3 benchmarks/pycode_corpus.py -o .out/data/pycode.txt --vocab 32768 --bin .out/data/pycode-32k.bin

The standard library's files as `builtin` takes them (gdn.corpus.stdlib_files), then each package's .py files
(no test folders), sorted by path; files that are not UTF-8 are skipped. What it holds depends on the installed
versions, so the file's sha256 is printed, and the tokenized .bin carries its own fingerprint into every result.

With --vocab and --bin it also does what `deltamu tokenizer train` and `deltamu tokenizer encode` do, with the same
functions: a byte-level BPE trained on the whole file (written beside the .bin, as .json), then the file's ids as a
raw .bin, which the study loads with numpy alone. Same text, same tokenizer, same .bin: the sha256 of each is printed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdn.corpus import python_files, stdlib_files  # noqa: E402

# Sized for the study at 32k (docs/transfer.md): with these, 25.7 MB of text are 6.2M tokens at a 32k BPE, so a
# 1000-step GPU trial (seq 512 x batch 8: 4.1M tokens) sees 0.68 of the training split, and the .bin (12.4 MB) is
# small enough to travel to the card beside other files. Adding sqlalchemy, matplotlib and transformers gives 93 MB
# of text, 22.6M tokens and a 45 MB .bin, for no change in the regime (under one epoch either way).
PACKAGES = ("numpy", "pandas")
SKIP_DIRS = {"test", "tests", "testing", "__pycache__"}


def package_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"pycode_corpus: package {name!r} is not installed")
    return python_files(Path(spec.origin).parent, SKIP_DIRS)


def write_corpus(files: list[Path], out: Path) -> tuple[int, int, str]:
    """The UTF-8 files, each followed by a newline, into one file: (files used, bytes, sha256)."""
    digest, size, used = hashlib.sha256(), 0, 0
    with open(out, "wb") as f:
        for path in files:
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            chunk = data + b"\n"
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            used += 1
    return used, size, digest.hexdigest()


def tokenize(text: Path, vocab: int, out_bin: Path) -> None:
    """Train a byte-level BPE on the text (as `deltamu tokenizer train`) and write the text's ids (as `deltamu
    tokenizer encode`); the tokenizer.json goes beside the .bin."""
    from gdn.corpus import iter_documents, open_token_file, scan_token_file, train_token_count, write_token_file
    from gdn.spec import DataSpec
    from gdn.tokenizer import file_sha256, load_tokenizer, train_bpe

    tokenizer_path = out_bin.with_suffix(".json")
    reached = train_bpe(iter_documents(DataSpec(str(text))), vocab, tokenizer_path, show_progress=False)
    if reached != vocab:
        raise SystemExit(f"pycode_corpus: the BPE reached vocab {reached}, not {vocab}: the corpus is too small")
    print(f"{tokenizer_path}: byte-level BPE, vocab {reached}, sha256 {file_sha256(tokenizer_path)}")
    tokenizer = load_tokenizer(str(tokenizer_path))
    ids = write_token_file(DataSpec(str(text), tokenizer=str(tokenizer_path)), tokenizer, out_bin)
    as_data = DataSpec(str(out_bin), ids.vocab_size, token_dtype=ids.dtype)       # what the study loads
    sha, top = scan_token_file(as_data, open_token_file(as_data))
    if sha != ids.sha256 or top >= ids.vocab_size:
        raise SystemExit(f"pycode_corpus: {out_bin} reads back as sha256 {sha}, largest id {top}: not the ids written")
    train = train_token_count(ids.count)
    print(f"{out_bin}: {ids.count:,} ids as {ids.dtype} ({out_bin.stat().st_size:,} bytes), largest id {top}, "
          f"training split {train:,} tokens, sha256 {ids.sha256}; train on it with --data {out_bin} "
          f"--vocab-size {ids.vocab_size}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True, help="the text file to write")
    ap.add_argument("--packages", default=",".join(PACKAGES),
                    help="comma-separated installed packages whose source follows the standard library's")
    ap.add_argument("--vocab", type=int, default=None, help="also train a byte-level BPE of this vocabulary on it")
    ap.add_argument("--bin", default=None, help="with --vocab: the .bin of the text's ids to write (its "
                                                "tokenizer.json is written beside it)")
    args = ap.parse_args(argv)
    if (args.vocab is None) != (args.bin is None):
        ap.error("--vocab and --bin go together")
    files = stdlib_files() + [f for name in args.packages.split(",") if name for f in package_files(name)]
    for out in filter(None, (args.out, args.bin)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    used, size, sha = write_corpus(files, Path(args.out))
    print(f"{args.out}: {used} files, {size / 1e6:.1f} MB, sha256 {sha}", flush=True)
    if args.vocab is not None:
        tokenize(Path(args.out), args.vocab, Path(args.bin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
