"""How far each implementation's loss and gradients are from float64, at a width, on one training batch (issue 17:
fla's model with deltamu.apply and deltamu's GDNModel trained apart at 4x the base width; this says which of them,
if either, is off, and in which parameters).

Every model starts from the same weights (deltamu.apply's init, as benchmarks/fla_parity.py draws them). The
reference is deltamu's GDNModel in float64 on its plain-PyTorch ops (backend "chunk"); each candidate runs as it
trains (float32 parameters, bf16 autocast on CUDA). Per parameter role, the relative Frobenius error of the
gradient, |g - g64| / |g64| over the role's tensors, is printed as a table and written to numerics.json.

    python3 benchmarks/model_numerics.py --base 512 --width 2048 --out $OUT              # deltamu's backends
    python3 benchmarks/model_numerics.py --base 512 --width 2048 --fla --out $OUT        # and fla's model (GPU)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import deltamu  # noqa: E402
from fla_parity import fla_model, fla_on_torch, load_into_fla  # noqa: E402
from gdn.config import GDNConfig  # noqa: E402
from gdn.fit import Optimum  # noqa: E402
from gdn.model import GDNModel  # noqa: E402
from gdn.ops.cross_entropy.reference import cross_entropy_reference  # noqa: E402
from gdn.parametrization import role_of  # noqa: E402
from gdn.recommend import SweepResult, recommend  # noqa: E402
from gdn.spec import DataSpec, OptimizerSpec, ScheduleSpec, SweepConfig, TrialCancelled, TrialSpec  # noqa: E402
from gdn.train import train_model  # noqa: E402
from gdn.trial import resolve_device, trial_corpus  # noqa: E402


def loss_and_grads(model, x, y, autocast_dtype, forward=None) -> tuple[float, dict[str, torch.Tensor]]:
    """Cross-entropy on (x, y) and each parameter's gradient in float64, keyed by deltamu's parameter names."""
    forward = forward or model
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = forward(x)
    # the trainers' loss (float32) for a candidate; the reference's in float64, so nothing of it is rounded to float32
    loss = cross_entropy_reference(out.flatten(0, 1), y.flatten(),
                                   dtype=torch.float64 if out.dtype == torch.float64 else torch.float32)
    loss.backward()
    grads = {name.removeprefix("model."): p.grad.double() for name, p in model.named_parameters()}
    return float(loss), grads


def errors(grads: dict, ref: dict, ref_model) -> dict[str, float]:
    """Relative Frobenius error per role (and over every parameter, "all")."""
    num, den = defaultdict(float), defaultdict(float)
    roles = {name: role_of(name, p).value for name, p in ref_model.named_parameters()}
    assert grads.keys() == ref.keys(), f"parameters differ: {sorted(grads.keys() ^ ref.keys())}"
    for name, g64 in ref.items():
        d = float((grads[name] - g64).pow(2).sum())
        r = float(g64.pow(2).sum())
        for key in (roles[name], "all"):
            num[key] += d
            den[key] += r
    return {key: math.sqrt(num[key] / den[key]) if den[key] > 0 else math.nan for key in num}


def train_for(model, spec: TrialSpec, rec, steps: int) -> None:
    """Train `model` for the first `steps` steps of the run `spec` describes (train_model's loop, schedule and
    batches), leaving its weights where that run has them then."""
    done = []
    groups = deltamu.apply(model, rec, init=False)
    try:
        train_model(spec, model, groups, log_every=10, progress=lambda point: done.append(point.step),
                    should_stop=lambda: done[-1] >= steps)
    except TrialCancelled:
        return
    raise ValueError(f"--trained-steps {steps}: the run ended at step {done[-1]} first")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=512)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2.0 ** -7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fla", action="store_true",
                    help="also fla's GatedDeltaNetForCausalLM (needs its wheels; off CUDA on deltamu's torch ops)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cpu-autocast", action="store_true",
                    help="off CUDA, run the candidates under bf16 autocast too (CUDA always does): where each model's "
                         "own code rounds, without the GPU kernels")
    ap.add_argument("--trained-steps", default="0",
                    help="comma-separated steps: compare at the weights deltamu's model reaches after each many steps "
                         "of fla_parity.py's run (same seed, schedule and batches); 0 is init. The two runs part from "
                         "step 500 on")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    try:
        steps = [int(step) for step in args.trained_steps.split(",")]
    except ValueError:
        ap.error(f"--trained-steps {args.trained_steps!r}: give comma-separated integers")
    if any(step % 10 or not 0 <= step < 1000 for step in steps):
        ap.error("--trained-steps must be multiples of 10 in [0, 1000) (the run logs every 10 steps)")

    config = SweepConfig(model=GDNConfig(width=args.base, depth=args.depth), parametrization="mup",
                         optimizer=OptimizerSpec(name="adamw"),
                         schedule=ScheduleSpec(steps=1000, warmup_steps=100, batch_size=args.batch_size,
                                               seq_len=args.seq_len),
                         data=DataSpec("builtin"), eval_batches=1)
    rec = recommend(SweepResult(config, Optimum(lr=args.lr, log2_lr=math.log2(args.lr), loss=math.nan,
                                                log2_lr_std=None, on_edge=False)), args.width)
    spec = TrialSpec(config, lr=args.lr, seed=args.seed, width=args.width, device=args.device)
    device = resolve_device(args.device)
    x, y = trial_corpus(config).batch(0, args.seed, args.batch_size, args.seq_len, device)
    half = torch.bfloat16 if device.type == "cuda" or args.cpu_autocast else None

    def ours(backend: str):
        model = GDNModel(config.model_at(args.width), backend=backend)
        deltamu.apply(model, rec, generator=torch.Generator().manual_seed(args.seed))
        return model

    theirs = None
    if args.fla:
        theirs = fla_model(rec.target_model, fused=device.type == "cuda")
        deltamu.apply(theirs, rec, init=False)
    rows = []
    summary = {"args": vars(args), "target_model": rec.target_model, "device": str(device),
               "card": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "loss_float64": {},
               "rows": rows, "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for at_step in steps:
        start = ours("auto")
        if at_step:
            train_for(start, spec, rec, at_step)
        state = {k: v.detach().float().cpu() for k, v in start.state_dict().items()}
        reference = ours("chunk")
        reference.load_state_dict(state)
        reference.to(device=device, dtype=torch.float64)
        loss64, grads64 = loss_and_grads(reference, x, y, None)
        summary["loss_float64"][str(at_step)] = loss64
        candidates = {}
        for backend in ("auto", "chunk"):
            model = ours(backend)
            model.load_state_dict(state)
            candidates[f"deltamu ({backend})"] = (model.to(device), None)
        if theirs is not None:
            load_into_fla(theirs, state)
            theirs.to(device)
            candidates["fla + deltamu.apply"] = (theirs, lambda inp: theirs(inp, use_cache=False).logits)
        for label, (model, forward) in candidates.items():
            t0 = time.perf_counter()
            with fla_on_torch() if args.fla and device.type != "cuda" else contextlib.nullcontext():
                loss, grads = loss_and_grads(model, x, y, half, forward)
            rows.append({"impl": label, "at_step": at_step, "loss": loss, "loss_rel_err": abs(loss - loss64) / loss64,
                         "grad_rel_err": errors(grads, grads64, reference), "seconds": time.perf_counter() - t0})
            print(f"  step {at_step}, {label}: loss {loss:.6f} (float64 {loss64:.6f}), {rows[-1]['seconds']:.1f} s",
                  flush=True)
            # after each row: a call cut by its time limit (fla's first forward compiles for minutes) keeps the rest
            (out / "numerics.json").write_text(json.dumps(summary, indent=1))
    roles = sorted({role for r in rows for role in r["grad_rel_err"]})
    print(f"\nwidth {args.width}, relative error against float64 (loss, then each role's gradient)")
    print("| step | impl | loss | " + " | ".join(roles) + " |\n|---|---|---|" + "---|" * len(roles))
    for r in rows:
        print(f"| {r['at_step']} | {r['impl']} | {r['loss_rel_err']:.1e} | "
              + " | ".join(f"{r['grad_rel_err'].get(role, math.nan):.1e}" for role in roles) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
