"""benchmarks/gdn_kernels.py's CPU-side parts (the FLOP model, the table, the autotuning results carried between
calls) and benchmarks/kernels_and_packing.py's (the check logs read, the whole call run tiny)."""
import json
import os
import subprocess
import sys
import time
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


def test_every_variant_of_ours_is_timed_when_asked_for():
    """A variant in OURS_VARIANTS but not in TIMED would be dropped from a card call without a word."""
    assert set(kernels.OURS_VARIANTS) <= set(kernels.TIMED)
    assert kernels.TIMED[:2] == ("ours", "fla")


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
    assert [(row["mode"], row["trials"]) for row in result["packing"]["rows"]] == [
        ("sequential", 1), ("packed", 2), ("packed, update outside the graph", 2)]
    assert all(row["tokens_per_s"] > 0 for row in result["packing"]["rows"])
    assert "| 1, 32, 1, 128, 16 |" in r.stdout                        # the short table, printed last


def test_launch_config_sweep_keeps_the_results_and_tables_ms_per_kernel(tmp_path):
    """benchmarks/kernel_configs.py --tiny: each candidate launch config (warps, stages, tile sizes) gives the
    shipped config's output and gradients, with and without states (a tile size only reorders a sum: within fp32
    rounding; warps and stages change nothing); and the table picks each kernel's fastest candidate from profile
    records."""
    import kernel_configs
    # in the fp32 form: stored in bf16, as by default, a sum reordered at fp32's rounding mostly rounds to the same
    # bf16 value, and at this tiny shape to the same everywhere
    r = subprocess.run([sys.executable, "benchmarks/kernel_configs.py", "--tiny", "--candidates",
                        "w4s2,bvk64,bvt32,bvg64", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **kernels.FP32})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = json.loads((tmp_path / "configs.json").read_text())
    assert [rec["config"] for rec in records] == ["shipped", "w4s2", "bvk64", "bvt32", "bvg64"]
    assert all("error" not in rec and rec["diff"] < 1e-4 for rec in records), records
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


def test_sweep_picks_the_fastest_config_per_kernel_over_every_shape():
    """kernel_configs.picks: per kernel the config with the least CUDA ms summed over the shapes, if over 2 % under
    the shipped config's (the prep takes one stage: its loops are unrolled); a tile candidate if the whole fwd+bwd
    gains; a config missing at a shape, or whose results differ from the shipped config's, does not compete; the
    result is DELTAMU_GDN_LAUNCH's form."""
    import kernel_configs

    def rec(shape, config, total, **ms):
        return dict(shape=shape, config=config, diff=0.0, total_ms=total,
                    kernels={kernel_configs.KERNELS[k]: v for k, v in ms.items()})
    a, b = [16, 1024, 6, 128, 256], [8, 2048, 16, 128, 128]
    records = [rec(a, "shipped", 10.0, prep=1.0, output=1.0, grad_dqdk=1.0),
               rec(b, "shipped", 10.0, prep=1.0, output=1.0, grad_dqdk=1.0),
               rec(a, "w8s2", 9.0, prep=0.5, output=0.5, grad_dqdk=0.995),     # dq dk: within the margin
               rec(b, "w8s2", 9.0, prep=0.6, output=1.4, grad_dqdk=0.995),     # output: 1.9 against 2.0
               rec(a, "w16s1", 11.0, prep=2.0, output=0.7, grad_dqdk=2.0),
               rec(b, "w16s1", 11.0, prep=2.0, output=0.7, grad_dqdk=2.0),     # output: 1.4, the best
               rec(a, "w4s1", 1.0, prep=0.1, output=0.1, grad_dqdk=0.1),       # timed at one shape only
               rec(a, "bvk64", 9.5, prep=1.0), rec(b, "bvk64", 9.5, prep=1.0),
               rec(a, "bvt32", 9.9, prep=1.0), rec(b, "bvt32", 10.0, prep=1.0),
               dict(shape=b, config="w4s1", error="OutOfResources")]
    assert kernel_configs.picks(records) == "prep=8x1,output=16x1,TILED_GRAD_KTILE_BLOCK_V=64"
    broken = [dict(r, diff=0.5) if r["config"] == "w16s1" else r for r in records]    # off the shipped results
    assert kernel_configs.picks(broken) == "prep=8x1,output=8x2,TILED_GRAD_KTILE_BLOCK_V=64"
    assert kernel_configs.picks(records[:2]) == ""


