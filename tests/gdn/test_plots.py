"""The plots: learning rates in decimal at the grid's own values, the loss with its unit, the legend beside the data."""
from __future__ import annotations

from gdn.plots import decimal_lr, sweep_figure, transfer_figure

GRID = [0.002, 0.004, 0.008, 0.016, 0.032]
LOSSES = [2.9, 2.6, 2.5, 2.55, 2.8]


def _check(fig, unit: str, ticks: list[str]) -> None:
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ticks
    assert ax.get_ylabel().endswith(f"({unit})")
    legend = ax.get_legend()
    assert legend is not None
    renderer = fig.canvas.get_renderer()
    box, plot = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= plot.x1, (box, plot)                # beside the axes, over no data
    assert box.x1 <= fig.bbox.x1 + 1                      # and inside the figure


def test_sweep_plot():
    fig = sweep_figure(title="t", completed=[(lr, s, y + 0.01 * s) for lr, y in zip(GRID, LOSSES) for s in (0, 1)],
                       diverged=[(0.064, 0)], optimum_lr=0.009, optimum_loss=2.49, near_best=(0.004, 0.016),
                       loss_unit="nats per byte")
    _check(fig, "nats per byte", ["0.002", "0.004", "0.008", "0.016", "0.032", "0.064"])   # the diverged lr too


def test_transfer_plot():
    fig = transfer_figure(title="t", completed=[(w, lr, 0, y + w / 1000) for lr, y in zip(GRID, LOSSES)
                                                for w in (32, 64)],
                          diverged=[], optima={32: (0.008, 2.5), 64: (0.009, 2.56)}, base_lr=0.008)
    _check(fig, "nats per token", ["0.002", "0.004", "0.008", "0.016", "0.032"])


def test_decimal_lr():
    assert [decimal_lr(x) for x in (0.002, 0.0044721, 0.03162, 1.0)] == ["0.002", "0.00447", "0.0316", "1"]
