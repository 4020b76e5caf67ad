"""The muP coordinate check (Tensor Programs V): activation size vs width, per tensor kind, with a verdict.

Train a few steps at several widths, then measure each tensor kind's mean |coordinate| on a fixed batch, and fit
the slope of log(size) against log(width). A tensor passes when its slope is within `threshold` of the exponent
muP expects for it; one that grows or shrinks faster is named. The expectations (head_dim axis, paper section 4):
every activation that feeds the residual stream, the residual stream itself and the trained logits stay Theta(1);
o_t before the head norm is Theta(1) with the paper's sqrt(d) fix. Flat coordinates do not prove transfer: the
transfer study (docs/transfer.md) is the real test.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gdn.data import load_corpus
from gdn.model import GDNModel
from gdn.optim import build_optimizer, clip_grad_norm
from gdn.train import SweepConfig, build_model

# tensor kind -> (what is recorded, the exponent of width muP expects for its mean |coordinate|)
KINDS: dict[str, tuple[str, float]] = {
    "embedding": ("output of the token embedding", 0.0),
    "attn.o": ("o_t before the per-head RMSNorm", 0.0),
    "attn.out": ("output of each mixer (after o_proj)", 0.0),
    "mlp.out": ("output of each MLP", 0.0),
    "residual": ("residual stream after each block", 0.0),
    "logits": ("output logits", 0.0),
}
DEFAULT_THRESHOLD = 0.25


@dataclass
class CoordCheck:
    widths: list[int]
    sizes: dict[str, list[float]]        # kind -> mean |x| per width (averaged over layers and seeds)
    slopes: dict[str, float]
    expected: dict[str, float]
    verdicts: dict[str, str]             # kind -> "flat" | "grows" | "shrinks" (relative to its expected exponent)
    threshold: float
    parametrization: str

    @property
    def passed(self) -> bool:
        return all(v == "flat" for v in self.verdicts.values())

    @property
    def failing(self) -> list[str]:
        return [k for k, v in self.verdicts.items() if v != "flat"]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed, "failing": self.failing}


def _record(model: GDNModel, x: torch.Tensor) -> dict[str, float]:
    """Mean |coordinate| of every tensor kind on batch x (averaged over layers)."""
    acc: dict[str, list[float]] = {k: [] for k in KINDS}

    def keep(kind):
        return lambda _m, _inp, out: acc[kind].append(float(out.detach().abs().mean()))

    hooks = [model.embeddings.register_forward_hook(keep("embedding"))]
    for block in model.layers:
        hooks += [block.attn.register_forward_hook(keep("attn.out")),
                  block.mlp.register_forward_hook(keep("mlp.out")),
                  block.register_forward_hook(keep("residual")),
                  block.attn.o_norm.register_forward_pre_hook(
                      lambda _m, args: acc["attn.o"].append(float(args[0].detach().abs().mean())))]
    try:
        with torch.no_grad():
            logits = model(x)
        acc["logits"].append(float(logits.abs().mean()))
    finally:
        for h in hooks:
            h.remove()
    return {k: float(np.mean(v)) for k, v in acc.items()}


def coord_check(config: SweepConfig, widths: list[int], lr: float = 1e-2, steps: int = 6, seeds=(0, 1),
                threshold: float = DEFAULT_THRESHOLD) -> CoordCheck:
    """Train `steps` steps at each width (base width = config.model.width) and measure coordinate sizes."""
    if len(widths) < 2:
        raise ValueError("a coordinate check needs at least two widths")
    sched = config.schedule
    corpus = load_corpus(config.data, sched.seq_len)
    x_probe, _ = corpus.val_batches(1, sched.batch_size, sched.seq_len)[0]
    sizes: dict[str, list[float]] = {k: [] for k in KINDS}
    for width in widths:
        per_seed = []
        for seed in seeds:
            model, p, width_mult = build_model(config, width, seed)
            optimizer = build_optimizer(model, p, config.optimizer, lr, width_mult)
            for step in range(steps):
                x, y = corpus.batch(step, seed, sched.batch_size, sched.seq_len)
                loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm(model, config.optimizer.grad_clip)
                optimizer.step()
            per_seed.append(_record(model, x_probe))
        for k in KINDS:
            sizes[k].append(float(np.mean([s[k] for s in per_seed])))

    log_w = np.log(widths)
    slopes, verdicts, expected = {}, {}, {}
    for k, (_, exp) in KINDS.items():
        slope = float(np.polyfit(log_w, np.log(sizes[k]), 1)[0])
        slopes[k], expected[k] = slope, exp
        verdicts[k] = "flat" if abs(slope - exp) <= threshold else ("grows" if slope > exp else "shrinks")
    return CoordCheck(widths=list(widths), sizes=sizes, slopes=slopes, expected=expected, verdicts=verdicts,
                      threshold=threshold, parametrization=config.parametrization)


def plot(checks: list[CoordCheck], path: str) -> None:
    """One panel per parametrization: mean |coordinate| vs width, one line per tensor kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(checks), figsize=(5.5 * len(checks), 4.2), squeeze=False)
    for ax, check in zip(axes[0], checks):
        for k in KINDS:
            ax.plot(check.widths, check.sizes[k], marker="o",
                    label=f"{k} (slope {check.slopes[k]:+.2f}{'' if check.verdicts[k] == 'flat' else ' !'})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_ylabel("mean |coordinate|")
        ax.set_title(f"{check.parametrization}: {'flat' if check.passed else 'fails: ' + ', '.join(check.failing)}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(check: CoordCheck) -> str:
    head = f"{'tensor':<10}" + "".join(f"{w:>10}" for w in check.widths) + f"{'slope':>8}{'expect':>8}  verdict"
    rows = [head]
    for k in KINDS:
        rows.append(f"{k:<10}" + "".join(f"{s:>10.3g}" for s in check.sizes[k])
                    + f"{check.slopes[k]:>+8.2f}{check.expected[k]:>+8.2f}  {check.verdicts[k]}")
    return "\n".join(rows)
