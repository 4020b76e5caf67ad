"""One device call for the wide-head kernels and the pack's optimizer step (issue 21): the float64 checks on the
card first, then ours against fla 0.6.0 at every shape of docs/benchmarks.md's reference table (with the kernels
before the wide-head path as a baseline in the same call), then the packing rows.

    PYTHONPATH=/tmp/site:. python3 benchmarks/kernels_and_packing.py --out $OUT      # one H100: at most 7.7 minutes
    python benchmarks/kernels_and_packing.py --tiny --out /tmp/k                        # CPU smoke run (interpreted)

What comes back: the device returns at most 8 files, at most two folders below $OUT, so --out holds three:
summary.md (the short tables), summary.json (everything the tables come from) and details.tar.gz (every log and
result file of every stage: checks/*.txt, kernels/kernels.json, kernels/kernels.md, kernels/fla-autotune.tgz,
packing/*). The stages write into a folder outside --out; the archive and the summaries are rewritten after each
stage, so a call cut short still returns what it had.

Stages, each in subprocesses with time limits, all inside --deadline seconds:
1. checks: `pytest --noconftest -v tests/gdn/test_triton.py` (every benchmark shape and dtype against the float64
   reference, the tiny shapes, the wide-head path) in several processes at once (CHECKS), each with xdist workers
   where the machine has xdist (the card's image does), while every timed kernel compiles for every shape in the
   background (gdn_kernels.py --warm-only: fla's autotuning then only times compiled configs). The stage ends when
   they all have, or at --checks-s.
2. kernels: gdn_kernels.py --shape-major in SHAPE_ORDER (ours, fla, ours-fp32, ours-tuned at each shape;
   then the other variants in IMPLS, each at every wide shape), CUDA ms per kernel recorded in the cells of
   PROFILED; fla's autotuning picks saved to the archive (--load-autotune takes them in a later call on the same kind
   of card: fla's cells then skip most of their 40-50 s of autotuning).
3. packing: packing.py --widths 256 128 --packs 8 16 (K = 8 at d = 256 and K = 16 at d = 128 among them), each pack
   with the clip and optimizer inside the step's CUDA graph and outside it (the baseline), with the per-phase
   timing (host ms of each, both ways) and the kernel profile at d = 256, K = 8.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gdn_kernels  # noqa: E402  (the profile table)

TRITON_TESTS = ["tests/gdn/test_triton.py"]
# The float64 checks, one pytest process per set, all at once: name -> (pytest -k expression (the benchmark shapes'
# ids name the dtype), test files, xdist workers, environment). fp32's full-precision products compile to scalar
# code: at K = 128 the prep kernel alone took 55 s to compile for sm_90 on a 2-core CPU (bf16: 6 s), and one fp32
# shape took 31-68 s on the card (docs/benchmarks.md), so the fp32 shapes and the small cases (mostly fp32) get
# the most workers. On 2026-12-06, with one process a set, fp32 and small were cut at 150 s after 3 of 7 and 7 of
# about 30 tests.
# "fp32-wide-tiled": fp32 takes the fused kernels at every K (gdn.ops.gated_delta_rule.triton.TILED_MIN_K) until
# these checks of the wide-head path at its three K = 128 shapes have passed on a card. "cross-entropy":
# gdn.ops.cross_entropy's checks (CE_VALIDATED). 15 workers.
CHECKS = {"fp32-shapes": ("benchmark_shapes and fp32", TRITON_TESTS, 4, {}),
          "small": ("not benchmark_shapes", TRITON_TESTS + ["tests/gdn/test_packed.py"], 4, {}),
          "bf16-shapes": ("benchmark_shapes and bf16", TRITON_TESTS, 3, {}),
          "fp16-shapes": ("benchmark_shapes and fp16", TRITON_TESTS, 1, {}),
          "fp32-wide-tiled": ("benchmark_shapes and fp32 and (x128x or x256x)", TRITON_TESTS, 2,
                              {"DELTAMU_GDN_TILED_MIN_K": "128"}),
          "cross-entropy": ("cross_entropy", ["tests/gdn/test_cross_entropy.py"], 1, {})}
# With DELTAMU_GDN_TUNED set (benchmarks/kernel_configs.py's picks.txt, in DELTAMU_GDN_LAUNCH's form) the call checks
# those launch configs at every bf16 benchmark shape and times them as the column ours-tuned, beside the shipped
# ones: a config that changes a tile reorders sums, and any config must pass before it ships.
TUNED = os.environ.get("DELTAMU_GDN_TUNED", "")
if TUNED:
    CHECKS["ours-tuned"] = ("benchmark_shapes and bf16", TRITON_TESTS, 2, gdn_kernels.OURS_VARIANTS["ours-tuned"])
# Cells the parallel compile (gdn_kernels.py --warm) runs at a time beside the checks, fla's first: 16 cells at once
# (5 shapes x ours and fla, 3 wide shapes x ours-fp32 and ours-tuned), each with a CUDA context and a forward and
# backward at the full shape, on top of the checks' 15 workers (17 with ours-tuned), would crowd the card's memory
# and 16 cores.
WARM_JOBS = 10
TINY_CHECKS = {"tiny": ("fp32-T1-no-l2", TRITON_TESTS, 2, {})}     # one fused-path and two wide-head-path tests
CHECKS_PLUGIN = "float64_checks_plugin"    # benchmarks/float64_checks_plugin.py: each test frees its cached memory

# gdn_kernels.SHAPES in timing order: the wide shapes (issue 21's targets), then the proxy's (16,1024,6,64,128),
# which must stay no slower, then (16,1024,6,32,64), where fla's backward crashes (only its forward is timed).
# On 2026-12-06 the proxy's came last and was cut by the stage's deadline.
SHAPE_ORDER = "2,3,4,1,0"
# ours, fla and the default until 2026-12-07 (ours-fp32, the baseline); not the wide-head path as checked on
# 2026-12-06 (ours-vtile, 1.2-1.3 x the default since 2026-12-07), the fused kernels (timed on 2026-12-06) nor TF32
# products
IMPLS = "ours,fla,ours-fp32" + (",ours-tuned" if TUNED else "")
# cells that also record CUDA ms per kernel (fla: which of its kernels beat ours)
PROFILED = "ours,ours-fp32,ours-before,ours-tuned,ours-lean,ours-lean-tuned,ours-copies,ours-ktile-cc,ours-row-dots,fla"
TINY_SHAPES = ["1,32,1,128,16"]
# each pack size twice: the step's update in the CUDA graph (the default since issue 21) and outside it (the baseline)
PACKING = ["--widths", "256", "128", "--packs", "8", "16", "--update-outside-graph", "8", "16", "--no-plan",
           "--no-check", "--single-repeats", "1"]
TINY_PACKING = ["--widths", "32", "--packs", "2", "--update-outside-graph", "2", "--depth", "1", "--seq-len", "64",
                "--batch-size", "2", "--steps", "4", "--untimed", "2", "--no-plan", "--no-check", "--single-repeats",
                "1"]


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """cmd in its own process group (its children, xdist's workers and gdn_kernels' cells, end with it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, until: float) -> str:
    """Wait for proc until the time `until` (perf_counter); past that kill it and its children. How it ended."""
    try:
        rc = proc.wait(timeout=max(1.0, until - time.perf_counter()))
        return f"exit {rc}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "killed at its time limit"


