"""The recommendation for a target width, a pure function of a sweep's optimum, and the torch optimizer groups it
gives a model (ours or fla's). What the transfer study found for each preset (gdn/transfer_evidence.json, the data
behind docs/transfer.md) travels with every answer as warnings and evidence."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from gdn.config import count_params, train_flops_per_token
from gdn.fit import Optimum
from gdn.horizon import HorizonFit, fit_horizons
from gdn.parametrization import (A_RANGE, DT_FLOOR, DT_RANGE, PARAMETRIZATION_VERSION, Group, Init, Role,
                                  param_groups as groups_of_model)
from gdn.spec import OptimizerSpec, Recommendation, RecommendedGroup, ScheduleSpec, SweepConfig, TransferEvidence

EVIDENCE_FILE = Path(__file__).with_name("transfer_evidence.json")


@dataclass
class SweepResult:
    config: SweepConfig
    optimum: Optimum
    num_trials: int = 1
    horizon: HorizonFit | None = None    # lr* against tokens, when the sweep ran several horizons
    # the base width's trials in units of one proxy trial (a trial of 4x the proxy's steps counts 4); None: the
    # sweep ran one horizon, so num_trials
    trial_equivalents: float | None = None


@functools.cache
def transfer_evidence() -> dict[tuple[str, str], TransferEvidence]:
    """(parametrization, optimizer) -> what the transfer study measured (EVIDENCE_FILE)."""
    rows = json.loads(EVIDENCE_FILE.read_text())["evidence"]
    return {(r["parametrization"], r["optimizer"]): TransferEvidence.from_dict(r) for r in rows}


@functools.cache
def horizon_evidence() -> dict:
    """What the horizon study measured: {validated_ratio, summary} (EVIDENCE_FILE's "horizon")."""
    return json.loads(EVIDENCE_FILE.read_text())["horizon"]


def horizon_answer(result: SweepResult, tokens: int) -> dict:
    """The horizon part of a recommendation for a token budget: the fit (the sweep's, or one of its single horizon,
    which says so) read at `tokens`, with the evidence's validated ratio."""
    cfg = result.config
    fit = result.horizon
    if fit is None:     # one horizon: no line, so no error in grid steps either (the spacing given is not read)
        fit = fit_horizons({cfg.schedule.steps: result.optimum}, {cfg.schedule.steps: 1},
                           tokens_per_step=cfg.schedule.batch_size * cfg.schedule.seq_len,
                           proxy_steps=cfg.schedule.steps, grid_step_log2=1.0)
    ev = horizon_evidence()
    pred = fit.predict(tokens, validated_ratio=ev["validated_ratio"], validated_note=ev["summary"])
    return {"tokens": tokens, "proxy_steps": fit.proxy_steps, "proxy_tokens": fit.proxy_tokens,
            "lr_factor": pred.factor, "log2_factor": pred.log2_factor, "error_steps": pred.error_steps,
            "grid_step_log2": fit.grid_step_log2, "extrapolation_ratio": pred.extrapolation_ratio,
            "validated_ratio": ev["validated_ratio"], "extrapolated": pred.extrapolated,
            "exponent": fit.exponent, "exponent_err": fit.exponent_err, "intercept": fit.intercept,
            "intercept_err": fit.intercept_err, "slope_resolved": fit.slope_resolved, "chi2": fit.chi2,
            "dof": fit.dof, "horizons": [dataclasses.asdict(p) for p in fit.points],
            "weight_decay_rule": cfg.optimizer.weight_decay_rule, "weight_decay_note": fit.weight_decay_note,
            "warnings": fit.warnings + pred.warnings}


def transfer_warnings(parametrization: str, optimizer: str, width_mult: float, steps: int,
                      vocab_size: int) -> list[str]:
    """What a user should know before trusting a transferred lr at this width ratio, from the study's evidence,
    for a sweep of `steps` steps at vocabulary `vocab_size`."""
    if width_mult == 1:
        return []
    ev = transfer_evidence().get((parametrization, optimizer))
    if ev is None:
        return [f"the transfer study has not measured {parametrization!r} under {optimizer}: the lr is scaled by "
                "its table, untested (docs/transfer.md)"]
    if not ev.holds:
        held = [p for (p, o), e in transfer_evidence().items() if o == optimizer and e.holds]
        instead = f"use {' or '.join(repr(p) for p in held)} with {optimizer}" if held else "use 'mup' with adamw"
        return [f"{parametrization!r} under {optimizer} did not transfer in the study ({ev.summary}); tune at the "
                f"target width or {instead}"]
    warnings = []
    widest, at_vocab = ev.max_width_mult_at(vocab_size)
    if width_mult > widest:
        where = f" at vocabulary {at_vocab:,}" if at_vocab is not None else ""
        warnings.append(f"width ratio {width_mult:g} is beyond the {widest:g}x the transfer study measured{where} "
                        f"({ev.summary})")
    if ev.min_steps is not None and steps < ev.min_steps:
        warnings.append(f"{parametrization!r} under {optimizer} transferred in the study at {ev.min_steps} steps and "
                        f"more, not at fewer; this sweep ran {steps} ({ev.summary})")
    # Between two vocabularies the study measured, the answer is taken to hold as it did at both; outside, not.
    if not min(ev.vocab_sizes) <= vocab_size <= max(ev.vocab_sizes):
        measured = " and ".join(f"{v:,}" for v in ev.vocab_sizes)
        warnings.append(f"{parametrization!r} under {optimizer} was measured at vocabulary {measured}, not at this "
                        f"proxy's {vocab_size:,}: the embedding and readout, the tensors muP treats most specially, "
                        "change shape with the vocabulary (docs/transfer.md)")
    return warnings


def data_warnings(config: SweepConfig, train_tokens: int | None, target_vocab: int | None = None) -> list[str]:
    """What the data regime says about the answer: a proxy trial that repeats its corpus (more than one epoch of the
    training split, `train_tokens`; None: not known), and a target whose vocabulary is not the proxy's."""
    warnings = []
    sched = config.schedule
    per_trial = sched.steps * sched.batch_size * sched.seq_len
    if train_tokens and per_trial > train_tokens:
        epochs = per_trial / train_tokens
        decay = (" Under muP with the coupled weight-decay rule the hidden matrices' decoupled decay (lr x wd) is "
                 "1/m as strong at m x width, so the regularisation that repeated data needs is not carried across "
                 "widths." if config.parametrization != "sp" and config.optimizer.weight_decay_rule == "coupled"
                 else "")
        warnings.append(
            f"each proxy trial trains on {per_trial:,} tokens (steps x batch_size x seq_len), {epochs:.1f} epochs of "
            f"the corpus's {train_tokens:,} training tokens: the proxy memorises its data, and the lr it finds is "
            f"that of a repeated-data regime.{decay} In the held-out check a 1.1 MB corpus seen about 4 times made "
            f"the transferred lr 9.8 % worse than SP tuned at 8x width, where a corpus seen under once held "
            f"(+0.7 %; docs/transfer.md). Use a corpus of at least {per_trial:,} tokens, or fewer steps")
    if target_vocab is not None and target_vocab != config.model.vocab_size:
        warnings.append(
            f"the target's vocabulary ({target_vocab:,}) is not the proxy's ({config.model.vocab_size:,}, its "
            f"tokenizer's): the embedding and the readout, the tensors muP treats most specially, change shape with "
            f"it, and the base-width constants were tuned at the proxy's. Tune the proxy with the target's tokenizer "
            f"(data.tokenizer) or a corpus tokenized by it")
    return warnings


def init_bound(init: Init, width_mult: float, conv_size: int) -> float | None:
    """The bound b of a uniform init U(-b, b) at width_mult (gdn.init.init_tensor's conv_uniform), else None."""
    if init.kind == "conv_uniform":
        return width_mult ** init.std_exp / math.sqrt(conv_size)   # fan_in of a depthwise conv = kernel size
    return None


def init_note(init: Init, std: float | None, width_mult: float, conv_size: int) -> str:
    """Every init kind in words, with its numbers at width_mult: what gdn.init.init_tensor draws."""
    if init.kind == "normal":
        return f"N(0, {std:.6g}^2)"
    if init.kind == "zeros":
        return "zeros"
    if init.kind == "ones":
        return "ones"
    if init.kind == "conv_uniform":
        b = init_bound(init, width_mult, conv_size)
        return f"U(-{b:.6g}, {b:.6g}): m^{init.std_exp:g} / sqrt(kernel size {conv_size})"
    if init.kind == "gdn_gate":
        return (f"A_log = log A, A ~ U(0, {A_RANGE[1]:g}) floored at {A_RANGE[0]:g}; dt_bias = inverse softplus of "
                f"dt, dt log-uniform in [{DT_RANGE[0]:g}, {DT_RANGE[1]:g}] floored at {DT_FLOOR:g}; width-independent")
    raise ValueError(f"unknown init kind {init.kind!r}")


def recommend(result: SweepResult, target_width: int, tokens: int | None = None, *, train_tokens: int | None = None,
              target_vocab: int | None = None) -> Recommendation:
    """The hyperparameters for `target_width` (and, given, a budget of `tokens` training tokens of the target): per-group
    LR, init, weight decay, forward multipliers, the target model's shapes and the proxy's cost. With `tokens`, the lr
    is muP's transfer of the base width's optimum times the horizon fit's LR*(tokens) / LR*(proxy tokens).
    `train_tokens` (the proxy corpus's training split, None if not known) and `target_vocab` only add the data
    warnings (data_warnings). A pure function of its arguments; .to_dict() is its JSON."""
    cfg = result.config
    target = cfg.model_at(target_width)          # raises ValueError for a width the axis cannot take
    proxy = cfg.model_at(cfg.base_width)
    p = cfg.param()
    m = target_width / cfg.base_width
    opt = cfg.optimizer
    horizon = horizon_answer(result, tokens) if tokens is not None else None
    lr = result.optimum.lr * (horizon["lr_factor"] if horizon else 1.0)
    groups = [RecommendedGroup(role=g.role, patterns=g.patterns, lr=lr * g.lr_multiplier,
                               min_lr=cfg.schedule.min_lr * g.lr_multiplier, lr_multiplier=g.lr_multiplier,
                               init=g.init, init_std=g.init_std,
                               init_bound=init_bound(p.rule(Role(g.role)).init, m, target.conv_size),
                               init_note=init_note(p.rule(Role(g.role)).init, g.init_std, m, target.conv_size),
                               weight_decay=opt.weight_decay * g.weight_decay_mult if g.weight_decay else 0.0,
                               clip_weight=g.clip_weight)
              for g in p.groups(m, opt.name)]
    mult = p.forward_multipliers(target, proxy)
    proxy_flops, target_flops = train_flops_per_token(proxy), train_flops_per_token(target)
    sweep_units = result.num_trials if result.trial_equivalents is None else result.trial_equivalents
    return Recommendation(
        parametrization_version=PARAMETRIZATION_VERSION,
        parametrization={**p.to_dict(), "readout_tied": p.readout.tied, "width_axis": target.width_axis,
                         "description": p.description},
        optimizer=opt, base_width=cfg.base_width, target_width=target_width, width_mult=m, base_lr=lr,
        base_lr_log2_std=result.optimum.log2_lr_std, optimum_on_edge=result.optimum.on_edge,
        warnings=list(result.optimum.warnings) + transfer_warnings(cfg.parametrization, opt.name, m,
                                                                             cfg.schedule.steps, cfg.model.vocab_size)
        + data_warnings(cfg, train_tokens, target_vocab)
        + (horizon["warnings"] if horizon else []),
        transfer_evidence=transfer_evidence().get((cfg.parametrization, opt.name)),
        schedule=cfg.schedule, groups=groups,
        # gdn_scale: the `scale` argument of (fla's) chunk_gated_delta_rule
        forward_multipliers={"logits": mult.logits, "gdn_scale": mult.o},
        target_model={**target.shapes(), "num_params": count_params(target)},
        proxy_model={**proxy.shapes(), "num_params": count_params(proxy)},
        cost={"proxy_train_flops_per_token": proxy_flops, "target_train_flops_per_token": target_flops,
              "trial_share": proxy_flops / target_flops, "num_trials": result.num_trials,
              "trial_equivalents": float(sweep_units),
              "sweep_share": sweep_units * proxy_flops / target_flops},
        tokens=tokens, proxy_lr=result.optimum.lr, horizon=horizon)


def recommendation_from_dict(d: dict) -> Recommendation:
    """A Recommendation from its JSON (.to_dict(), or the API's answer)."""
    fields = {f.name for f in dataclasses.fields(Recommendation)}
    d = {k: v for k, v in d.items() if k in fields}
    ev = d.get("transfer_evidence")
    return Recommendation(**{
        **d, "optimizer": OptimizerSpec(**d["optimizer"]), "schedule": ScheduleSpec(**d["schedule"]),
        "transfer_evidence": TransferEvidence.from_dict(ev) if ev else None,
        "groups": [RecommendedGroup(**{"clip_weight": 1.0, **g, "patterns": tuple(g["patterns"])})   # older answers
                   for g in d["groups"]]})                                                           # lack clip_weight


def param_groups(model, recommendation: Recommendation | dict) -> list[dict]:
    """torch optimizer groups for a GDN model (ours or fla's) from a recommendation (or its JSON): each parameter
    goes to its role's group (gdn.parametrization.param_groups), with the group's lr, weight decay and clip weight."""
    rec = recommendation if isinstance(recommendation, Recommendation) else recommendation_from_dict(recommendation)
    wd = rec.optimizer.weight_decay
    groups = [Group(role=g.role, patterns=g.patterns, lr_multiplier=g.lr_multiplier, init=g.init,
                    init_std=g.init_std, weight_decay=g.weight_decay > 0, clip_weight=g.clip_weight,
                    weight_decay_mult=g.weight_decay / wd if wd > 0 else 1.0)   # each group's own decay, as given
              for g in rec.groups]
    return groups_of_model(model, groups, rec.base_lr, rec.optimizer.weight_decay)
