"""The optimizer of a pack (gdn.packed): torch's foreach AdamW and SGD-Nesterov replayed on parameters stacked along a
leading trial axis, each trial with its own LR, and the global-norm gradient clip per trial."""
from __future__ import annotations

import math

import torch

from gdn.optim import CLIP_EPS
from gdn.parametrization import Parametrization, param_groups
from gdn.spec import OptimizerSpec


def _columns(per_row: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """per_row (R,) as an [R, 1, ..., 1] view for each stacked tensor, to broadcast one scalar over each trial row."""
    views: dict[int, torch.Tensor] = {}
    return [views.setdefault(t.dim(), per_row.view(-1, *([1] * (t.dim() - 1)))) for t in tensors]


class PackedOptimizer:
    """torch.optim.AdamW / SGD (Nesterov), foreach, with the table's param groups, for trials stacked along dim 0.

    The steps replay torch.optim's _multi_tensor_adam (decoupled weight decay) and _multi_tensor_sgd op for op, on
    the stacked tensors: ops whose scalars all trials share as they are, the LR-dependent ones with the per-trial
    scalars as an (R,) device tensor broadcast over each trial row. Every scalar that changes between steps (the
    LRs, Adam's bias corrections) is a device tensor computed on the device from the base LRs and the step count,
    so a step issues the same ops every time, never syncs with the host, and can be captured in a CUDA graph with
    the forward and backward (gdn.packed): no host time per op at all (28 ms a step at K = 8, d = 256 when each
    trial had its own calls). The scalars are formed in float64 and rounded to the update's precision, as torch
    rounds its Python-float scalars; each trial gets torch's arithmetic, except that p + s * (m / d) is formed as
    p + (m / d) * s, and SGD's momentum buffer starts at zero (its first step, 0 * momentum + grad, is torch's
    clone of the gradient exactly).
    """

    def __init__(self, skeleton: torch.nn.Module, parametrization: Parametrization, spec: OptimizerSpec,
                 width_mult: float):
        name_of = {id(p): n for n, p in skeleton.named_parameters()}
        groups = param_groups(skeleton, parametrization.groups(width_mult, spec.name), 1.0, spec.weight_decay)
        self.groups = [(g["lr_mult"], g["weight_decay"], [name_of[id(p)] for p in g["params"]]) for g in groups]
        self.spec = spec
        self.state: dict[str, dict[str, torch.Tensor]] = {}   # param name -> buffers, stacked like the param
        self.step_count: torch.Tensor | None = None           # updates done, float64 on the params' device

    @torch.no_grad()
    def init_state(self, params: dict[str, torch.Tensor]) -> None:
        """Every buffer, zeroed, before the first step: a CUDA graph captures only tensors that already exist."""
        buffers = ("exp_avg", "exp_avg_sq") if self.spec.name == "adamw" else \
            ("momentum_buffer",) if self.spec.momentum != 0 else ()
        for _, _, names in self.groups:
            for n in names:
                self.state[n] = {b: torch.zeros_like(params[n], memory_format=torch.preserve_format) for b in buffers}
        self.step_count = torch.zeros((), dtype=torch.float64, device=next(iter(params.values())).device)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], base_lr: torch.Tensor) -> None:
        """One update; base_lr (R,) float64 on the params' device is each trial row's scheduled LR for a group of LR
        multiplier 1."""
        if self.step_count is None:
            self.init_state(params)
        self.step_count.add_(1)
        update = self._adamw if self.spec.name == "adamw" else self._sgd
        for lr_mult, weight_decay, names in self.groups:
            update([params[n] for n in names], [self.state[n] for n in names], base_lr * lr_mult, weight_decay)

    def _adamw(self, ps, states, lrs, weight_decay) -> None:
        beta1, beta2 = self.spec.betas
        opmath = torch.promote_types(ps[0].dtype, torch.float32)   # the precision torch's foreach ops compute in
        grads = [p.grad for p in ps]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        if weight_decay != 0:
            torch._foreach_mul_(ps, _columns((1 - lrs * weight_decay).to(opmath), ps))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2 = 1 - beta2 ** self.step_count
        step_sizes = ((lrs / bias_correction1) * -1).to(opmath)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2.sqrt().to(opmath))
        torch._foreach_add_(denom, self.spec.eps)
        update = torch._foreach_div(exp_avgs, denom)
        torch._foreach_mul_(update, _columns(step_sizes, update))
        torch._foreach_add_(ps, update)

    def _sgd(self, ps, states, lrs, weight_decay) -> None:
        momentum = self.spec.momentum
        opmath = torch.promote_types(ps[0].dtype, torch.float32)
        grads = [p.grad for p in ps]
        if weight_decay != 0:
            grads = torch._foreach_add(grads, ps, alpha=weight_decay)
        if momentum != 0:
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1)              # dampening 0
            torch._foreach_add_(grads, bufs, alpha=momentum)      # Nesterov (gdn.optim: nesterov iff momentum > 0)
        step = torch._foreach_mul(grads, _columns((-lrs).to(opmath), grads))
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
