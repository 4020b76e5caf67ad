"""The wide-head kernels' launch configs on the card (issue 21): CUDA ms of every kernel of one fwd+bwd under each
candidate (num_warps, num_stages, tile sizes), at the wide benchmark shapes, bf16, in one device call.

    PYTHONPATH=. python3 benchmarks/kernel_configs.py --out $OUT/cfg             # one H100: about 5 minutes
    python benchmarks/kernel_configs.py --tiny --out /tmp/cfg                   # CPU smoke run (interpreted)

Why: the wide-head kernels run one or two programs an SM (166-255 registers a thread at 4 warps, 116-148 KB of
shared memory for the pipelined state passes: benchmarks/triton_resources.py), so how they are launched decides how
much of their load latency is hidden; fla's kernels autotune their warps and stages per shape. The shipped configs
(gdn.ops.gated_delta_rule.triton.NUM_WARPS, NUM_STAGES, and the tile sizes read in `tiles`) were first picked by
offline spill counts (of unspecialised code, 2026-12-07 evening), then some of them by this sweep on the card.

A candidate changes only how a kernel is launched, never its products (a tile size changes the order of a sum), so
each is compared with the shipped config's output and gradients in the same process (relative Frobenius
difference; a config that is off by more than bf16's rounding is flagged, and a default changed from this table is
checked against the float64 reference by tests/gdn/test_triton.py on the card before it ships).

Two phases inside --deadline: every (shape, candidate) runs one fwd+bwd in parallel processes (Triton compiles and
caches its kernels on disk), then one process per shape times the shipped config and every candidate one after
another, alone on the GPU (torch.profiler, CUDA time per kernel, per iteration). Output: configs.json (every
record), configs.md (ms per kernel and candidate; the best candidate per kernel and the sum of the bests) and
picks.txt (the fastest config per kernel over the shapes, in DELTAMU_GDN_LAUNCH's form). Check and time the picks
beside the shipped configs with
`DELTAMU_GDN_TUNED=$(cat picks.txt) PYTHONPATH=/tmp/site:. python3 benchmarks/kernels_and_packing.py --out $OUT/k`
(its column ours-tuned); then write the winners into gdn.ops.gated_delta_rule.triton's NUM_WARPS / NUM_STAGES.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

# The wide-head path's launch-config keys (gdn.ops.gated_delta_rule.triton.NUM_WARPS / NUM_STAGES) and kernel names
KERNELS = {"prep": "_chunk_prep_kernel", "state_fwd_tiled": "_chunk_state_fwd_tiled_kernel",
           "output": "_chunk_output_kernel", "dvn_local": "_chunk_dvn_local_kernel",
           "state_bwd_tiled": "_chunk_state_bwd_tiled_kernel", "grad_ktile": "_chunk_grad_ktile_kernel",
           "grad_reduce": "_chunk_grad_reduce_kernel", "grad_dqdk": "_chunk_grad_dqdk_kernel",
           "grad_rows": "_chunk_grad_rows_kernel",                  # with DELTAMU_GDN_TILED_REDUCE=rows
           # the gradient in two kernels, launched only with DELTAMU_GDN_TILED_GRAD=wy (sweep them with it set)
           "grad_dqk": "_chunk_grad_dqk_kernel", "grad_wy": "_chunk_grad_wy_kernel"}
# Candidates: name -> overrides. "warps" / "stages" set every key of KERNELS (the prep keeps one stage: its loops
# are unrolled, so stages do nothing there); "tiles" sets the launcher's LAUNCH_TILES constants read by `tiles`. Each
# is set as DELTAMU_GDN_LAUNCH would set it (launch_items); the state passes' V tile has its own switch
# (TILED_STATE_BV, 32 timed slower on 2026-12-07) and is not swept here.
CANDIDATES = {
    "w4s1": dict(warps=4, stages=1), "w4s2": dict(warps=4, stages=2), "w4s3": dict(warps=4, stages=3),
    "w8s1": dict(warps=8, stages=1), "w8s2": dict(warps=8, stages=2), "w8s3": dict(warps=8, stages=3),
    "w16s1": dict(warps=16, stages=1), "w16s2": dict(warps=16, stages=2),
    "bvk64": dict(tiles={"TILED_GRAD_KTILE_BLOCK_V": 64}),          # the K-tile gradient's V loop
    "bvk16": dict(tiles={"TILED_GRAD_KTILE_BLOCK_V": 16}),
    "bvt32": dict(tiles={"TILED_GRAD_BLOCK_V": 32}),                # output and Aqk^T dO V tile
    "bvt128": dict(tiles={"TILED_GRAD_BLOCK_V": 128}),
    "bvg64": dict(tiles={"GRAD_BLOCK_V": 64}),                      # dv's V loop (reduction, dq dk dv)
}
# A candidate may also be named KERNEL:CANDIDATE (e.g. grad_ktile:w4s2): that launch config for that kernel alone,
# the others shipped (--per-kernel makes them). On 2026-12-07 every wide-head kernel at 4 warps at once crashed or gave
# NaN at T = 16384 while 4 warps won 23-31 % for two of the gradient's kernels at the shorter shapes: one kernel at a
# time says which kernels can take 4 warps.
SHAPES = [(16, 1024, 6, 128, 256), (8, 2048, 16, 128, 128), (2, 16384, 16, 128, 128)]
TINY_SHAPES = [(1, 70, 1, 128, 128)]


def _emit(**record) -> None:
    print("RESULT " + json.dumps(record), flush=True)


def split_name(name: str) -> tuple[str | None, str]:
    """(the kernel a KERNEL:CANDIDATE name is for, or None for every kernel; the candidate)."""
    key, _, base = name.rpartition(":")
    return key or None, base


def check_name(name: str) -> str | None:
    """Why `name` is not a candidate (None if it is)."""
    key, base = split_name(name)
    if base not in CANDIDATES:
        return f"unknown candidate {base!r} (known: {', '.join(CANDIDATES)})"
    if key is not None and (key not in KERNELS or "warps" not in CANDIDATES[base]):
        return f"{name!r}: KERNEL:CANDIDATE takes a kernel of {', '.join(KERNELS)} and a warps candidate"
    return None


def launch_items(name: str, keys=KERNELS) -> list[str]:
    """Candidate `name` in DELTAMU_GDN_LAUNCH's form: its warps and stages for each of `keys` (the prep takes one
    stage: its loops are unrolled), or its tiles; a KERNEL:CANDIDATE name for its kernel only."""
    key, name = split_name(name)
    if key is not None:
        keys = [key]
    cand = CANDIDATES[name]
    if "warps" in cand:
        return [f"{key}={cand['warps']}x{1 if key == 'prep' else cand['stages']}" for key in keys]
    return [f"{const}={value}" for const, value in cand["tiles"].items()]


def _apply(launcher, shipped: dict, name: str | None) -> None:
    """Restore the shipped config, then set candidate `name` (None: the shipped config) through the launcher's
    DELTAMU_GDN_LAUNCH mechanism, so that what is swept is what the picks can name."""
    launcher.NUM_WARPS.update(shipped["warps"])
    launcher.NUM_STAGES.update(shipped["stages"])
    for const, value in shipped["tiles"].items():
        setattr(launcher, const, value)
    if name is not None:
        launcher.set_launch(",".join(launch_items(name)))


def cell(shape, names: list[str], time_them: bool, iters: int) -> None:
    """One process: the shipped config, then each candidate, at one shape; with time_them the CUDA ms per kernel
    (else one fwd+bwd each, which compiles them)."""
    import torch
    import gdn_kernels
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"
    import gdn.ops.gated_delta_rule.triton as launcher
    shipped = dict(warps=dict(launcher.NUM_WARPS), stages=dict(launcher.NUM_STAGES),
                   tiles={c: getattr(launcher, c) for c in launcher.LAUNCH_TILES})
    fn = gdn_kernels._impl("ours")
    from gdn.ops.gated_delta_rule.triton import triton_chunk_gated_delta_rule
    xs, do = gdn_kernels._inputs(*shape)
    leaves = [x.detach().requires_grad_() for x in xs]
    # an initial state and a final state's gradient too, as the float64 checks give them: on 2026-12-07 a config
    # that matched the shipped one without them put dk, dv, dg, dbeta and dh0 20-1000x off with them (the state
    # backward's first dh)
    B, _, H, K = xs[0].shape
    gen = torch.Generator(device=do.device).manual_seed(1)
    h0 = 0.5 * torch.randn(B, H, K, shape[4], generator=gen, device=do.device)
    dht = torch.randn(B, H, K, shape[4], generator=gen, device=do.device)

    def outputs():
        for x in leaves:
            x.grad = None
        o = fn(*leaves)
        o.backward(do)
        got = [o.detach().float()] + [x.grad.float() for x in leaves]
        for x in leaves:
            x.grad = None
        h0_leaf = h0.clone().requires_grad_()
        o, ht = triton_chunk_gated_delta_rule(*leaves, initial_state=h0_leaf, output_final_state=True,
                                              use_qk_l2norm=True)
        torch.autograd.backward([o, ht], [do, dht])
        return got + [o.detach().float(), ht.detach().float(), h0_leaf.grad.float()] + [x.grad.float() for x in leaves]

    ref = None
    for name in [None, *names]:
        try:
            _apply(launcher, shipped, name)
            got = outputs()
            if ref is None:
                ref = got
            diff = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(got, ref))
            record = dict(shape=shape, config=name or "shipped", diff=diff)
            if time_them and cuda:
                prof = gdn_kernels._kernel_profile(fn, leaves, do, iters)
                record.update(total_ms=prof["total_ms"], kernels={k["name"]: k["ms"] for k in prof["kernels"]})
            _emit(**record)
        except Exception as e:                                # an OutOfResources is one candidate's result
            _emit(shape=shape, config=name or "shipped", error=f"{type(e).__name__}: {str(e)[:200]}")
            if "CUDA" in str(e):            # "Triton Error [CUDA]: an illegal memory access" kills this
                return                      # process's context: time_shape runs the candidates left in a new one
        finally:
            if cuda:
                torch.cuda.synchronize()
    _apply(launcher, shipped, None)


def _run(args: list[str], timeout: float, log: Path) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, timeout), cwd=ROOT)
        out, err = p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = f"timed out after {timeout:.0f} s"
    with log.open("a") as f:
        f.write(f"$ {' '.join(args)}\n{out}\n{err}\n")
    return [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]


def time_shape(shape, names: list[str], until: float, log: Path) -> list[dict]:
    """Time the shipped config and `names` at one shape, in one process, or more: a candidate that kills the CUDA
    context (cell stops there) is recorded with its error and the rest run in a new process, until each has a
    record or `until` (perf_counter) passes. One record per config (the shipped one from the first process)."""
    records, todo = [], list(names)
    while True:
        got = _run([",".join(map(str, shape)), ",".join(todo), "time"], until - time.perf_counter(), log)
        have = {r["config"] for r in records}
        records += [r for r in got if r["config"] not in have]
        done = {r["config"] for r in got}
        left = [n for n in todo if n not in done]
        if not left or len(left) == len(todo) or until - time.perf_counter() < 10:
            return records
        todo = left


def table(records: list[dict]) -> str:
    """Per shape: ms per kernel (rows) and config (columns), the best per kernel, the sums."""
    lines = []
    for shape in sorted({tuple(r["shape"]) for r in records}, key=str):
        rs = [r for r in records if tuple(r["shape"]) == shape and "kernels" in r]
        if not rs:
            continue
        configs = [r["config"] for r in rs]
        lines += [f"\n{', '.join(map(str, shape))} (CUDA ms per kernel, fwd+bwd; diff: largest relative difference "
                  "from the shipped config's o and gradients)\n",
                  "| kernel | " + " | ".join(configs) + " | best |", "|---" * (len(configs) + 2) + "|"]
        best_sum = 0.0
        for key, kname in KERNELS.items():
            ms = [next((v for n, v in r["kernels"].items() if n.startswith(kname[:60])), None) for r in rs]
            have = [(m, c) for m, c in zip(ms, configs) if m is not None]
            if not have:
                continue
            m_best, c_best = min(have)
            best_sum += m_best
            lines.append(f"| {key} | " + " | ".join("-" if m is None else f"{m:.3f}" for m in ms)
                         + f" | {c_best} {m_best:.3f} |")
        lines.append("| total | " + " | ".join(f"{r['total_ms']:.3f}" for r in rs)
                     + f" | sum of bests {best_sum:.3f} |")
        lines.append("| diff | " + " | ".join(f"{r['diff']:.1e}" for r in rs) + " | |")
        failed = [r for r in records if tuple(r["shape"]) == shape and "error" in r]
        lines += [f"- {r['config']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def picks(records: list[dict], margin: float = 0.02, max_diff: float = 1e-3) -> str:
    """The fastest launch config per kernel over every timed shape (the sum of its CUDA ms), and each tile candidate
    that makes the whole fwd+bwd faster, where they beat the shipped config by more than `margin`, in
    DELTAMU_GDN_LAUNCH's form (kernel=WARPSxSTAGES, TILE=N); "" when nothing beats it. Only configs timed at every
    shape and within `max_diff` of the shipped config's results at each compete (a launch config reorders sums by
    bf16's rounding at most; more is a broken config)."""
    timed = [r for r in records if "kernels" in r and r["diff"] <= max_diff]
    shapes = {tuple(r["shape"]) for r in timed}

    def total(config: str, kname: str | None) -> float | None:
        rs = [r for r in timed if r["config"] == config]
        if len(rs) != len(shapes):
            return None
        ms = [r["total_ms"] if kname is None else
              next((v for n, v in r["kernels"].items() if n.startswith(kname[:60])), None) for r in rs]
        return None if None in ms else sum(ms)

    out = []
    names = {r["config"] for r in timed} - {"shipped"}
    for key, kname in KERNELS.items():
        shipped = total("shipped", kname)
        mine = [n for n in names if split_name(n)[0] in (None, key) and "warps" in CANDIDATES[split_name(n)[1]]]
        tried = [(ms, name) for name in sorted(mine) if (ms := total(name, kname)) is not None]
        if shipped is not None and tried and min(tried)[0] < (1 - margin) * shipped:
            out += launch_items(min(tried)[1], [key])
    shipped = total("shipped", None)
    for name, cand in CANDIDATES.items():
        ms = total(name, None)
        if "tiles" in cand and shipped is not None and ms is not None and ms < (1 - margin) * shipped:
            out += launch_items(name)
    return ",".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", ".out") + "/cfg")
    ap.add_argument("--deadline", type=float, default=360, help="seconds for the whole call")
    ap.add_argument("--compile-s", type=float, default=200, help="at most this many seconds for the compile phase")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--per-kernel", default="", help="comma-separated kernels (keys of KERNELS): each warps candidate "
                                                      "also for each of them alone (KERNEL:CANDIDATE)")
    ap.add_argument("--jobs", type=int, default=12, help="compile processes at a time")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--shapes", default="", help="semicolon-separated B,T,H,K,V (default: SHAPES, the wide "
                                                   "benchmark shapes)")
    ap.add_argument("--tiny", action="store_true", help="the CPU smoke run: one tiny shape, kernels interpreted")
    ap.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        shape = tuple(int(x) for x in args.cell[0].split(","))
        cell(shape, [n for n in args.cell[1].split(",") if n], args.cell[2] == "time", args.iters)
        return

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    log.write_text("")
    shapes = TINY_SHAPES if args.tiny else SHAPES
    if args.shapes:
        shapes = [tuple(int(x) for x in item.split(",")) for item in args.shapes.split(";") if item]
    names = [n for n in args.candidates.split(",") if n]
    warps = [n for n in CANDIDATES if "warps" in CANDIDATES[n]]
    names += [f"{key}:{n}" for key in args.per_kernel.split(",") if key for n in warps]
    if why := next((w for n in names if (w := check_name(n))), None):
        sys.exit(f"kernel_configs: {why}")
    # phase 1: compile every (shape, candidate) in parallel processes (Triton's on-disk cache keeps them)
    if not args.tiny:
        procs, queue = [], [(s, n) for s in shapes for n in names]      # shape by shape: the last two share K, V
        until = t0 + args.compile_s
        while (queue or procs) and time.perf_counter() < until:
            while queue and len(procs) < args.jobs:
                s, n = queue.pop(0)
                procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--cell",
                                               ",".join(map(str, s)), n, "compile"], cwd=ROOT,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
            procs = [p for p in procs if p.poll() is None]
        for p in procs:
            p.kill()
        print(f"compiled in {time.perf_counter() - t0:.0f} s ({len(queue)} left)", flush=True)
    # phase 2: time, one process per shape, alone on the GPU
    records = []
    for i, s in enumerate(shapes):
        left = t0 + args.deadline - time.perf_counter()
        records += time_shape(s, names, time.perf_counter() + left / (len(shapes) - i), log)
        (out / "configs.json").write_text(json.dumps(records, indent=1))
        chosen = picks(records)
        text = table(records) + f"\npicks (DELTAMU_GDN_LAUNCH): {chosen or 'none: the shipped configs'}\n"
        (out / "configs.md").write_text(text)
        (out / "picks.txt").write_text(chosen + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
