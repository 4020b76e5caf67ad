"""benchmarks/gdn_kernels.py's CPU-side parts (the FLOP model, the table, the autotuning results carried between
calls) and benchmarks/kernels_and_packing.py's (the check logs read, the whole call run tiny)."""
import json
import os
import subprocess
import sys
import tarfile

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


def test_check_outcomes_are_read_from_plain_and_xdist_logs(tmp_path):
    import kernels_and_packing as device_call
    plain, xdist = tmp_path / "plain.txt", tmp_path / "xdist.txt"
    plain.write_text("collected 38 items / 30 deselected / 8 selected\n\n"
                     "tests/gdn/test_triton.py::test_b[16x1024x6x32x64-bf16] PASSED [ 12%]\n"
                     "tests/gdn/test_triton.py::test_b[8x2048x16x128x128-bf16] FAILED [ 25%]\n")
    xdist.write_text("created: 4/4 workers\n4 workers [7 items]\n\n"
                     "tests/gdn/test_triton.py::test_b[16x1024x6x32x64-fp32] \n"
                     "[gw1] [ 14%] PASSED tests/gdn/test_triton.py::test_b[16x1024x6x32x64-fp32] \n"
                     "[gw0] [ 28%] SKIPPED tests/gdn/test_triton.py::test_c \n")
    assert device_call.pytest_outcomes(plain) == {"tests/gdn/test_triton.py::test_b[16x1024x6x32x64-bf16]": "PASSED",
                                                  "tests/gdn/test_triton.py::test_b[8x2048x16x128x128-bf16]": "FAILED"}
    assert device_call.pytest_outcomes(xdist) == {"tests/gdn/test_triton.py::test_b[16x1024x6x32x64-fp32]": "PASSED",
                                                  "tests/gdn/test_triton.py::test_c": "SKIPPED"}
    assert (device_call.pytest_selected(plain), device_call.pytest_selected(xdist)) == (8, 7)


@pytest.mark.slow
def test_the_device_call_runs_tiny_on_the_cpu(tmp_path):
    """benchmarks/kernels_and_packing.py --tiny: every stage (the float64 checks, ours against the kernels before
    the wide-head path, the packing rows) runs interpreted on the CPU and lands in the summary; --out holds the
    three files the device brings back (it returns at most 8, at most two folders down), the details archived."""
    r = subprocess.run([sys.executable, "benchmarks/kernels_and_packing.py", "--tiny", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["details.tar.gz", "summary.json", "summary.md"]
    with tarfile.open(tmp_path / "details.tar.gz") as tar:
        details = set(tar.getnames())
    assert {"details/checks/tiny.txt", "details/kernels/kernels.json", "details/packing/packing.json"} <= details
    result = json.loads((tmp_path / "summary.json").read_text())
    assert all(c["PASSED"] == c["selected"] >= 1 and c["FAILED"] == c["ERROR"] == 0
               for c in result["checks"].values())
    cells = {c["impl"]: c for c in result["kernels"]["kernels"]}
    assert sorted(cells) == ["ours", "ours-fused", "ours-vtile"]
    assert not any(c["error"] for c in cells.values())
    assert all(c["fwdbwd_ms"]["value"] > 0 and c["err_dg"]["value"] < 1e-2 for c in cells.values())
    assert [(row["mode"], row["trials"]) for row in result["packing"]["rows"]] == [("sequential", 1), ("packed", 2)]
    assert all(row["tokens_per_s"] > 0 for row in result["packing"]["rows"])
    assert "| 1, 32, 1, 128, 16 |" in r.stdout                        # the short table, printed last


def test_launch_config_sweep_keeps_the_results_and_tables_ms_per_kernel(tmp_path):
    """benchmarks/kernel_configs.py --tiny: each candidate launch config (warps, stages, tile sizes) gives the
    shipped config's output and gradients (a tile size only reorders a sum: within fp32 rounding; warps and stages
    change nothing); and the table picks each kernel's fastest candidate from profile records."""
    import kernel_configs
    r = subprocess.run([sys.executable, "benchmarks/kernel_configs.py", "--tiny", "--candidates",
                        "w4s2,bvk64,bvt32,bvg64,bvs32", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = json.loads((tmp_path / "configs.json").read_text())
    assert [rec["config"] for rec in records] == ["shipped", "w4s2", "bvk64", "bvt32", "bvg64", "bvs32"]
    assert all("error" not in rec and rec["diff"] < 1e-5 for rec in records), records
    assert any(rec["diff"] > 0 for rec in records)                      # a reordered sum is seen, not skipped
    shape = [2, 64, 1, 128, 128]
    timed = [dict(shape=shape, config="shipped", diff=0.0, total_ms=3.0,
                  kernels={"_chunk_prep_kernel": 1.0, "_chunk_grad_dqdk_kernel": 2.0}),
             dict(shape=shape, config="w4s1", diff=1e-7, total_ms=2.5,
                  kernels={"_chunk_prep_kernel": 1.5, "_chunk_grad_dqdk_kernel": 1.0}),
             dict(shape=shape, config="w16s1", error="OutOfResources: shared memory")]
    text = kernel_configs.table(timed)
    assert "| prep | 1.000 | 1.500 | shipped 1.000 |" in text
    assert "| grad_dqdk | 2.000 | 1.000 | w4s1 1.000 |" in text
    assert "sum of bests 2.000" in text and "- w16s1: OutOfResources" in text