def test_sweep_tries_a_config_on_one_kernel_alone():
    """KERNEL:CANDIDATE names (--per-kernel): one kernel at a candidate's warps and stages, the others shipped. A
    config that broke the results when every kernel took it (NaN at one shape) can still win for the kernel that
    takes it safely, and is picked for that kernel only."""
    import kernel_configs

    assert kernel_configs.launch_items("grad_ktile:w4s2") == ["grad_ktile=4x2"]
    assert kernel_configs.launch_items("prep:w4s2") == ["prep=4x1"]                 # the prep keeps one stage
    assert kernel_configs.check_name("grad_ktile:w4s2") is None
    assert "KERNEL:CANDIDATE" in kernel_configs.check_name("grad_ktile:bvk64")       # tiles are not per kernel
    assert "KERNEL:CANDIDATE" in kernel_configs.check_name("nokernel:w4s2")
    assert "unknown candidate" in kernel_configs.check_name("w5s1")

    def rec(shape, config, diff=0.0, **ms):
        return dict(shape=shape, config=config, diff=diff, total_ms=sum(ms.values()),
                    kernels={kernel_configs.KERNELS[k]: v for k, v in ms.items()})
    a, b = [16, 1024, 6, 128, 256], [2, 16384, 16, 128, 128]
    records = [rec(a, "shipped", grad_ktile=1.0, state_bwd_tiled=1.0),
               rec(b, "shipped", grad_ktile=1.0, state_bwd_tiled=1.0),
               rec(a, "w4s2", grad_ktile=0.7, state_bwd_tiled=0.9),
               rec(b, "w4s2", diff=float("nan"), grad_ktile=0.7, state_bwd_tiled=0.9),
               rec(a, "grad_ktile:w4s2", grad_ktile=0.7, state_bwd_tiled=1.0),
               rec(b, "grad_ktile:w4s2", grad_ktile=0.7, state_bwd_tiled=1.0),
               rec(a, "state_bwd_tiled:w4s2", grad_ktile=1.0, state_bwd_tiled=0.5),   # a crash at the long shape:
               dict(shape=b, config="state_bwd_tiled:w4s2", error="RuntimeError: illegal memory access")]
    assert kernel_configs.picks(records) == "grad_ktile=4x2"
    # a per-kernel record does not speak for the other kernels: its grad_ktile time is not state_bwd_tiled's
    records.append(rec(a, "grad_ktile:w8s1", grad_ktile=1.0, state_bwd_tiled=0.1))
    records.append(rec(b, "grad_ktile:w8s1", grad_ktile=1.0, state_bwd_tiled=0.1))
    assert kernel_configs.picks(records) == "grad_ktile=4x2"


def test_the_device_call_checks_and_times_tuned_configs_when_given():
    """DELTAMU_GDN_TUNED (a sweep's picks): the call adds a float64 check set with those configs and the column
    ours-tuned; without it, neither."""
    code = "import kernels_and_packing as k; print(k.IMPLS, 'ours-tuned' in k.CHECKS, k.CHECKS.get('ours-tuned'))"
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "benchmarks")}
    plain = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    assert plain.split()[:2] == ["ours,fla,ours-fp32", "False"]
    env["DELTAMU_GDN_TUNED"] = "output=8x1"
    tuned = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    assert tuned.split()[:2] == ["ours,fla,ours-fp32,ours-tuned", "True"]
    assert "'DELTAMU_GDN_LAUNCH': 'output=8x1'" in tuned


def test_sweep_runs_the_candidates_left_after_a_dead_cuda_context(monkeypatch, tmp_path):
    """kernel_configs.time_shape: a candidate whose CUDA error ends its process (the cell stops there) keeps its
    error record, and the candidates after it run in a new process; the shipped config is recorded once."""
    import kernel_configs
    calls = []

    def cell_process(args, timeout, log):                  # what one `--cell ... time` process prints
        calls.append(args[1])
        records = [dict(shape=[1, 2], config="shipped", diff=0.0)]
        for name in args[1].split(","):
            if name == "w4s1":
                error = "RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered"
                return records + [dict(shape=[1, 2], config=name, error=error)]
            records.append(dict(shape=[1, 2], config=name, diff=0.0))
        return records

    monkeypatch.setattr(kernel_configs, "_run", cell_process)
    records = kernel_configs.time_shape((1, 2), ["w4s2", "w4s1", "w8s1", "w8s2"], time.perf_counter() + 100,
                                        tmp_path / "log.txt")
    assert calls == ["w4s2,w4s1,w8s1,w8s2", "w8s1,w8s2"]
    assert [r["config"] for r in records] == ["shipped", "w4s2", "w4s1", "w8s1", "w8s2"]
    assert "error" in records[2]


def test_the_next_card_call_names_only_variants_and_switches_that_exist():
    """benchmarks/issue21_call.sh runs on scarce device time: every implementation it times is one gdn_kernels.py
    knows, and every switch setting it exports is one the kernels' module accepts at import (a misspelt value raises
    there, on the card, after the machine has started)."""
    import re
    text = open(os.path.join(REPO, "benchmarks", "issue21_call.sh")).read()
    assigned = dict(re.findall(r'^(?:export )?([A-Z_]+)="?([^"\n]*)"?$', text, flags=re.M))
    impls = assigned["IMPLS"].split(",")
    assert {"ours", "fla"} <= set(impls)
    assert all(i in ("ours", "fla") or i in kernels.OURS_VARIANTS for i in impls), impls
    assert all(i in kernels.TIMED for i in impls)
    checked = re.findall(r"variant_env (\S+)\)", text)                   # the checks run these variants' switches
    assert set(checked) <= set(impls), checked
    settings = [dict(kernels.OURS_VARIANTS[i]) for i in impls if i in kernels.OURS_VARIANTS]
    if "DELTAMU_GDN_TUNED" in assigned:
        settings += [{"DELTAMU_GDN_LAUNCH": assigned["DELTAMU_GDN_TUNED"]}]  # what ours-tuned's cells get there
    assert all(k.startswith("DELTAMU_GDN_") for setting in settings for k in setting), settings
    code = """if True:
        import importlib, json, os, sys
        import gdn.ops.gated_delta_rule.triton as launcher
        for setting in json.loads(sys.argv[1]):
            for k in [k for k in os.environ if k.startswith("DELTAMU_GDN_")]:
                del os.environ[k]
            os.environ.update(setting)
            try:
                importlib.reload(launcher)          # the switches are read at import
            except ValueError as e:
                print(json.dumps(setting), e)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAMU_GDN_")}
    r = subprocess.run([sys.executable, "-c", code, json.dumps(settings)], cwd=REPO, env=dict(env, PYTHONPATH=REPO),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr[-800:]
