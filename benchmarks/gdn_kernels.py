"""The gated delta rule kernels on the GPU: ours (gdn.ops.gated_delta_rule.triton) vs fla 0.6.0 vs our chunked PyTorch
path, then the whole proxy model's training step with our kernels vs the chunked PyTorch path.

One device call (fla-core and flash-linear-attention 0.6.0 installed from carried wheels):

    PYTHONPATH=. python benchmarks/gdn_kernels.py --out $OUT
    PYTHONPATH=. python benchmarks/gdn_kernels.py --profile --shapes 2,3,4 --out $OUT   # CUDA ms per kernel of ours
    PYTHONPATH=. python benchmarks/gdn_kernels.py --warm --out $OUT   # compile everything first, in parallel

fla autotunes every kernel per shape, and at the large shapes compiling its configs one after another took 100-200 s
a shape on an H100, more than a device call can spare. `--warm` first runs one forward+backward of every (shape,
implementation) in parallel processes, which fills Triton's on-disk kernel cache, then deletes the autotuning
results those noisy concurrent runs stored (fla caches them beside the kernels), so the measured cells still pick
their configs alone on the GPU, from compiled kernels. Point TRITON_CACHE_DIR at a folder that outlives the call to
warm in one call and measure in the next. Better still, `--save-autotune $OUT/fla-autotune.tgz` keeps fla's picks;
a later call on the same kind of card carries that file and passes `--load-autotune`, and fla only compiles the
configs it picked (the picks were made with the GPU to itself in the run that saved them).

Per shape (B, T, H, K, V) and implementation: forward ms and forward+backward ms (medians of
triton.testing.do_bench, inputs requiring grad, as in training), TFLOP/s by the FLOP model of
shared/reference/gdn-kernels.md section 6, and the relative error (|x - ref| / |ref|) of o and of every gradient
against a float64 reference computed on the GPU at B <= 2 (the recurrence where its autograd graph fits, else the
chunked PyTorch path in float64). Inputs as fla's benchmark registry: q, k, v ~ randn, g = logsigmoid(U(0,1)),
beta = sigmoid(U(0,1)), all bf16, L2 norm of q and k inside the op.

Every (shape, implementation) cell runs in its own process: fla's backward dies with an illegal memory access at
K = 32 on Triton 3.6, which would take the CUDA context (and every later cell) with it. A cell prints one JSON line
per finished measurement, so a crash keeps what came before it.
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
sys.path.insert(0, str(ROOT))

from gdn.ops.gated_delta_rule import CHUNK_SIZE  # noqa: E402

SHAPES = [(16, 1024, 6, 32, 64), (16, 1024, 6, 64, 128), (16, 1024, 6, 128, 256), (8, 2048, 16, 128, 128),
          (2, 16384, 16, 128, 128)]
IMPLS = ("ours", "fla", "chunk")
# Variants of our kernels, each set through the environment of its own cell process (the switches
# gdn.ops.gated_delta_rule.triton reads at import) and timed only where it differs from "ours" (on the wide-head
# path: bf16 at K >= TILED_MIN_K): the kernels as they were before the wide-head path (ours-fused), that path with
# TF32 products only (ours-tf32), as it was checked and timed on 2026-12-06 (ours-vtile: the gradient per V tile,
# dq, dk, dv, dbeta in the reduction), the gradient in two kernels (ours-wy), and the default until 2026-12-07,
# ours-fp32 (FP32: every intermediate stored in fp32, TF32 in every product with the state, the full reduction, the
# state forward, the gradient by K tiles and dq, dk at 8 warps). The default since stores h, dh, w, the gradient's
# V-sums and its [C, C] intermediates in bf16, takes bf16 operands in w S and the gradient's four products, reduces
# from the forward's G, norms and Aqk, and runs those kernels at 4 warps (docs/benchmarks.md, "The bf16 candidate on
# the card" and "Fewer bytes in the gradient"). ours-bf16-all: all eight named products on bf16 operands (on an H100
# o was 1.0 off at K = 256, V = 32: Aqk vn). ours-wu-bf16: u and vn in bf16 too, as fla stores them (on an H100 dg
# 9.9e-3 at a zero-gate stress case, bound 1e-2); ours-dvn: dvn in bf16 (not yet checked alone on a card);
# ours-copies: the gradient by K tiles reads bf16 copies of vn and dvn (the same bits, half the bytes;
# TILED_GRAD_COPIES); ours-ktile-cc: its K tiles 0 and 1 sum dO vn^T and dvn v^T, no extra program (TILED_KTILE_CC); ours-row-dots:
# its K tiles make the reduction's row dots (TILED_ROW_DOTS); ours-lean: the three; ours-tuned: DELTAMU_GDN_TUNED's
# launch configs, ours-lean-tuned both. ours-before: the default until 2026-12-08, before k dS and dq, dk's products
# took bf16 operands, Aqk^T dO was stored in bf16 and the state backward ran at 4 warps, 3 stages at K <= 128
# (timed on an H100 that day as ours-ops-w4: the state backward's failure at 4 warps, T = 16384, was its k dS in
# TF32). The variants timed on 2026-12-07 and dropped since (the looped prep, 32-wide state tiles) are in
# docs/benchmarks.md.
FP32 = {"DELTAMU_GDN_TILED_STATE": "fp32", "DELTAMU_GDN_TILED_WU": "fp32", "DELTAMU_GDN_TILED_SUMS": "fp32",
        "DELTAMU_GDN_TILED_BF16_MORE": "", "DELTAMU_GDN_TILED_CC": "fp32", "DELTAMU_GDN_TILED_REDUCE": "full",
        "DELTAMU_GDN_TILED_DVN": "fp32"}
LEAN = {"DELTAMU_GDN_TILED_GRAD_COPIES": "bf16", "DELTAMU_GDN_TILED_KTILE_CC": "k-tiles",
        "DELTAMU_GDN_TILED_ROW_DOTS": "k-tiles"}
# the launch configs benchmarks/kernel_configs.py picked (its picks.txt), given as DELTAMU_GDN_TUNED
TUNED = {"DELTAMU_GDN_LAUNCH": os.environ.get("DELTAMU_GDN_TUNED", "")}
OURS_VARIANTS = {"ours-fused": {"DELTAMU_GDN_TILED_MIN_K": "100000"},
                 "ours-vtile": {"DELTAMU_GDN_TILED_GRAD": "vtile", "DELTAMU_GDN_TILED_DQDK": "inline"},
                 # the gradient in two kernels (dq^ per K tile, then the backward through T per chunk)
                 "ours-wy": {"DELTAMU_GDN_TILED_GRAD": "wy"},
                 "ours-tf32": {"DELTAMU_GDN_TILED_BF16": "0", **FP32},
                 "ours-fp32": {**FP32, "DELTAMU_GDN_LAUNCH": "grad_ktile=8x1,grad_dqdk=8x1,state_fwd_tiled=8x2"},
                 "ours-bf16-all": {"DELTAMU_GDN_TILED_BF16_MORE": "ws,av,ado,kds,dos,dvns,vnds,dp"},
                 "ours-wu-bf16": {"DELTAMU_GDN_TILED_WU": "bf16"},
                 "ours-dvn": {"DELTAMU_GDN_TILED_DVN": "bf16"},
                 "ours-copies": {"DELTAMU_GDN_TILED_GRAD_COPIES": "bf16"},
                 "ours-ktile-cc": {"DELTAMU_GDN_TILED_KTILE_CC": "k-tiles"},
                 "ours-row-dots": {"DELTAMU_GDN_TILED_ROW_DOTS": "k-tiles"},
                 "ours-lean": LEAN,
                 "ours-tuned": TUNED,
                 "ours-lean-tuned": {**LEAN, **TUNED},
                 "ours-before": {"DELTAMU_GDN_TILED_BF16_MORE": "ws,dos,dvns,vnds,dp", "DELTAMU_GDN_TILED_DVN": "fp32"}}
# The order cells are timed in (a deadline cuts the last); with --shape-major the first SHAPE_MAJOR of them shape by
# shape, then the others implementation by implementation.
TIMED = ("ours", "fla", "ours-before", "ours-lean", "ours-lean-tuned", "ours-tuned", "ours-fp32", "ours-copies",
         "ours-ktile-cc", "ours-row-dots", "ours-dvn", "ours-wu-bf16", "ours-bf16-all", "ours-wy",
         "ours-vtile", "ours-fused", "ours-tf32")
SHAPE_MAJOR = 4
ERROR_BATCH = 2                # batch of the accuracy check (the float64 reference is memory-hungry)
MODEL_WIDTHS = (256, 1024)
MODEL_DEPTH, MODEL_SEQ, MODEL_BATCH, MODEL_STEPS = 8, 1024, 16, 30


def flops_per_token_head(K: int, V: int, C: int = CHUNK_SIZE) -> tuple[float, float]:
    """(forward, backward) FLOPs per token and head, gdn-kernels.md section 6 (triangular parts counted dense). C is
    the chunk length (64 in every implementation here, fla's included)."""
    fwd = 6 * C * K + 4 * C * V + 6 * K * V + C * C / 3
    bwd = 18 * C * K + 10 * C * V + 16 * K * V + 4 * C * C
    return fwd, bwd


# ---------------------------------------------------------------------------------------------- one cell, in-process
def _emit(**record) -> None:
    print("RESULT " + json.dumps(record), flush=True)


def _device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _bench(fn, warmup: int, rep: int, grad_to_none=None) -> float:
    """Median ms of fn: triton.testing.do_bench on CUDA; off CUDA (the CPU smoke run, kernels interpreted) the
    median of three timed calls after one."""
    if _device() == "cuda":
        import triton
        return triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median")
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times[1:])[1]


