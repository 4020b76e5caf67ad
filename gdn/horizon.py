"""The best LR against the token horizon: per horizon the sweep's optimum (gdn.fit) with its uncertainty, then a
weighted least-squares line log2 LR* = intercept + exponent * log2(D / D_proxy), and what that line predicts at a
new token budget D, with its error in grid steps. Plain numpy, no torch (the service's recommendation reads it).

Why a power law: the best LR falls as a power of the tokens trained over the ranges published fits cover (Bjorck et
al. 2024, arXiv 2409.19913); docs/transfer.md's horizon section says how far this project has checked it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gdn.fit import Optimum, fit_optimum
from gdn.spec import SweepConfig

# One horizon's lr* is read off a parabola through the grid's best point and its neighbours; with noise-free
# losses it is exact, but how far a few seeds' noise can move it is not known from one sweep, so the grid itself
# sets a floor: the sd of a point spread uniformly over one grid step (1 / sqrt(12) of a step).
GRID_RESOLUTION_STEPS = 1 / math.sqrt(12)
SLOPE_RESOLVED_SIGMAS = 2.0   # an exponent within this many standard errors of 0 is not told from 0
WEIGHT_DECAY_RULE = "coupled"  # AdamW's lr x wd per step, as the proxy trained: no rule across horizons is chosen yet
WEIGHT_DECAY_NOTE = ("the weight decay is the proxy's, coupled to the lr as AdamW applies it (lr x wd a step); a "
                     "rule for how it should change with the horizon (e.g. a fixed 1/(lr x wd) timescale as a share "
                     "of the run) is not applied")


@dataclass
class HorizonPoint:
    """One horizon of the base width's sweep."""
    steps: int
    tokens: int                      # training tokens of one trial at this horizon
    lr: float | None                 # its lr* (None: no optimum)
    log2_lr: float | None
    log2_lr_err: float | None        # one standard error: the seeds' spread / sqrt(seeds), floored by the grid
    seeds: int
    on_edge: bool
    in_fit: bool                     # an edge optimum is a bound, not a point: left out of the line
    note: str | None = None


@dataclass
class HorizonPrediction:
    """The line read at a token budget."""
    tokens: int
    log2_factor: float               # log2 (LR*(tokens) / LR*(proxy tokens)); 0 when the line is not used
    factor: float
    error_steps: float | None        # one standard error of log2 LR*(tokens), in grid steps (None: no line)
    extrapolation_ratio: float       # tokens / the longest horizon in the fit (or the proxy's)
    extrapolated: bool               # the line's slope is applied (it is resolved from 0)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class HorizonFit:
    """log2 LR* = intercept + exponent * log2(tokens / proxy_tokens): LR* proportional to tokens^exponent."""
    points: list[HorizonPoint]       # ascending steps
    proxy_steps: int                 # the horizon whose optimum the recommendation starts from
    proxy_tokens: int
    grid_step_log2: float
    exponent: float | None           # None: fewer than two horizons to fit
    exponent_err: float | None
    intercept: float | None          # the line's log2 LR* at the proxy's tokens
    intercept_err: float | None
    covariance: list[list[float]] | None   # of (intercept, exponent), scaled by the Birge ratio when it exceeds 1
    chi2: float | None
    dof: int
    slope_resolved: bool             # |exponent| > SLOPE_RESOLVED_SIGMAS standard errors
    max_tokens: int                  # the longest horizon in the fit
    weight_decay_rule: str = WEIGHT_DECAY_RULE
    weight_decay_note: str = WEIGHT_DECAY_NOTE
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HorizonFit":
        return cls(**{**d, "points": [HorizonPoint(**p) for p in d["points"]]})

    def predict(self, tokens: int, *, validated_ratio: float | None = None,
                validated_note: str = "") -> HorizonPrediction:
        """LR*(tokens) / LR*(proxy tokens), its error in grid steps, and what a user should know before trusting
        it: a single horizon, a slope not told from 0, a budget beyond what the horizon study validated."""
        if not (isinstance(tokens, int) and tokens > 0):
            raise ValueError(f"tokens must be a positive integer, got {tokens!r}")
        x = math.log2(tokens / self.proxy_tokens)
        ratio = tokens / self.max_tokens
        warnings: list[str] = []
        if self.exponent is None:
            warnings.append(
                f"the job swept a single horizon ({self.proxy_steps} steps, {self.proxy_tokens:,} tokens a trial): "
                f"the lr is the proxy's for that horizon; the best lr usually falls as the token budget grows "
                f"(docs/transfer.md, horizon), so at {tokens:,} tokens it is likely too high; sweep several "
                "`horizons` to fit how it falls")
            return HorizonPrediction(tokens, 0.0, 1.0, None, ratio, False, warnings)
        var = self.covariance[0][0] + 2 * x * self.covariance[0][1] + x * x * self.covariance[1][1]
        error = math.sqrt(max(var, 0.0)) / self.grid_step_log2
        if self.slope_resolved:
            log2_factor = self.exponent * x
        else:
            log2_factor = 0.0
            warnings.append(
                f"the fitted exponent {self.exponent:+.3f} +- {self.exponent_err:.3f} is not distinguishable from 0 "
                f"over {min(p.steps for p in self.points if p.in_fit)}-{max(p.steps for p in self.points if p.in_fit)} "
                f"steps: the lr is not "
                f"extrapolated (the proxy's); the line's error at {tokens:,} tokens is {error:.2g} grid steps")
        if validated_ratio is not None and ratio > validated_ratio:
            warnings.append(f"{tokens:,} tokens is {ratio:.3g}x the longest proxy horizon ({self.max_tokens:,}), "
                            f"beyond the {validated_ratio:g}x the horizon study validated" +
                            (f" ({validated_note})" if validated_note else ""))
        return HorizonPrediction(tokens, log2_factor, 2.0 ** log2_factor, error, ratio, self.slope_resolved,
                                 warnings)


