"""benchmarks/gdn_kernels.py's CPU-side parts: the FLOP model, the table, the autotuning results carried between calls."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import gdn_kernels as kernels  # noqa: E402


def test_autotune_results_travel_from_one_triton_cache_to_another(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "a1b2").mkdir(parents=True)
    (first / "a1b2" / "chunk_fwd_kernel_h.autotune.json").write_text('{"configs_timings": []}')
    (first / "a1b2" / "chunk_fwd_kernel_h.cubin").write_bytes(b"\0compiled")      # kernels stay behind
    monkeypatch.setenv("TRITON_CACHE_DIR", str(first))
    assert kernels.save_autotune(tmp_path / "picks.tgz") == 1
    monkeypatch.setenv("TRITON_CACHE_DIR", str(second))
    kernels.load_autotune(tmp_path / "picks.tgz")
    assert sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file()) == \
        ["a1b2/chunk_fwd_kernel_h.autotune.json"]


def test_table_puts_ours_over_fla_beside_our_row():
    cell = lambda impl, ms: {"shape": [16, 1024, 6, 64, 128], "impl": impl, "error": None,    # noqa: E731
                             "fwd_ms": {"value": ms / 4}, "fwdbwd_ms": {"value": ms, "tflops": 1.0}}
    text = kernels.table({"kernels": [cell("ours", 1.0), cell("fla", 4.0)], "model": []})
    ours_row = next(line for line in text.splitlines() if "| ours |" in line)
    assert "| 0.25 |" in ours_row and "| 1.000 |" in ours_row


def test_flop_model_grows_with_the_head_dims():
    small, large = kernels.flops_per_token_head(32, 64), kernels.flops_per_token_head(128, 256)
    assert all(lg > sm > 0 for sm, lg in zip(small, large))
    assert kernels.flops_per_token_head(64, 64)[1] > kernels.flops_per_token_head(64, 64)[0]   # bwd costs more


@pytest.mark.slow
def test_the_device_call_runs_tiny_on_the_cpu(tmp_path):
    """benchmarks/kernels_and_packing.py --tiny: every stage (the float64 checks, ours against the kernels before
    the wide-head path, the packing rows) runs interpreted on the CPU and lands in the summary."""
    r = subprocess.run([sys.executable, "benchmarks/kernels_and_packing.py", "--tiny", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "summary.json").read_text())
    assert all(c["PASSED"] >= 1 and c["FAILED"] == c["ERROR"] == 0 for c in result["checks"].values())
    cells = {c["impl"]: c for c in result["kernels"]["kernels"]}
    assert sorted(cells) == ["ours", "ours-fused"] and not any(c["error"] for c in cells.values())
    assert all(c["fwdbwd_ms"]["value"] > 0 and c["err_dg"]["value"] < 1e-2 for c in cells.values())
    assert [(row["mode"], row["trials"]) for row in result["packing"]["rows"]] == [("sequential", 1), ("packed", 2)]
    assert all(row["tokens_per_s"] > 0 for row in result["packing"]["rows"])
    assert "| 1, 32, 1, 128, 16 |" in r.stdout                        # the short table, printed last
