"""`deltamu` science commands, run as a user would: numbers out, one-line errors for bad input."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def deltamu(*args):
    return subprocess.run([sys.executable, "-m", "gdn", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_recommend_json_prints_the_table_at_m4():
    adamw = json.loads(deltamu("recommend", "--base-width", "256", "--target-width", "1024",
                               "--optimizer", "adamw", "--lr", "0.004", "--json").stdout)
    groups = {g["role"]: g for g in adamw["groups"]}
    assert groups["hidden"]["lr"] == pytest.approx(0.001)             # 1/4 of the base
    sgd = json.loads(deltamu("recommend", "--base-width", "256", "--target-width", "1024",
                             "--optimizer", "sgd", "--lr", "0.2", "--json").stdout)
    groups = {g["role"]: g for g in sgd["groups"]}
    assert groups["gate_proj"]["lr"] == pytest.approx(0.1)            # 1/2 of the base
    assert groups["gate_scalar"]["lr"] == pytest.approx(0.4)          # 2x the base
    assert groups["hidden"]["lr"] == pytest.approx(0.2)
    assert sgd["parametrization_version"]


def test_bad_input_is_a_one_line_error():
    r = deltamu("recommend", "--base-width", "256", "--target-width", "1001", "--lr", "0.01")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "1001" in r.stderr
    r = deltamu("recommend", "--base-width", "256", "--target-width", "512", "--lr", "0.01",
                "--parametrization", "nope")
    assert r.returncode == 2 and "unknown parametrization" in r.stderr


def test_tiny_sweep_prints_a_table_and_an_optimum(tmp_path):
    r = deltamu("sweep", "--width", "32", "--depth", "1", "--seq-len", "32", "--batch-size", "4", "--steps", "12",
                "--lrs", "0.001,0.01,0.1", "--max-extend-rounds", "0", "--quiet", "--json", str(tmp_path / "s.json"),
                "--plot", str(tmp_path / "s.png"))
    assert r.returncode == 0, r.stderr
    assert "optimum: lr =" in r.stdout and r.stdout.count("COMPLETED") + r.stdout.count("DIVERGED") == 3
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["trials"]) == 3 and data["optimum"]["lr"] > 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_extends_a_grid_that_starts_off_to_one_side(tmp_path):
    # every lr far too small for 12 steps: the best is the largest, so the sweep adds lrs above it (one round here)
    r = deltamu("sweep", "--width", "32", "--depth", "1", "--seq-len", "32", "--batch-size", "4", "--steps", "12",
                "--lrs", "1e-6,2e-6,4e-6", "--max-extend-rounds", "1", "--quiet", "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["extend_rounds"] == 1 and "extension rounds: 1 of at most 1" in r.stdout
    assert sorted(t["lr"] for t in data["trials"]) == pytest.approx([1e-6, 2e-6, 4e-6, 8e-6, 1.6e-5])
    assert data["optimum"]["on_edge"] and data["optimum"]["lr"] == pytest.approx(1.6e-5)


def test_coordcheck_json_plot_and_a_fail_with_its_reason(tmp_path):
    # a tolerance no measured slope meets: every muP tensor fails, which is exit 1 with why and what to try; sp, the
    # baseline, fails too but does not make the exit code
    r = deltamu("coordcheck", "--widths", "32,64", "--parametrization", "mup,sp", "--steps", "2", "--seeds", "1",
                "--threshold", "0.00001", "--json", "--plot", str(tmp_path / "cc.png"))
    checks = json.loads(r.stdout)
    assert [c["parametrization"] for c in checks] == ["mup", "sp"]
    assert set(checks[0]["verdicts"]) >= {"logits", "attn.out", "mlp.out"}
    assert (tmp_path / "cc.png").read_bytes()[:4] == b"\x89PNG"
    assert r.returncode == 1 and not checks[0]["passed"], r.stderr
    assert "FAIL: mup:" in r.stderr and "FAIL: sp" not in r.stderr
    assert "slope" in r.stderr and "muP expects" in r.stderr and "--seeds" in r.stderr and "--widths" in r.stderr


def test_a_closed_pipe_ends_quietly():
    # `deltamu recommend ... | head -1`, with the reader gone before the first write
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "service.cli", "recommend", "--base-width", "256",
                            "--target-width", "4096", "--lr", "0.004"], cwd=REPO, stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert r.returncode == 141 and r.stderr == "", r.stderr       # 128 + SIGPIPE, as a shell reports it
    head = subprocess.run(f"{sys.executable} -m service.cli recommend --base-width 256 --target-width 4096 "
                          f"--lr 0.004 | head -1", shell=True, cwd=REPO, capture_output=True, text=True)
    assert head.stdout.startswith("mup (") and "Traceback" not in head.stderr


def test_sweep_with_a_trained_tokenizer_and_the_repeated_corpus_warning(tmp_path):
    """`deltamu tokenizer train` then `deltamu sweep --tokenizer`: the proxy trains at the BPE's vocabulary; a corpus
    the trials see more than once is a warning with the number of epochs; a tokenizer that is not one is a one-line
    error."""
    words = "gated delta rule state decay write read key value query head chunk width learning rate".split()
    text = tmp_path / "c.txt"
    text.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) for i in range(400)))
    env_args = ("--width", "32", "--depth", "1", "--seq-len", "32", "--batch-size", "4", "--lrs", "0.01", "--quiet")
    r = deltamu("tokenizer", "train", "--vocab", "280", str(text), "-o", str(tmp_path / "tok.json"), "--quiet")
    assert r.returncode == 0 and "vocab 280" in r.stdout, r.stderr
    r = deltamu("sweep", "--data", str(text), "--tokenizer", str(tmp_path / "tok.json"), "--steps", "150",
                "--json", str(tmp_path / "s.json"), *env_args)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["vocab_size"] == 280 and out["config"]["model"]["vocab_size"] == 280
    epochs = 150 * 4 * 32 / out["train_tokens"]
    assert epochs > 1 and f"{epochs:.1f} epochs" in r.stdout and "9.8 %" in r.stdout
    r = deltamu("sweep", "--data", str(text), "--tokenizer", str(text), "--steps", "4", *env_args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "tiktoken" in r.stderr


def test_recommend_warns_when_the_targets_vocabulary_is_not_the_proxys():
    base = ("recommend", "--base-width", "256", "--target-width", "1024", "--lr", "0.004", "--json")
    same = json.loads(deltamu(*base, "--target-vocab", "256").stdout)
    other = json.loads(deltamu(*base, "--target-vocab", "151936").stdout)
    assert not any("vocabulary" in w for w in same["warnings"])
    assert any("151,936" in w and "(256," in w for w in other["warnings"])
    assert other["proxy_model"]["vocab_size"] == 256
