"""Train one proxy for one trial: a (config, lr, seed) -> a curve and a final validation loss, or DIVERGED.

No database and no Celery here: progress leaves through a callback, cancellation comes in through another.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from gdn.config import GDNConfig
from gdn.data import DataSpec, load_corpus
from gdn.model import ForwardMultipliers, GDNModel
from gdn.optim import OptimizerSpec, build_optimizer, clip_grad_norm, lr_at, set_lr
from gdn.parametrization import Parametrization, get_parametrization

# A trial whose training loss climbs above this multiple of its first loss has diverged (a result, not a failure).
DIVERGENCE_FACTOR = 1.5

COMPLETED, DIVERGED = "COMPLETED", "DIVERGED"


@dataclass(frozen=True)
class ScheduleSpec:
    steps: int = 200
    warmup_steps: int = 20
    batch_size: int = 16
    seq_len: int = 128
    min_lr: float = 0.0          # absolute, for a group of LR multiplier 1; scaled per group like the peak LR

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("steps, batch_size and seq_len must be >= 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must lie in [0, steps={self.steps}], got {self.warmup_steps}")
        if self.min_lr < 0:
            raise ValueError("min_lr must be >= 0")


@dataclass(frozen=True)
class SweepConfig:
    """Everything of a tuning job except its LR grid and seeds. `model` is the proxy at the base width."""
    model: GDNConfig = field(default_factory=GDNConfig)
    parametrization: str = "mup"
    readout: str | None = None           # None: the preset's default readout rule
    output_mult: float | None = None     # a constant logit multiplier, tuned at the base width and carried as is
    init_mult: float | None = None       # sigma_0 of the matrices x this, likewise (None: the preset's, BASE_MULTS)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval_batches: int = 8

    def __post_init__(self) -> None:
        self.param()  # raises on an unknown preset or readout
        if self.eval_batches < 1:
            raise ValueError("eval_batches must be >= 1")

    @property
    def base_width(self) -> int:
        return self.model.width

    def param(self) -> Parametrization:
        return get_parametrization(self.parametrization, self.readout, self.output_mult, self.init_mult,
                                   self.optimizer.name)

    def model_at(self, width: int) -> GDNConfig:
        """The proxy's architecture at `width`, tied or not as the readout rule says."""
        return dataclasses.replace(self.model, width=width, tie_embeddings=self.param().readout.tied)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        d = dict(d)
        try:
            nested = {"model": GDNConfig.from_dict, "optimizer": _from(OptimizerSpec),
                      "schedule": _from(ScheduleSpec), "data": _from(DataSpec)}
            for key, make in nested.items():
                if key in d:
                    d[key] = make(d[key])
            return _from(cls)(d)
        except TypeError as e:  # unknown or missing fields
            raise ValueError(str(e)) from None


def _from(cls):
    def make(d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        if cls is OptimizerSpec and "betas" in d:
            d = {**d, "betas": tuple(d["betas"])}
        return cls(**d)
    return make


@dataclass(frozen=True)
class TrialSpec:
    config: SweepConfig
    lr: float
    seed: int = 0
    width: int | None = None        # None: the base width (a proxy trial); else a trial of the transfer study
    device: str = "auto"            # "auto": CUDA when available
    dtype: str = "auto"             # "auto": bf16 autocast on CUDA, float32 on CPU; or "float32" / "float64"

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")


@dataclass
class CurvePoint:
    step: int            # optimizer steps done
    tokens: int          # training tokens seen
    loss: float          # mean training loss over the steps since the previous point
    lr: float            # base LR (multiplier 1) at this step
    grad_norm: float     # global grad norm before clipping, at this step
    seconds: float       # wall time since the trial started


@dataclass
class TrialResult:
    status: str
    final_val_loss: float
    curve: list[CurvePoint]
    diverged_step: int | None
    reason: str | None
    tokens: int
    seconds: float
    num_params: int
    data_sha256: str
    device: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialResult":
        return cls(**{**d, "curve": [CurvePoint(**p) for p in d["curve"]]})


class TrialCancelled(Exception):
    """Raised by train_trial when should_stop() says so."""


def resolve_device(device: str) -> torch.device:
    resolved = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if resolved.type == "cuda":
        # float32 matmuls outside autocast (the chunked gated delta rule) may use TF32, as fla's kernels do
        torch.backends.cuda.matmul.allow_tf32 = True
    return resolved


def build_model(config: SweepConfig, width: int, seed: int) -> tuple[GDNModel, Parametrization, float]:
    """The model at `width`, initialised by the table with `seed` (on the CPU, so the init is device-independent)."""
    p = config.param()
    model_config = config.model_at(width)
    width_mult = width / config.base_width
    _, K, _ = model_config.heads_and_dims()
    _, K_base, _ = config.model_at(config.base_width).heads_and_dims()
    mult = ForwardMultipliers(logits=p.logit_multiplier(width_mult), o=p.o_multiplier(K, K_base))
    model = GDNModel(model_config, mult)
    p.init_(model, width_mult, generator=torch.Generator().manual_seed(seed))
    return model, p, width_mult


@torch.no_grad()
def evaluate(model: GDNModel, batches, autocast) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast():
            logits = model(x)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten()))
    model.train(was_training)
    return total / len(batches)


