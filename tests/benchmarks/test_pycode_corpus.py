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


def test_the_text_its_bpe_and_its_ids_twice_the_same(tmp_path, monkeypatch, capsys):
    """--vocab/--bin: a BPE trained on the text (written beside the .bin) and the text's ids, which decode back to
    the text; a second run from the same text gives the same tokenizer and the same ids, byte for byte."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import pycode_corpus
    from gdn.tokenizer import decode, file_sha256

    rng = __import__("random").Random(0)
    words = "def return self import numpy lambda yield class value width state".split()
    text = tmp_path / "code.txt"
    text.write_text("\n".join("    ".join(rng.choice(words) for _ in range(8)) for _ in range(3000)))
    shas = []
    for run in ("a", "b"):
        out = tmp_path / run / "ids.bin"
        out.parent.mkdir()
        monkeypatch.setenv("DELTAMU_CACHE_DIR", str(tmp_path / run / "cache"))   # tokenized anew, not a cache hit
        pycode_corpus.tokenize(text, 300, out)
        shas.append((file_sha256(out.with_suffix(".json")), file_sha256(out)))
        assert f"vocab 300, sha256 {shas[-1][0]}" in capsys.readouterr().out
    assert shas[0] == shas[1]
    ids = __import__("numpy").fromfile(tmp_path / "a" / "ids.bin", dtype="<u2")
    assert ids.max() < 300 and len(ids) < text.stat().st_size / 2            # merged: fewer ids than bytes
    assert decode(str(tmp_path / "a" / "ids.json"), ids) == text.read_text()
