"""benchmarks/pycode_corpus.py: the standard library's files as `builtin` takes them, then the packages' sources,
in one UTF-8 file whose printed sha256 is the file's."""
import hashlib
import subprocess
import sys
from pathlib import Path

import gdn.corpus

REPO = Path(__file__).resolve().parents[2]


def test_stdlib_then_the_packages_sources(tmp_path):
    out = tmp_path / "pycode.txt"
    r = subprocess.run([sys.executable, "benchmarks/pycode_corpus.py", "-o", str(out), "--packages", "gdn"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert r.stdout.split("sha256 ")[1].strip() == hashlib.sha256(data).hexdigest()
    corpus_source = Path(gdn.corpus.__file__).read_bytes()
    first_stdlib = gdn.corpus.stdlib_files()[0].read_bytes()
    assert data.startswith(first_stdlib) and corpus_source in data
    assert data.index(corpus_source) > len(data) // 2          # after the standard library
    r = subprocess.run([sys.executable, "benchmarks/pycode_corpus.py", "-o", str(out), "--packages", "no_such_pkg"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no_such_pkg" in r.stderr