def pytest_outcomes(log: Path) -> dict[str, str]:
    """test id -> PASSED / FAILED / ERROR / SKIPPED, from a `pytest -v` log, with or without xdist (whose lines
    read `[gw0] [ 50%] PASSED tests/...`), also of a killed run."""
    outcomes = {}
    for line in log.read_text(errors="replace").splitlines():
        test, outcome = re.search(r"(tests/\S+::\S+)", line), re.search(r"\b(PASSED|FAILED|ERROR|SKIPPED)\b", line)
        if test and outcome:
            outcomes[test.group(1)] = outcome.group(1)
    return outcomes


def pytest_selected(log: Path) -> int | None:
    """How many tests the run selected, from its header (None before it printed one)."""
    text = log.read_text(errors="replace")
    found = (re.search(r"\d+ workers? \[(\d+) items?\]", text) or re.search(r"(\d+) selected", text)
             or re.search(r"collected (\d+) items?", text))
    return int(found.group(1)) if found else None


def run_checks(work: Path, args, until: float) -> dict:
    workers = importlib.util.find_spec("xdist") is not None
    procs, t0 = {}, time.perf_counter()
    for name, (expr, files, n, env) in (TINY_CHECKS if args.tiny else CHECKS).items():
        parallel = ["-n", str(n)] if workers and n > 1 else []
        procs[name] = start([sys.executable, "-m", "pytest", "--noconftest", "-v", "-p", "no:cacheprovider",
                             "-p", CHECKS_PLUGIN, *parallel, "--durations=0", "-k", expr, *files],
                            work / "checks" / f"{name}.txt",
                            dict(env, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])))
    warm = None
    if not args.tiny:
        warm = start([sys.executable, str(HERE / "gdn_kernels.py"), "--warm-only", "--impls", args.impls,
                      "--shapes", SHAPE_ORDER, "--deadline", str(max(30, until - time.perf_counter() - 10)),
                      "--warm-jobs", str(WARM_JOBS), "--out", str(work / "warm")], work / "checks" / "warm.txt")
    seconds = {}                                   # when each set ended (they end in any order)
    while len(seconds) < len(procs) and time.perf_counter() < until:
        seconds.update({name: round(time.perf_counter() - t0) for name, proc in procs.items()
                        if name not in seconds and proc.poll() is not None})
        time.sleep(0.5)
    result = {}
    for name, proc in procs.items():
        ended = finish(proc, until)
        log = work / "checks" / f"{name}.txt"
        outcomes = pytest_outcomes(log)
        counts = {k: sum(v == k for v in outcomes.values()) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        result[name] = dict(ended=ended, seconds=seconds.get(name, round(time.perf_counter() - t0)),
                            selected=pytest_selected(log), **counts,
                            failed=[t for t, v in outcomes.items() if v in ("FAILED", "ERROR")])
        print(f"checks {name}: {ended}, {counts} of {result[name]['selected'] or '?'}", flush=True)
    if warm is not None:
        result["warm"] = finish(warm, until + 20)
    return result


def run_kernels(work: Path, args, until: float) -> dict:
    cmd = [sys.executable, str(HERE / "gdn_kernels.py"), "--impls", args.impls, "--no-model", "--shape-major",
           "--profile-impls", PROFILED, "--deadline", str(max(20, until - time.perf_counter())),
           "--cell-timeout", str(args.cell_timeout), "--warmup", "25", "--rep", "100", "--out", str(work / "kernels")]
    cmd += sum((["--shape", s] for s in TINY_SHAPES), []) if args.tiny else ["--shapes", SHAPE_ORDER]
    if not args.tiny:
        cmd += ["--save-autotune", str(work / "kernels" / "fla-autotune.tgz")]
    if args.load_autotune:
        cmd += ["--load-autotune", str(Path(args.load_autotune).resolve())]
    ended = finish(start(cmd, work / "kernels" / "log.txt"), until + 30)
    path = work / "kernels" / "kernels.json"
    return dict(ended=ended, **(json.loads(path.read_text()) if path.exists() else {}))


def run_packing(work: Path, args, until: float) -> dict:
    budget = max(10, until - time.perf_counter() - 30)
    cmd = [sys.executable, str(HERE / "packing.py"), *(TINY_PACKING if args.tiny else PACKING),
           "--time-budget", str(budget), "--out", str(work / "packing")]
    ended = finish(start(cmd, work / "packing" / "log.txt"), until)
    path, rows = work / "packing" / "packing.json", work / "packing" / "packing.jsonl"
    if path.exists():
        return dict(ended=ended, **json.loads(path.read_text()))
    return dict(ended=ended, rows=[json.loads(line) for line in rows.read_text().splitlines()] if rows.exists() else [])


# fwd+bwd ratios in the kernel table, where both cells have a time
RATIOS = [("ours", "fla"), ("ours-tuned", "fla"), ("ours-wy", "fla"), ("ours-vtile", "fla"), ("ours-fused", "fla"),
          ("ours", "ours-fp32"), ("ours", "ours-before"), ("ours-tuned", "ours"), ("ours-wy", "ours"),
          ("ours", "ours-vtile"), ("ours", "ours-fused")]


def summary(result: dict) -> str:
    """The short tables: checks, fwd+bwd ms per shape and implementation with the RATIOS, the packs, the profile."""
    checks = {k: v for k, v in result.get("checks", {}).items() if isinstance(v, dict)}
    lines = ["checks (float64 reference): " + "; ".join(
        f"{k}: {v['PASSED']} of {v['selected'] or '?'} passed, {v['FAILED'] + v['ERROR']} failed"
        + (f", {v['selected'] - len(v['failed']) - v['PASSED'] - v['SKIPPED']} unfinished"
           if v["selected"] and v["ended"] != "exit 0" else "")
        + f" ({v['ended']}, {v['seconds']} s)" + (f" {v['failed'][:4]}" if v["failed"] else "")
        for k, v in checks.items())]

    def ms(cell, key):
        v = cell.get(key)
        return v.get("value") if isinstance(v, dict) else None

    cells = result.get("kernels", {}).get("kernels", [])
    impls = list(dict.fromkeys(c["impl"] for c in cells))
    by = {(tuple(c["shape"]), c["impl"]): c for c in cells}
    ratios = [(a, b) for a, b in RATIOS if a in impls and b in impls]
    ours = [i for i in impls if i.startswith("ours")]
    lines += ["", "| B, T, H, K, V | " + " | ".join(f"{i} fwd / fwd+bwd ms" for i in impls)
              + "".join(f" | {a} / {b} fwd+bwd" for a, b in ratios) + "".join(f" | worst err {i}" for i in ours)
              + " |", "|---|" + "---|" * (len(impls) + len(ratios) + len(ours))]
    for shape in dict.fromkeys(tuple(c["shape"]) for c in cells):
        row = []
        for impl in impls:
            c = by.get((shape, impl), {})
            f, fb = ms(c, "fwd_ms"), ms(c, "fwdbwd_ms")
            row.append("-" if f is None and fb is None else
                       f"{f if f is None else round(f, 3)} / {fb if fb is None else round(fb, 3)}"
                       + (" (failed)" if c.get("error") else ""))
        values = [(ms(by.get((shape, a), {}), "fwdbwd_ms"), ms(by.get((shape, b), {}), "fwdbwd_ms"))
                  for a, b in ratios]
        worst = []
        for impl in ours:
            errs = [ms(by.get((shape, impl), {}), f"err_{n}") for n in ("o", "dq", "dk", "dv", "dg", "dbeta")]
            errs = [e for e in errs if e is not None]
            worst.append(f"{max(errs):.1e}" if errs else "-")
        lines.append(f"| {', '.join(map(str, shape))} | " + " | ".join(row)
                     + "".join(f" | {x / y:.2f}" if x and y else " | -" for x, y in values)
                     + "".join(f" | {w}" for w in worst) + " |")
    rows = result.get("packing", {}).get("rows", [])
    lines += ["", "| packing: width | K | tokens/s | step ms |", "|---|---|---|---|"]
    # modes: "sequential", "packed" and "packed, update outside the graph" (packing.py's baseline rows)
    lines += [f"| {r['width']} | "
              + ("train_trial" if r["mode"] == "sequential" else r["mode"].replace("packed", str(r["trials"])))
              + f" | {r.get('tokens_per_s', float('nan')):,.0f} | {r.get('step_ms', float('nan')):.1f} |" for r in rows]
    phases = [c for c in result.get("packing", {}).get("checks", []) if "host_ms" in c]
    lines += [f"host ms per phase, d = {c['width']}, K = {c['trials']}"
              + ("" if c.get("update_in_graph") is not False else ", update outside the graph") + f": {c['host_ms']}"
              for c in phases]
    profiled = [(c["shape"], c["impl"], c.get("profile"), None) for c in cells if c.get("profile")]
    if profiled:
        lines += ["", gdn_kernels.profile_table(profiled)]
    return "\n".join(lines)


def write_back(result: dict, work: Path, out: Path) -> str:
    """summary.json, summary.md and details.tar.gz (the whole work folder) into `out`, each replaced whole."""
    text = summary(result)
    for name, content in (("summary.json", json.dumps(result, indent=1)), ("summary.md", text + "\n")):
        (out / f".{name}").write_text(content)
        (out / f".{name}").replace(out / name)
    with tarfile.open(out / ".details.tar.gz", "w:gz") as tar:
        tar.add(work, arcname="details")
    (out / ".details.tar.gz").replace(out / "details.tar.gz")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", ".out"))
    ap.add_argument("--deadline", type=float, default=460, help="seconds for the whole call")
    ap.add_argument("--checks-s", type=float, default=180, help="at most this many seconds for stage 1")
    ap.add_argument("--kernels-min-s", type=float, default=150, help="seconds stage 1 always leaves to stage 2")
    ap.add_argument("--packing-s", type=float, default=75, help="seconds kept for stage 3")
    ap.add_argument("--cell-timeout", type=float, default=90)
    ap.add_argument("--impls", default=IMPLS)
    ap.add_argument("--load-autotune", help="fla's autotuning picks of an earlier call (its details/kernels/"
                                            "fla-autotune.tgz), same kind of card")
    ap.add_argument("--tiny", action="store_true", help="the CPU smoke run: tiny shapes, kernels interpreted")
    args = ap.parse_args()
    if args.tiny:
        args.impls = "ours,ours-fused,ours-vtile"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kernels_and_packing-"))
    t0 = time.perf_counter()
    end = t0 + args.deadline
    result = dict(command="python3 benchmarks/kernels_and_packing.py " + " ".join(sys.argv[1:]))
    result["checks"] = run_checks(work, args, min(t0 + args.checks_s, end - args.packing_s - args.kernels_min_s))
    write_back(result, work, out)
    result["kernels"] = run_kernels(work, args, end - args.packing_s)
    write_back(result, work, out)
    result["packing"] = run_packing(work, args, end)
    result["seconds"] = time.perf_counter() - t0
    text = write_back(result, work, out)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{result['kernels'].get('env', {})}, {result['seconds']:.0f} s\n{text}", flush=True)


if __name__ == "__main__":
    main()
