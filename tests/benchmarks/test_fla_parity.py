"""benchmarks/fla_parity.py at a tiny size on the CPU (fla's layer on deltamu's torch ops): fla's model made the
recommendation by deltamu.apply trains to the same losses as deltamu's GDNModel from the same weights."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_fla_and_deltamu_train_alike_on_torch_ops(tmp_path):
    pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")
    cmd = [sys.executable, "benchmarks/fla_parity.py", "--base", "32", "--widths", "32,64", "--depth", "1",
           "--steps", "6", "--batch-size", "2", "--seq-len", "32", "--eval-batches", "1", "--lr", "0.01", "--log-every", "1",
           "--torch-ops", "--device", "cpu", "--impls", "deltamu,fla,deltamu-chunk", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "fla_parity.json").read_text())["rows"]
    assert sorted((row["width"], row["impl"]) for row in rows) == [
        (32, "deltamu"), (32, "deltamu-chunk"), (32, "fla"), (64, "deltamu"), (64, "deltamu-chunk"), (64, "fla")]
    for width in (32, 64):
        ours, theirs = (next(row for row in rows if (row["width"], row["impl"]) == (width, impl))
                        for impl in ("deltamu", "fla"))
        assert theirs["final_val_loss"] == pytest.approx(ours["final_val_loss"], rel=1e-5)
        chunk = next(row for row in rows if (row["width"], row["impl"]) == (width, "deltamu-chunk"))
        assert chunk["final_val_loss"] == ours["final_val_loss"]          # on the CPU "auto" is the chunked path
        assert [point[0] for point in ours["curve"]] == [point[0] for point in theirs["curve"]] == [1, 2, 3, 4, 5, 6]
        assert [point[1] for point in theirs["curve"]] == pytest.approx([point[1] for point in ours["curve"]], rel=1e-5)
    assert (tmp_path / "fla_parity.png").stat().st_size > 5000
    assert "| 64 | fla | 0 |" in r.stdout

    # a call too short for both: deltamu alone at width 32, the rest kept from the first call's file
    again = tmp_path / "again"
    r = subprocess.run([*cmd[:cmd.index("--widths")], "--widths", "32", *cmd[cmd.index("--widths") + 2:-2],
                        "--impls", "deltamu", "--previous", str(tmp_path / "fla_parity.json"), "--out", str(again)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    second = json.loads((again / "fla_parity.json").read_text())["rows"]
    assert sorted((row["width"], row["impl"]) for row in second) == sorted((row["width"], row["impl"]) for row in rows)
    assert [row["impl"] for row in second][-1] == "deltamu"                  # the one trained here, written last
    assert second[-1]["final_val_loss"] == pytest.approx(
        next(row["final_val_loss"] for row in rows if (row["width"], row["impl"]) == (32, "deltamu")), rel=1e-6)


def test_model_numerics_finds_fla_and_deltamu_gradients_at_float64s_on_torch_ops(tmp_path):
    """benchmarks/model_numerics.py on the CPU: fla's model (on deltamu's torch ops) and deltamu's, both in float32,
    give every role's gradient within 1e-5 of deltamu's model in float64, from the same weights."""
    pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")
    r = subprocess.run([sys.executable, "benchmarks/model_numerics.py", "--base", "32", "--width", "64", "--depth", "1",
                        "--batch-size", "2", "--seq-len", "32", "--fla", "--device", "cpu", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "numerics.json").read_text())["rows"]
    assert [row["impl"] for row in rows] == ["deltamu (auto)", "deltamu (chunk)", "fla + deltamu.apply"]
    for row in rows:
        assert row["loss_rel_err"] < 1e-6, row
        assert {"hidden", "embedding", "conv", "gate_proj", "gate_scalar", "norm", "all"} <= row["grad_rel_err"].keys()
        assert all(0 < err < 1e-5 for err in row["grad_rel_err"].values()), row
    assert "| fla + deltamu.apply |" in r.stdout


def test_model_numerics_under_cpu_autocast_rounds_both_models_alike(tmp_path):
    """--cpu-autocast: the candidates run under bf16 autocast on the CPU, so their gradients are bf16-far from
    float64 (not float32-close), and fla's model and deltamu's round alike (their own code, the same torch ops)."""
    pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")
    r = subprocess.run([sys.executable, "benchmarks/model_numerics.py", "--base", "32", "--width", "64", "--depth", "1",
                        "--batch-size", "2", "--seq-len", "32", "--fla", "--cpu-autocast", "--device", "cpu",
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["impl"]: row for row in json.loads((tmp_path / "numerics.json").read_text())["rows"]}
    ours, theirs = rows["deltamu (chunk)"]["grad_rel_err"], rows["fla + deltamu.apply"]["grad_rel_err"]
    assert 1e-3 < ours["all"] < 0.3 and 1e-3 < theirs["all"] < 0.3
    assert 0.5 < theirs["all"] / ours["all"] < 2


def test_model_numerics_compares_at_trained_weights(tmp_path):
    """--trained-steps 0,30: the comparison at init and at the weights deltamu's run reaches after 30 steps (its loss
    well below init's), and every model agrees with float64 at both."""
    cmd = [sys.executable, "benchmarks/model_numerics.py", "--base", "32", "--width", "64", "--depth", "1",
           "--batch-size", "2", "--seq-len", "32", "--device", "cpu", "--out", str(tmp_path)]
    r = subprocess.run(cmd + ["--trained-steps", "0,30"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "numerics.json").read_text())
    assert summary["loss_float64"]["30"] < 0.9 * summary["loss_float64"]["0"]
    assert [(row["at_step"], row["impl"]) for row in summary["rows"]] == [
        (0, "deltamu (auto)"), (0, "deltamu (chunk)"), (30, "deltamu (auto)"), (30, "deltamu (chunk)")]
    assert all(0 < err < 1e-5 for row in summary["rows"] for err in row["grad_rel_err"].values()), summary["rows"]
    bad = subprocess.run(cmd + ["--trained-steps", "25"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--trained-steps must be multiples of 10" in bad.stderr
