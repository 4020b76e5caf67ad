"""fla's GatedDeltaNetForCausalLM made the recommendation by deltamu.apply, against deltamu's own GDNModel given the
same recommendation: the same data, seed, schedule, clip and loop, at each width; final validation losses and the
training curves side by side (issue 17: the answer holds in the user's model).

    python3 benchmarks/fla_parity.py --base 512 --widths 512,2048 --steps 1000 --out $OUT       # on a GPU, fla's kernels
    python3 benchmarks/fla_parity.py --base 32 --widths 32,64 --steps 3 --torch-ops --out /tmp  # CPU smoke run

--seeds runs every implementation at each seed (the same seed: the same initial weights and batches for all), and
--impls deltamu-chunk adds deltamu's model on its plain-PyTorch ops: its gap to deltamu's Triton run is what rounding
alone does to a training run, the yardstick for the gap between fla and deltamu.
--torch-ops runs fla's GatedDeltaNet with deltamu's torch references in place of fla's Triton ops (they need a GPU).
Both models start from the same weights: deltamu's model drawn by the recommendation's init (deltamu.apply), fla's
given a copy of them (the names match but for fla's `model.` prefix) after apply installed its multipliers, so what
differs is the implementation alone (fla's modules and kernels against deltamu's).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import deltamu  # noqa: E402
from gdn.config import GDNConfig  # noqa: E402
from gdn.fit import Optimum  # noqa: E402
from gdn.model import GDNModel  # noqa: E402
from gdn.recommend import SweepResult, recommend  # noqa: E402
from gdn.spec import DataSpec, OptimizerSpec, ScheduleSpec, SweepConfig, TrialSpec  # noqa: E402
from gdn.train import train_model  # noqa: E402

# deltamu-chunk: deltamu's model on its plain-PyTorch ops, the same function as "deltamu" rounded otherwise. Its gap to
# "deltamu" is what rounding alone does to a run (training amplifies any difference like a change of seed), the
# floor under which a gap between fla and deltamu says nothing about either.
IMPLS = ("deltamu", "fla", "deltamu-chunk")


@contextlib.contextmanager
def fla_on_torch():
    """fla's GatedDeltaNet with its Triton ops replaced by deltamu's torch references, for a run without a GPU."""
    import fla.layers.gated_deltanet as layer
    import fla.modules.causal_conv1d.ops as conv_ops
    import fla.modules.mlp as mlp
    import fla.modules.norm.fused_norm_gate as fused_norm_gate

    from gdn.ops.gated_delta_rule import gated_delta_rule
    from gdn.ops.rms_norm.reference import rms_norm_reference
    from gdn.ops.short_conv.reference import causal_conv1d_silu_reference

    def gdr(q, k, v, g, beta, *, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False,
            use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, use_gate_in_kernel=False, A_log=None,
            dt_bias=None, scale=None, cu_seqlens=None, **_):
        assert use_gate_in_kernel and use_beta_sigmoid_in_kernel and not allow_neg_eigval and cu_seqlens is None
        log_alpha = -A_log.float().exp() * F.softplus(g.float() + dt_bias.float())
        return gated_delta_rule(q, k, v, log_alpha, torch.sigmoid(beta.float()), scale=scale,
                                use_qk_l2norm=use_qk_l2norm_in_kernel, backend="chunk")

    def conv(x, weight, bias=None, activation=None, **_):
        assert bias is None and activation in ("silu", "swish")
        return causal_conv1d_silu_reference(x, weight.unsqueeze(1)), None

    def norm_gated(x, g, weight, bias, activation, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-5):
        assert bias is None and residual is None and not prenorm and activation in ("swish", "silu")
        return rms_norm_reference(x, weight, eps, g, x.dtype)

    patches = [(layer, "chunk_gated_delta_rule", gdr), (layer, "fused_recurrent_gated_delta_rule", gdr),
               (layer, "causal_conv1d", conv), (conv_ops, "causal_conv1d", conv),
               (fused_norm_gate, "rms_norm_gated", norm_gated), (mlp, "swiglu", lambda a, b: F.silu(a) * b)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def fla_model(target: dict, fused: bool):
    """fla's model of the recommendation's target_model, as the README builds it."""
    from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM
    t = target
    return GatedDeltaNetForCausalLM(GatedDeltaNetConfig(
        hidden_size=t["width"], num_hidden_layers=t["depth"], num_heads=t["num_heads"], head_dim=t["head_k_dim"],
        expand_v=t["head_v_dim"] / t["head_k_dim"], intermediate_size=t["mlp_hidden"], vocab_size=t["vocab_size"],
        tie_word_embeddings=t["tie_embeddings"], conv_size=t["conv_size"], norm_eps=t["norm_eps"],
        fuse_norm=fused, fuse_swiglu=fused, fuse_cross_entropy=False))


def load_into_fla(theirs, state: dict) -> None:
    """Load deltamu's GDNModel state into fla's model: the names match but for fla's `model.` prefix, and a tied fla
    model lists its lm_head, which is our embedding."""
    def ours_of(name: str) -> str:
        name = name.removeprefix("model.")
        return name if name in state else "embeddings.weight"
    theirs.load_state_dict({name: state[ours_of(name)] for name in theirs.state_dict()})


def models(spec: TrialSpec, rec, args, impls: list[str]) -> dict:
    """The models of `impls` (IMPLS), each made the recommendation by deltamu.apply, with the same initial weights."""
    ours = GDNModel(spec.config.model_at(spec.at_width))
    deltamu.apply(ours, rec, generator=torch.Generator().manual_seed(spec.seed))
    state = ours.state_dict()
    built = {"deltamu": ours}
    if "deltamu-chunk" in impls:
        built["deltamu-chunk"] = GDNModel(spec.config.model_at(spec.at_width), backend="chunk")
        deltamu.apply(built["deltamu-chunk"], rec, init=False)
        built["deltamu-chunk"].load_state_dict(state)
    if "fla" in impls:
        theirs = fla_model(rec.target_model, fused=not args.torch_ops)
        deltamu.apply(theirs, rec, init=False)
        load_into_fla(theirs, state)
        built["fla"] = theirs
    return {impl: model for impl, model in built.items() if impl in impls}


def train(impl: str, model, spec: TrialSpec, rec, log_every: int) -> dict:
    """One model trained by gdn.train.train_model, the loop every lone trial runs: the same batches, schedule, clip
    and evaluation for both implementations."""
    groups = deltamu.apply(model, rec, init=False)
    logits = (lambda x: model(x, use_cache=False).logits) if impl == "fla" else None
    result = train_model(spec, model, groups, logits=logits, log_every=log_every)
    return {"impl": impl, "width": spec.at_width, "seed": spec.seed, "status": result.status,
            "final_val_loss": result.final_val_loss,
            "curve": [[point.step, point.loss, point.seconds] for point in result.curve], "seconds": result.seconds,
            "device": result.device}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=512, help="the base width the recommendation is tuned at")
    ap.add_argument("--widths", default="512,2048", help="comma-separated widths to train both models at")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2.0 ** -7, help="the base width's lr the recommendation carries")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--parametrization", default="mup")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (init and batches); every impl runs each")
    ap.add_argument("--impls", default="deltamu,fla", type=lambda s: s.split(","),
                    help="which models to train (both start from the same weights either way): a device call too "
                         "short for both trains one, and --previous brings the other's row")
    ap.add_argument("--previous", default=None,
                    help="an earlier call's fla_parity.json: its rows for (width, impl) pairs not run here are kept")
    ap.add_argument("--log-every", type=int, default=10, help="steps between curve points (mean training loss)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch-ops", action="store_true", help="fla's layer on deltamu's torch ops (no GPU needed)")
    ap.add_argument("--out", default=".", help="folder for fla_parity.json and fla_parity.png")
    args = ap.parse_args(argv)

    config = SweepConfig(model=GDNConfig(width=args.base, depth=args.depth), parametrization=args.parametrization,
                         optimizer=OptimizerSpec(name=args.optimizer),
                         schedule=ScheduleSpec(steps=args.steps, warmup_steps=max(1, args.steps // 10),
                                               batch_size=args.batch_size, seq_len=args.seq_len),
                         data=DataSpec("builtin"), eval_batches=args.eval_batches)
    optimum = Optimum(lr=args.lr, log2_lr=math.log2(args.lr), loss=math.nan, log2_lr_std=None, on_edge=False)
    widths, seeds = [int(w) for w in args.widths.split(",")], [int(s) for s in args.seeds.split(",")]
    unknown = sorted(set(args.impls) - set(IMPLS))
    if unknown:
        ap.error(f"unknown --impls {','.join(unknown)}; choose from {','.join(IMPLS)}")
    rows = []
    if args.previous:                # rows of an earlier call that this one does not run again (older rows: seed 0)
        rows = [r for r in json.loads(Path(args.previous).read_text())["rows"]
                if not (r["width"] in widths and r["impl"] in args.impls and r.get("seed", 0) in seeds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with fla_on_torch() if args.torch_ops else contextlib.nullcontext():
        for width in widths:
            rec = recommend(SweepResult(config, optimum), width)
            for seed in seeds:
                spec = TrialSpec(config, lr=args.lr, seed=seed, width=width, device=args.device)
                for impl, model in models(spec, rec, args, args.impls).items():
                    rows.append(train(impl, model, spec, rec, args.log_every))
                    # written after every run, so a call cut at its time limit keeps what finished
                    (out / "fla_parity.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
                    print(f"  width {width} seed {seed} {impl}: val loss {rows[-1]['final_val_loss']:.4f} "
                          f"({rows[-1]['seconds']:.0f} s)", flush=True)
    plot(rows, out / "fla_parity.png")
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """Per width: each implementation's final validation loss (mean over seeds, then each seed), and each one's gap
    to deltamu's on the same seeds."""
    lines = ["| width | impl | seeds | val loss: mean (per seed) | vs deltamu, same seeds: mean (per seed) |",
             "|---|---|---|---|---|"]
    for width in sorted({r["width"] for r in rows}):
        loss = {(r["impl"], r.get("seed", 0)): r["final_val_loss"] for r in rows if r["width"] == width}
        for impl in IMPLS:
            seeds = sorted(s for i, s in loss if i == impl)
            if not seeds:
                continue
            values = [loss[impl, s] for s in seeds]
            gaps = [100 * (loss[impl, s] / loss["deltamu", s] - 1) for s in seeds if ("deltamu", s) in loss]
            gap = "" if impl == "deltamu" or not gaps else \
                f"{sum(gaps) / len(gaps):+.2f} % ({', '.join(f'{g:+.2f}' for g in gaps)})"
            lines.append(f"| {width} | {impl} | {','.join(map(str, seeds))} | {sum(values) / len(values):.4f} "
                         f"({', '.join(f'{v:.4f}' for v in values)}) | {gap} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    widths = sorted({r["width"] for r in rows})
    fig = Figure(figsize=(5 * len(widths), 3.6))
    FigureCanvasAgg(fig)
    for k, width in enumerate(widths):
        ax = fig.add_subplot(1, len(widths), k + 1)
        for r in rows:
            if r["width"] == width:
                steps, losses = zip(*((point[0], point[1]) for point in r["curve"]))
                seed = r.get("seed", 0)
                ax.plot(steps, losses, label=f"{r['impl']}, seed {seed} (val {r['final_val_loss']:.3f})", lw=1,
                        color=f"C{IMPLS.index(r['impl'])}", ls=("-", "--", ":", "-.")[seed % 4])
        ax.set(title=f"width {width}", xlabel="step", ylabel="training loss (nats per token)", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
