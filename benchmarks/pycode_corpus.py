"""A corpus of Python source larger than `builtin`, for the transfer study at a BPE vocabulary (docs/transfer.md,
issue 18): at 32k tokens `builtin` holds 2.9M tokens, so a 1000-step GPU trial (4.1M tokens) would repeat it; this
one keeps a trial under one epoch.

    python3 benchmarks/pycode_corpus.py -o pycode.txt        # the standard library + the packages below, one file

The standard library's files as `builtin` takes them (gdn.corpus.stdlib_files), then each package's .py files
(no test folders), sorted by path; files that are not UTF-8 are skipped. What it holds depends on the installed
versions, so the file's sha256 is printed, and the tokenized .bin carries its own fingerprint into every result.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdn.corpus import stdlib_files  # noqa: E402

PACKAGES = ("numpy", "pandas", "sqlalchemy", "matplotlib", "transformers")
SKIP_DIRS = {"test", "tests", "testing", "__pycache__"}


def package_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"pycode_corpus: package {name!r} is not installed")
    root = Path(spec.origin).parent
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True, help="the text file to write")
    ap.add_argument("--packages", default=",".join(PACKAGES),
                    help="comma-separated installed packages whose source follows the standard library's")
    args = ap.parse_args(argv)
    files = stdlib_files() + [f for name in args.packages.split(",") if name for f in package_files(name)]
    digest, size, used = hashlib.sha256(), 0, 0
    with open(args.out, "wb") as out:
        for path in files:
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            chunk = data + b"\n"
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            used += 1
    print(f"{args.out}: {used} files, {size / 1e6:.1f} MB, sha256 {digest.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