def _impl(name: str):
    """fn(q, k, v, g, beta) -> o for one implementation, with L2 norm inside."""
    if name in OURS_VARIANTS:
        os.environ.update(OURS_VARIANTS[name])                   # read when the kernels' module is imported
        name = "ours"
    if _device() == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"                     # before the kernels are defined
    if name == "ours":
        from gdn.ops.gated_delta_rule.triton import triton_chunk_gated_delta_rule
        return lambda q, k, v, g, beta: triton_chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm=True)[0]
    if name == "chunk":
        from gdn.ops.gated_delta_rule import chunk_gated_delta_rule
        return lambda q, k, v, g, beta: chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm=True)[0]
    if name == "fla":
        fla_rule = fla_chunk_gated_delta_rule()
        return lambda q, k, v, g, beta: fla_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)[0]
    raise ValueError(name)


def fla_chunk_gated_delta_rule():
    """fla 0.6.0's chunk_gated_delta_rule as the benchmarks run it: pure Triton (no TileLang/FlashQLA), its backward's
    Triton-3.6 guard bypassed."""
    os.environ["FLA_DISABLE_BACKEND_DISPATCH"] = "1"
    os.environ["FLA_FLASH_QLA"] = "0"
    import fla.ops.common.chunk_o as chunk_o
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    chunk_o.TRITON_ABOVE_3_7_1 = True                            # else its backward refuses Triton 3.6 (fla #640)
    return chunk_gated_delta_rule


