"""The sweep plot: final validation loss vs learning rate (log2 axis), one marker per trial, diverged trials as
crosses along the top edge, the fitted optimum as a vertical line; for a transfer study, one line per width of
the loss minus that width's best (drawn by gdn.plots: Agg canvas, no pyplot, thread-safe inside the API)."""
from __future__ import annotations

from gdn.plots import sweep_png, transfer_png
from gdn.spec import DataSpec
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
