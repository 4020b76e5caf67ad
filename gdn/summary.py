"""What a finished sweep yields from its trials: the base width's optimum, a transfer study's summary, or why there
is nothing to fit. A pure function of plain data (no database rows, no I/O): the service stores what it returns."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from gdn.fit import Optimum, fit_optimum, grid_step_log2
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


@dataclass
class SweepSummary:
    """optimum and transfer, or error: a sweep with a base-width optimum, or one with nothing to fit."""
    optimum: Optimum | None = None           # the base width's: what the recommendation uses
    transfer: TransferSummary | None = None  # several widths only: how the base width's lr fares at the others
    error: str | None = None                 # why there is no optimum


def final_loss(trial: TrialOutcome) -> float:
    """A trial's result as the fit takes it: its validation loss, NaN for a diverged trial."""
    return trial.final_val_loss if trial.state == COMPLETED else math.nan


def summarize_sweep(trials: Sequence[TrialOutcome], widths: Sequence[int]) -> SweepSummary:
    """The summary of a sweep of `widths` (the base width first) from the current attempt of each grid point, in
    grid order. The fit takes COMPLETED and DIVERGED trials (a diverged one as NaN); FAILED trials are left out
    and named in the warnings (or in the error, when nothing is left to fit)."""
    results = [t for t in trials if t.state in (COMPLETED, DIVERGED)]
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
                                    base_width=base_width, grid_step=grid_step_log2([t.lr for t in trials]),
                                    swept_widths=widths)
        if failed_note:
            transfer.warnings.append(failed_note)
    return SweepSummary(optimum=optimum, transfer=transfer)


def _failed_note(failed: list[TrialOutcome], multi_width: bool) -> str:
    if not failed:
        return ""
    return (f"{len(failed)} trial(s) failed after {max(t.attempt for t in failed)} attempt(s) and are left out of "
            "the fit: " + ", ".join((f"width {t.width} " if multi_width else "") + f"lr {t.lr:.3g} seed {t.seed}"
                                    for t in failed))