def _inputs(B, T, H, K, V, seed=0):
    import torch
    import torch.nn.functional as F
    dev = _device()
    gen = torch.Generator(device=dev).manual_seed(seed)
    bf16 = torch.bfloat16
    q = torch.randn(B, T, H, K, generator=gen, device=dev, dtype=bf16)
    k = torch.randn(B, T, H, K, generator=gen, device=dev, dtype=bf16)
    v = torch.randn(B, T, H, V, generator=gen, device=dev, dtype=bf16)
    g = F.logsigmoid(torch.rand(B, T, H, generator=gen, device=dev)).to(bf16)
    beta = torch.rand(B, T, H, generator=gen, device=dev).sigmoid().to(bf16)
    do = torch.randn(B, T, H, V, generator=gen, device=dev, dtype=bf16)
    return [q, k, v, g, beta], do


def _reference(xs, do):
    """o and grads of q, k, v, g, beta in float64 on the GPU."""
    import torch
    from gdn.ops.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule
    B, T, H, K = xs[0].shape
    V = xs[2].shape[-1]
    fits = 4 * 8 * B * H * K * V * T < 8e9                        # states the recurrence's autograd graph keeps
    fn = naive_recurrent_gated_delta_rule if fits else chunk_gated_delta_rule
    leaves = [x.detach().double().requires_grad_() for x in xs]
    o, _ = fn(*leaves, use_qk_l2norm=True)
    o.backward(do.double())
    return [o.detach()] + [x.grad for x in leaves], ("recurrence" if fits else "chunked") + " float64"


