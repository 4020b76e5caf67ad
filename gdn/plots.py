"""Plots people would rather see than read: validation loss vs learning rate, for one sweep or one line per width.

Rendered with the Agg canvas and no pyplot, so the API may draw them from several threads at once. Each returns PNG
bytes; diverged trials are crosses along the top edge."""
from __future__ import annotations

import io
import math
from collections import defaultdict

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

FIGSIZE = (8.4, 4.0)          # the axes and, to their right, the legend (never over the data)
DPI = 110
MAX_LR_TICKS = 8


def sweep_png(**kwargs) -> bytes:
    """sweep_figure as PNG bytes."""
    return _to_png(sweep_figure(**kwargs))


def transfer_png(**kwargs) -> bytes:
    """transfer_figure as PNG bytes."""
    return _to_png(transfer_figure(**kwargs))


def sweep_figure(*, title: str, completed: list[tuple[float, int, float]], diverged: list[tuple[float, int]],
                 optimum_lr: float | None, optimum_loss: float | None, on_edge: bool = False,
                 near_best: tuple[float, float] | None = None, loss_unit: str = "nats per token") -> Figure:
    """completed: (lr, seed, final loss); diverged: (lr, seed); near_best: the optimum's (near_best_lr_min,
    near_best_lr_max), shaded where it spans more than one grid point: the sweep cannot rank the LRs inside."""
    fig, ax = _axes(title, f"final validation loss ({loss_unit})")
    if near_best is not None and all(x is not None and math.isfinite(x) for x in near_best) and \
            near_best[1] > near_best[0]:
        ax.axvspan(*near_best, color="0.85", zorder=0, label="within the seed noise of the best")
    seeds = sorted({s for _, s, _ in completed} | {s for _, s in diverged})
    finite = [loss for _, _, loss in completed if math.isfinite(loss)]
    top = (max(finite) + 0.05 * (max(finite) - min(finite) + 1e-3)) if finite else 1.0
    for i, seed in enumerate(seeds):
        color = f"C{i % 10}"
        pts = sorted((lr, loss) for lr, s, loss in completed if s == seed)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"seed {seed}")
        div = [lr for lr, s in diverged if s == seed]
        if div:
            ax.plot(div, [top] * len(div), "x", color=color, markersize=9, mew=2,
                    label=f"diverged (seed {seed})")
    if optimum_lr is not None:
        edge = " (grid edge: a bound)" if on_edge else ""
        ax.axvline(optimum_lr, color="k", ls="--", lw=1)
        if optimum_loss is not None and math.isfinite(optimum_loss):
            ax.plot([optimum_lr], [optimum_loss], "*", color="k", markersize=14,
                    label=f"optimum lr={optimum_lr:.3g}{edge}")
    return _finish(fig, ax, [lr for lr, _, _ in completed] + [lr for lr, _ in diverged])


