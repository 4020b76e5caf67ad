"""The sweep plot: final validation loss vs learning rate (log2 axis), one marker per trial, diverged trials as
crosses along the top edge, the fitted optimum as a vertical line. Rendered with the Agg backend, no pyplot
(thread-safe inside the API)."""
from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGSIZE = (6.4, 4.0)
DPI = 110


def sweep_png(*, title: str, completed: list[tuple[float, int, float]], diverged: list[tuple[float, int]],
              optimum_lr: float | None, optimum_loss: float | None, on_edge: bool = False) -> bytes:
    """completed: (lr, seed, final loss); diverged: (lr, seed)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss")
    ax.set_title(title, fontsize=10)
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
    if not completed and not diverged:
        ax.text(0.5, 0.5, "no finished trial yet", transform=ax.transAxes, ha="center", va="center")
    else:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