def kernel_cell(shape, impl: str, warmup: int, rep: int, profile: bool = False) -> None:
    """fwd ms, the errors against float64, fwd+bwd ms; with `profile`, then CUDA ms per kernel (as profile_cell, in
    the same process: no second start and compile)."""
    B, T, H, K, V = shape
    fn = _impl(impl)
    xs, do = _inputs(B, T, H, K, V)
    fwd_flop, bwd_flop = flops_per_token_head(K, V)
    tokens_heads = B * T * H

    def rel(x, r):
        return ((x.double() - r).norm() / r.norm()).item()

    leaves = [x.detach().requires_grad_() for x in xs]
    fwd_ms = _bench(lambda: fn(*leaves), warmup, rep)
    _emit(metric="fwd_ms", value=fwd_ms, tflops=tokens_heads * fwd_flop / fwd_ms / 1e9)

    # accuracy at B <= ERROR_BATCH, forward first (fla's backward may crash the process)
    xe = [x[:ERROR_BATCH].contiguous() for x in xs]
    de = do[:ERROR_BATCH].contiguous()
    ref, ref_name = _reference(xe, de)
    le = [x.detach().requires_grad_() for x in xe]
    o = fn(*le)
    _emit(metric="err_o", value=rel(o, ref[0]), reference=ref_name, error_batch=xe[0].shape[0])
    o.backward(de)
    _sync()
    for name, x, r in zip(("dq", "dk", "dv", "dg", "dbeta"), le, ref[1:]):
        _emit(metric=f"err_{name}", value=rel(x.grad, r))
    del ref, le, o

    def step():
        fn(*leaves).backward(do)
    ms = _bench(step, warmup, rep, grad_to_none=leaves)
    _emit(metric="fwdbwd_ms", value=ms, tflops=tokens_heads * (fwd_flop + bwd_flop) / ms / 1e9)
    if profile and _device() == "cuda":
        _emit(**_kernel_profile(fn, leaves, do))


def model_cell(width: int, backend: str) -> None:
    """Tokens/s of the proxy model's training step (gdn.train.train_trial: bf16 autocast, muP AdamW, clipping)."""
    import torch
    from gdn.config import GDNConfig
    from gdn.spec import ScheduleSpec, SweepConfig, TrialSpec
    from gdn.train import train_trial
    config = SweepConfig(model=GDNConfig(width=width, depth=MODEL_DEPTH),
                         schedule=ScheduleSpec(steps=MODEL_STEPS, warmup_steps=2, batch_size=MODEL_BATCH,
                                               seq_len=MODEL_SEQ), eval_batches=1)
    log_every = 10
    train_trial(TrialSpec(config, lr=1e-3, seed=1, backend=backend), log_every=MODEL_STEPS)   # warm-up: compiles
    r = train_trial(TrialSpec(config, lr=1e-3, backend=backend), log_every=log_every)
    torch.cuda.synchronize()
    first, last = r.curve[1], r.curve[-1]                      # points at steps 10 and 30, each after a sync
    s_per_step = (last.seconds - first.seconds) / (last.step - first.step)
    _emit(metric="model_step", status=r.status, s_per_step=s_per_step,
          tokens_per_s=MODEL_BATCH * MODEL_SEQ / s_per_step, loss_first=r.curve[0].loss, loss_last=last.loss,
          final_val_loss=r.final_val_loss, losses=[p.loss for p in r.curve], peak_gib=torch.cuda.max_memory_allocated() / 2**30)


def warm_cell(shape, impl: str) -> None:
    """One forward+backward at the shape and at the accuracy check's batch: compiles (and autotunes) every kernel."""
    import torch
    fn = _impl(impl)
    xs, do = _inputs(*shape)
    for batch in (shape[0], ERROR_BATCH):
        leaves = [x[:batch].detach().contiguous().requires_grad_() for x in xs]
        fn(*leaves).backward(do[:batch].contiguous())
    torch.cuda.synchronize()
    _emit(metric="warm", value=1)


def _triton_cache() -> Path:
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def save_autotune(path: Path) -> int:
    """Every autotuning result in Triton's cache (fla's per-shape config picks) into one tar file."""
    import tarfile
    found = list(_triton_cache().rglob("*.autotune.json"))
    with tarfile.open(path, "w:gz") as tar:
        for f in found:
            tar.add(f, arcname=str(f.relative_to(_triton_cache())))
    return len(found)


