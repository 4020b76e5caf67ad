"""Pydantic I/O types of the API: JobCreate (input), *Public (output, RecommendationPublic among them), the list
wrappers and the problem body.

Static limits live here (a positive width, a non-empty grid); limits an operator tunes (the largest job a
deployment accepts) are checked against settings in service.jobspec, with the reason in the answer.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gdn.config import GDNConfig
from gdn.fla_config import gdn_config_from_fla
from gdn.parametrization import PRESETS
from gdn.spec import (BYTE_VOCAB, LR_MAX, DataSpec, OptimizerSpec, RecommendedGroup, ScheduleSpec, SweepConfig,
                      TransferEvidence)

from service.models import JobState, TrialState

Nonfinite = dict[str, Literal["nan", "inf", "-inf"]]
INT32_MAX = 2**31 - 1            # seeds and counts are stored in 32-bit integer columns
GRID_MAX = 10_000                # a hard ceiling before the deployment's own limit on trials is checked
WIDTHS_MAX = 32                  # widths of one transfer study
EVAL_BATCHES_MAX = 10_000
HORIZONS_MAX = 16                # horizons of one horizon sweep
TOKENS_MAX = 10 ** 16            # ten quadrillion training tokens: past any run, so a larger number is a typo
EXTEND_ROUNDS_MAX = 10
NONFINITE_DOC = "fields whose value is NaN or +-inf: they are null in the body and named here"


class _In(BaseModel):
    # the gdn.spec dataclasses nested in a request are validated as they are (their checks raise 422s), and their
    # attribute docstrings are the fields' descriptions
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


_SWEEP = {f.name: f.default for f in dataclasses.fields(SweepConfig) if f.default is not dataclasses.MISSING}


class LRGridIn(_In):
    """Either explicit `values`, or `min`, `max` and `count` (log-spaced, both ends included)."""
    values: list[float] | None = Field(None, min_length=1, max_length=GRID_MAX)
    min: float | None = Field(None, gt=0, le=LR_MAX, allow_inf_nan=False)
    max: float | None = Field(None, gt=0, le=LR_MAX, allow_inf_nan=False)
    count: int | None = Field(None, ge=1, le=GRID_MAX)

    @model_validator(mode="after")
    def _one_form(self) -> "LRGridIn":
        ranged = (self.min, self.max, self.count)
        if self.values is not None:
            if any(x is not None for x in ranged):
                raise ValueError("give either values or min/max/count, not both")
            bad = [x for x in self.values if not (0 < x <= LR_MAX and math.isfinite(x))]
            if bad:
                raise ValueError(f"values: learning rates must be finite and lie in (0, {LR_MAX:g}], got {bad}")
            if len(set(self.values)) != len(self.values):
                raise ValueError("learning rates must be distinct")
        elif any(x is None for x in ranged):
            raise ValueError("give values, or all of min, max and count")
        elif self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class JobCreate(_In):
    """A tuning job: an LR sweep of one proxy model, or, with several `widths`, a transfer study (the same sweep at
    every width, the base width's optimum carried to the others)."""
    model: GDNConfig = Field(default_factory=GDNConfig, description="the proxy model at the base width")
    target_config: dict | None = Field(
        None, description="the model you will train, as fla's GatedDeltaNetConfig (its config.json): the proxy is "
                          "that architecture at model.width along model.width_axis (model may set only those two), "
                          "and the recommendation for its hidden_size describes your model. What deltamu's model "
                          "cannot represent (grouped value heads, no output gate, hybrid attention, ...) is a 422")
    widths: list[int] | None = Field(
        None, min_length=1, max_length=WIDTHS_MAX,
        description="a transfer study: the widths to sweep, the base width (model.width) first; default: "
                    "[model.width]. Every width is trained with the parametrization at width / model.width")
    parametrization: str = Field(_SWEEP["parametrization"], description=" | ".join(PRESETS))
    readout: str | None = Field(_SWEEP["readout"], description="the readout rule; default: the preset's")
    output_mult: float | None = Field(_SWEEP["output_mult"], gt=0, description="a constant logit multiplier, "
                                      "tuned at the base width; default: the preset's (mup: 4, AdamW and SGD)")
    init_mult: float | None = Field(_SWEEP["init_mult"], gt=0, description="sigma_0 of the matrices x this, tuned "
                                    "at the base width; default: the preset's (mup: 2, AdamW and SGD)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    lr_grid: LRGridIn
    seeds: list[int] = Field([0], min_length=1, max_length=GRID_MAX)
    data: DataSpec = Field(default_factory=DataSpec)
    eval_batches: int = Field(_SWEEP["eval_batches"], ge=1, le=EVAL_BATCHES_MAX,
                              description="validation batches at the end of every trial")
    log_every: int = Field(10, ge=1, le=INT32_MAX, description="a curve point every this many steps")
    horizons: list[int] | None = Field(
        None, min_length=1, max_length=HORIZONS_MAX,
        description="a horizon sweep: the base width's sweep also runs at each of these horizons, in training "
                    "steps (a trial's tokens = steps x batch_size x seq_len); must include schedule.steps, the "
                    "proxy's horizon. Each keeps the schedule's shape: warmup the same share of the run, the "
                    "cosine decay over the rest. The job fits lr* against tokens, which the recommendation reads "
                    "for ?tokens=. Default: [schedule.steps]")
    target_tokens: int | None = Field(
        None, ge=1, le=TOKENS_MAX,
        description="the tokens the target run will train on: the recommendation's token budget when a request "
                    "gives no ?tokens= (the horizon fit's lr for it, or the proxy's with a warning)")
    max_extend_rounds: int = Field(
        2, ge=0, le=EXTEND_ROUNDS_MAX,
        description="rounds of learning rates added past a grid's edge while a sweep's best point (of any width "
                    "and horizon) is there: two more lrs at the grid's spacing, every seed, per round; 0: none")
    reuse: bool = Field(False, description="answer with a SUCCEEDED job of the identical spec instead of running "
                                           "it again (not part of the spec)")

    @model_validator(mode="before")
    @classmethod
    def _model_from_inputs(cls, raw):
        """With target_config, the proxy is that model at model.width (gdn.fla_config), at the data's vocabulary
        (the target's, when it differs, is a warning of the recommendation); model.vocab_size, when not given, is
        the data's (a .bin states its own; a tokenizer file's is read when the job is prepared), else bytes."""
        if not isinstance(raw, dict) or not isinstance(raw.get("model", {}), dict):
            return raw
        model = dict(raw.get("model", {}))
        if isinstance(raw.get("target_config"), dict):
            extra = sorted(set(model) - {"width", "width_axis"})
            if extra or "width" not in model:
                raise ValueError(f"with target_config, model sets the base width (required) and width_axis only; "
                                 f"got {sorted(model)}")
            target = gdn_config_from_fla(raw["target_config"], model.get("width_axis", "head_dim"))
            model = {k: v for k, v in dataclasses.asdict(target.at_width(model["width"])).items()
                     if k != "vocab_size"}
        if "vocab_size" not in model:
            data = raw.get("data")
            model["vocab_size"] = (data.get("vocab_size") if isinstance(data, dict) else None) or BYTE_VOCAB
        return {**raw, "model": model}

    @model_validator(mode="after")
    def _tied_as_the_target(self) -> "JobCreate":
        if self.target_config is None:
            return self
        try:
            tied = self.sweep_config().param().readout.tied
        except ValueError:
            return self                              # an unknown preset or readout: refused with its reason later
        if tied != self.model.tie_embeddings:
            raise ValueError(f"the target model is {'tied' if self.model.tie_embeddings else 'untied'} "
                             f"(tie_word_embeddings) but the readout rule {self.readout or 'of the preset'} is "
                             f"{'tied' if tied else 'untied'}: set readout to "
                             f"{'tied-scaled' if self.model.tie_embeddings else 'untied-zero or untied-scaled'}")
        return self

    def sweep_config(self) -> SweepConfig:
        """The job as gdn takes it (raises ValueError for a preset or readout gdn does not know)."""
        return SweepConfig(model=self.model, parametrization=self.parametrization, readout=self.readout,
                           output_mult=self.output_mult, init_mult=self.init_mult, optimizer=self.optimizer,
                           schedule=self.schedule, data=self.data, eval_batches=self.eval_batches)

    @field_validator("widths")
    @classmethod
    def _distinct_widths(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if len(set(v)) != len(v):
            raise ValueError("widths must be distinct")
        bad = [w for w in v if not 1 <= w <= INT32_MAX]
        if bad:
            raise ValueError(f"widths must lie in [1, {INT32_MAX}], got {bad}")
        return v

    @model_validator(mode="after")
    def _base_width_first(self) -> "JobCreate":
        if self.widths is not None and self.widths[0] != self.model.width:
            raise ValueError(f"widths[0] must be the base width model.width = {self.model.width}, "
                             f"got {self.widths[0]}")
        return self

    @model_validator(mode="after")
    def _horizons_hold_the_proxys(self) -> "JobCreate":
        if self.horizons is None:
            return self
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError("horizons must be distinct")
        if any(not 1 <= h <= INT32_MAX for h in self.horizons):
            raise ValueError(f"horizons are training steps in [1, {INT32_MAX}], got {self.horizons}")
        if self.schedule.steps not in self.horizons:
            raise ValueError(f"horizons must include schedule.steps = {self.schedule.steps}, the proxy's horizon "
                             f"(where the recommendation's lr is measured), got {self.horizons}")
        return self

    @property
    def all_horizons(self) -> list[int]:
        """The base width's horizons in steps, ascending (the proxy's, schedule.steps, among them)."""
        return sorted(self.horizons) if self.horizons is not None else [self.schedule.steps]

    @property
    def all_widths(self) -> list[int]:
        """The widths this job sweeps, the base width first."""
        return list(self.widths) if self.widths is not None else [self.model.width]

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(not 0 <= s <= INT32_MAX for s in v):
            raise ValueError(f"seeds must lie in [0, {INT32_MAX}]")
        return v

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, json_schema_extra={"examples": [{
        "model": {"width": 64, "depth": 2},
        "optimizer": {"name": "adamw"},
        "schedule": {"steps": 40, "warmup_steps": 4, "batch_size": 4, "seq_len": 64},
        "lr_grid": {"min": 0.001, "max": 0.1, "count": 5},
        "seeds": [0],
    }]})


# --- output --------------------------------------------------------------------------------------------------

class TrialCounts(BaseModel):
    total: int = Field(description="grid points: widths x learning rates x seeds (and the base width's further "
                                   "horizons); grows as a sweep extends its grid past an edge")
    by_state: dict[TrialState, int] = Field(description="current attempt of each grid point, by state")
    retries: int = Field(description="attempts that failed on infrastructure and were requeued")


class OptimumPublic(BaseModel):
    lr: float | None
    log2_lr: float | None
    loss: float | None
    log2_lr_std: float | None
    on_edge: bool
    warnings: list[str]
    grid_lr: float | None = None
    per_seed_lr: dict[str, float | None] = {}
    near_best_lr_min: float | None = Field(None, description="smallest grid lr whose loss is within the seed noise "
                                           "of the best (2 % over sqrt(seeds)): the optimum is not resolved below")
    near_best_lr_max: float | None = Field(None, description="largest such grid lr")
    nonfinite: Nonfinite = Field({}, description=NONFINITE_DOC)


class WidthTransferPublic(BaseModel):
    width: int
    num_trials: int = Field(description="grid points at this width")
    optimum: OptimumPublic | None = Field(description="this width's own optimum (null: every LR diverged)")
    error: str | None = Field(description="why there is no optimum")
    shift_steps: float | None = Field(description="(log2 lr* of this width - log2 lr* of the base width) / grid step")
    transfer_loss: float | None = Field(description="this width's loss at the base width's lr* (interpolated)")
    regret: float | None = Field(description="transfer_loss - this width's own best (fitted) loss")
    regret_method: Literal["parabola", "grid-linear", "grid-point"] | None = Field(
        description="how transfer_loss was read off this width's sweep (see regret_note)")


class TransferPublic(BaseModel):
    """How the base width's learning rate transfers across the widths of a transfer study (docs/transfer.md)."""
    base_width: int
    base_lr: float | None = Field(description="the base width's lr*: what the recommendation uses")
    grid_step_log2: float | None = Field(description="the LR grid's spacing in log2 units: one grid step")
    widths: list[WidthTransferPublic] = Field(description="ascending width")
    argmin_range_steps: float | None = Field(description="max - min of shift_steps")
    max_abs_shift_steps: float | None
    argmin_within_one_step: bool | None = Field(description="argmin_range_steps <= 1 (null: a width had no optimum)")
    loss_falls_with_width: bool | None = Field(
        description="the loss at the base width's lr* falls strictly as width grows (null: unknown at a width)")
    regret_is_interpolated: bool = Field(True, description="always true: no trial ran at exactly the base lr*")
    regret_note: str
    warnings: list[str]


class HorizonPointPublic(BaseModel):
    steps: int
    tokens: int = Field(description="training tokens of one trial at this horizon")
    lr: float | None = Field(description="this horizon's lr* at the base width (null: no optimum)")
    log2_lr: float | None
    log2_lr_err: float | None = Field(description="one standard error of log2 lr*: the seeds' spread / sqrt(seeds), "
                                                  "floored by the grid's resolution (a step / sqrt 12)")
    seeds: int
    on_edge: bool
    in_fit: bool = Field(description="false for an edge optimum (a bound) or none")
    note: str | None


class HorizonFitPublic(BaseModel):
    """log2 lr* = intercept + exponent x log2(tokens / proxy_tokens), weighted least squares over the horizons
    (gdn.horizon): lr* proportional to tokens^exponent."""
    points: list[HorizonPointPublic] = Field(description="ascending steps")
    proxy_steps: int
    proxy_tokens: int
    grid_step_log2: float
    exponent: float | None = Field(description="null: fewer than two horizons with an interior optimum")
    exponent_err: float | None
    intercept: float | None = Field(description="the line's log2 lr* at the proxy's tokens")
    intercept_err: float | None
    covariance: list[list[float]] | None = Field(description="of (intercept, exponent), scaled by chi2/dof when "
                                                             "that exceeds 1")
    chi2: float | None
    dof: int
    slope_resolved: bool = Field(description="|exponent| > 2 standard errors: only then is the lr extrapolated")
    max_tokens: int = Field(description="the longest horizon in the fit")
    weight_decay_rule: str = Field(description="how weight decay is carried across horizons (today: coupled, the "
                                               "proxy's, unchanged)")
    weight_decay_note: str
    warnings: list[str]


class BestSoFarPublic(BaseModel):
    """The lowest final validation loss among the base width's finished trials so far."""
    width: int
    lr: float
    seed: int
    loss: float


class JobLinks(BaseModel):
    self: str
    trials: str
    recommendation: str
    plot: str
    cancel: str


class JobPublic(BaseModel):
    id: str
    state: JobState
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    elapsed_seconds: float | None = Field(description="from start to finish (or to now while running)")
    trial_seconds: float = Field(description="training seconds summed over every attempt")
    progress: float = Field(ge=0, le=1, description="share of the grid's training steps done")
    widths: list[int] = Field(description="widths swept, the base width first")
    trials: TrialCounts
    optimum: OptimumPublic | None = Field(description="the base width's optimum: what the recommendation uses")
    transfer: TransferPublic | None = Field(description="a transfer study's summary once it has finished; "
                                                        "null for a job of one width")
    horizon: HorizonFitPublic | None = Field(None, description="a horizon sweep's fit of lr* against tokens once it "
                                                               "has finished; null for a job of one horizon")
    extend_rounds: int = Field(0, description="rounds of learning rates added past a grid's edge so far")
    error: str | None
    warnings: list[str] = Field([], description="what the job's data regime says before any result: a proxy trial "
                                "that repeats its corpus (more than one epoch), a target vocabulary that is not the "
                                "proxy's")
    spec_sha256: str
    spec: dict
    links: JobLinks
    queue_position: int | None = Field(None, description="a QUEUED job: how many unfinished jobs were submitted "
                                                         "before it (0: next); null once it runs")
    best_so_far: BestSoFarPublic | None = Field(None, description="the lowest final validation loss of the base "
                                                "width's trials finished so far (null: none yet)")
    tokens_trained: int = Field(0, description="tokens trained so far: finished attempts plus the running trials' "
                                               "last curve point")
    tokens_total: int = Field(0, description="tokens of the whole grid: trials x steps x batch_size x seq_len")
    tokens_per_second: float | None = Field(None, description="tokens_trained / elapsed_seconds: the measured "
                                            "throughput of every worker on the job together (null: none yet)")
    eta_seconds: float | None = Field(None, description="the grid's remaining tokens at tokens_per_second "
                                                        "(null: not running, or nothing measured yet)")
    loss_unit: str = Field("nats per token", description="the unit of every loss of this job: nats per byte for "
                                                          "the byte-level tokenizer, else nats per token")


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class CurvePointPublic(BaseModel):
    step: int
    tokens: int
    loss: float | None
    lr: float
    grad_norm: float | None
    seconds: float
    nonfinite: Nonfinite = Field({}, description=NONFINITE_DOC)


class TrialPublic(BaseModel):
    id: int
    point: int = Field(description="index of (width, lr, seed) in the job's grid")
    width: int
    lr: float
    seed: int
    steps: int | None = Field(None, description="its horizon in training steps, in a horizon sweep; null: the "
                                                "job's schedule.steps")
    attempt: int
    retry_of: int | None
    retried: bool = Field(description="a later attempt replaced this one")
    state: TrialState
    worker: str | None
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    final_val_loss: float | None
    diverged_step: int | None
    reason: str | None
    error: str | None
    tokens: int | None
    seconds: float | None
    num_params: int | None
    device: str | None
    data_sha256: str | None
    backend: str | None = Field(None, description="the gated delta rule's backend it ran with (gdn.ops)")
    trainer: Literal["lone", "pack"] | None = Field(None, description="trained alone or in a pack of trials")
    cuda_graphs: bool | None = Field(None, description="its steps replayed from a CUDA graph")
    nonfinite: Nonfinite = Field({}, description=NONFINITE_DOC)
    curve: list[CurvePointPublic] = Field(description="the points after ?after_step=, at most ?curve_limit= of them")
    curve_truncated: bool = Field(False, description="more points follow: ask again with after_step = the last "
                                                     "step of this curve")


class TrialList(BaseModel):
    job_id: str
    items: list[TrialPublic]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


# --- the recommendation: gdn.recommend.recommend's answer for a target width ------------------------------------------

class _Recommended(BaseModel):
    """Non-finite floats are written as the strings 'NaN', 'Infinity' and '-Infinity' (service.floats.encode); the
    gdn.spec dataclasses inside are documented by their attribute docstrings."""
    model_config = ConfigDict(ser_json_inf_nan="strings", use_attribute_docstrings=True)


class ParametrizationPublic(_Recommended):
    name: str
    readout: str = Field(description="the readout rule")
    output_mult: float = Field(description="the constant logit multiplier tuned at the base width")
    init_mult: float = Field(description="sigma_0 of the matrices x this, tuned at the base width")
    readout_tied: bool
    width_axis: Literal["head_dim", "heads"]
    description: str
    weight_decay_rule: Literal["coupled", "independent"] = Field(
        "coupled", description="how each group's weight decay meets its LR multiplier (OptimizerSpec)")


class ForwardMultipliersPublic(_Recommended):
    logits: float
    gdn_scale: float = Field(description="the `scale` argument of (fla's) chunk_gated_delta_rule")


class ModelShapesPublic(_Recommended):
    width: int
    depth: int
    num_heads: int
    head_k_dim: int
    head_v_dim: int
    key_dim: int
    value_dim: int
    mlp_hidden: int
    vocab_size: int
    width_axis: Literal["head_dim", "heads"]
    tie_embeddings: bool
    conv_size: int = Field(4, description="kernel size of the short causal conv on q, k, v")
    norm_eps: float = Field(1e-6, description="every RMSNorm's epsilon")
    num_params: int


class CostPublic(_Recommended):
    proxy_train_flops_per_token: float
    target_train_flops_per_token: float
    trial_share: float = Field(description="one proxy trial's training FLOPs over the target's, per token")
    num_trials: int = Field(description="trials of the base width's sweep (every horizon's, when it swept several)")
    trial_equivalents: float = Field(description="those trials in units of one proxy trial: a trial of k times the "
                                                 "proxy's steps counts k (num_trials when the sweep ran one horizon)")
    sweep_share: float = Field(description="trial_equivalents x trial_share: the base width's sweep against one "
                                           "target run of as many tokens as a proxy trial")


class HorizonAnswerPublic(_Recommended):
    """The horizon fit (gdn.horizon) read at a token budget: how much the base width's lr moves from the proxy's
    horizon to `tokens`, and how sure that is."""
    tokens: int
    proxy_steps: int
    proxy_tokens: int = Field(description="training tokens of one proxy trial at its horizon")
    lr_factor: float = Field(description="lr*(tokens) / lr*(proxy_tokens) from the fit; 1 when the job swept one "
                                         "horizon or the exponent is not told from 0")
    log2_factor: float
    error_steps: float | None = Field(description="one standard error of log2 lr*(tokens) from the fit, in grid "
                                                  "steps (null: no fit)")
    grid_step_log2: float
    extrapolation_ratio: float = Field(description="tokens / the longest proxy horizon in the fit")
    validated_ratio: float = Field(description="the largest ratio the horizon study validated "
                                               "(gdn/transfer_evidence.json); beyond it a warning")
    extrapolated: bool = Field(description="the fit's slope was applied")
    exponent: float | None
    exponent_err: float | None
    intercept: float | None = Field(description="the line's log2 lr* at the proxy's tokens")
    intercept_err: float | None
    slope_resolved: bool
    chi2: float | None
    dof: int
    horizons: list[HorizonPointPublic]
    weight_decay_rule: str
    weight_decay_note: str
    warnings: list[str]


class RecommendationPublic(_Recommended):
    """The muP hyperparameters of a finished job for a target width: a pure function of the job's optimum and the
    width (gdn.recommend.recommend, a gdn.spec.Recommendation)."""
    job_id: str
    parametrization_version: str = Field(description="the version of gdn's parametrization table behind the answer")
    parametrization: ParametrizationPublic
    optimizer: OptimizerSpec
    base_width: int = Field(description="the proxy's width, where the lr was tuned")
    target_width: int
    width_mult: float = Field(description="target_width / base_width")
    base_lr: float = Field(description="the base width's optimum")
    base_lr_log2_std: float | None = Field(description="spread of the per-seed optima in log2 units (null: one seed)")
    optimum_on_edge: bool
    warnings: list[str]
    transfer_evidence: TransferEvidence | None = Field(
        description="what the transfer study measured for this parametrization and optimizer (null: nothing)")
    schedule: ScheduleSpec
    groups: list[RecommendedGroup] = Field(description="one optimizer group per parameter role")
    forward_multipliers: ForwardMultipliersPublic
    target_model: ModelShapesPublic
    proxy_model: ModelShapesPublic
    cost: CostPublic
    tokens: int | None = Field(None, description="the token budget asked for (?tokens=); null: the lr is the "
                                                 "proxy's horizon's, as measured")
    proxy_lr: float | None = Field(None, description="the base width's measured optimum at the proxy's horizon; "
                                                     "with tokens, base_lr = proxy_lr x horizon.lr_factor")
    horizon: HorizonAnswerPublic | None = Field(None, description="with tokens: the horizon fit read at that budget")


class Problem(BaseModel):
    """RFC 9457 problem details."""
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict] | None = Field(None, description="field errors of a request that failed validation")
