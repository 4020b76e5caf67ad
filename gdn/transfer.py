"""Transfer studies: one LR grid swept at several widths, and how the base width's optimum fares at each (the three
criteria of docs/transfer.md). A pure function of the trials."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gdn.fit import Optimum, fit_optimum, grid_means, grid_step_log2, parabola

REGRET_NOTE = ("interpolated: each width's loss at the base width's lr* is read off that width's own fitted "
               "parabola (its best grid point and neighbours) where lr* lies inside that bracket, else linearly "
               "between the two grid points around lr* (or at the grid point lr* is); no trial ran at lr* itself")
SHIFT_TOLERANCE_STEPS = 1e-9     # 'at most one grid step' allows this much rounding
GRID_POINT_TOLERANCE_LOG2 = 1e-9  # an lr* this close to a grid point (in log2) is read at that point


@dataclass
class WidthTransfer:
    """One width of a transfer study: its own optimum, and how the base width's optimum fares there."""
    width: int
    num_trials: int
    optimum: Optimum | None            # None when no LR of this width has a finite loss
    error: str | None                  # why there is no optimum
    shift_steps: float | None          # (log2 lr*_width - log2 lr*_base) / grid step
    transfer_loss: float | None        # this width's loss at the base width's lr*, interpolated (REGRET_NOTE)
    regret: float | None               # transfer_loss - optimum.loss: >= 0, 0 at the base width
    regret_method: str | None          # "parabola" | "grid-linear" | "grid-point" | None (no loss there)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["optimum"] = self.optimum.to_dict() if self.optimum else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WidthTransfer":
        return cls(**{**d, "optimum": Optimum.from_dict(d["optimum"]) if d.get("optimum") else None})


@dataclass
class TransferSummary:
    """Does the LR tuned at the base width hold at the other widths? The three numbers of docs/transfer.md."""
    base_width: int
    base_lr: float | None               # lr* of the base width: what deltamu recommends
    grid_step_log2: float | None
    widths: list[WidthTransfer]         # ascending width
    argmin_range_steps: float | None    # max - min of shift_steps over the widths
    max_abs_shift_steps: float | None   # the largest move away from the base width's lr*
    argmin_within_one_step: bool | None  # argmin_range_steps <= 1 (docs/transfer.md's criterion 1)
    loss_falls_with_width: bool | None  # transfer_loss strictly falls as width grows (criterion 3)
    warnings: list[str] = field(default_factory=list)
    regret_note: str = REGRET_NOTE

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = [w.to_dict() for w in self.widths]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TransferSummary":
        return cls(**{**d, "widths": [WidthTransfer.from_dict(w) for w in d["widths"]]})


def _loss_at(xs: np.ndarray, ys: np.ndarray, x: float) -> tuple[float | None, str | None]:
    """The loss curve (xs, ys) read at x: on the parabola fit_curve fits through the best point and its
    neighbours when x lies in that bracket, else linearly between the grid points around x (or at x itself).
    Returns (loss, method), or (None, None) outside the grid or next to a diverged point."""
    finite = np.where(np.isfinite(ys), ys, np.inf)
    i = int(np.argmin(finite))
    if 0 < i < len(xs) - 1 and np.isfinite(ys[i - 1]) and np.isfinite(ys[i + 1]) and xs[i - 1] <= x <= xs[i + 1]:
        a, b, c = parabola(xs[i - 1:i + 2], ys[i - 1:i + 2])
        if a > 0:
            return float(a * x ** 2 + b * x + c), "parabola"
    exact = np.flatnonzero(np.abs(xs - x) <= GRID_POINT_TOLERANCE_LOG2)
    if exact.size:
        y = ys[exact[0]]
        return (float(y), "grid-point") if np.isfinite(y) else (None, None)
    if not xs[0] < x < xs[-1]:
        return None, None
    j = int(np.searchsorted(xs, x)) - 1                  # xs[j] < x < xs[j + 1]
    if not (np.isfinite(ys[j]) and np.isfinite(ys[j + 1])):
        return None, None
    t = (x - xs[j]) / (xs[j + 1] - xs[j])
    return float((1 - t) * ys[j] + t * ys[j + 1]), "grid-linear"


