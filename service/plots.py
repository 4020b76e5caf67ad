"""The sweep plot: final validation loss vs learning rate (log2 axis), one marker per trial, diverged trials as
crosses along the top edge, the fitted optimum as a vertical line; for a transfer study, one line per width of
the loss minus that width's best (drawn by gdn.plots: Agg canvas, no pyplot, thread-safe inside the API)."""
from __future__ import annotations

from gdn.horizon import HorizonFit
from gdn.plots import horizon_png, sweep_png, transfer_png
from gdn.spec import DataSpec, SweepConfig
from service import floats
from service.models import Job, Trial, TrialState


def job_png(job: Job, trials: list[Trial]) -> bytes:
    """The plot of a job from its current trials: the sweep, or one line per width for a transfer study."""
    completed = [t for t in trials if t.state == TrialState.COMPLETED]
    diverged = [t for t in trials if t.state == TrialState.DIVERGED]
    title = f"job {job.id[:8]} ({job.state.value}), {job.spec['parametrization']}"
    optimum = floats.decode(job.optimum) if job.optimum else None
    loss_unit = DataSpec(**job.spec.get("data", {})).loss_unit
    if len(job.widths) > 1:
        transfer = floats.decode(job.transfer) if job.transfer else {"widths": []}
        optima = {w["width"]: (w["optimum"]["lr"], w["optimum"]["loss"]) for w in transfer["widths"] if w["optimum"]}
        return transfer_png(title=f"{title}, widths {', '.join(map(str, job.widths))}",
                            completed=[(t.width, t.lr, t.seed, t.final_val_loss) for t in completed],
                            diverged=[(t.width, t.lr) for t in diverged], optima=optima,
                            base_lr=optimum["lr"] if optimum else None, loss_unit=loss_unit)
    return sweep_png(title=f"{title}, width {job.widths[0]}",
                     completed=[(t.lr, t.seed, t.final_val_loss) for t in completed],
                     diverged=[(t.lr, t.seed) for t in diverged],
                     optimum_lr=optimum["lr"] if optimum else None, optimum_loss=optimum["loss"] if optimum else None,
                     on_edge=bool(optimum and optimum["on_edge"]),
                     near_best=(optimum.get("near_best_lr_min"), optimum.get("near_best_lr_max")) if optimum else None,
                     loss_unit=loss_unit)


def horizon_plot_png(job: Job, tokens: int | None, width: int | None) -> bytes:
    """lr* against tokens: the base width's measured horizons and the fit's line out to `tokens`, for the job's
    widths and `width` (each the base width's lr times its hidden matrices' muP multiplier)."""
    config = SweepConfig.from_dict(job.sweep_config)
    widths = sorted(set(job.widths) | ({width} if width else set()))
    p = config.param()
    hidden = {w: next(g.lr_multiplier for g in p.groups(w / config.base_width, config.optimizer.name)
                      if g.role == "hidden") for w in widths}
    title = f"job {job.id[:8]} ({job.state.value}), {job.spec['parametrization']}: lr* vs tokens"
    if job.horizon:
        fit = HorizonFit.from_dict(floats.decode(job.horizon))
        points = [(p.tokens, p.lr, p.log2_lr_err, p.in_fit) for p in fit.points if p.lr is not None]
        line = (fit.intercept, fit.exponent, fit.covariance, fit.proxy_tokens) if fit.exponent is not None else None
    else:
        optimum = floats.decode(job.optimum) if job.optimum else None
        sched = config.schedule
        points = [(sched.steps * sched.batch_size * sched.seq_len, optimum["lr"], None, True)] if optimum else []
        line = None
    return horizon_png(title=title, points=points, line=line, multipliers=hidden, tokens=tokens)
