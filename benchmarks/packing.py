"""Packed training throughput (issue 6): K trials of one architecture trained as one model (gdn.packed) against the
same K trials run one after another (gdn.train.train_trial), in aggregate trained tokens per second.

Every run trains real trials (muP, AdamW, bf16 autocast, builtin corpus, LRs spread over 2^-9..2^-8, one data seed)
for `--steps` steps; the first `--untimed` steps (compilation, autotuning, allocator warm-up) are left out, and the
clock is read at curve points, which follow a device sync. K sequential trials train K x tokens in K x the time of
one, so their aggregate rate is the single trial's rate. On CUDA packs replay their steps from CUDA graphs
(gdn.trial.uses_cuda_graphs; TrialSpec(cuda_graphs=False) runs them op by op), which train_trial does not, so the table
also sets each pack against K packs of one. Then fit_pack_size says how many trials plan_packs would
put in one pack at each width, and the allocator peaks are set against estimate_trial_bytes.

    PYTHONPATH=. python benchmarks/packing.py --out $OUT          # the GPU run: widths 256 128 512, K 1..16
    python benchmarks/packing.py --widths 32 --packs 1 2 --depth 1 --seq-len 64 --batch-size 2 --steps 4 \\
        --untimed 2 --no-plan                                       # a CPU smoke run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gdn.config import GDNConfig  # noqa: E402
from gdn.data import load_corpus  # noqa: E402
from gdn.model import GatedDeltaNet  # noqa: E402
from gdn.ops.gated_delta_rule import gated_delta_rule  # noqa: E402
from gdn.ops.gated_delta_rule.dispatch import resolve_backend  # noqa: E402
from gdn.optim import build_optimizer, clip_grad_norm, set_lr  # noqa: E402
from gdn.pack_plan import estimate_trial_bytes, fit_pack_size  # noqa: E402
from gdn.packed import _Pack, train_packed  # noqa: E402
from gdn.packed_optim import clip_grad_norm_per_trial  # noqa: E402
from gdn.spec import COMPLETED, OptimizerSpec, ScheduleSpec, SweepConfig, TrialSpec  # noqa: E402
from gdn.train import train_trial  # noqa: E402
from gdn.trial import build_model, resolve_device  # noqa: E402

LOG2_LR_RANGE = (-9.0, -8.0)   # muP AdamW's optimum at these widths lies near 2^-8 (DESIGN.md): no trial diverges
PLAN_TRIALS = 32               # the job size fit_pack_size is asked about
PLAN_RESERVE_S = 60            # a fit_pack_size call starts only this long before the time budget ends
GIB = 2 ** 30
BACKEND_RTOL = 2e-2            # bf16 inputs: a backend further than this from the chunked path is not used
CHECK_STEPS = 10               # steps of the bf16 packed-vs-alone curve check
PROFILE_STEPS = 5              # steps averaged in the per-phase timing


def sweep_config(width: int, args) -> SweepConfig:
    return SweepConfig(model=GDNConfig(width=width, depth=args.depth), parametrization="mup",
                       optimizer=OptimizerSpec(name="adamw"),
                       schedule=ScheduleSpec(steps=args.steps, warmup_steps=max(1, args.steps // 5),
                                             batch_size=args.batch_size, seq_len=args.seq_len),
                       eval_batches=1)


def specs_for(width: int, n: int, args) -> list[TrialSpec]:
    lo, hi = LOG2_LR_RANGE
    return [TrialSpec(sweep_config(width, args), lr=2.0 ** (lo + (hi - lo) * i / max(1, n - 1)), seed=0,
                      backend=args.backend) for i in range(n)]


def timed_rate(times: dict[int, float], trials: int, args) -> tuple[float, float]:
    """(aggregate tokens/s, ms per step) between the curve points at --untimed and --steps."""
    seconds = times[args.steps] - times[args.untimed]
    steps = args.steps - args.untimed
    return trials * steps * args.batch_size * args.seq_len / seconds, 1e3 * seconds / steps


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def run_single(width: int, args, device) -> dict:
    """train_trial's rate, the fastest of --single-repeats runs: its loop is host-bound, and the host's speed moved
    it by up to 40 % between runs in one call (2026-11-27), so the baseline is the best it did."""
    spec = specs_for(width, 1, args)[0]
    rates = []
    for _ in range(args.single_repeats):
        times: dict[int, float] = {}
        reset_peak(device)
        result = train_trial(spec, progress=lambda p: times.__setitem__(p.step, p.seconds), log_every=args.untimed)
        if result.status != COMPLETED:
            return dict(mode="sequential", width=width, trials=1, statuses=[result.status],
                        error=f"the trial {result.status.lower()} at step {result.diverged_step}: no rate")
        rates.append(timed_rate(times, 1, args))
    rate, step_ms = max(rates)
    return dict(mode="sequential", width=width, trials=1, tokens_per_s=rate, step_ms=step_ms,
                repeats_tokens_per_s=[r for r, _ in rates], peak_gib=peak_gib(device), statuses=[result.status])


OUTSIDE = "packed, update outside the graph"   # the mode of the baseline rows (--update-outside-graph)
ONE_GEMM = "packed, one input GEMM"            # the mode of the rows --one-input-gemm asks for
SIX_GEMMS = "packed, six input GEMMs"          # ... and the other form, where one GEMM is the default
# each mode's settings: (_Pack.update_in_graph, GatedDeltaNet.one_input_gemm); None keeps the default
MODES = {"packed": (None, None), OUTSIDE: (False, None), ONE_GEMM: (None, True), SIX_GEMMS: (None, False)}


def run_packed(width: int, k: int, args, device, mode: str = "packed") -> dict:
    specs = specs_for(width, k, args)
    times: dict[int, float] = {}
    defaults = (_Pack.update_in_graph, GatedDeltaNet.one_input_gemm)
    in_graph, one_gemm = (d if m is None else m for m, d in zip(MODES[mode], defaults))
    reset_peak(device)
    _Pack.update_in_graph, GatedDeltaNet.one_input_gemm = in_graph, one_gemm
    try:
        results = train_packed(specs, progress=lambda i, p: times.setdefault(p.step, p.seconds),
                               log_every=args.untimed)
    except torch.cuda.OutOfMemoryError:
        return dict(mode=mode, width=width, trials=k, error="out of memory")
    except Exception as e:  # a form being tried fails: its row says so, the rows after it still run
        if mode == "packed":
            raise
        return dict(mode=mode, width=width, trials=k, error=f"{type(e).__name__}: {str(e).splitlines()[0]}")
    finally:
        _Pack.update_in_graph, GatedDeltaNet.one_input_gemm = defaults
    row = dict(mode=mode, width=width, trials=k, one_input_gemm=one_gemm, peak_gib=peak_gib(device),
               estimate_gib=k * estimate_trial_bytes(specs[0]) / GIB, statuses=[r.status for r in results])
    if any(r.status != COMPLETED for r in results):
        row["error"] = "a trial diverged: the pack shrank, so the rate is not comparable"
    if args.steps not in times:
        return row
    rate, step_ms = timed_rate(times, k, args)
    return {**row, "tokens_per_s": rate, "step_ms": step_ms}


def backend_check(device, args) -> dict:
    """The backend dispatch picks, and its forward against the chunked PyTorch path on one random input; a
    backend that fails or disagrees is replaced by "chunk" for the whole run (args.backend; said in the output)."""
    backend = resolve_backend("auto", device)
    row = dict(check="backend", backend=backend)
    if backend == "chunk":
        return row
    gen = torch.Generator(device).manual_seed(0)
    B, T, H, K, V = 2, 1024, 6, 32, 64
    q, k = (torch.randn(B, T, H, K, device=device, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(B, T, H, V, device=device, generator=gen, dtype=torch.bfloat16)
    g = -torch.rand(B, T, H, device=device, generator=gen) * 0.1
    beta = torch.rand(B, T, H, device=device, generator=gen)
    try:
        o = gated_delta_rule(q, k, v, g, beta, use_qk_l2norm=True)[0].float()
        ref = gated_delta_rule(q, k, v, g, beta, use_qk_l2norm=True, backend="chunk")[0].float()
        row["rel_rms_vs_chunk"] = float((o - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    except Exception as e:  # a kernel still being written: measure the chunked path instead, and say so
        row["error"] = f"{type(e).__name__}: {e}"
    if "error" in row or not row["rel_rms_vs_chunk"] < BACKEND_RTOL:
        args.backend = "chunk"                     # every TrialSpec of the run (specs_for) takes it
        row["backend"] = f"chunk (instead of {backend})"
    return row


def curve_check(width: int, args) -> dict:
    """Two trials packed vs each alone, bf16: the largest relative difference of their loss curves."""
    short = argparse.Namespace(**{**vars(args), "steps": CHECK_STEPS})
    specs = specs_for(width, 2, short)
    packed = train_packed(specs, log_every=1)
    single = [train_trial(spec, log_every=1) for spec in specs]
    diff = max(abs(a.loss - b.loss) / b.loss for p, s in zip(packed, single) for a, b in zip(p.curve, s.curve))
    return dict(check="loss curves, 2 trials packed vs alone", width=width, steps=CHECK_STEPS,
                max_rel_diff=diff, first_loss=single[0].curve[0].loss, last_loss=single[0].curve[-1].loss)


def phase_times(width: int, k: int | None, args, device, update_in_graph: bool = True) -> dict:
    """Where a step's time goes, per phase: host time to queue it, and the wait for the device after (a sync after
    each phase, so the phases do not overlap here as they do in training). k None: the train_trial step.
    update_in_graph False: the pack's graph holds the forward and backward only, the clip and optimizer run op by op
    after it (the form before issue 21), in the same call as the baseline."""
    spec = specs_for(width, 1, args)[0]
    if k is None:
        model, param, width_mult = build_model(spec.config, width, spec.seed, spec.backend)
        model.to(device)
        optimizer = build_optimizer(model, param, spec.config.optimizer, spec.lr, width_mult)
        corpus = load_corpus(spec.config.data, args.seq_len)

        def phases(step):
            x, y = corpus.batch(step, 0, args.batch_size, args.seq_len, device)
            yield "data"
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            yield "forward"
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            yield "backward"
            clip_grad_norm(model, spec.config.optimizer.grad_clip)
            yield "clip"
            set_lr(optimizer, spec.lr)
            optimizer.step()
            yield "optimizer"
    else:
        pack = _Pack(specs_for(width, k, args))
        pack.update_in_graph = update_in_graph

        def phases(step):
            x, y = pack.batches(step)
            yield "data"
            if pack.use_graphs:
                pack.base_lr.fill_(spec.lr)
                pack._step(x, y)
                yield ("step (graph replay: forward, backward, clip, optimizer)" if update_in_graph else
                       "step (graph replay: forward, backward; then clip, optimizer op by op)")
                return
            losses = pack._losses(pack._logits(pack.params, x), y)
            yield "forward"
            for q in pack.params.values():
                q.grad = None
            losses.sum().backward()
            yield "backward"
            clip_grad_norm_per_trial(list(pack.params.values()), spec.config.optimizer.grad_clip, pack.clip_weights)
            yield "clip"
            pack.base_lr.fill_(spec.lr)
            pack.optimizer.step(pack.params, pack.base_lr)
            yield "optimizer"

    host: dict[str, float] = {}
    wait: dict[str, float] = {}
    for step in range(PROFILE_STEPS + 3):
        t = time.perf_counter()
        for name in phases(step):
            queued = time.perf_counter()
            torch.cuda.synchronize(device)
            done = time.perf_counter()
            if step >= 3:
                host[name] = host.get(name, 0.0) + (queued - t) / PROFILE_STEPS * 1e3
                wait[name] = wait.get(name, 0.0) + (done - queued) / PROFILE_STEPS * 1e3
            t = time.perf_counter()
    return dict(check="phase ms (host queueing / then waiting for the device)", width=width,
                trials=k or "train_trial", update_in_graph=update_in_graph if k else None,
                host_ms={n: round(v, 1) for n, v in host.items()}, wait_ms={n: round(v, 1) for n, v in wait.items()})


def kernel_profile(width: int, k: int, args, out: Path) -> str:
    """torch.profiler over PROFILE_STEPS steps of a pack of k: the ops that take the most device time. Op by op
    (no CUDA graph), so that each kernel is charged to its op; the kernels are the ones a graph replays."""
    pack = _Pack(specs_for(width, k, args))
    pack.use_graphs = False
    for step in range(3):
        pack.train_step(step)
    torch.cuda.synchronize(pack.device)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for step in range(PROFILE_STEPS):
            pack.train_step(3 + step)
        torch.cuda.synchronize(pack.device)
    averages = prof.key_averages()
    full = averages.table(sort_by="self_cuda_time_total", row_limit=40)
    (out / f"profile_d{width}_k{k}.txt").write_text(full)
    return averages.table(sort_by="self_cuda_time_total", row_limit=12)


def table(rows: list[dict]) -> str:
    """Speed-up: over K train_trial runs one after another (the issue's baseline), and over K packs of one (the
    fastest way to train one trial at a time where packs replay CUDA graphs)."""
    single = {r["width"]: r["tokens_per_s"] for r in rows if r["mode"] == "sequential" and "tokens_per_s" in r}
    pack_of_one = {r["width"]: r["tokens_per_s"] for r in rows
                   if r["mode"] == "packed" and r["trials"] == 1 and "tokens_per_s" in r}
    nan = float("nan")
    lines = ["| width | K | packed tokens/s | K sequential tokens/s | speed-up | over K packs of one | step ms | "
             "peak GiB | estimate GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["mode"] in MODES),
                    key=lambda r: (r["width"], r["trials"], list(MODES).index(r["mode"]))):
        base, one = single.get(r["width"]), pack_of_one.get(r["width"])
        k = r["mode"].replace("packed", str(r["trials"]))        # "8" or "8, update outside the graph"
        if "tokens_per_s" not in r:
            lines.append(f"| {r['width']} | {k} | {r.get('error')} | {base or nan:,.0f} | | | | | |")
            continue
        peak = "" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['width']} | {k} | {r['tokens_per_s']:,.0f} | {base or nan:,.0f} | "
                     f"{r['tokens_per_s'] / base if base else nan:.2f}x | "
                     f"{r['tokens_per_s'] / one if one else nan:.2f}x | {r['step_ms']:.1f} | {peak} | "
                     f"{r['estimate_gib']:.1f} |" + (f" {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 128, 512], help="run in this order")
    ap.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per trial and step")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--untimed", type=int, default=5, help="first steps left out of the timing")
    ap.add_argument("--single-repeats", type=int, default=3, help="train_trial runs; the fastest is the baseline")
    ap.add_argument("--update-outside-graph", type=int, nargs="*", default=[], metavar="K",
                    help="also these pack sizes with the clip and optimizer outside the CUDA graph (the form before "
                         "issue 21), each right after its graphed row: the baseline in the same call")
    ap.add_argument("--one-input-gemm", type=int, nargs="*", default=[], metavar="K",
                    help="also these pack sizes with the mixer's six input projections in the other form than "
                         "the default (gdn.model.GatedDeltaNet.one_input_gemm), right after the default's row")
    ap.add_argument("--no-plan", dest="plan", action="store_false", help="skip the fit_pack_size check")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the bf16 curve check")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-phase timing")
    ap.add_argument("--profile-width", type=int, default=256)
    ap.add_argument("--time-budget", type=float, default=500.0, help="seconds; later runs are skipped past it")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    if args.steps % args.untimed:
        ap.error("--steps must be a multiple of --untimed (the curve is logged every --untimed steps)")

    device = resolve_device("auto")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    args.backend = "auto"
    checks = [backend_check(device, args)]
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                backend=checks[0]["backend"], torch=torch.__version__, python=platform.python_version(),
                command="python benchmarks/packing.py " + " ".join(sys.argv[1:]), args=vars(args))
    print(json.dumps(meta), flush=True)
    print(json.dumps(checks[0]), flush=True)
    if args.check:
        checks.append(curve_check(min(args.widths), args))
        print(json.dumps(checks[-1]), flush=True)
    rows: list[dict] = []
    log = (out / "packing.jsonl").open("w")

    def record(row: dict) -> None:
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)

    other_gemms = SIX_GEMMS if GatedDeltaNet.one_input_gemm else ONE_GEMM    # what --one-input-gemm's rows run
    for width in args.widths:
        runs = [("single", None)] + [(mode, k) for k in args.packs
                                     for mode in ["packed"] + [OUTSIDE] * (k in args.update_outside_graph)
                                     + [other_gemms] * (k in args.one_input_gemm)]
        for mode, k in runs:
            if time.perf_counter() - start > args.time_budget:
                record(dict(mode="sequential" if mode == "single" else mode, width=width, trials=k or 1,
                            error="skipped: time budget"))
                continue
            record(run_single(width, args, device) if mode == "single" else run_packed(width, k, args, device, mode))

    plans = []
    if args.plan and device.type == "cuda":
        for width in args.widths:
            if time.perf_counter() - start > args.time_budget - PLAN_RESERVE_S:
                break
            t0 = time.perf_counter()
            try:
                size = fit_pack_size(specs_for(width, PLAN_TRIALS, args))
            except Exception as e:  # report it with the table rather than lose the table
                size = f"{type(e).__name__}: {e}"
            plans.append(dict(width=width, trials=PLAN_TRIALS, pack_size=size, seconds=time.perf_counter() - t0))
            print(json.dumps(plans[-1]), flush=True)

    if args.profile and device.type == "cuda":
        try:
            for k, in_graph in ((None, True), (1, True), (8, True), (8, False)):
                checks.append(phase_times(args.profile_width, k, args, device, in_graph))
                print(json.dumps(checks[-1]), flush=True)
            print(kernel_profile(args.profile_width, 8, args, out), flush=True)
        except Exception as e:  # report it with the table rather than lose the table
            checks.append(dict(check="profile", error=f"{type(e).__name__}: {e}"))

    log.close()
    md = table(rows)
    if plans:
        md += "\n\nfit_pack_size for a job of {} trials: ".format(PLAN_TRIALS) + ", ".join(
            f"d = {p['width']}: {p['pack_size']} per pack ({p['seconds']:.0f} s to decide)" for p in plans)
    md += "\n\nChecks: " + "; ".join(json.dumps(c) for c in checks)
    (out / "packing.json").write_text(json.dumps(dict(meta=meta, checks=checks, rows=rows, plans=plans), indent=1))
    (out / "packing.md").write_text(md + "\n")
    print(f"\n{meta['device']}, backend {meta['backend']}, torch {meta['torch']}, {meta['date']}, "
          f"{time.perf_counter() - start:.0f} s")
    print(md)


if __name__ == "__main__":
    main()
