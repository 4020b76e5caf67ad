"""LR grids, the optimum of a sweep, and the recommendation for a target width (a pure function)."""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gdn.model import count_params, train_flops_per_token
from gdn.parametrization import PARAMETRIZATION_VERSION, ROLE_PATTERNS, Role
from gdn.train import SweepConfig

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


def _fit_curve(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, bool, list[str]]:
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
    a, b, c = _parabola(xs[i - 1:i + 2], ys[i - 1:i + 2])
    if a <= 0:
        return xs[i], ys[i], False, []
    x_star = float(np.clip(-b / (2 * a), x0, x2))          # the vertex, clamped to the bracket
    return x_star, float(a * x_star ** 2 + b * x_star + c), False, []


def _parabola(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of the parabola a x^2 + b x + c through three points (Lagrange form)."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    return a, b, y1 - a * x1 * x1 - b * x1


def _group_by_lr(lrs: Sequence[float], losses: Sequence[float], seeds: Sequence[int]) -> dict[float, dict[int, float]]:
    """lr -> {seed: loss}, equal learning rates grouped to GRID_ROUND digits, non-finite losses as +inf."""
    by_lr: dict[float, dict[int, float]] = defaultdict(dict)
    for lr, loss, seed in zip(lrs, losses, seeds):
        by_lr[float(f"{lr:.{GRID_ROUND}g}")][seed] = loss if math.isfinite(loss) else math.inf
    return by_lr


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
    by_lr = _group_by_lr(lrs, losses, seeds)
    grid = sorted(by_lr)
    xs = np.log2(grid)
    mean = np.array([np.mean(list(by_lr[lr].values())) for lr in grid])
    x_star, loss_star, on_edge, warnings = _fit_curve(xs, mean)

    per_seed: dict[int, float] = {}
    all_seeds = sorted(set(seeds))
    if len(all_seeds) > 1:
        for seed in all_seeds:
            ys = np.array([by_lr[lr].get(seed, math.nan) for lr in grid])
            if np.isnan(ys).any() or not np.isfinite(ys).any():
                continue
            per_seed[seed] = float(2 ** _fit_curve(xs, ys)[0])
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


@dataclass
class SweepResult:
    config: SweepConfig
    optimum: Optimum
    num_trials: int = 1


def _role_patterns() -> dict[Role, tuple[str, ...]]:
    return {role: patterns for role, patterns, _ in ROLE_PATTERNS}


@dataclass(frozen=True)
class TransferEvidence:
    """What the transfer study (docs/transfer.md) measured for one (parametrization, optimizer)."""
    max_width_mult: float      # the widest target / base ratio at which the base width's LR was checked
    holds: bool                # did the base width's LR transfer there (argmin stable, no worse than tuned SP)?
    summary: str


TRANSFER_EVIDENCE: dict[tuple[str, str], TransferEvidence] = {
    ("mup", "adamw"): TransferEvidence(
        16, True, "GPU, widths 128-2048, the default preset: at 1000 steps the argmin within 0.7 grid steps to 8x "
                  "and the model at the transferred lr -1.4 / -0.9 / +1.0 / +0.1 % against SP tuned by hand at 1, 2, "
                  "4, 8x; at 250 steps within 0.8 steps to 16x, +0.07 % at 16x"),
    ("mup", "sgd"): TransferEvidence(
        8, False, "GPU, widths 128-1024, 1000 steps, the SGD preset (alpha 4, sigma_0 x 2, width-consistent clip): "
                  "the model at the transferred lr 10 % better than SP tuned by hand at 1x but 5 / 8 % behind at "
                  "4 / 8x, argmin down 2.4 grid steps at 8x"),
    ("mup-sgd", "sgd"): TransferEvidence(
        8, False, "CPU only, widths 32-256, two seeds: the model at 8x +0.5 % (250 steps) and +0.3 % (1000 steps) "
                  "against SP tuned by hand (the default mup: +4.1 % at 250); not yet measured on the GPU"),
    ("sp", "adamw"): TransferEvidence(
        16, False, "GPU, widths 128-2048: the argmin moved 3.4 grid steps to 8x at 1000 steps and 4.6 to 16x at "
                   "250 steps (the lr halves about every doubling); the base width's lr cost 4.9 % at 8x and 7.5 % "
                   "at 16x"),
    ("sp", "sgd"): TransferEvidence(
        8, False, "GPU, widths 128-1024, 1000 steps: the argmin moved 1.9 grid steps and the base width's lr cost "
                  "1.7 % at 8x (global-norm clipping at 1.0 makes SGD nearly normalised); CPU 250 steps: 5.8 steps"),
    ("mup-original", "sgd"): TransferEvidence(
        8, False, "CPU, widths 32-256, 250 steps: argmin within 1.8 grid steps but the model at the transferred lr "
                  "33 % behind SP tuned by hand at 4-8x"),
    ("mup-paper-code", "adamw"): TransferEvidence(
        8, False, "CPU, widths 32-256, 250 steps: argmin moved 1.9 grid steps, the model at the transferred lr "
                  "23 % behind SP tuned by hand at 8x and worse than at 4x"),
}


def transfer_warnings(parametrization: str, optimizer: str, width_mult: float) -> list[str]:
    """What a user should know before trusting a transferred lr at this width ratio, from TRANSFER_EVIDENCE."""
    if width_mult == 1:
        return []
    ev = TRANSFER_EVIDENCE.get((parametrization, optimizer))
    if ev is None:
        return [f"the transfer study has not measured {parametrization!r} under {optimizer}: the lr is scaled by "
                "its table, untested (docs/transfer.md)"]
    if not ev.holds:
        return [f"{parametrization!r} under {optimizer} did not transfer in the study ({ev.summary}); tune at the "
                "target width or use 'mup' with adamw"]
    if width_mult > ev.max_width_mult:
        return [f"width ratio {width_mult:g} is beyond the {ev.max_width_mult:g}x the transfer study measured "
                f"({ev.summary})"]
    return []


def recommend(result: SweepResult, target_width: int) -> dict:
    """The hyperparameters for `target_width`: per-group LR, init, weight decay, forward multipliers, the target
    model's shapes and the proxy's cost. JSON-serialisable; a pure function of (result, target_width)."""
    cfg = result.config
    target = cfg.model_at(target_width)          # raises ValueError for a width the axis cannot take
    proxy = cfg.model_at(cfg.base_width)
    p = cfg.param()
    m = target_width / cfg.base_width
    opt = cfg.optimizer
    lr = result.optimum.lr
    _, K, _ = target.heads_and_dims()
    _, K_base, _ = proxy.heads_and_dims()
    patterns = _role_patterns()
    roles = [r for r in Role if r is not Role.READOUT] + ([] if p.readout.tied else [Role.READOUT])
    groups = []
    for role in roles:
        rule = p.rule(role)
        mult = p.lr_multiplier(role, opt.name, m)
        groups.append({
            "role": role.value,
            "patterns": list(patterns[role]),
            "lr": lr * mult,
            "min_lr": cfg.schedule.min_lr * mult,
            "lr_multiplier": mult,
            "init": rule.init.kind,
            "init_std": p.init_std(role, m),
            "weight_decay": opt.weight_decay if rule.weight_decay else 0.0,
            # this group's gradient weight in the norm the global clip compares (gdn.optim.clip_grad_norm)
            "clip_weight": p.clip_weight(role, opt.name, m),
        })
    proxy_flops, target_flops = train_flops_per_token(proxy), train_flops_per_token(target)
    evidence = TRANSFER_EVIDENCE.get((cfg.parametrization, opt.name))
    return {
        "parametrization_version": PARAMETRIZATION_VERSION,
        "parametrization": {**p.to_dict(), "readout_tied": p.readout.tied, "width_axis": target.width_axis,
                            "description": p.description},
        "optimizer": dataclasses.asdict(opt),
        "base_width": cfg.base_width,
        "target_width": target_width,
        "width_mult": m,
        "base_lr": lr,
        "base_lr_log2_std": result.optimum.log2_lr_std,
        "optimum_on_edge": result.optimum.on_edge,
        "warnings": list(result.optimum.warnings) + transfer_warnings(cfg.parametrization, opt.name, m),
        "transfer_evidence": dataclasses.asdict(evidence) if evidence else None,
        "schedule": dataclasses.asdict(cfg.schedule),
        "groups": groups,
        "forward_multipliers": {
            "logits": p.logit_multiplier(m),
            "gdn_scale": p.o_multiplier(K, K_base),   # the `scale` argument of (fla's) chunk_gated_delta_rule
        },
        "target_model": {**target.shapes(), "num_params": count_params(target)},
        "proxy_model": {**proxy.shapes(), "num_params": count_params(proxy)},
        "cost": {
            "proxy_train_flops_per_token": proxy_flops,
            "target_train_flops_per_token": target_flops,
            "trial_share": proxy_flops / target_flops,
            "num_trials": result.num_trials,
            "sweep_share": result.num_trials * proxy_flops / target_flops,
        },
    }


def param_groups(model, recommendation: dict) -> list[dict]:
    """torch optimizer groups for a GDN model (ours or fla's) from a recommendation: every parameter is matched by
    name to one group's patterns; a parameter no group claims is an error."""
    groups = recommendation["groups"]
    buckets: list[list] = [[] for _ in groups]
    for name, param in model.named_parameters():
        hits = [i for i, g in enumerate(groups) if any(fnmatch.fnmatchcase(name, pat) for pat in g["patterns"])]
        if not hits:
            raise KeyError(f"parameter {name!r} matches no group of the recommendation")
        buckets[hits[0]].append(param)
    return [{"params": params, "lr": g["lr"], "weight_decay": g["weight_decay"], "name": g["role"],
             "clip_weight": g.get("clip_weight", 1.0)}           # older recommendations lack it: the plain clip
            for g, params in zip(groups, buckets) if params]


# --- transfer studies: one LR grid swept at several widths ---------------------------------------------------

REGRET_NOTE = ("interpolated: each width's loss at the base width's lr* is read off that width's own fitted "
               "parabola (its best grid point and neighbours) where lr* lies inside that bracket, else linearly "
               "between the two grid points around lr* (or at the grid point lr* is); no trial ran at lr* itself")
SHIFT_TOLERANCE_STEPS = 1e-9     # 'at most one grid step' allows this much rounding
GRID_POINT_TOLERANCE_LOG2 = 1e-9  # an lr* this close to a grid point (in log2) is read at that point


def grid_step_log2(lrs: Sequence[float]) -> float | None:
    """The spacing of an LR grid in log2 units: the median gap between its distinct sorted values (exact for a
    log-spaced grid, robust to an irregular explicit one). None for a grid of one value."""
    xs = sorted({math.log2(float(f"{lr:.{GRID_ROUND}g}")) for lr in lrs})
    gaps = np.diff(xs)
    return float(np.median(gaps)) if len(gaps) else None


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


def _grid_means(lrs: Sequence[float], losses: Sequence[float], seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(log2 lr, mean loss over seeds) on the sorted grid, as fit_optimum groups them (non-finite -> +inf)."""
    by_lr = _group_by_lr(lrs, losses, seeds)
    grid = sorted(by_lr)
    return np.log2(grid), np.array([np.mean(list(by_lr[lr].values())) for lr in grid])


def _loss_at(xs: np.ndarray, ys: np.ndarray, x: float) -> tuple[float | None, str | None]:
    """The loss curve (xs, ys) read at x: on the parabola _fit_curve fits through the best point and its
    neighbours when x lies in that bracket, else linearly between the grid points around x (or at x itself).
    Returns (loss, method), or (None, None) outside the grid or next to a diverged point."""
    finite = np.where(np.isfinite(ys), ys, np.inf)
    i = int(np.argmin(finite))
    if 0 < i < len(xs) - 1 and np.isfinite(ys[i - 1]) and np.isfinite(ys[i + 1]) and xs[i - 1] <= x <= xs[i + 1]:
        a, b, c = _parabola(xs[i - 1:i + 2], ys[i - 1:i + 2])
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
            xs, ys = _grid_means([lrs[k] for k in ks], [losses[k] for k in ks], [seeds[k] for k in ks])
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
