"""Plots people would rather see than read: validation loss vs learning rate (one line per width)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable


def plot_sweep(points: Iterable[tuple[float, int, float]], optimum=None, path=None, title: str = "",
               widths: Iterable[int] | None = None, shift_to_best: bool = False):
    """points: (lr, seed, val_loss) or, with `widths`, one width per point. Diverged trials (non-finite loss)
    are drawn as crosses at the top of the plot. Writes a PNG to `path` (a path or a binary file object)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(points)
    widths = list(widths) if widths is not None else [None] * len(points)
    by_width: dict = defaultdict(lambda: defaultdict(list))
    for (lr, _seed, loss), w in zip(points, widths):
        by_width[w][lr].append(loss)
    finite = [loss for _, _, loss in points if math.isfinite(loss)]
    top = max(finite) if finite else 1.0

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for w in sorted(by_width, key=lambda x: (x is None, x)):
        lrs = sorted(by_width[w])
        means = [sum(v) / len(v) if all(math.isfinite(x) for x in v) else math.nan for v in
                 (by_width[w][lr] for lr in lrs)]
        best = min((m for m in means if math.isfinite(m)), default=0.0)
        ys = [m - best if shift_to_best else m for m in means]
        label = f"width {w}" if w is not None else "validation loss (mean over seeds)"
        line, = ax.plot(lrs, ys, marker="o", label=label)
        for lr, vals in by_width[w].items():
            if len(vals) > 1 and w is None:
                ax.scatter([lr] * len(vals), vals, s=10, color=line.get_color(), alpha=0.4)
        diverged = [lr for lr, m in zip(lrs, means) if not math.isfinite(m)]
        if diverged:
            y = (top - best if shift_to_best else top) if finite else 0.0
            ax.scatter(diverged, [y] * len(diverged), marker="x", color=line.get_color(), s=50,
                       label=f"diverged{'' if w is None else f' (width {w})'}")
    if optimum is not None and not shift_to_best:
        ax.axvline(optimum.lr, color="k", ls="--", lw=1, label=f"optimum lr {optimum.lr:.3g}")
        if math.isfinite(optimum.loss):
            ax.plot([optimum.lr], [optimum.loss], marker="*", color="k", ms=12)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation loss" + (" minus the width's best" if shift_to_best else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
