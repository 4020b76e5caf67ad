"""The horizon study (issue 19; docs/transfer.md, "Horizon"): does a line through the base width's lr* at short
horizons predict lr* at longer ones, and, with μP's width transfer on top, the optimum of a wider and longer run?

Part `horizon`: the shipped preset at the base width, swept (two seeds, every grid extended until its optimum is
interior, all grids on one 2^(k/2) lattice) at the fit horizons (default T, 2T, 4T) and at the predicted ones
(default 8T, 16T). gdn.horizon fits log2 lr* against log2 tokens over the fit horizons, as the service does; each
predicted horizon's measured optimum is then set against three predictions: the product's (the proxy's lr x the
fit's factor, or x 1 when the slope is not told from 0), the line itself, and no correction (the proxy's lr at T).
Errors are in grid steps (sqrt 2).

Part `joint`: the same preset at (the widest width, default 8x the base; the joint horizon, default 8T), its grid
centred on the product's prediction, against the measured optimum there; and SP on the same runs: SP's lr tuned
at the base width and T, carried as is (SP has no width rule), against SP's measured optimum at (8x, 8T).

Every trial lands in a JSONL file as it finishes (benchmarks/transfer.py's Study: packs, processes, resume: a cut
call loses nothing, the next one runs only what is missing). A short table is printed last; the numbers, a JSON
summary and a plot are written under --out.

    python benchmarks/horizon.py --scale tiny --out /tmp/h                      # the suite's CPU run (seconds)
    PYTHONPATH=. python3 benchmarks/horizon.py --scale gpu --part horizon --out $OUT --workers 5 --pack 10
    PYTHONPATH=. python3 benchmarks/horizon.py --scale gpu --part joint --out $OUT --workers 3 --pack 6 \\
        --resume-from docs/transfer/horizon-gpu.jsonl                            # the first call's trials
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer import ARMS, STEP_LOG2, Scale, Study, nearest_k  # noqa: E402
from gdn.horizon import fit_horizons  # noqa: E402

SCALES = {
    # seconds on 2 CPU cores: width 32 -> 64 (2x for the joint part), horizons 10..80
    "tiny": Scale(widths=(32, 64), depth=1, seq_len=32, batch_size=4, horizons=(10, 20, 40, 80), seeds=(0, 1),
                  eval_batches=2, arms=("adamw-mup-default",), grid_points=3),
    # 2 CPU cores: the CPU transfer study's shapes (docs/transfer.md), width 32 -> 256, T = 50 steps
    "cpu": Scale(widths=(32, 256), depth=2, seq_len=64, batch_size=8, horizons=(50, 100, 200, 400, 800),
                 seeds=(0, 1), eval_batches=16, arms=("adamw-mup-default",), grid_points=5),
    # one H100: width 128 (4096 tokens a step), T = 250 steps; 16T = 4000; the joint run at 1024 x 2000 steps
    "gpu": Scale(widths=(128, 1024), depth=4, seq_len=512, batch_size=8, horizons=(250, 500, 1000, 2000, 4000),
                 seeds=(0, 1), eval_batches=16, arms=("adamw-mup-default",), grid_points=5),
}
SP_ARM = "adamw-sp"


def tokens_of(scale: Scale, steps: int) -> int:
    return steps * scale.batch_size * scale.seq_len


def steps_error(predicted_log2: float | None, measured_log2: float | None) -> float | None:
    """(predicted - measured) in grid steps; positive: the prediction is too high."""
    if predicted_log2 is None or measured_log2 is None:
        return None
    return (predicted_log2 - measured_log2) / STEP_LOG2


class HorizonStudy:
    def __init__(self, study: Study, arm: str, fit: list[int], predict: list[int], joint_width: int,
                 joint_horizon: int, joint_grid_points: int = 3):
        self.study, self.scale = study, study.scale
        self.arm, self.fit_h, self.predict_h = ARMS[arm], fit, predict
        self.joint_width, self.joint_horizon = joint_width, joint_horizon
        self.joint_grid_points = joint_grid_points
        self.base = self.scale.widths[0]

    def mults(self, arm) -> tuple[float, float]:
        return arm.mults[0]           # the shipped presets carry one (output, init) pair

    def optimum(self, arm, horizon: int, width: int):
        if not self.study.grid_records(arm.name, horizon, width, self.mults(arm)):
            return None
        try:
            return self.study.fit(arm.name, horizon, width, self.mults(arm))
        except ValueError:
            return None

    def run_horizons(self) -> None:
        arm = self.arm
        k0 = nearest_k(arm.start_log2_lr)
        print(f"part horizon: {arm.name} at width {self.base}, horizons {self.fit_h + self.predict_h}", flush=True)
        self.study.sweep_width([(arm, h, self.base, self.mults(arm), k0) for h in self.fit_h + self.predict_h])

    def line(self):
        optima = {h: self.optimum(self.arm, h, self.base) for h in self.fit_h}
        seeds = {h: len(self.scale.seeds) for h in self.fit_h}
        return fit_horizons(optima, seeds, tokens_per_step=self.scale.batch_size * self.scale.seq_len,
                            proxy_steps=self.fit_h[0], grid_step_log2=STEP_LOG2)

    def predictions(self, fit, horizon: int) -> tuple[dict[str, float | None], float | None]:
        """log2 lr at `horizon` by the product's rule, by the line, and with no horizon correction; and the product
        rule's error bar in grid steps."""
        pred = fit.predict(tokens_of(self.scale, horizon))
        proxy = self.optimum(self.arm, self.fit_h[0], self.base)
        if proxy is None:
            return {"product": None, "line": None, "none": None}, pred.error_steps
        x = math.log2(tokens_of(self.scale, horizon) / fit.proxy_tokens)
        return {"product": proxy.log2_lr + pred.log2_factor,
                "line": None if fit.exponent is None else fit.intercept + fit.exponent * x,
                "none": proxy.log2_lr}, pred.error_steps

    def run_joint(self) -> None:
        fit = self.line()
        product = self.predictions(fit, self.joint_horizon)[0]["product"]
        if product is None:
            raise SystemExit("part joint needs part horizon's fit horizons first (--results of that run)")
        sp = ARMS[SP_ARM]
        print(f"part joint: SP at width {self.base}, {self.fit_h[0]} steps", flush=True)
        self.study.sweep_width([(sp, self.fit_h[0], self.base, self.mults(sp), nearest_k(sp.start_log2_lr))])
        sp_base = self.optimum(sp, self.fit_h[0], self.base)
        print(f"part joint: {self.arm.name} and SP at width {self.joint_width}, {self.joint_horizon} steps", flush=True)
        # the wide, long runs are the study's cost: a narrower first grid, centred on the prediction (the edge
        # extensions still make each optimum interior)
        self.study.scale = dataclasses.replace(self.scale, grid_points=self.joint_grid_points)
        self.study.sweep_width([(self.arm, self.joint_horizon, self.joint_width, self.mults(self.arm),
                                 nearest_k(product)),
                                (sp, self.joint_horizon, self.joint_width, self.mults(sp), nearest_k(sp_base.log2_lr))])

    def summary(self) -> dict:
        fit = self.line()
        rows = []
        for h in self.fit_h + self.predict_h:
            opt = self.optimum(self.arm, h, self.base)
            pred, error_steps = self.predictions(fit, h)
            measured = opt.log2_lr if opt else None
            rows.append({"steps": h, "tokens": tokens_of(self.scale, h), "fitted": h in self.fit_h,
                         "measured_lr": opt.lr if opt else None, "measured_log2_std": opt.log2_lr_std if opt else None,
                         "on_edge": opt.on_edge if opt else None,
                         "error_bar_steps": None if h in self.fit_h or fit.exponent is None else error_steps,
                         **{f"{k}_lr": (2 ** v if v is not None else None) for k, v in pred.items()},
                         **{f"{k}_error_steps": steps_error(v, measured) for k, v in pred.items()}})
        out = {"arm": self.arm.name, "base_width": self.base, "fit_horizons": self.fit_h,
               "predict_horizons": self.predict_h, "grid_step_log2": STEP_LOG2, "fit": fit.to_dict(), "rows": rows}
        joint_mup = self.optimum(self.arm, self.joint_horizon, self.joint_width)
        sp = ARMS[SP_ARM]
        joint_sp = self.optimum(sp, self.joint_horizon, self.joint_width)
        sp_base = self.optimum(sp, self.fit_h[0], self.base)
        if joint_mup or joint_sp:
            pred, _ = self.predictions(fit, self.joint_horizon)
            out["joint"] = {
                "width": self.joint_width, "steps": self.joint_horizon,
                "tokens": tokens_of(self.scale, self.joint_horizon),
                "mup_measured_lr": joint_mup.lr if joint_mup else None,
                "mup_on_edge": joint_mup.on_edge if joint_mup else None,
                **{f"mup_{k}_error_steps": steps_error(v, joint_mup.log2_lr if joint_mup else None)
                   for k, v in pred.items()},
                "sp_base_lr": sp_base.lr if sp_base else None,
                "sp_measured_lr": joint_sp.lr if joint_sp else None,
                "sp_on_edge": joint_sp.on_edge if joint_sp else None,
                "sp_error_steps": steps_error(sp_base.log2_lr if sp_base else None,
                                              joint_sp.log2_lr if joint_sp else None)}
        return out


