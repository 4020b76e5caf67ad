"""One device call for the wide-head kernels and the pack's optimizer step (issue 21): the float64 checks on the
card first, then ours against fla 0.6.0 at every shape of docs/benchmarks.md's reference table (with the kernels
before the wide-head path as a baseline in the same call), then the packing rows.

    PYTHONPATH=/tmp/site:. python3 benchmarks/kernels_and_packing.py --out $OUT      # one H100: at most 7.8 minutes
    python benchmarks/kernels_and_packing.py --tiny --out /tmp/k                        # CPU smoke run (interpreted)

Stages, each in subprocesses with time limits, all inside --deadline seconds:
1. checks: `pytest --noconftest -v tests/gdn/test_triton.py` (every benchmark shape and dtype against the float64
   reference, the tiny shapes, the wide-head path) in four processes at once (the benchmark shapes in bf16, fp32,
   fp16; the small cases with tests/gdn/test_packed.py), while every timed kernel compiles for every shape in the
   background (gdn_kernels.py --warm-only: fla's autotuning then only times compiled configs).
2. kernels: gdn_kernels.py --impls ours,ours-fused,fla,ours-tf32 --shape-major, the wide shapes first (ours, fla,
   ours-fused at each; ours-fused and ours-tf32 only at K >= 128, where they differ from ours; ours-tf32 last);
   then CUDA ms per kernel of ours at the wide shapes (gdn_kernels.py --profile).
3. packing: packing.py --widths 256 128 --packs 8 16 (K = 8 at d = 256 and K = 16 at d = 128 among them), with the
   per-phase timing (host ms of the clip and the optimizer) and the kernel profile at d = 256, K = 8.
A short table comes last; everything in full under --out: checks/*.txt, kernels/kernels.json, profile/profile.md,
packing/packing.json, packing/profile_d256_k8.txt, summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# pytest -k expressions of the check processes, run at once (the benchmark shapes' ids name the dtype); "small" also
# runs tests/gdn/test_packed.py
CHECKS = {"bf16-shapes": "benchmark_shapes and bf16", "fp32-shapes": "benchmark_shapes and fp32",
          "fp16-shapes": "benchmark_shapes and fp16", "small": "not benchmark_shapes"}
TINY_CHECKS = {"tiny": "fp32-T1-no-l2"}             # one fused-path and one wide-head-path test
WIDE_FIRST = "2,3,4,0,1"               # gdn_kernels.SHAPES, the wide shapes (issue 21's targets) first
TINY_SHAPES = ["1,32,1,128,16"]
PACKING = ["--widths", "256", "128", "--packs", "8", "16", "--no-plan", "--no-check", "--single-repeats", "1"]
TINY_PACKING = ["--widths", "32", "--packs", "2", "--depth", "1", "--seq-len", "64", "--batch-size", "2",
                "--steps", "4", "--untimed", "2", "--no-plan", "--no-check", "--single-repeats", "1"]


# The wide-head kernels are off by default until this call has checked them on the card (gdn.ops.gated_delta_rule.
# triton.TILED_MIN_K): every process of this call runs them from K = 128 ("ours-fused" turns them off again).
WIDE_HEADS_ENV = {"DELTAMU_GDN_TILED_MIN_K": "128"}


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **WIDE_HEADS_ENV, **(env or {})})


def finish(proc: subprocess.Popen, until: float) -> str:
    """Wait for proc until the time `until` (perf_counter); kill it past that. Returns how it ended."""
    try:
        rc = proc.wait(timeout=max(1.0, until - time.perf_counter()))
        return f"exit {rc}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "killed at its time limit"


def pytest_outcomes(log: Path) -> dict[str, str]:
    """test id -> PASSED / FAILED / ERROR / SKIPPED, from a `pytest -v` log (also of a killed run)."""
    found = re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", log.read_text(errors="replace"), re.M)
    return dict(found)


def run_checks(out: Path, args, until: float) -> dict:
    sets = TINY_CHECKS if args.tiny else CHECKS
    procs = {}
    for name, expr in sets.items():
        files = ["tests/gdn/test_triton.py"] + (["tests/gdn/test_packed.py"] if name == "small" else [])
        procs[name] = start([sys.executable, "-m", "pytest", "--noconftest", "-v", "-p", "no:cacheprovider",
                             "-k", expr, *files], out / "checks" / f"{name}.txt")
    warm = None
    if not args.tiny:
        warm = start([sys.executable, str(HERE / "gdn_kernels.py"), "--warm-only", "--impls", args.impls,
                      "--shapes", WIDE_FIRST, "--deadline", str(max(30, until - time.perf_counter() - 10)),
                      "--out", str(out / "warm")], out / "checks" / "warm.txt")
    result = {}
    for name, proc in procs.items():
        ended = finish(proc, until)
        outcomes = pytest_outcomes(out / "checks" / f"{name}.txt")
        counts = {k: sum(v == k for v in outcomes.values()) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        result[name] = dict(ended=ended, **counts, failed=[t for t, v in outcomes.items() if v in ("FAILED", "ERROR")])
        print(f"checks {name}: {ended}, {counts}", flush=True)
    if warm is not None:
        result["warm"] = finish(warm, until + 20)
    return result


def run_kernels(out: Path, args, until: float) -> dict:
    cmd = [sys.executable, str(HERE / "gdn_kernels.py"), "--impls", args.impls, "--no-model", "--shape-major",
           "--deadline", str(max(20, until - time.perf_counter())), "--cell-timeout", str(args.cell_timeout),
           "--warmup", "25", "--rep", "100", "--out", str(out / "kernels")]
    cmd += sum((["--shape", s] for s in TINY_SHAPES), []) if args.tiny else ["--shapes", WIDE_FIRST]
    ended = finish(start(cmd, out / "kernels" / "log.txt"), until + 30)
    path = out / "kernels" / "kernels.json"
    return dict(ended=ended, **(json.loads(path.read_text()) if path.exists() else {}))


def run_profile(out: Path, args, until: float) -> str:
    """CUDA ms per kernel of ours at the wide shapes (gdn_kernels.py --profile), whatever fits before `until`."""
    if args.tiny:
        return "not run on the CPU"
    cmd = [sys.executable, str(HERE / "gdn_kernels.py"), "--profile", "--shapes", WIDE_FIRST.rsplit(",", 2)[0],
           "--cell-timeout", str(max(5, (until - time.perf_counter()) / 3)), "--out", str(out / "profile")]
    ended = finish(start(cmd, out / "profile" / "log.txt"), until)
    path = out / "profile" / "profile.md"
    return path.read_text() if path.exists() else ended


def run_packing(out: Path, args, until: float) -> dict:
    budget = max(10, until - time.perf_counter() - 30)
    cmd = [sys.executable, str(HERE / "packing.py"), *(TINY_PACKING if args.tiny else PACKING),
           "--time-budget", str(budget), "--out", str(out / "packing")]
    ended = finish(start(cmd, out / "packing" / "log.txt"), until)
    path, rows = out / "packing" / "packing.json", out / "packing" / "packing.jsonl"
    if path.exists():
        return dict(ended=ended, **json.loads(path.read_text()))
    return dict(ended=ended, rows=[json.loads(line) for line in rows.read_text().splitlines()] if rows.exists() else [])


def summary(result: dict) -> str:
    """The short table: checks, then fwd+bwd ms per shape and implementation with ours / fla, then the packs."""
    lines = ["checks (float64 reference): " + "; ".join(
        f"{k}: {v['PASSED']} passed, {v['FAILED'] + v['ERROR']} failed ({v['ended']})"
        + (f" {v['failed'][:4]}" if v["failed"] else "")
        for k, v in result["checks"].items() if isinstance(v, dict))]

    def ms(cell, key):
        v = cell.get(key)
        return v.get("value") if isinstance(v, dict) else None

    cells = result["kernels"].get("kernels", [])
    impls = list(dict.fromkeys(c["impl"] for c in cells))
    by = {(tuple(c["shape"]), c["impl"]): c for c in cells}
    lines += ["", "| B, T, H, K, V | " + " | ".join(f"{i} fwd / fwd+bwd ms" for i in impls)
              + " | ours / fla fwd+bwd | ours / ours-fused fwd+bwd | worst err (ours) |",
              "|---|" + "---|" * (len(impls) + 3)]
    for shape in dict.fromkeys(tuple(c["shape"]) for c in cells):
        row = []
        for impl in impls:
            c = by.get((shape, impl), {})
            f, fb = ms(c, "fwd_ms"), ms(c, "fwdbwd_ms")
            row.append("-" if f is None and fb is None else
                       f"{f if f is None else round(f, 3)} / {fb if fb is None else round(fb, 3)}"
                       + (" (failed)" if c.get("error") else ""))
        ours = ms(by.get((shape, "ours"), {}), "fwdbwd_ms")
        ratios = [ours / other if ours and other else None
                  for other in (ms(by.get((shape, "fla"), {}), "fwdbwd_ms"),
                                ms(by.get((shape, "ours-fused"), {}), "fwdbwd_ms"))]
        errs = [ms(by.get((shape, "ours"), {}), f"err_{n}") for n in ("o", "dq", "dk", "dv", "dg", "dbeta")]
        errs = [e for e in errs if e is not None]
        lines.append(f"| {', '.join(map(str, shape))} | " + " | ".join(row) + " | "
                     + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios)
                     + (f" | {max(errs):.1e} |" if errs else " | - |"))
    rows = result["packing"].get("rows", [])
    lines += ["", "| packing: width | K | tokens/s | step ms |", "|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['trials'] if r['mode'] == 'packed' else 'train_trial'} | "
              f"{r.get('tokens_per_s', float('nan')):,.0f} | {r.get('step_ms', float('nan')):.1f} |" for r in rows]
    phases = [c for c in result["packing"].get("checks", []) if "host_ms" in c]
    lines += [f"host ms per phase, d = {c['width']}, K = {c['trials']}: {c['host_ms']}" for c in phases]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", ".out"))
    ap.add_argument("--deadline", type=float, default=460, help="seconds for the whole call")
    ap.add_argument("--checks-s", type=float, default=150, help="seconds for stage 1")
    ap.add_argument("--packing-s", type=float, default=100, help="seconds kept for stage 3")
    ap.add_argument("--profile-s", type=float, default=30, help="seconds kept for the kernel profile")
    ap.add_argument("--cell-timeout", type=float, default=90)
    ap.add_argument("--impls", default="ours,ours-fused,fla,ours-tf32")
    ap.add_argument("--tiny", action="store_true", help="the CPU smoke run: tiny shapes, kernels interpreted")
    args = ap.parse_args()
    if args.tiny:
        args.impls = "ours,ours-fused"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    end = t0 + args.deadline
    result = dict(command="python3 benchmarks/kernels_and_packing.py " + " ".join(sys.argv[1:]))
    result["checks"] = run_checks(out, args, min(end - args.packing_s - 60, t0 + args.checks_s))
    result["kernels"] = run_kernels(out, args, end - args.packing_s - args.profile_s)
    result["profile"] = run_profile(out, args, end - args.packing_s)
    result["packing"] = run_packing(out, args, end)
    result["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    text = summary(result) + ("\n\n" + result["profile"] if "|" in result["profile"] else "")
    (out / "summary.md").write_text(text + "\n")
    print(f"\n{result['kernels'].get('env', {})}, {result['seconds']:.0f} s\n{text}", flush=True)


if __name__ == "__main__":
    main()
