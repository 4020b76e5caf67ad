"""LR grids and the optimum of a sweep: a parabola through the best grid point and its neighbours, over seeds."""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

GRID_ROUND = 12      # significant digits when grouping equal learning rates


def lr_grid(lr_min: float, lr_max: float, count: int) -> list[float]:
    """`count` learning rates log-spaced from lr_min to lr_max, both included."""
    if not (0 < lr_min <= lr_max and math.isfinite(lr_max)):
        raise ValueError(f"need 0 < lr_min <= lr_max, got {lr_min}, {lr_max}")
    if count < 1 or (count == 1 and lr_min != lr_max):
        raise ValueError("count must be >= 2 (or 1 with lr_min == lr_max)")
    if count == 1:
        return [lr_min]
    return [float(x) for x in np.exp2(np.linspace(math.log2(lr_min), math.log2(lr_max), count))]


def lr_grid_around(center: float, count: int, step_log2: float = 0.5) -> list[float]:
    """`count` learning rates spaced 2^step_log2 apart, centred on `center`."""
    half = (count - 1) / 2
    return [center * 2 ** (step_log2 * (i - half)) for i in range(count)]


@dataclass
class Optimum:
    lr: float
    log2_lr: float
    loss: float                      # the fitted (or grid) loss at lr
    log2_lr_std: float | None        # spread of the per-seed optima (None with one seed)
    on_edge: bool                    # the best grid point is the smallest or largest LR tried
    warnings: list[str] = field(default_factory=list)
    grid_lr: float = math.nan        # the best grid point itself
    per_seed_lr: dict[int, float] = field(default_factory=dict)
    near_best_lr_min: float = math.nan   # the smallest and largest grid LRs whose loss is within the seed noise
    near_best_lr_max: float = math.nan   # of the best (NEAR_BEST_TOLERANCE): the optimum could be anywhere there

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["per_seed_lr"] = {str(k): v for k, v in self.per_seed_lr.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Optimum":
        d = dict(d)
        d["per_seed_lr"] = {int(k): v for k, v in d.get("per_seed_lr", {}).items()}
        return cls(**d)


# One run's final loss moves by about 1 % (relative sd) with its seed near the optimum: 0.6-1.5 % at every width and
# horizon of the GPU transfer study, 0.7-1.0 % on the CPU at 1000 steps (benchmarks/transfer.py seed_noise,
# docs/transfer.md). Grid points within two of those of the best cannot be told from it by one seed; with n seeds
# a point is a mean of n runs, so the tolerance shrinks as 1 / sqrt(n).
NEAR_BEST_TOLERANCE = 0.02


def fit_curve(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, bool, list[str]]:
    """Minimum of loss vs x = log2(lr) on a sorted grid: a parabola through the best point and its neighbours.
    Non-finite losses (diverged trials) count as +inf. Returns (x*, loss*, on_edge, warnings)."""
    if not np.isfinite(ys).any():
        raise ValueError("no trial has a finite loss: nothing to fit (every learning rate diverged)")
    i = int(np.argmin(np.where(np.isfinite(ys), ys, np.inf)))
    n = len(xs)
    if i == 0 or i == n - 1:
        side = "smallest" if i == 0 else "largest"
        return xs[i], ys[i], True, [f"the best loss is at the {side} learning rate of the grid "
                                    f"({2 ** xs[i]:.3g}): extend the grid past it; this optimum is a bound"]
    (x0, _, x2), (y0, _, y2) = xs[i - 1:i + 2], ys[i - 1:i + 2]
    if not (np.isfinite(y0) and np.isfinite(y2)):
        return xs[i], ys[i], False, [f"a neighbour of the best learning rate diverged: the optimum is the grid "
                                     f"point {2 ** xs[i]:.3g}, not a fit"]
    a, b, c = parabola(xs[i - 1:i + 2], ys[i - 1:i + 2])
    if a <= 0:
        return xs[i], ys[i], False, []
    x_star = float(np.clip(-b / (2 * a), x0, x2))          # the vertex, clamped to the bracket
    return x_star, float(a * x_star ** 2 + b * x_star + c), False, []


def parabola(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of the parabola a x^2 + b x + c through three points (Lagrange form)."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    return a, b, y1 - a * x1 * x1 - b * x1


def group_by_lr(lrs: Sequence[float], losses: Sequence[float], seeds: Sequence[int]) -> dict[float, dict[int, float]]:
    """lr -> {seed: loss}, equal learning rates grouped to GRID_ROUND digits, non-finite losses as +inf."""
    by_lr: dict[float, dict[int, float]] = defaultdict(dict)
    for lr, loss, seed in zip(lrs, losses, seeds):
        by_lr[float(f"{lr:.{GRID_ROUND}g}")][seed] = loss if math.isfinite(loss) else math.inf
    return by_lr


def grid_means(lrs: Sequence[float], losses: Sequence[float],
               seeds: Sequence[int]) -> tuple[dict[float, dict[int, float]], list[float], np.ndarray]:
    """(lr -> {seed: loss}, the sorted grid, the mean loss over seeds at each grid point), non-finite -> +inf."""
    by_lr = group_by_lr(lrs, losses, seeds)
    grid = sorted(by_lr)
    return by_lr, grid, np.array([np.mean(list(by_lr[lr].values())) for lr in grid])


def fit_optimum(lrs: Sequence[float], losses: Sequence[float], seeds: Sequence[int] | None = None) -> Optimum:
    """The optimum LR of a sweep from its final validation losses (nan/inf for diverged trials).

    With several seeds, the fit runs on the per-LR mean (a diverged seed makes that LR diverged) and the
    uncertainty is the spread (std) of log2 lr* over the seeds' own fits."""
    if len(lrs) != len(losses) or (seeds is not None and len(seeds) != len(lrs)):
        raise ValueError("lrs, losses and seeds must have the same length")
    if not lrs:
        raise ValueError("no trials to fit")
    seeds = list(seeds) if seeds is not None else [0] * len(lrs)
    if not all(lr > 0 for lr in lrs):
        raise ValueError(f"learning rates must be positive, got {min(lrs)}")
    by_lr, grid, mean = grid_means(lrs, losses, seeds)
    xs = np.log2(grid)
    x_star, loss_star, on_edge, warnings = fit_curve(xs, mean)

    per_seed: dict[int, float] = {}
    all_seeds = sorted(set(seeds))
    if len(all_seeds) > 1:
        for seed in all_seeds:
            ys = np.array([by_lr[lr].get(seed, math.nan) for lr in grid])
            if np.isnan(ys).any() or not np.isfinite(ys).any():
                continue
            per_seed[seed] = float(2 ** fit_curve(xs, ys)[0])
    std = float(np.std(np.log2(list(per_seed.values())), ddof=1)) if len(per_seed) > 1 else None
    i_best = int(np.argmin(mean))
    lo, hi = _near_best(grid, mean, min(len(by_lr[lr]) for lr in grid))
    step = grid_step_log2(grid)
    if step and math.log2(hi / lo) >= 2 * step - 1e-9:
        warnings = warnings + [
            f"the losses from lr {lo:.3g} to {hi:.3g} ({math.log2(hi / lo) / step:.0f} grid steps) are within the "
            "seed noise of the best: this sweep cannot place the optimum inside that range; add seeds"]
    return Optimum(lr=float(2 ** x_star), log2_lr=float(x_star), loss=float(loss_star), log2_lr_std=std,
                   on_edge=on_edge, warnings=warnings, grid_lr=grid[i_best], per_seed_lr=per_seed,
                   near_best_lr_min=lo, near_best_lr_max=hi)


def _near_best(grid: list[float], mean: np.ndarray, seeds: int) -> tuple[float, float]:
    """The smallest and largest grid LR whose mean loss is within NEAR_BEST_TOLERANCE / sqrt(seeds) of the best
    (relative). Not necessarily contiguous: a bumpy top is exactly where one seed cannot rank the points."""
    best = float(np.min(mean))
    near = [lr for lr, y in zip(grid, mean) if y <= best + abs(best) * NEAR_BEST_TOLERANCE / math.sqrt(seeds)]
    return min(near), max(near)


EXTEND_POINTS = 2        # learning rates added beyond an edge per round of extension, at the grid's spacing


def edge_extension(lrs: Sequence[float], losses: Sequence[float], seeds: Sequence[int] | None = None, *,
                   points: int = EXTEND_POINTS, step_log2: float | None = None) -> list[float]:
    """The learning rates to try next so that a sweep's optimum becomes interior: `points` more beyond the edge whose
    grid point has the best mean loss, spaced `step_log2` (default: the grid's own spacing) apart; none when the
    best point is interior, when every point diverged, or for a grid of one value without a `step_log2`. Diverged
    trials (non-finite losses) count as +inf, so a diverged top edge is never extended past."""
    if not lrs:
        return []
    _, grid, mean = grid_means(lrs, losses, seeds if seeds is not None else [0] * len(lrs))
    step = step_log2 if step_log2 is not None else grid_step_log2(grid)
    if not step or not np.isfinite(mean).any():
        return []
    i = int(np.argmin(mean))
    if 0 < i < len(grid) - 1:
        return []
    if len(grid) == 1:          # one point: no side is known yet, so both
        return [grid[0] * 2 ** (-step), grid[0] * 2 ** step]
    direction = -1 if i == 0 else 1
    return [grid[i] * 2 ** (direction * step * k) for k in range(1, points + 1)]


def grid_step_log2(lrs: Sequence[float]) -> float | None:
    """The spacing of an LR grid in log2 units: the median gap between its distinct sorted values (exact for a
    log-spaced grid, robust to an irregular explicit one). None for a grid of one value."""
    xs = sorted({math.log2(float(f"{lr:.{GRID_ROUND}g}")) for lr in lrs})
    gaps = np.diff(xs)
    return float(np.median(gaps)) if len(gaps) else None
