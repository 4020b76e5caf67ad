"""The transfer study end to end at a tiny scale: sweeps per width, transfer trials, the report with its plots."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tiny_transfer_study_writes_a_report(tmp_path):
    results, md = tmp_path / "tiny.jsonl", tmp_path / "transfer.md"
    cmd = [sys.executable, "benchmarks/transfer.py", "--scale", "tiny", "--results", str(results), "--md", str(md),
           "--workers", "2"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    kinds = {(rec["arm"], rec["width"], rec["kind"]) for rec in records}
    for arm in ("adamw-sp", "adamw-mup"):
        for width in (32, 64):
            assert (arm, width, "grid") in kinds and (arm, width, "transfer") in kinds
    text = md.read_text()
    assert "| adamw-mup | 20 |" in text and "loss at transferred lr" in text
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # resuming runs nothing new
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "running" not in again.stdout
    assert len(results.read_text().splitlines()) == len(records)
