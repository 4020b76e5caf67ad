"""A JobCreate -> what gdn and the database need: the SweepConfig, the (width, lr, seed) grid, the spec hash, and
the deployment's limits checked, over every width, with the reason spelled out. Pure: no database, no torch
computation."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dataclasses

from gdn.corpus import vocab_of
from gdn.spec import BYTE_VOCAB, BYTES_TOKENIZER, SweepConfig
from gdn.config import GDNConfig, count_params, train_flops_per_token
from gdn.parametrization import PARAMETRIZATION_VERSION
from gdn.fit import lr_grid
from gdn.horizon import config_at_horizon

from service.schemas import JobCreate
from service.settings import Settings

GIB = 1 << 30
STATE_BYTES_PER_PARAM = 16   # float32 weight, gradient and AdamW's two moments
ACTIVATION_BYTES = 160       # kept for the backward pass per token, block and unit of width: a float32 estimate
                             # (q, k, v and their convs, gates, output, norms, the SwiGLU hidden), not a measurement
LOGIT_BYTES = 12             # per token and vocabulary entry: float32 logits, their softmax and its gradient
SPEC_VERSION = 1      # bump when the meaning of a stored spec changes: identical specs then stop being reused


class JobRejected(ValueError):
    """The job is valid JSON but cannot run here; the message says why."""


@dataclass
class PreparedJob:
    spec: dict                  # the request, normalised: defaults filled, `reuse` dropped
    sweep_config: dict          # SweepConfig.to_dict()
    widths: list[int]           # the base width first
    grid: list[tuple[int, float, int, int | None]]   # (width, lr, seed, steps: None for the proxy's horizon)
    spec_sha256: str
    steps: int


def canonical_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prepare(job: JobCreate, settings: Settings) -> PreparedJob:
    spec = job.model_dump(mode="json", exclude={"reuse"})
    widths = job.all_widths
    spec["widths"] = widths
    _check_data_source(job.data.source, settings)
    if job.data.tokenizer != BYTES_TOKENIZER:
        _check_data_source(job.data.tokenizer, settings, what="tokenizer")
    num_lrs = len(job.lr_grid.values) if job.lr_grid.values is not None else job.lr_grid.count
    horizons = job.all_horizons
    extra_horizons = [h for h in horizons if h != job.schedule.steps]
    grid_size = (len(widths) + len(extra_horizons)) * num_lrs * len(job.seeds)
    if grid_size > settings.max_trials:     # before building the grid
        what = "((widths + further horizons)" if extra_horizons else "(widths"
        raise JobRejected(f"{grid_size} trials {what} x learning rates x seeds) exceed the limit of "
                          f"{settings.max_trials}")
    try:
        config = job.sweep_config()
        lrs = (list(job.lr_grid.values) if job.lr_grid.values is not None
               else lr_grid(job.lr_grid.min, job.lr_grid.max, job.lr_grid.count))
        config = _at_corpus_vocab(config)
    except (ValueError, TypeError) as e:
        raise JobRejected(str(e)) from None
    spec["model"]["vocab_size"] = config.model.vocab_size
    for width in widths[1:]:
        try:
            config.model_at(width)
        except ValueError as e:
            raise JobRejected(f"widths: {e}") from None
    _check_limits(config, widths, len(lrs) * len(job.seeds), job.log_every, settings)
    for h in extra_horizons:       # each further horizon of the base width: its steps, curve rows and FLOPs
        _check_limits(config_at_horizon(config, h), [widths[0]], len(lrs) * len(job.seeds), job.log_every, settings)
    if extra_horizons:             # and the FLOPs of every width and horizon together
        sched, per_step = config.schedule, config.schedule.batch_size * config.schedule.seq_len
        flops = len(lrs) * len(job.seeds) * per_step * (
            sched.steps * sum(train_flops_per_token(config.model_at(w)) for w in widths)
            + sum(extra_horizons) * train_flops_per_token(config.model_at(widths[0])))
        if flops > settings.max_job_flops:
            raise JobRejected(f"the job needs about {flops:.3g} training FLOPs over its widths and horizons, above "
                              f"the limit of {settings.max_job_flops:.3g}: use fewer or shorter horizons, trials or "
                              f"widths")
    sweep_config = config.to_dict()
    identity = {"spec_version": SPEC_VERSION, "parametrization_version": PARAMETRIZATION_VERSION,
                "sweep_config": _without_new_defaults(sweep_config), "grid": [(lr, seed) for lr in lrs for seed in job.seeds],
                "log_every": job.log_every}
    if len(widths) > 1:      # absent for one width, so a single-width job's hash is what it was before widths
        identity["widths"] = widths
    if extra_horizons:       # likewise for one horizon
        identity["horizons"] = horizons
    if job.max_extend_rounds:   # a job that extends its grid can end with other trials than one that does not
        identity["max_extend_rounds"] = job.max_extend_rounds
    if job.target_tokens is not None:   # it trains nothing differently, but a reused job answers with its own
        identity["target_tokens"] = job.target_tokens
    grid = [(width, lr, seed, None) for width in widths for lr in lrs for seed in job.seeds]
    grid += [(widths[0], lr, seed, h) for h in extra_horizons for lr in lrs for seed in job.seeds]
    return PreparedJob(spec=spec, sweep_config=sweep_config, widths=widths, grid=grid,
                       spec_sha256=canonical_sha256(identity), steps=config.schedule.steps)


# Fields added after jobs were first stored, at their defaults: left out of the spec's hash, so a job asked for
# before they existed is still found identical (reuse) to the same job asked for now.
NEW_DEFAULTS = {"data": {"tokenizer": BYTES_TOKENIZER, "text_column": "text", "token_dtype": None},
                "optimizer": {"weight_decay_rule": "coupled"}}


def _without_new_defaults(sweep_config: dict) -> dict:
    out = dict(sweep_config)
    for part, defaults in NEW_DEFAULTS.items():
        out[part] = {k: v for k, v in out[part].items() if not (k in defaults and v == defaults[k])}
    return out


def _at_corpus_vocab(config: SweepConfig) -> SweepConfig:
    """The proxy's vocabulary is its corpus's: a tokenizer file's is read here (after its path was allowed); a
    model.vocab_size that differs from it is refused (the trials could not run)."""
    vocab = vocab_of(config.data)
    model_vocab = config.model.vocab_size
    if model_vocab != vocab:
        if config.data.tokenizer != BYTES_TOKENIZER and model_vocab == BYTE_VOCAB:   # not given: the tokenizer's
            return dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=vocab))
        raise ValueError(f"model.vocab_size {model_vocab} differs from the corpus's vocabulary {vocab} "
                         f"(data.vocab_size or the tokenizer's)")
    return config


def _check_data_source(source: str, settings: Settings, what: str = "data source") -> None:
    if source == "builtin" and what == "data source":
        return
    if not source.isprintable():
        raise JobRejected(f"{what}: a path must not hold control characters (NUL, newline, ...)")
    try:
        path = Path(source).resolve()
        roots = [Path(r).resolve() for r in settings.allowed_data_dirs]
        exists = path.exists()
    except (OSError, ValueError) as e:           # a name too long, a loop of links: not a path this server has
        raise JobRejected(f"{what} {source[:200]!r} is not a usable path ({type(e).__name__})") from None
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none (set DELTAMU_ALLOWED_DATA_DIRS)"
        raise JobRejected(f"{what} {source[:200]!r} is not under an allowed data directory; allowed: {allowed}")
    if not exists:
        raise JobRejected(f"{what} {source[:200]!r} does not exist on the server")


def trial_memory_bytes(model: GDNConfig, batch_size: int, seq_len: int) -> float:
    """An estimate of one trial's memory: float32 weights, gradients and two AdamW moments, and what one step
    keeps for its backward pass (every block's activations, the logits and their gradient)."""
    tokens = batch_size * seq_len
    activations = tokens * (model.depth * model.width * ACTIVATION_BYTES + LOGIT_BYTES * model.vocab_size)
    return STATE_BYTES_PER_PARAM * count_params(model) + activations


def _check_limits(config: SweepConfig, widths: list[int], trials_per_width: int, log_every: int,
                  settings: Settings) -> None:
    """Every width's trials count: trials, the widest proxy's width, parameters and memory, the FLOPs of them all;
    and each trial's validation tokens and curve rows."""
    sched, model = config.schedule, config.model
    num_trials = len(widths) * trials_per_width
    widest = max(widths)
    eval_tokens = config.eval_batches * sched.batch_size * sched.seq_len
    curve_points = -(-sched.steps // log_every)
    checks = [
        (num_trials <= settings.max_trials,
         f"{num_trials} trials (widths x learning rates x seeds) exceed the limit of {settings.max_trials}"),
        (sched.steps <= settings.max_steps, f"{sched.steps} steps exceed the limit of {settings.max_steps}"),
        (widest <= settings.max_proxy_width,
         f"proxy width {widest} exceeds the limit of {settings.max_proxy_width}"),
        (model.depth <= settings.max_depth, f"depth {model.depth} exceeds the limit of {settings.max_depth}"),
        (sched.batch_size * sched.seq_len <= settings.max_tokens_per_step,
         f"batch_size x seq_len = {sched.batch_size * sched.seq_len} tokens per step exceed the limit of "
         f"{settings.max_tokens_per_step}: the proxy would not fit in memory"),
        (eval_tokens <= settings.max_eval_tokens,
         f"eval_batches x batch_size x seq_len = {eval_tokens} validation tokens per trial exceed the limit of "
         f"{settings.max_eval_tokens}"),
        (curve_points <= settings.max_curve_points,
         f"steps / log_every = {curve_points} curve points per trial exceed the limit of "
         f"{settings.max_curve_points}: raise log_every"),
    ]
    for ok, reason in checks:
        if not ok:
            raise JobRejected(reason)
    params = count_params(config.model_at(widest))
    if params > settings.max_proxy_params:
        raise JobRejected(f"the proxy at width {widest} has {params:.3g} parameters, above the limit of "
                          f"{settings.max_proxy_params:.3g}")
    memory = trial_memory_bytes(config.model_at(widest), sched.batch_size, sched.seq_len)
    if memory > settings.max_trial_memory_gib * GIB:
        raise JobRejected(f"a trial at width {widest} needs about {memory / GIB:.3g} GiB of memory (weights, "
                          f"optimizer state, activations), above the limit of {settings.max_trial_memory_gib:g} GiB: "
                          f"use a smaller batch_size, seq_len, width or depth")
    tokens = sched.steps * sched.batch_size * sched.seq_len
    flops = trials_per_width * tokens * sum(train_flops_per_token(config.model_at(w)) for w in widths)
    if flops > settings.max_job_flops:
        raise JobRejected(f"the job needs about {flops:.3g} training FLOPs, above the limit of "
                          f"{settings.max_job_flops:.3g} (days of GPU time): use fewer steps, trials, widths or "
                          f"tokens")
