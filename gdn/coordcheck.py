"""The muP coordinate check (Tensor Programs V): activation size vs width, per tensor kind, with a verdict.

Train a few steps at several widths, then measure each tensor kind's mean |coordinate| on a fixed batch, and fit
the slope of log(size) against log(width). A tensor passes when its slope is within `threshold` of the exponent
muP expects for it; one that grows or shrinks faster is named. The expectations (head_dim axis, paper section 4):
every activation that feeds the residual stream, the residual stream itself and the trained logits stay Theta(1);
o_t before the head norm is Theta(1) with the paper's sqrt(d) fix. Flat coordinates do not prove transfer: the
transfer study (docs/transfer.md) is the real test.

The same run also measures what training did to each parameter kind: the size of its update's effect on the probe
batch, (W_t - W_0) x for a matrix (x its input), the change of the embedding rows read and of the logits the readout
change makes, the change of each conv's and gain's output, and the mean |change| of the per-head gate scalars. muP
wants each of them Theta(1) in width; a slope says which kind learns too fast or too slowly at width, and by how much.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdn.data import load_corpus
from gdn.model import GatedDeltaNet, GDNModel, GatedRMSNorm, RMSNorm, ShortConv
from gdn.ops.short_conv import causal_conv1d_silu
from gdn.optim import build_optimizer, clip_grad_norm
from gdn.spec import SweepConfig
from gdn.trial import build_model

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

# parameter kind -> what the update size measures (module names as in gdn.model / fla)
UPDATE_KINDS: dict[str, str] = {
    "embedding": "rows read: rms of (E_t - E_0)[tokens]",
    "readout": "rms of the logits the readout's change makes",
    **{f"attn.{n}": f"rms of (W_t - W_0) x for {n}" for n in
       ("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj", "o_proj")},
    **{f"mlp.{n}": f"rms of (W_t - W_0) x for {n}" for n in ("gate_proj", "up_proj", "down_proj")},
    "conv": "rms change of the short convs' outputs",
    "norm": "rms change of the gains' outputs (attn_norm, mlp_norm, o_norm, final norm)",
    "gate_scalar": "mean |change| of A_log and dt_bias",
}


@dataclass
class CoordCheck:
    widths: list[int]
    sizes: dict[str, list[float]]        # kind -> mean |x| per width (averaged over layers and seeds)
    slopes: dict[str, float]
    expected: dict[str, float]
    verdicts: dict[str, str]             # kind -> "flat" | "grows" | "shrinks" (relative to its expected exponent)
    threshold: float
    parametrization: str
    updates: dict[str, list[float]] = dataclasses.field(default_factory=dict)       # kind -> size per width
    update_slopes: dict[str, float] = dataclasses.field(default_factory=dict)

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


@torch.no_grad()
def _record_updates(model: GDNModel, init: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, float]:
    """Size of each parameter kind's update (W_t vs W_0 = init) in effect on batch x (see UPDATE_KINDS)."""
    acc: dict[str, list[float]] = {k: [] for k in UPDATE_KINDS}

    def rms(t: torch.Tensor) -> float:
        return float(t.float().pow(2).mean().sqrt())

    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, GatedDeltaNet):
            mod.one_input_gemm = False            # the hooks below read each input projection's own output
        parts = name.split(".")
        if isinstance(mod, nn.Linear) and len(parts) >= 2 and f"{parts[-2]}.{parts[-1]}" in acc:
            kind = f"{parts[-2]}.{parts[-1]}"
        elif isinstance(mod, ShortConv):
            kind = "conv"
        elif isinstance(mod, (RMSNorm, GatedRMSNorm)):
            kind = "norm"
        else:
            continue
        w0 = init[f"{name}.weight"]

        def hook(m, inp, out, kind=kind, w0=w0):
            if kind == "conv":
                acc[kind].append(rms(out - causal_conv1d_silu(inp[0], w0)))
            elif kind == "norm":          # out = xhat * w (gated: x gate), so xhat * (w - w0) = out * (1 - w0 / w)
                acc[kind].append(rms(out * (1 - w0 / m.weight)))
            else:
                acc[kind].append(rms(F.linear(inp[0], m.weight - w0)))
        hooks.append(mod.register_forward_hook(hook))
    final: list[torch.Tensor] = []
    hooks.append(model.norm.register_forward_hook(lambda _m, _i, out: final.append(out)))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    d_emb = model.embeddings.weight - init["embeddings.weight"]
    acc["embedding"].append(rms(d_emb[x]))
    if model.lm_head is None:
        acc["readout"].append(rms(F.linear(final[0], d_emb) * model.mult.logits))
    else:
        acc["readout"].append(rms(F.linear(final[0], model.lm_head.weight - init["lm_head.weight"])
                                  * model.mult.logits))
    for name, p in model.named_parameters():
        if name.endswith(("A_log", "dt_bias")):
            acc["gate_scalar"].append(float((p - init[name]).abs().mean()))
    return {k: float(np.mean(v)) for k, v in acc.items() if v}