def load_autotune(path: Path) -> None:
    """The results of save_autotune into this machine's Triton cache: fla then skips autotuning (compiling only the
    configs it picked), so a whole table fits one device call. Picks made on the same kind of card only."""
    import tarfile
    _triton_cache().mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        tar.extractall(_triton_cache(), filter="data")


def _differs(impl: str, shape) -> bool:
    """Whether a cell of impl at shape runs other kernels than "ours": always, but for our variants below the
    wide-head path (they run ours there; the cells' inputs are bf16), except ours-tuned (its configs may include the
    prep kernel, which both paths launch)."""
    import torch
    from gdn.ops.gated_delta_rule.triton import wide_heads
    return impl not in OURS_VARIANTS or impl == "ours-tuned" or wide_heads(shape[3], torch.bfloat16)


def warm(shapes, impls, timeout: float, jobs: int | None = None) -> None:
    """Every (shape, impl) once, `jobs` at a time (default all), fla's first (its autotuning compiles the most), then
    drop the autotuning results they cached (see top)."""
    import concurrent.futures as cf
    todo = sorted([(s, i) for s in shapes for i in impls if _differs(i, s)], key=lambda cell: cell[1] != "fla")
    if not todo:
        return
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(min(jobs or len(todo), len(todo))) as pool:
        runs = {pool.submit(run_cell, ["warm", ",".join(map(str, s)), i], timeout): (s, i) for s, i in todo}
        for fut in cf.as_completed(runs):
            _records, why = fut.result()
            print(f"warm {runs[fut]}: {'ok' if not why else why}", flush=True)
    stale = list(_triton_cache().rglob("*.autotune.json"))
    for f in stale:
        f.unlink()
    print(f"warmed in {time.perf_counter() - t0:.0f} s; dropped {len(stale)} autotuning results", flush=True)


def profile_cell(shape, iters: int = 10) -> None:
    """Where our fwd+bwd spends its time: CUDA time per kernel (torch.profiler), per iteration, at one shape."""
    xs, do = _inputs(*shape)
    _emit(**_kernel_profile(_impl("ours"), [x.detach().requires_grad_() for x in xs], do, iters))


