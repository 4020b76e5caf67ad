"""Optimizers built from the parametrization table's groups, and the LR schedule as a pure function of the step."""
from __future__ import annotations

import math
import torch
from torch import nn

from gdn.parametrization import Parametrization, param_groups
from gdn.spec import OptimizerSpec

CLIP_EPS = 1e-6      # torch.nn.utils.clip_grad_norm_'s epsilon: coef = max_norm / (norm + eps)


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to peak_lr over warmup_steps, then cosine decay to min_lr at total_steps.
    `step` counts from 0 (the LR of the first update is peak_lr / warmup_steps)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)


def build_optimizer(model: nn.Module, parametrization: Parametrization, spec: OptimizerSpec, lr: float,
                    width_mult: float) -> torch.optim.Optimizer:
    """One param group per role, each carrying its `lr_mult` (so the schedule can scale it)."""
    return optimizer_for(param_groups(model, parametrization.groups(width_mult, spec.name), lr, spec.weight_decay),
                         spec)


def optimizer_for(groups: list[dict], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The torch optimizer `spec` names over param groups that carry their own lr and weight decay
    (gdn.parametrization.param_groups, or what deltamu.apply returns for any model)."""
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, betas=spec.betas, eps=spec.eps, foreach=True)
    return torch.optim.SGD(groups, momentum=spec.momentum, nesterov=spec.momentum > 0, foreach=True)


def group_clip_weights(model: nn.Module, groups: list[dict]) -> list[float]:
    """The clip weight of every parameter of `model`, in model.parameters() order, from the groups it is in."""
    weight_of = {id(p): g["clip_weight"] for g in groups for p in g["params"]}
    return [weight_of[id(p)] for p in model.parameters()]


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """The schedule multiplies every group's LR (min LR included): group lr = base_lr * lr_mult."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_mult"]


def clip_grad_norm(model: nn.Module, max_norm: float, weights: list[float] | None = None) -> torch.Tensor:
    """Global gradient norm before clipping, as a tensor (no device sync); clipping is skipped when max_norm is 0.
    weights (one per parameter, Parametrization.clip_weights): the norm is that of the weighted gradients, and
    every gradient is scaled by the one factor min(1, max_norm / norm). None or all 1: torch's clip_grad_norm_."""
    params = list(model.parameters())
    if weights is None or all(w == 1.0 for w in weights):
        return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                              max_norm if max_norm > 0 else math.inf)
    pairs = [(p.grad, w) for p, w in zip(params, weights, strict=True) if p.grad is not None]
    grads = [g for g, _ in pairs]
    with torch.no_grad():
        norms = torch.stack(torch._foreach_norm(grads, 2.0))
        total = torch.linalg.vector_norm(norms * norms.new_tensor([w for _, w in pairs]), 2.0)
        if max_norm > 0:
            torch._foreach_mul_(grads, (max_norm / (total + CLIP_EPS)).clamp(max=1.0))
    return total
