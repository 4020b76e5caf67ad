"""What a finished sweep yields from its trials: the base width's optimum, a transfer study's summary, or why there
is nothing to fit. A pure function of plain data (no database rows, no I/O): the service stores what it returns."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from gdn.fit import Optimum, edge_extension, fit_optimum, grid_step_log2
from gdn.horizon import HorizonFit, fit_horizons, horizon_optima
from gdn.transfer import TransferSummary, transfer_summary
from gdn.spec import COMPLETED, DIVERGED

FAILED = "FAILED"     # no result after every attempt (infrastructure errors): left out of the fit, named in warnings


@dataclass(frozen=True)
class TrialOutcome:
    """The current attempt of one grid point of a finished sweep."""
    width: int
    lr: float
    seed: int
    state: str                            # COMPLETED | DIVERGED (a result, gdn.train's status) | FAILED | CANCELLED
    final_val_loss: float | None = None   # a COMPLETED trial's validation loss
    attempt: int = 1                      # attempts made (a FAILED trial's are reported)
    steps: int | None = None              # its horizon (None: the sweep's own)


@dataclass
class SweepSummary:
    """optimum and transfer, or error: a sweep with a base-width optimum, or one with nothing to fit."""
    optimum: Optimum | None = None           # the base width's: what the recommendation uses
    transfer: TransferSummary | None = None  # several widths only: how the base width's lr fares at the others
    horizon: HorizonFit | None = None        # several horizons only: lr* against tokens at the base width
    error: str | None = None                 # why there is no optimum


def final_loss(trial: TrialOutcome) -> float:
    """A trial's result as the fit takes it: its validation loss, NaN for a diverged trial."""
    return trial.final_val_loss if trial.state == COMPLETED else math.nan


def summarize_sweep(trials: Sequence[TrialOutcome], widths: Sequence[int], *, proxy_steps: int | None = None,
                    tokens_per_step: int | None = None) -> SweepSummary:
    """The summary of a sweep of `widths` (the base width first) from the current attempt of each grid point, in
    grid order. The fit takes COMPLETED and DIVERGED trials (a diverged one as NaN); FAILED trials are left out
    and named in the warnings (or in the error, when nothing is left to fit). The optimum and the transfer study
    are the proxy's horizon's (`proxy_steps`: a trial's steps None or equal); the base width's other horizons, if
    any, give the horizon fit (which needs `tokens_per_step`)."""
    at_proxy = [t for t in trials if t.steps is None or t.steps == proxy_steps]
    results = [t for t in at_proxy if t.state in (COMPLETED, DIVERGED)]
    multi_width = len(widths) > 1
    failed_note = _failed_note([t for t in trials if t.state == FAILED], multi_width)
    base_width = widths[0]
    base = [t for t in results if t.width == base_width]
    try:
        if not base:
            raise ValueError("no trial produced a result" + (f" at the base width {base_width}" if multi_width
                                                              else ""))
        optimum = fit_optimum([t.lr for t in base], [final_loss(t) for t in base], [t.seed for t in base])
    except ValueError as e:
        return SweepSummary(error="; ".join(filter(None, [str(e), failed_note])))
    if failed_note:
        optimum.warnings = [*optimum.warnings, failed_note]
    transfer = None
    if multi_width:
        transfer = transfer_summary([t.width for t in results], [t.lr for t in results],
                                    [final_loss(t) for t in results], [t.seed for t in results],
                                    base_width=base_width, grid_step=grid_step_log2([t.lr for t in at_proxy]),
                                    swept_widths=widths)
        if failed_note:
            transfer.warnings.append(failed_note)
    horizon = None
    base_all = [t for t in trials if t.width == base_width and t.state in (COMPLETED, DIVERGED)]
    horizons = {t.steps or proxy_steps for t in base_all}
    if len(horizons) > 1:
        if proxy_steps is None or tokens_per_step is None:
            raise ValueError("a sweep of several horizons needs proxy_steps and tokens_per_step")
        optima, seeds = horizon_optima([t.steps or proxy_steps for t in base_all], [t.lr for t in base_all],
                                       [final_loss(t) for t in base_all], [t.seed for t in base_all])
        horizon = fit_horizons(optima, seeds, tokens_per_step=tokens_per_step, proxy_steps=proxy_steps,
                               grid_step_log2=grid_step_log2([t.lr for t in trials]))
    return SweepSummary(optimum=optimum, transfer=transfer, horizon=horizon)


def extension_points(trials: Sequence[TrialOutcome]) -> list[tuple[int, int | None, float, int]]:
    """(width, steps, lr, seed) to add so that every (width, horizon) sweep of `trials` gets its best point off the
    grid's edge (gdn.fit.edge_extension, at the whole grid's spacing, so the new lrs stay on its lattice; every
    seed of that sweep at each). Empty when every optimum is interior or its edge diverged."""
    step = grid_step_log2([t.lr for t in trials])
    groups: dict[tuple[int, int | None], list[TrialOutcome]] = {}
    for t in trials:
        if t.state in (COMPLETED, DIVERGED):
            groups.setdefault((t.width, t.steps), []).append(t)
    points = []
    for (width, steps), ts in groups.items():
        new = edge_extension([t.lr for t in ts], [final_loss(t) for t in ts], [t.seed for t in ts], step_log2=step)
        seeds = sorted({t.seed for t in ts})
        points += [(width, steps, lr, seed) for lr in new for seed in seeds]
    return points


def _failed_note(failed: list[TrialOutcome], multi_width: bool) -> str:
    if not failed:
        return ""
    return (f"{len(failed)} trial(s) failed after {max(t.attempt for t in failed)} attempt(s) and are left out of "
            "the fit: " + ", ".join((f"width {t.width} " if multi_width else "") + f"lr {t.lr:.3g} seed {t.seed}"
                                    for t in failed))
