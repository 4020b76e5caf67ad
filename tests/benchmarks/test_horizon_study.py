"""The horizon study (benchmarks/horizon.py) end to end at a tiny CPU scale: sweeps at the fit and predicted
horizons, the line, its predictions' errors in grid steps, the joint (wider, longer) run and SP's, the plot, and a
resumed call that runs nothing."""
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tiny_horizon_study_predicts_a_longer_horizon_and_resumes(tmp_path):
    cmd = [sys.executable, "benchmarks/horizon.py", "--scale", "tiny", "--seeds", "0", "--fit", "10,20",
           "--predict", "40", "--joint-horizon", "20", "--out", str(tmp_path), "--workers", "2", "--pack", "6"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "horizon_summary.json").read_text())
    assert [row["steps"] for row in s["rows"]] == [10, 20, 40] and [row["fitted"] for row in s["rows"]] == [1, 1, 0]
    for row in s["rows"]:
        assert row["measured_lr"] > 0 and row["tokens"] == row["steps"] * 4 * 32
        # each error is the prediction's distance from the measured optimum in grid steps of sqrt 2
        assert row["none_error_steps"] == (math.log2(row["none_lr"]) - math.log2(row["measured_lr"])) / 0.5
    j = s["joint"]
    assert j["width"] == 64 and j["steps"] == 20 and j["mup_measured_lr"] > 0 and j["sp_measured_lr"] > 0
    assert j["sp_error_steps"] == (math.log2(j["sp_base_lr"]) - math.log2(j["sp_measured_lr"])) / 0.5
    last = r.stdout.strip().splitlines()
    assert last[-1].startswith("joint (width 64, 20 steps)") and "lr* ~ D^" in r.stdout
    assert (tmp_path / "horizon.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "horizon.jsonl").read_text().splitlines()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "running" not in again.stdout
    assert (tmp_path / "horizon.jsonl").read_text().splitlines() == lines