def _f(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def table(s: dict) -> str:
    fit = s["fit"]
    lines = [f"{s['arm']} at width {s['base_width']}: fit over {s['fit_horizons']} steps: "
             f"lr* ~ D^{_f(fit['exponent'], '+.3f')} +- {_f(fit['exponent_err'], '.3f')} "
             f"({'resolved' if fit['slope_resolved'] else 'not told from 0'})",
             f"{'steps':>6} {'fit':>4} {'measured':>9} {'edge':>5} {'product':>9} {'err':>6} {'bar':>5} "
             f"{'line':>9} {'err':>6} {'none':>9} {'err':>6}   (errors in grid steps of sqrt 2)"]
    for r in s["rows"]:
        lines.append(f"{r['steps']:>6} {'yes' if r['fitted'] else '':>4} {_f(r['measured_lr'], '.4g'):>9} "
                     f"{'yes' if r['on_edge'] else '':>5} {_f(r['product_lr'], '.4g'):>9} "
                     f"{_f(r['product_error_steps'], '+.2f'):>6} {_f(r['error_bar_steps'], '.2f'):>5} "
                     f"{_f(r['line_lr'], '.4g'):>9} {_f(r['line_error_steps'], '+.2f'):>6} "
                     f"{_f(r['none_lr'], '.4g'):>9} {_f(r['none_error_steps'], '+.2f'):>6}")
    j = s.get("joint")
    if j:
        lines.append(f"joint (width {j['width']}, {j['steps']} steps): {s['arm']} measured "
                     f"{_f(j['mup_measured_lr'], '.4g')}{' (edge)' if j['mup_on_edge'] else ''}, prediction error "
                     f"{_f(j['mup_product_error_steps'], '+.2f')} steps (line {_f(j['mup_line_error_steps'], '+.2f')}, "
                     f"no horizon correction {_f(j['mup_none_error_steps'], '+.2f')}); SP measured "
                     f"{_f(j['sp_measured_lr'], '.4g')}{' (edge)' if j['sp_on_edge'] else ''}, its base lr "
                     f"{_f(j['sp_base_lr'], '.4g')} carried as is: {_f(j['sp_error_steps'], '+.2f')} steps")
    return "\n".join(lines)


def plot(s: dict, scale: Scale, path: Path) -> None:
    from gdn.horizon import HorizonFit
    from gdn.plots import horizon_png
    fit = HorizonFit.from_dict(s["fit"])
    points = [(r["tokens"], r["measured_lr"], p.log2_lr_err if (p := next((q for q in fit.points
                                                                            if q.steps == r["steps"]), None)) else None,
               r["fitted"]) for r in s["rows"] if r["measured_lr"]]
    line = (fit.intercept, fit.exponent, fit.covariance, fit.proxy_tokens) if fit.exponent is not None else None
    far = max(r["tokens"] for r in s["rows"])
    path.write_bytes(horizon_png(title=f"{s['arm']}, width {s['base_width']}: lr* vs tokens (open: predicted, "
                                       "measured)", points=points, line=line, multipliers={s["base_width"]: 1.0},
                                 tokens=far))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--part", choices=["horizon", "joint", "both"], default="both")
    ap.add_argument("--arm", default=None, help="the preset's arm (benchmarks/transfer.py ARMS); default the scale's")
    ap.add_argument("--fit", default=None, help="comma-separated fit horizons in steps (default: the scale's first 3)")
    ap.add_argument("--predict", default=None, help="comma-separated horizons to predict (default: the rest)")
    ap.add_argument("--joint-width", type=int, default=None, help="default: the scale's widest")
    ap.add_argument("--joint-horizon", type=int, default=None, help="default: 8x the first fit horizon")
    ap.add_argument("--joint-grid-points", type=int, default=3, help="points of the joint runs' first grids")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, overriding the scale's")
    ap.add_argument("--grid-points", type=int, default=None)
    ap.add_argument("--out", required=True, help="folder for the results JSONL, the summary JSON and the plot")
    ap.add_argument("--results", default="horizon.jsonl", help="the JSONL under --out (kept: a rerun resumes)")
    ap.add_argument("--resume-from", default=None,
                    help="a JSONL of an earlier call (e.g. the first call's, carried into the tree): copied under --out "
                         "first, so this call runs only what is missing and returns every trial")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pack", type=int, default=1)
    ap.add_argument("--gpus", default="")
    args = ap.parse_args(argv)

    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(int(x) for x in args.seeds.split(",")))
    if args.grid_points:
        scale = dataclasses.replace(scale, grid_points=args.grid_points)
    fit = [int(x) for x in args.fit.split(",")] if args.fit else list(scale.horizons[:3])
    predict = ([int(x) for x in args.predict.split(",")] if args.predict
               else [h for h in scale.horizons if h not in fit])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume_from and not (out / args.results).exists():
        shutil.copyfile(args.resume_from, out / args.results)
    study = Study(scale, out / args.results, args.workers, args.threads, args.pack,
                  gpus=tuple(g for g in args.gpus.split(",") if g))
    hs = HorizonStudy(study, args.arm or scale.arms[0], fit, predict, args.joint_width or scale.widths[-1],
                      args.joint_horizon or 8 * fit[0], args.joint_grid_points)
    planned = len(scale.seeds) * scale.grid_points * sum(fit + predict)
    print(f"{scale.grid_points} lrs x {len(scale.seeds)} seeds: {planned:,} trial-steps at width {scale.widths[0]} "
          "before extensions", flush=True)
    start = time.time()
    if args.part in ("horizon", "both"):
        hs.run_horizons()
    if args.part in ("joint", "both"):
        hs.run_joint()
    summary = {**hs.summary(), "scale": dataclasses.asdict(scale), "wall_seconds": time.time() - start,
               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv if argv is None else argv)}
    (out / "horizon_summary.json").write_text(json.dumps(summary, indent=2))
    plot(summary, scale, out / "horizon.png")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