def _kernel_profile(fn, leaves, do, iters: int = 10) -> dict:
    """The profile record of fn's forward+backward: CUDA ms per iteration in total and for its 16 costliest
    kernels (fla's fwd+bwd launches about 14)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    def step():
        fn(*leaves).backward(do)
        for x in leaves:
            x.grad = None
    for _ in range(3):                                    # compile and warm up outside the profile
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    per_kernel = {}
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us > 0 and e.key:
            per_kernel[e.key] = per_kernel.get(e.key, 0.0) + us / 1e3 / iters
    total = sum(per_kernel.values())
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:16]
    return dict(metric="profile", total_ms=total, kernels=[{"name": k[:60], "ms": v, "share": v / total}
                                                           for k, v in top])


def profile_table(records: list[tuple]) -> str:
    """Markdown rows of (shape, impl, profile record or None, failure or None)."""
    lines = ["| B, T, H, K, V | impl | fwd+bwd CUDA ms | kernel | ms | share |", "|---|---|---|---|---|---|"]
    for shape, impl, r, why in records:
        name = ", ".join(map(str, shape))
        for i, k in enumerate(r["kernels"] if r else []):
            lines.append(f"| {name if i == 0 else ''} | {impl if i == 0 else ''} | "
                         f"{format(r['total_ms'], '.3f') if i == 0 else ''} | {k['name']} | {k['ms']:.3f} | "
                         f"{100 * k['share']:.0f} % |")
        if why:
            lines.append(f"| {name} | {impl} | - | failed: {why} | | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the driver
def run_cell(args: list[str], timeout: float) -> tuple[list[dict], str | None]:
    """Run one cell in a fresh process; returns its records and, if it failed, the reason."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = f"timed out after {timeout:.0f} s", -1
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    if rc == 0:
        return records, None
    lines = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
    raised = re.compile(r"^[\w.]*(Error|Exception)\b")                      # the exception line itself
    why = next((ln for ln in reversed(lines) if raised.match(ln.strip())),
               next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else f"rc={rc}"))
    return records, why.strip()[:300]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".out")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--shapes", default="all", help="'all' or indices into SHAPES, e.g. 0,1")
    ap.add_argument("--shape", action="append", help="B,T,H,K,V instead of --shapes (repeatable)")
    ap.add_argument("--warmup", type=int, default=50, help="do_bench warm-up, ms")
    ap.add_argument("--rep", type=int, default=300, help="do_bench repetitions, ms")
    ap.add_argument("--cell-timeout", type=float, default=240)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--shape-major", action="store_true",
                    help="time shape by shape (the first SHAPE_MAJOR of TIMED), the other variants after")
    ap.add_argument("--deadline", type=float, default=540, help="launch no cell after this many seconds (the warm-up counted)")
    ap.add_argument("--profile", action="store_true", help="only profile ours (CUDA time per kernel) at the shapes")
    ap.add_argument("--profile-impls", default="",
                    help="comma-separated: these implementations' timed cells also record CUDA ms per kernel")
    ap.add_argument("--warm", action="store_true", help="compile every cell's kernels first, in parallel")
    ap.add_argument("--warm-only", action="store_true", help="only --warm")
    ap.add_argument("--warm-jobs", type=int, help="cells compiled at a time by --warm (default: all at once)")
    ap.add_argument("--save-autotune", help="after the run, tar the autotuning results (fla's picks) to this file")
    ap.add_argument("--load-autotune", help="before the run, load a --save-autotune file (same kind of card)")
    ap.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.cell:
        kind, *rest = args.cell
        if kind == "kernel":
            kernel_cell(tuple(int(x) for x in rest[0].split(",")), rest[1], args.warmup, args.rep,
                        profile=rest[2:] == ["profile"])
        elif kind == "warm":
            warm_cell(tuple(int(x) for x in rest[0].split(",")), rest[1])
        elif kind == "profile":
            profile_cell(tuple(int(x) for x in rest[0].split(",")))
        else:
            model_cell(int(rest[0]), rest[1])
        return

    import torch
    import triton
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fla
        fla_version = fla.__version__
    except ImportError:
        fla_version = None
    env = dict(date=time.strftime("%Y-%m-%d"), card=torch.cuda.get_device_name() if torch.cuda.is_available() else
               "cpu (kernels interpreted)", torch=torch.__version__,
               triton=triton.__version__, fla=fla_version, python=sys.version.split()[0])
    print(json.dumps(env), flush=True)
    shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]
    if args.shape:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shape]
    start = time.perf_counter()
    if args.load_autotune:
        load_autotune(Path(args.load_autotune))
    if args.warm or args.warm_only:
        warm(shapes, [i for i in args.impls.split(",") if i in ("ours", "fla", *OURS_VARIANTS)], args.deadline,
             args.warm_jobs)
        if args.warm_only:
            return
    if args.profile:
        rows = []
        for shape in shapes:
            records, why = run_cell(["profile", ",".join(map(str, shape))], args.cell_timeout)
            rows.append((shape, "ours", records[0] if records else None, why))
        text = profile_table(rows)
        (out / "profile.md").write_text(text)
        print(text)
        return
    results = dict(env=env, kernels=[], model=[])

    def budget() -> float:
        """Seconds the next cell may take: the cell timeout, cut to what is left before the deadline."""
        return min(args.cell_timeout, args.deadline - (time.perf_counter() - start))

    # cells in priority order, so a deadline cuts the least needed: ours, fla, the model step, the chunked path
    impls = args.impls.split(",")
    cells = [("kernel", shape, impl) for impl in TIMED if impl in impls for shape in shapes if _differs(impl, shape)]
    if args.shape_major:                                      # each shape's ours, fla, ours-vtile together
        rank = {impl: i for i, impl in enumerate(TIMED[:SHAPE_MAJOR])}
        cells.sort(key=lambda c: (c[2] not in rank, shapes.index(c[1]) if c[2] in rank else 0, rank.get(c[2], 0)))
    if not args.no_model:
        cells += [("model", width, backend) for width in MODEL_WIDTHS for backend in ("triton", "chunk")]
    cells += [("kernel", shape, "chunk") for shape in shapes if "chunk" in impls]
    for kind, what, impl in cells:
        name = f"{what} {impl}" if kind == "kernel" else f"model d={what} {impl}"
        if budget() < 20:
            print(f"{name}: skipped, past the deadline", flush=True)
            continue
        t0 = time.perf_counter()
        extra = ["profile"] if kind == "kernel" and impl in args.profile_impls.split(",") else []
        records, why = run_cell([kind, ",".join(map(str, what)) if kind == "kernel" else str(what), impl, *extra],
                                budget())
        if kind == "kernel":
            cell = dict(shape=what, impl=impl, error=why, seconds=time.perf_counter() - t0,
                        **{r["metric"]: r for r in records})
            results["kernels"].append(cell)
            m = {k: v["value"] for k, v in cell.items() if isinstance(v, dict) and "value" in v}
            print(f"{name:32s} fwd {m.get('fwd_ms', float('nan')):8.3f} ms  fwd+bwd {m.get('fwdbwd_ms', float('nan')):8.3f}"
                  f" ms  err o {m.get('err_o', float('nan')):.1e} dg {m.get('err_dg', float('nan')):.1e}"
                  f"  ({cell['seconds']:.0f} s){'  FAILED: ' + why if why else ''}", flush=True)
        else:
            rec = records[0] if records else {}
            results["model"].append(dict(width=what, backend=impl, error=why, seconds=time.perf_counter() - t0, **rec))
            print(f"{name:32s} {rec.get('tokens_per_s', float('nan')):10.0f} tokens/s  loss "
                  f"{rec.get('loss_first', float('nan')):.3f} -> {rec.get('loss_last', float('nan')):.3f} "
                  f"{rec.get('status', '')}  ({time.perf_counter() - t0:.0f} s){'  FAILED: ' + why if why else ''}",
                  flush=True)
        (out / "kernels.json").write_text(json.dumps(results, indent=1))

    print(table(results))
    (out / "kernels.md").write_text(table(results))
    if args.save_autotune:
        print(f"saved {save_autotune(Path(args.save_autotune))} autotuning results to {args.save_autotune}")


