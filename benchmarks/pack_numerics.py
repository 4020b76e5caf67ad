"""Does a trial's result depend on which trials share its pack? (issue 6, part 3)

The two-GPU product run splits a job's 8 trials into two packs of 4 where one GPU trains one pack of 8. In float64
on a CPU a packed trial equals the same trial alone exactly (tests/gdn/test_packed.py), so any difference on the
GPU is bf16 arithmetic: batched matmuls of another batch count pick other kernels and round differently, and
training amplifies the difference. This script measures how much, on a job file's trials with a shortened schedule:

- A:  all trials as one pack;
- A2: the same again (is one pack reproducible run to run?);
- B:  the trials split into packs (--packs, or round robin into --split), one after another, as the two-worker
      product splits them between its GPUs.

For every trial it prints the final validation loss of each run and the relative differences A2-A and B-A, and the
first logged training loss's difference (arithmetic alone, before training has amplified it).

    python benchmarks/pack_numerics.py examples/gpu-proxy-job.json --steps 500 \\
        --packs '1,2,3,4;0,5,6,7' --out $OUT                          # on a GPU: the split of the two-GPU run
    python benchmarks/pack_numerics.py examples/tiny-cpu-job.json --steps 4 --out /tmp/pn      # a CPU smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdn.packed import train_packed  # noqa: E402
from gdn.spec import SweepConfig, TrialSpec  # noqa: E402
from service.jobspec import prepare  # noqa: E402
from service.schemas import JobCreate  # noqa: E402
from service.settings import Settings  # noqa: E402


def specs_from_job(job: dict, steps: int) -> list[TrialSpec]:
    """The job's base-width trials at its proxy horizon as the service would train them (its defaults, grid and
    order), with the schedule shortened to `steps`."""
    prepared = prepare(JobCreate.model_validate(job), Settings())
    config = SweepConfig.from_dict(prepared.sweep_config)
    warmup = min(config.schedule.warmup_steps, max(1, steps // 10))
    config = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule, steps=steps,
                                                                      warmup_steps=warmup))
    return [TrialSpec(config, lr=lr, seed=seed) for width, lr, seed, horizon in prepared.grid
            if width == prepared.widths[0] and horizon is None]


def run(packs: list[list[int]], specs: list[TrialSpec], log_every: int) -> tuple[dict[int, dict], float]:
    results, t0 = {}, time.monotonic()
    for pack in packs:
        for i, r in zip(pack, train_packed([specs[i] for i in pack], log_every=log_every)):
            results[i] = {"final_val_loss": r.final_val_loss, "status": r.status,
                          "first_loss": r.curve[0].loss if r.curve else None,
                          "curve": [(p.step, p.loss) for p in r.curve]}
    return results, time.monotonic() - t0


def rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a - b) / abs(b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", help="a job file, e.g. examples/gpu-proxy-job.json")
    ap.add_argument("--steps", type=int, default=400, help="training steps of every trial (the job's are replaced)")
    ap.add_argument("--split", type=int, default=2, help="packs of run B, filled round robin")
    ap.add_argument("--packs", default=None, help="run B's packs as trial indices, e.g. '1,2,3,4;0,5,6,7' "
                    "(overrides --split)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = specs_from_job(json.loads(Path(args.job).read_text()), args.steps)
    everything = list(range(len(specs)))
    split = ([[int(i) for i in pack.split(",")] for pack in args.packs.split(";")] if args.packs else
             [everything[j::args.split] for j in range(args.split)])
    if sorted(i for pack in split for i in pack) != everything:
        raise SystemExit(f"--packs must name every trial 0..{len(specs) - 1} once, got {args.packs}")
    runs = {}
    for name, packs in (("A", [everything]), ("A2", [everything]), ("B", split)):
        runs[name], seconds = run(packs, specs, args.log_every)
        losses = " ".join(f"{runs[name][i]['final_val_loss']:.4f}" for i in everything)
        print(f"run {name}: packs {packs}, {seconds:.0f} s; val losses {losses}", flush=True)
        # written after every run, so that a run cut short by a time limit still leaves the ones before it
        (out / "pack_numerics.json").write_text(json.dumps({"steps": args.steps, "split": split, "runs": runs}))
    rows = []
    for i, spec in enumerate(specs):
        a, a2, b = runs["A"][i], runs["A2"][i], runs["B"][i]
        rows.append({"trial": i, "lr": spec.lr, "seed": spec.seed, "A": a["final_val_loss"],
                     "A2": a2["final_val_loss"], "B": b["final_val_loss"],
                     "A2-A": rel(a2["final_val_loss"], a["final_val_loss"]),
                     "B-A": rel(b["final_val_loss"], a["final_val_loss"]),
                     "first B-A": rel(b["first_loss"], a["first_loss"])})
    (out / "pack_numerics.json").write_text(json.dumps({"steps": args.steps, "split": split, "rows": rows,
                                                        "runs": runs}))
    print("| trial | lr | val loss A | A2 | B | A2-A | B-A | first logged loss B-A |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda x: "-" if x is None else f"{x:+.2e}"  # noqa: E731
    for r in rows:
        print(f"| {r['trial']} | {r['lr']:.3g} | {r['A']:.4f} | {r['A2']:.4f} | {r['B']:.4f} | {fmt(r['A2-A'])} | "
              f"{fmt(r['B-A'])} | {fmt(r['first B-A'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