def point_error(optimum: Optimum, seeds: int, grid_step_log2: float) -> float:
    """One standard error of an optimum's log2 lr*: the spread of the per-seed optima over sqrt(seeds), floored
    by the grid's resolution (GRID_RESOLUTION_STEPS)."""
    floor = GRID_RESOLUTION_STEPS * grid_step_log2
    if optimum.log2_lr_std is None or seeds < 2:
        return floor
    return math.hypot(optimum.log2_lr_std / math.sqrt(seeds), floor)


def weighted_line(xs: Sequence[float], ys: Sequence[float], errs: Sequence[float]):
    """Weighted least squares y = a + b x with standard errors `errs`: (a, b, cov(a, b), chi2, dof). With more
    points than parameters the covariance is scaled by chi2 / dof when that exceeds 1 (the errors were too small)."""
    x, y, w = np.asarray(xs, float), np.asarray(ys, float), 1.0 / np.asarray(errs, float) ** 2
    design = np.stack([np.ones_like(x), x], axis=1)
    normal = design.T @ (w[:, None] * design)
    cov = np.linalg.inv(normal)
    a, b = cov @ (design.T @ (w * y))
    chi2 = float(np.sum(w * (y - a - b * x) ** 2))
    dof = len(x) - 2
    if dof > 0 and chi2 / dof > 1:
        cov = cov * (chi2 / dof)
    return float(a), float(b), cov, chi2, dof


def fit_horizons(optima: dict[int, Optimum | None], seeds: dict[int, int], *, tokens_per_step: int,
                 proxy_steps: int, grid_step_log2: float) -> HorizonFit:
    """The horizon fit from each horizon's optimum (steps -> Optimum, None where none) and seed count. Edge
    optima are bounds: named and left out. Fewer than two horizons left: no line (exponent None)."""
    if proxy_steps not in optima:
        raise ValueError(f"the proxy's horizon {proxy_steps} is not among the horizons {sorted(optima)}")
    if not grid_step_log2 or grid_step_log2 <= 0:
        raise ValueError("a horizon fit needs an LR grid of at least two values (its spacing sets the error)")
    proxy_tokens = proxy_steps * tokens_per_step
    points, warnings = [], []
    for steps in sorted(optima):
        opt = optima[steps]
        if opt is None:
            points.append(HorizonPoint(steps, steps * tokens_per_step, None, None, None, seeds.get(steps, 0), False,
                                       False, "no optimum"))
            warnings.append(f"horizon {steps} steps has no optimum: left out of the fit")
            continue
        err = point_error(opt, seeds.get(steps, 1), grid_step_log2)
        note = "the optimum is on the grid's edge: a bound, left out of the fit" if opt.on_edge else None
        if opt.on_edge:
            warnings.append(f"horizon {steps} steps: {note}")
        points.append(HorizonPoint(steps, steps * tokens_per_step, opt.lr, opt.log2_lr, err, seeds.get(steps, 1),
                                   opt.on_edge, not opt.on_edge, note))
    used = [p for p in points if p.in_fit]
    max_tokens = max((p.tokens for p in used), default=proxy_tokens)
    if len(used) < 2:
        if len(optima) > 1:
            warnings.append(f"{len(used)} horizon(s) with an interior optimum: no line through them")
        return HorizonFit(points, proxy_steps, proxy_tokens, grid_step_log2, None, None, None, None, None, None, 0,
                          False, max_tokens, warnings=warnings)
    a, b, cov, chi2, dof = weighted_line([math.log2(p.tokens / proxy_tokens) for p in used],
                                         [p.log2_lr for p in used], [p.log2_lr_err for p in used])
    b_err, a_err = math.sqrt(cov[1, 1]), math.sqrt(cov[0, 0])
    return HorizonFit(points, proxy_steps, proxy_tokens, grid_step_log2, b, b_err, a, a_err, cov.tolist(), chi2, dof,
                      abs(b) > SLOPE_RESOLVED_SIGMAS * b_err, max_tokens, warnings=warnings)


def scaled_warmup(warmup_steps: int, steps: int, horizon_steps: int) -> int:
    """The schedule at another horizon keeps its shape: warmup is the same share of the run (at least one step
    when the proxy's had any); the cosine decay spans the rest, as gdn.optim's schedule defines."""
    if warmup_steps == 0:
        return 0
    return min(horizon_steps, max(1, round(warmup_steps * horizon_steps / steps)))


def config_at_horizon(config: SweepConfig, steps: int | None) -> SweepConfig:
    """The sweep config trained for `steps` (None or its own: unchanged), its warmup scaled (scaled_warmup)."""
    sched = config.schedule
    if steps is None or steps == sched.steps:
        return config
    return dataclasses.replace(config, schedule=dataclasses.replace(
        sched, steps=steps, warmup_steps=scaled_warmup(sched.warmup_steps, sched.steps, steps)))


def horizon_optima(steps: Sequence[int], lrs: Sequence[float], losses: Sequence[float],
                   seeds: Sequence[int]) -> tuple[dict[int, Optimum | None], dict[int, int]]:
    """Each horizon's optimum (None where nothing has a finite loss) and its number of seeds, from one width's
    trials (their horizon, lr, final loss (nan: diverged), seed)."""
    optima, counts = {}, {}
    for h in sorted(set(steps)):
        ks = [k for k, s in enumerate(steps) if s == h]
        counts[h] = len({seeds[k] for k in ks})
        try:
            optima[h] = fit_optimum([lrs[k] for k in ks], [losses[k] for k in ks], [seeds[k] for k in ks])
        except ValueError:
            optima[h] = None
    return optima, counts