def transfer_figure(*, title: str, completed: list[tuple[int, float, int, float]],
                    diverged: list[tuple[int, float]], optima: dict[int, tuple[float, float]], base_lr: float | None,
                    loss_unit: str = "nats per token") -> Figure:
    """A transfer study: per width, the seed-mean final loss minus that width's best vs LR. completed: (width, lr,
    seed, loss); diverged: (width, lr); optima: width -> (lr*, fitted loss); base_lr: the base width's lr*."""
    fig, ax = _axes(title, f"final validation loss minus the width's best ({loss_unit})")
    by_width: dict[int, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for width, lr, _seed, loss in completed:
        by_width[width][lr].append(loss)
    excess_top = 0.0
    lines = {}
    for i, width in enumerate(sorted(set(by_width) | {w for w, _ in diverged})):
        color = f"C{i % 10}"
        means = sorted((lr, sum(v) / len(v)) for lr, v in by_width.get(width, {}).items())
        finite = [m for _, m in means if math.isfinite(m)]
        best = min(finite) if finite else 0.0
        if means:
            ax.plot([lr for lr, _ in means], [m - best for _, m in means], "o-", color=color, label=f"width {width}")
            excess_top = max([excess_top] + [m - best for m in finite])
        if width in optima and math.isfinite(optima[width][1]):
            ax.plot([optima[width][0]], [optima[width][1] - best], "*", color=color, markersize=12)
        lines[width] = color
    for width, lr in diverged:
        ax.plot([lr], [excess_top * 1.05 or 1.0], "x", color=lines[width], markersize=9, mew=2)
    if base_lr is not None:
        ax.axvline(base_lr, color="k", ls="--", lw=1, label=f"base width's lr* {base_lr:.3g}")
    return _finish(fig, ax, [lr for _, lr, _, _ in completed] + [lr for _, lr in diverged])


def horizon_png(*, title: str, points: list[tuple[int, float, float | None, bool]],
                line: tuple[float, float, list[list[float]], int] | None, multipliers: dict[int, float],
                tokens: int | None = None) -> bytes:
    """lr* against training tokens (both log2), one colour per width: the base width's measured optima (points:
    (tokens, lr*, one standard error of log2 lr*, in the fit); open markers: left out, an edge is a bound) and the
    fitted line (intercept, exponent, covariance, proxy tokens: log2 lr* = intercept + exponent log2(D / proxy)),
    solid over the fitted horizons and dashed beyond, out to `tokens`, with its 1-sigma band; every width's line is the
    base width's times its hidden matrices' muP lr multiplier (multipliers: width -> multiplier)."""
    fig, ax = _axes(title, "lr of the hidden matrices", xlabel="training tokens")
    ax.set_yscale("log", base=2)
    measured = [t for t, *_ in points]
    far = max(measured + ([tokens] if tokens else []), default=1)
    if line is not None:        # the base width's line and band, the same for every width up to its multiplier
        a, b, cov, proxy = line
        xs = [2 ** (math.log2(min(measured)) + k * (math.log2(far) - math.log2(min(measured))) / 60)
              for k in range(61)]
        u = [math.log2(x / proxy) for x in xs]
        base_ys = [2 ** (a + b * v) for v in u]
        sd = [math.sqrt(max(cov[0][0] + 2 * v * cov[0][1] + v * v * cov[1][1], 0.0)) for v in u]
        fitted = [t for t, _, _, used in points if used] or measured
        j = max(k for k, x in enumerate(xs) if x <= max(fitted) * (1 + 1e-9))     # the longest fitted
    for i, (width, mult) in enumerate(sorted(multipliers.items())):
        color = f"C{i % 10}"
        for t, lr, err, used in points:
            factor = 2 ** err if err else 1.0
            ax.errorbar([t], [lr * mult], yerr=[[lr * mult * (1 - 1 / factor)], [lr * mult * (factor - 1)]],
                        fmt="o", mfc=color if used else "white", color=color, capsize=3)
        if line is not None:
            ys = [mult * y for y in base_ys]
            ax.plot(xs[:j + 1], ys[:j + 1], "-", color=color, label=f"width {width}: lr* ~ D^{b:+.3f}")
            ax.plot(xs[j:], ys[j:], "--", color=color)                                # extrapolated
            ax.fill_between(xs, [y / 2 ** e for y, e in zip(ys, sd)], [y * 2 ** e for y, e in zip(ys, sd)],
                            color=color, alpha=0.15, lw=0)
        else:
            ax.plot([], [], "o", color=color, label=f"width {width} (one horizon: no line)")
    if tokens:
        ax.axvline(tokens, color="k", ls=":", lw=1, label=f"{tokens:,} tokens")
    if not points:
        ax.text(0.5, 0.5, "no optimum yet", transform=ax.transAxes, ha="center", va="center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _to_png(fig)


def _axes(title: str, ylabel: str, xlabel: str = "learning rate"):
    """A figure on its own Agg canvas with one axes, its x (the learning rate, unless told) on a log2 axis."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return fig, ax


def decimal_lr(x: float, _pos=None) -> str:
    """A learning rate as a decimal with 3 significant digits (0.002, 0.00447), not as a power of two."""
    return f"{x:.3g}" if x >= 1e-4 else f"{x:.2e}"


def _finish(fig: Figure, ax, lrs: list[float]) -> Figure:
    """Ticks at the grid's own learning rates (at most MAX_LR_TICKS of them), in decimal; the legend to the right
    of the axes."""
    grid = sorted(set(lrs))
    if grid:
        every = math.ceil(len(grid) / MAX_LR_TICKS)
        ax.xaxis.set_major_locator(FixedLocator(grid[::every]))
        ax.xaxis.set_major_formatter(FuncFormatter(decimal_lr))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.text(0.5, 0.5, "no finished trial yet", transform=ax.transAxes, ha="center", va="center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def _to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
