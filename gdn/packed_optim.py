"""The optimizer of a pack (gdn.packed): torch's foreach AdamW and SGD-Nesterov replayed on parameters stacked along a
leading trial axis, each trial with its own LR, and the global-norm gradient clip per trial."""
from __future__ import annotations

import math

import torch

from gdn.optim import CLIP_EPS
from gdn.parametrization import Parametrization, param_groups
from gdn.spec import OptimizerSpec


def per_trial(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(R,) tensor of one scalar per trial row on like's device, in like's dtype or float32 if that is wider (torch
    computes a 16-bit tensor's ops with Python scalars in float32); on CUDA copied from pinned memory without
    blocking, so the host does not wait on the device."""
    t = torch.tensor(values, dtype=torch.promote_types(like.dtype, torch.float32))
    if like.device.type == "cuda":
        t = t.pin_memory()
    return t.to(like.device, non_blocking=True)


def _columns(per_row: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """per_row (R,) as an [R, 1, ..., 1] view for each stacked tensor, to broadcast one scalar over each trial row."""
    views: dict[int, torch.Tensor] = {}
    return [views.setdefault(t.dim(), per_row.view(-1, *([1] * (t.dim() - 1)))) for t in tensors]


class PackedOptimizer:
    """torch.optim.AdamW / SGD (Nesterov), foreach, with the table's param groups, for trials stacked along dim 0.

    The steps replay torch.optim's _multi_tensor_adam (decoupled weight decay) and _multi_tensor_sgd op for op, on
    the stacked tensors: ops whose scalars all trials share as they are, the LR-dependent ones with the per-trial
    scalars as an (R,) device tensor broadcast over each trial row. So a step issues a fixed number of foreach calls
    over the parameter list, however many trials the pack holds (per-trial row views and one call per trial before:
    28 ms of host time a step at K = 8, d = 256), and never syncs with the device. Each trial gets torch's
    arithmetic: the same products, except that p + s * (m / d) is formed as p + (m / d) * s.
    """

    def __init__(self, skeleton: torch.nn.Module, parametrization: Parametrization, spec: OptimizerSpec,
                 width_mult: float):
        name_of = {id(p): n for n, p in skeleton.named_parameters()}
        groups = param_groups(skeleton, parametrization.groups(width_mult, spec.name), 1.0, spec.weight_decay)
        self.groups = [(g["lr_mult"], g["weight_decay"], [name_of[id(p)] for p in g["params"]]) for g in groups]
        self.spec = spec
        self.state: dict[str, dict[str, torch.Tensor]] = {}   # param name -> buffers, stacked like the param
        self.steps = 0                                         # updates done (all trials of a pack step together)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], base_lrs: list[float]) -> None:
        """One update; base_lrs[r] is trial row r's scheduled LR for a group of LR multiplier 1."""
        self.steps += 1
        for lr_mult, weight_decay, names in self.groups:
            lrs = [base_lr * lr_mult for base_lr in base_lrs]       # as gdn.optim.set_lr
            update = self._adamw if self.spec.name == "adamw" else self._sgd
            update([params[n] for n in names], [self.state.setdefault(n, {}) for n in names], lrs, weight_decay)

    def _adamw(self, ps, states, lrs, weight_decay) -> None:
        beta1, beta2 = self.spec.betas
        grads = [p.grad for p in ps]
        for p, s in zip(ps, states):
            if not s:
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        if weight_decay != 0:
            torch._foreach_mul_(ps, _columns(per_trial([1 - lr * weight_decay for lr in lrs], ps[0]), ps))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** float(self.steps)
        bias_correction2 = 1 - beta2 ** float(self.steps)
        step_sizes = per_trial([(lr / bias_correction1) * -1 for lr in lrs], ps[0])
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2 ** 0.5)
        torch._foreach_add_(denom, self.spec.eps)
        update = torch._foreach_div(exp_avgs, denom)
        torch._foreach_mul_(update, _columns(step_sizes, update))
        torch._foreach_add_(ps, update)

    def _sgd(self, ps, states, lrs, weight_decay) -> None:
        momentum = self.spec.momentum
        grads = [p.grad for p in ps]
        if weight_decay != 0:
            grads = torch._foreach_add(grads, ps, alpha=weight_decay)
        if momentum != 0:
            if all(states):
                bufs = [s["momentum_buffer"] for s in states]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1)          # dampening 0
            else:
                bufs = [g.detach().clone() for g in grads]
                for s, buf in zip(states, bufs):
                    s["momentum_buffer"] = buf
            torch._foreach_add_(grads, bufs, alpha=momentum)      # Nesterov (gdn.optim: nesterov iff momentum > 0)
        step = torch._foreach_mul(grads, _columns(per_trial([-lr for lr in lrs], ps[0]), grads))
        torch._foreach_add_(ps, step)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the trial rows in `index` (the others left the pack)."""
        for buffers in self.state.values():
            for name, buf in buffers.items():
                buffers[name] = buf[index]


@torch.no_grad()
def clip_grad_norm_per_trial(params: list[torch.Tensor], max_norm: float,
                             weights: list[float] | None = None) -> torch.Tensor:
    """gdn.optim.clip_grad_norm for each trial row on its own: returns the (R,) global grad norms before clipping
    (of the gradients weighted by `weights`, one per parameter, if given) and scales each row's gradients by
    min(1, max_norm / (norm + eps)). max_norm 0 disables clipping.

    A fixed number of device ops whatever the pack's size: the (weighted) gradients side by side as one (R, N)
    matrix, whose row norms are the trials' global norms (the sum of squares in another order than per parameter:
    the same norm up to rounding)."""
    grads = [p.grad for p in params]
    R = grads[0].shape[0]
    weighted = grads if weights is None else torch._foreach_mul(grads, weights)
    total = torch.linalg.vector_norm(torch.cat([g.reshape(R, -1) for g in weighted], dim=1), 2.0, dim=1)   # (R,)
    coef = ((max_norm if max_norm > 0 else math.inf) / (total + CLIP_EPS)).clamp(max=1.0)
    torch._foreach_mul_(grads, _columns(coef, grads))
    return total
