"""What every trainer does the same way for a trial, written once: the model built and initialised by the table, the
device and precision, the corpus check, and the trial's log (curve points at the log points, the divergence
verdict, the result). gdn.train.train_trial (the readable reference) and gdn.packed (K trials as one batched model)
both build on it, so their curves, verdicts and results agree by construction.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

from gdn.data import Corpus, load_corpus
from gdn.init import init_model
from gdn.model import GDNModel
from gdn.parametrization import Parametrization
from gdn.spec import COMPLETED, DIVERGED, CurvePoint, SweepConfig, TrialResult, TrialSpec

# A trial whose training loss climbs above this multiple of its first loss has diverged (a result, not a failure).
DIVERGENCE_FACTOR = 1.5


def resolve_device(device: str) -> torch.device:
    resolved = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if resolved.type == "cuda":
        # float32 matmuls outside autocast (the chunked gated delta rule) may use TF32, as fla's kernels do
        torch.backends.cuda.matmul.allow_tf32 = True
    return resolved


def uses_cuda_graphs(spec: TrialSpec) -> bool:
    """Whether a pack of `spec` replays its forward and backward from a CUDA graph: on CUDA unless the spec turns
    them off (cuda_graphs=False runs them op by op, as a CPU pack does)."""
    return spec.cuda_graphs and resolve_device(spec.device).type == "cuda"


def precision(spec: TrialSpec, device: torch.device) -> tuple[torch.dtype, Callable[[], ContextManager]]:
    """(parameter dtype, autocast context factory): "auto" keeps float32 parameters and runs the forward under bf16
    autocast on CUDA (plain float32 on the CPU); "float32" / "float64" run in that dtype throughout."""
    dtype = {"auto": torch.float32, "float32": torch.float32, "float64": torch.float64}[spec.dtype]
    if spec.dtype == "auto" and device.type == "cuda":
        return dtype, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return dtype, nullcontext


def trial_corpus(config: SweepConfig) -> Corpus:
    """The corpus of a trial, checked against the model's vocabulary."""
    corpus = load_corpus(config.data, config.schedule.seq_len)
    if config.model.vocab_size != corpus.vocab_size:
        raise ValueError(f"model vocab_size {config.model.vocab_size} != corpus vocab_size {corpus.vocab_size}")
    return corpus


def loss_backend(spec: TrialSpec) -> str:
    """The backend of a trial's loss (gdn.ops.cross_entropy): the spec's, except that "triton", which asks for the
    model's kernels, takes the fused loss only where "auto" would (once validated on a card: CE_VALIDATED), so that
    a spec naming the gated delta rule's kernels does not also switch on a loss kernel not yet checked there."""
    return "auto" if spec.backend == "triton" else spec.backend


def build_model(config: SweepConfig, width: int, seed: int,
                backend: str = "auto") -> tuple[GDNModel, Parametrization, float]:
    """The model at `width` running its ops on `backend` (gdn.ops.backend), initialised by the table with `seed` (on
    the CPU, so the init is device-independent)."""
    p = config.param()
    target, base = config.model_at(width), config.model_at(config.base_width)
    width_mult = width / config.base_width
    model = GDNModel(target, p.forward_multipliers(target, base), backend=backend)
    init_model(model, p, width_mult, generator=torch.Generator().manual_seed(seed))
    return model, p, width_mult


def is_log_point(done: int, steps: int, log_every: int) -> bool:
    """A curve point after the first step, every log_every steps, and after the last."""
    return done == 1 or done == steps or done % log_every == 0


class TrialLog:
    """One trial's curve and verdict as it trains, and its result: the bookkeeping both trainers share."""

    def __init__(self, spec: TrialSpec, *, num_params: int, data_sha256: str, device: torch.device, trainer: str,
                 cuda_graphs: bool, start: float | None = None):
        self.spec = spec
        self.curve: list[CurvePoint] = []
        self.first_loss: float | None = None
        self.start = time.perf_counter() if start is None else start
        self.tokens_per_step = spec.config.schedule.batch_size * spec.config.schedule.seq_len
        self._fixed = dict(num_params=num_params, data_sha256=data_sha256, device=str(device), backend=spec.backend,
                           trainer=trainer, cuda_graphs=cuda_graphs)

    def point(self, done: int, window_losses: torch.Tensor, lr: float, grad_norm: float,
              seconds: float | None = None) -> tuple[CurvePoint, str | None]:
        """Log the point after `done` steps from the losses of the steps since the last point (float64, on the CPU
        or not); returns it and, if the trial has diverged, why."""
        mean_loss = float(window_losses.mean())
        point = CurvePoint(step=done, tokens=done * self.tokens_per_step, loss=mean_loss, lr=lr, grad_norm=grad_norm,
                           seconds=time.perf_counter() - self.start if seconds is None else seconds)
        self.curve.append(point)
        if self.first_loss is None:
            self.first_loss = mean_loss
        if not bool(torch.isfinite(window_losses).all()):
            return point, "non-finite training loss"
        if mean_loss > DIVERGENCE_FACTOR * self.first_loss:
            return point, (f"training loss {mean_loss:.3f} above {DIVERGENCE_FACTOR} x the first loss "
                           f"{self.first_loss:.3f}")
        return point, None

    def diverged(self, step: int, reason: str) -> TrialResult:
        return self._result(DIVERGED, math.nan, step, reason)

    def finished(self, val_loss: float) -> TrialResult:
        """The result after the last step: COMPLETED with its validation loss, or DIVERGED if that is not finite."""
        if not math.isfinite(val_loss):
            return self.diverged(self.spec.config.schedule.steps, "non-finite validation loss")
        return self._result(COMPLETED, val_loss, None, None)

    def _result(self, status: str, val_loss: float, step: int | None, reason: str | None) -> TrialResult:
        return TrialResult(status=status, final_val_loss=val_loss, curve=self.curve, diverged_step=step,
                           reason=reason, tokens=(self.curve[-1].tokens if self.curve else 0),
                           seconds=time.perf_counter() - self.start, **self._fixed)