def table(results: dict) -> str:
    """The markdown tables of docs/benchmarks.md, from kernels.json."""
    def val(cell, key):
        return cell.get(key, {}).get("value") if isinstance(cell.get(key), dict) else None

    def f(x, spec):
        return format(x, spec) if x is not None else "-"

    by = {(tuple(c["shape"]), c["impl"]): c for c in results["kernels"]}
    rows = ["| B, T, H, K, V | impl | fwd ms | fwd+bwd ms | fwd+bwd TFLOP/s | fwd+bwd ours/fla | err o | err dq | "
            "err dk | err dv | err dg | err dbeta | failure |", "|" + "---|" * 13]
    for c in results["kernels"]:
        shape = tuple(c["shape"])
        fla = by.get((shape, "fla"), {})
        ratio = None
        if c["impl"].startswith("ours") and val(c, "fwdbwd_ms") and val(fla, "fwdbwd_ms"):
            ratio = val(c, "fwdbwd_ms") / val(fla, "fwdbwd_ms")
        tfl = c.get("fwdbwd_ms", {}).get("tflops") if isinstance(c.get("fwdbwd_ms"), dict) else None
        rows.append(f"| {', '.join(map(str, shape))} | {c['impl']} | {f(val(c, 'fwd_ms'), '.3f')} | "
                    f"{f(val(c, 'fwdbwd_ms'), '.3f')} | {f(tfl, '.1f')} | {f(ratio, '.2f')} | "
                    + " | ".join(f(val(c, f'err_{n}'), '.1e') for n in ("o", "dq", "dk", "dv", "dg", "dbeta"))
                    + f" | {c['error'] or ''} |")
    lines = rows
    if results["model"]:
        lines += ["", "| width | backend | tokens/s | s/step | loss step 1 -> 30 | status | peak GiB | failure |",
                  "|" + "---|" * 8]
        for m in results["model"]:
            lines.append(f"| {m['width']} | {m['backend']} | {f(m.get('tokens_per_s'), ',.0f')} | "
                         f"{f(m.get('s_per_step'), '.4f')} | {f(m.get('loss_first'), '.3f')} -> "
                         f"{f(m.get('loss_last'), '.3f')} | {m.get('status', '')} | {f(m.get('peak_gib'), '.1f')} | "
                         f"{m['error'] or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