def transfer_summary(widths: Sequence[int], lrs: Sequence[float], losses: Sequence[float],
                     seeds: Sequence[int] | None = None, *, base_width: int, grid_step: float | None = None,
                     swept_widths: Sequence[int] = ()) -> TransferSummary:
    """A transfer study from its trials (one entry per trial: width, lr, final loss (nan/inf: diverged), seed).

    Each width gets its own optimum (fit_optimum); its argmin shift is counted in grid steps (`grid_step`, log2
    units; default: grid_step_log2 of the LRs given) from the base width's; its regret is its loss at the base
    width's lr* (interpolated, see REGRET_NOTE) minus its own fitted best. A width of `swept_widths` without
    trials here is reported without an optimum (and leaves the criteria unknown). A pure function."""
    n = len(widths)
    if not (len(lrs) == len(losses) == n and (seeds is None or len(seeds) == n)):
        raise ValueError("widths, lrs, losses and seeds must have the same length")
    seeds = list(seeds) if seeds is not None else [0] * n
    if base_width not in widths:
        raise ValueError(f"no trial at the base width {base_width}")
    step = grid_step if grid_step is not None else grid_step_log2(lrs)
    trials_of: dict[int, list[int]] = {w: [] for w in swept_widths}
    for k, w in enumerate(widths):
        trials_of.setdefault(w, []).append(k)

    optima: dict[int, Optimum | None] = {}
    errors: dict[int, str | None] = {}
    for w, ks in trials_of.items():
        try:
            optima[w], errors[w] = fit_optimum([lrs[k] for k in ks], [losses[k] for k in ks],
                                               [seeds[k] for k in ks]), None
        except ValueError as e:
            optima[w], errors[w] = None, str(e)
    base = optima[base_width]
    warnings = []
    if base is None:
        warnings.append(f"the base width {base_width} has no optimum ({errors[base_width]}): nothing transfers")
    elif base.on_edge:
        warnings.append("the base width's optimum is on the grid's edge: shifts and regrets are bounds")

    rows = []
    for w in sorted(trials_of):
        ks, opt = trials_of[w], optima[w]
        shift = loss_at = regret = method = None
        if opt is not None and base is not None:
            if step:
                shift = (opt.log2_lr - base.log2_lr) / step
            _, grid, ys = grid_means([lrs[k] for k in ks], [losses[k] for k in ks], [seeds[k] for k in ks])
            xs = np.log2(grid)
            loss_at, method = _loss_at(xs, ys, base.log2_lr)
            if loss_at is None:
                warnings.append(f"width {w}: no loss at the base width's lr* {base.lr:.3g} (outside this width's "
                                f"grid, or next to a diverged learning rate)")
            else:
                regret = loss_at - opt.loss
            if opt.on_edge and w != base_width:
                warnings.append(f"width {w}: the optimum is on the grid's edge, its shift is a bound")
        elif opt is None:
            warnings.append(f"width {w}: no optimum ({errors[w]})")
        rows.append(WidthTransfer(width=w, num_trials=len(ks), optimum=opt, error=errors[w], shift_steps=shift,
                                  transfer_loss=loss_at, regret=regret, regret_method=method))

    shifts = [r.shift_steps for r in rows if r.shift_steps is not None]
    complete = len(shifts) == len(rows)
    argmin_range = (max(shifts) - min(shifts)) if shifts else None
    transferred = [r.transfer_loss for r in rows]
    falls = (all(b < a for a, b in zip(transferred, transferred[1:]))
             if all(t is not None for t in transferred) else None)
    return TransferSummary(
        base_width=base_width, base_lr=base.lr if base else None, grid_step_log2=step, widths=rows,
        argmin_range_steps=argmin_range, max_abs_shift_steps=max((abs(s) for s in shifts), default=None),
        argmin_within_one_step=(argmin_range <= 1 + SHIFT_TOLERANCE_STEPS) if complete and shifts else None,
        loss_falls_with_width=falls, warnings=warnings)