def coord_check(config: SweepConfig, widths: list[int], lr: float = 1e-2, steps: int = 6, seeds=(0, 1),
                threshold: float = DEFAULT_THRESHOLD) -> CoordCheck:
    """Train `steps` steps at each width (base width = config.model.width) and measure coordinate sizes."""
    if len(widths) < 2:
        raise ValueError("a coordinate check needs at least two widths")
    sched = config.schedule
    corpus = load_corpus(config.data, sched.seq_len)
    x_probe, _ = next(corpus.val_batches(1, sched.batch_size, sched.seq_len))
    sizes: dict[str, list[float]] = {k: [] for k in KINDS}
    updates: dict[str, list[float]] = {}
    for width in widths:
        per_seed, per_seed_updates = [], []
        for seed in seeds:
            model, p, width_mult = build_model(config, width, seed)
            init = {n: t.detach().clone() for n, t in model.named_parameters()}
            optimizer = build_optimizer(model, p, config.optimizer, lr, width_mult)
            clip_weights = p.clip_weights(model, config.optimizer.name, width_mult)
            for step in range(steps):
                x, y = corpus.batch(step, seed, sched.batch_size, sched.seq_len)
                loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm(model, config.optimizer.grad_clip, clip_weights)
                optimizer.step()
            per_seed.append(_record(model, x_probe))
            per_seed_updates.append(_record_updates(model, init, x_probe))
        for k in KINDS:
            sizes[k].append(float(np.mean([s[k] for s in per_seed])))
        for k in per_seed_updates[0]:
            updates.setdefault(k, []).append(float(np.mean([u[k] for u in per_seed_updates])))

    log_w = np.log(widths)
    slopes, verdicts, expected = {}, {}, {}
    for k, (_, exp) in KINDS.items():
        slope = float(np.polyfit(log_w, np.log(sizes[k]), 1)[0])
        slopes[k], expected[k] = slope, exp
        verdicts[k] = "flat" if abs(slope - exp) <= threshold else ("grows" if slope > exp else "shrinks")
    update_slopes = {k: float(np.polyfit(log_w, np.log(np.maximum(v, 1e-30)), 1)[0]) for k, v in updates.items()}
    return CoordCheck(widths=list(widths), sizes=sizes, slopes=slopes, expected=expected, verdicts=verdicts,
                      threshold=threshold, parametrization=config.parametrization, updates=updates,
                      update_slopes=update_slopes)


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


def format_update_table(check: CoordCheck) -> str:
    """Each parameter kind's update size per width and its slope in log width (muP wants 0)."""
    rows = [f"{'update of':<16}" + "".join(f"{w:>10}" for w in check.widths) + f"{'slope':>8}"]
    for k, v in check.updates.items():
        rows.append(f"{k:<16}" + "".join(f"{s:>10.3g}" for s in v) + f"{check.update_slopes[k]:>+8.2f}")
    return "\n".join(rows)


def explain(check: CoordCheck) -> list[str]:
    """Why each failing tensor failed, and what to try: a slope fitted over few narrow widths and seeds is noisy,
    and narrow models are far from the large-width behaviour the exponents describe."""
    lines = []
    for k in check.failing:
        sizes = " -> ".join(f"{s:.3g}" for s in check.sizes[k])
        lines.append(f"{k} ({KINDS[k][0]}) {check.verdicts[k]}: slope {check.slopes[k]:+.2f} in log width, muP "
                     f"expects {check.expected[k]:+.2f} +- {check.threshold:g}; mean |coordinate| {sizes} over "
                     f"widths {', '.join(map(str, check.widths))}")
    if lines:
        hints = []
        if min(check.widths) < 64 or max(check.widths) / min(check.widths) < 8:
            hints.append("wider widths spanning 8x or more (e.g. --widths 64,128,256,512): narrow models are far "
                         "from their large-width behaviour, and a short span makes the slope noisy")
        hints.append("more seeds (--seeds 4): the slope is fitted to a mean over seeds")
        hints.append("--updates, to see which parameter's update grows with width")
        lines.append("try: " + "; ".join(hints))
    return lines


def format_table(check: CoordCheck) -> str:
    head = f"{'tensor':<10}" + "".join(f"{w:>10}" for w in check.widths) + f"{'slope':>8}{'expect':>8}  verdict"
    rows = [head]
    for k in KINDS:
        rows.append(f"{k:<10}" + "".join(f"{s:>10.3g}" for s in check.sizes[k])
                    + f"{check.slopes[k]:>+8.2f}{check.expected[k]:>+8.2f}  {check.verdicts[k]}")
    return "\n".join(rows)