def train_trial(spec: TrialSpec, progress: Callable[[CurvePoint], None] | None = None,
                should_stop: Callable[[], bool] | None = None, log_every: int = 10) -> TrialResult:
    cfg, sched = spec.config, spec.config.schedule
    width = spec.width or cfg.base_width
    device = resolve_device(spec.device)
    corpus = load_corpus(cfg.data, sched.seq_len)
    if cfg.model.vocab_size != corpus.vocab_size:
        raise ValueError(f"model vocab_size {cfg.model.vocab_size} != corpus vocab_size {corpus.vocab_size}")

    model, p, width_mult = build_model(cfg, width, spec.seed)
    dtype = {"auto": torch.float32, "float32": torch.float32, "float64": torch.float64}[spec.dtype]
    model.to(device=device, dtype=dtype)
    use_bf16 = spec.dtype == "auto" and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    optimizer = build_optimizer(model, p, cfg.optimizer, spec.lr, width_mult)
    clip_weights = p.clip_weights(model, cfg.optimizer.name, width_mult)
    val_batches = corpus.val_batches(cfg.eval_batches, sched.batch_size, sched.seq_len, device)

    start = time.perf_counter()
    curve: list[CurvePoint] = []
    window_losses: list[torch.Tensor] = []
    first_loss: float | None = None
    tokens_per_step = sched.batch_size * sched.seq_len

    def finish(status: str, val_loss: float, step: int | None, reason: str | None) -> TrialResult:
        return TrialResult(status=status, final_val_loss=val_loss, curve=curve, diverged_step=step, reason=reason,
                           tokens=(curve[-1].tokens if curve else 0), seconds=time.perf_counter() - start,
                           num_params=model.num_params(), data_sha256=corpus.sha256, device=str(device))

    for step in range(sched.steps):
        base_lr = lr_at(step, spec.lr, sched.warmup_steps, sched.steps, sched.min_lr)
        set_lr(optimizer, base_lr)
        x, y = corpus.batch(step, spec.seed, sched.batch_size, sched.seq_len, device)
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(model, cfg.optimizer.grad_clip, clip_weights)
        optimizer.step()
        window_losses.append(loss.detach())

        done = step + 1
        if done % log_every and done != sched.steps and done != 1:
            continue
        losses = torch.stack(window_losses).double()
        window_losses.clear()
        mean_loss = float(losses.mean())
        point = CurvePoint(step=done, tokens=done * tokens_per_step, loss=mean_loss, lr=base_lr,
                           grad_norm=float(grad_norm), seconds=time.perf_counter() - start)
        curve.append(point)
        if progress is not None:
            progress(point)
        if first_loss is None:
            first_loss = mean_loss
        if not bool(torch.isfinite(losses).all()):
            return finish(DIVERGED, math.nan, done, "non-finite training loss")
        if mean_loss > DIVERGENCE_FACTOR * first_loss:
            return finish(DIVERGED, math.nan, done,
                          f"training loss {mean_loss:.3f} above {DIVERGENCE_FACTOR} x the first loss {first_loss:.3f}")
        if should_stop is not None and should_stop():
            raise TrialCancelled(f"stopped at step {done}")

    val_loss = evaluate(model, val_batches, autocast)
    if not math.isfinite(val_loss):
        return finish(DIVERGED, math.nan, sched.steps, "non-finite validation loss")
    return finish(COMPLETED, val_loss, None, None)
