"""Train trials: `run` is the one entry (a lone trial, or a pack of K trials of one architecture, by device and
spec); `train_trial` is the readable reference loop, one proxy at a time, that the packed trainer is tested against;
`train_model` is its loop for any model and param groups (benchmarks/fla_parity.py trains fla's model with it).

No database and no Celery here: progress leaves through a callback, cancellation comes in through another.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from gdn.model import GDNModel
from gdn.ops.cross_entropy import cross_entropy
from gdn.optim import clip_grad_norm, group_clip_weights, lr_at, optimizer_for, set_lr
from gdn.packed import train_packed
from gdn.parametrization import param_groups
from gdn.spec import CurvePoint, TrialCancelled, TrialResult, TrialSpec
from gdn.trial import (TrialLog, build_model, is_log_point, loss_backend, precision, resolve_device, trial_corpus,
                       uses_cuda_graphs)


def run(specs: list[TrialSpec], progress: Callable[[int, CurvePoint], None] | None = None,
        should_stop: Callable[[], bool] | None = None, log_every: int = 10,
        on_result: Callable[[int, TrialResult], None] | None = None) -> list[TrialResult]:
    """Train `specs` (one architecture when several: gdn.packed.pack_key) and return their results in order.

    A lone trial whose steps would not replay from a CUDA graph trains with train_trial; anything else as one pack
    (gdn.packed.train_packed): on CUDA even a lone trial, since a pack of one replays its steps from a CUDA graph,
    several times faster than the op-by-op loop. progress(i, point) gets trial i's curve points, on_result(i,
    result) each result as soon as it is known; should_stop() is asked at every log point (TrialCancelled)."""
    if len(specs) == 1 and not uses_cuda_graphs(specs[0]):
        result = train_trial(specs[0], progress=None if progress is None else (lambda point: progress(0, point)),
                             should_stop=should_stop, log_every=log_every)
        if on_result is not None:
            on_result(0, result)
        return [result]
    return train_packed(specs, progress=progress, should_stop=should_stop, log_every=log_every, on_result=on_result)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, autocast, logits: Callable | None = None,
             loss_backend: str = "auto") -> float:
    """Mean validation loss; `logits(x)` is the model's forward (default: model(x)); the loss runs on
    `loss_backend` (gdn.ops.cross_entropy)."""
    logits = logits or model
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for x, y in batches:                    # streamed: one batch on the device at a time
        with autocast():
            out = logits(x)
        total += float(cross_entropy(out.flatten(0, 1), y.flatten(), backend=loss_backend))
        n += 1
    model.train(was_training)
    return total / n


def train_trial(spec: TrialSpec, progress: Callable[[CurvePoint], None] | None = None,
                should_stop: Callable[[], bool] | None = None, log_every: int = 10) -> TrialResult:
    """One trial, one model, op by op: the reference the packed trainer is tested against."""
    cfg = spec.config
    model, p, width_mult = build_model(cfg, spec.at_width, spec.seed, spec.backend)
    groups = param_groups(model, p.groups(width_mult, cfg.optimizer.name), spec.lr, cfg.optimizer.weight_decay)
    return train_model(spec, model, groups, progress=progress, should_stop=should_stop, log_every=log_every)


def train_model(spec: TrialSpec, model: torch.nn.Module, groups: list[dict], *, logits: Callable | None = None,
                progress: Callable[[CurvePoint], None] | None = None, should_stop: Callable[[], bool] | None = None,
                log_every: int = 10) -> TrialResult:
    """Train `model` as trial `spec` trains: its batches, schedule, clip and evaluation, with the optimizer over
    `groups` (param groups carrying lr_mult, lr, weight decay and clip_weight). `logits(x)` is the forward
    (default: model(x)); the model is moved to the spec's device and dtype here."""
    cfg, sched = spec.config, spec.config.schedule
    device = resolve_device(spec.device)
    corpus = trial_corpus(cfg)
    dtype, autocast = precision(spec, device)
    model.to(device=device, dtype=dtype)
    logits = logits or model
    backend = loss_backend(spec)
    optimizer = optimizer_for(groups, cfg.optimizer)
    clip_weights = group_clip_weights(model, groups)
    val_batches = corpus.val_batches(cfg.eval_batches, sched.batch_size, sched.seq_len, device)
    log = TrialLog(spec, num_params=sum(p.numel() for p in model.parameters()), data_sha256=corpus.sha256,
                   device=device, trainer="lone", cuda_graphs=False, start=time.perf_counter())
    window_losses: list[torch.Tensor] = []

    for step in range(sched.steps):
        base_lr = lr_at(step, spec.lr, sched.warmup_steps, sched.steps, sched.min_lr)
        set_lr(optimizer, base_lr)
        x, y = corpus.batch(step, spec.seed, sched.batch_size, sched.seq_len, device)
        with autocast():
            out = logits(x)
        loss = cross_entropy(out.flatten(0, 1), y.flatten(), backend=backend)   # float32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(model, cfg.optimizer.grad_clip, clip_weights)
        optimizer.step()
        window_losses.append(loss.detach())

        done = step + 1
        if not is_log_point(done, sched.steps, log_every):
            continue
        point, diverged = log.point(done, torch.stack(window_losses).double(), base_lr, float(grad_norm))
        window_losses.clear()
        if progress is not None:
            progress(point)
        if diverged:
            return log.diverged(done, diverged)
        if should_stop is not None and should_stop():
            raise TrialCancelled(f"stopped at step {done}")

    return log.finished(evaluate(model, val_batches, autocast, logits, backend))
