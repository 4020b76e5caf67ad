"""The optimizer of a pack (gdn.packed): torch's foreach AdamW and SGD-Nesterov replayed on parameters stacked along a
leading trial axis, each trial with its own LR, and the global-norm gradient clip per trial."""
from __future__ import annotations

import math

import torch

from gdn.optim import CLIP_EPS
from gdn.parametrization import Parametrization, param_groups
from gdn.spec import OptimizerSpec


class _RowViews:
    """Per-trial views of stacked tensors ([t0[0], t0[1], ..., t1[0], ...]), made once per tensor: a view costs
    microseconds and a pack updates thousands of them each step. Valid while the tensors are updated in place."""

    def __init__(self):
        self._views: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def __call__(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        rows = []
        for t in tensors:
            cached = self._views.get(id(t))
            if cached is None or cached[0] is not t:
                cached = self._views[id(t)] = (t, t.unbind(0))
            rows.extend(cached[1])
        return rows

    def clear(self) -> None:
        self._views.clear()


class PackedOptimizer:
    """torch.optim.AdamW / SGD (Nesterov), foreach, with the table's param groups, for trials stacked along dim 0.

    The steps replay torch.optim's _multi_tensor_adam (decoupled weight decay) and _multi_tensor_sgd op for op:
    ops whose scalars all trials share run on the stacked tensors, the LR-dependent ones on per-trial slices with
    per-trial scalars. Elementwise ops do not care how tensors are grouped, so each trial gets torch's arithmetic.
    """

    def __init__(self, skeleton: torch.nn.Module, parametrization: Parametrization, spec: OptimizerSpec,
                 width_mult: float):
        name_of = {id(p): n for n, p in skeleton.named_parameters()}
        groups = param_groups(skeleton, parametrization.groups(width_mult, spec.name), 1.0, spec.weight_decay)
        self.groups = [(g["lr_mult"], g["weight_decay"], [name_of[id(p)] for p in g["params"]]) for g in groups]
        self.spec = spec
        self.state: dict[str, dict[str, torch.Tensor]] = {}   # param name -> buffers, stacked like the param
        self.steps = 0                                         # updates done (all trials of a pack step together)
        self.rows = _RowViews()                                # of the parameters and the state buffers

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
            torch._foreach_mul_(self.rows(ps), [1 - lr * weight_decay for _ in ps for lr in lrs])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** float(self.steps)
        bias_correction2 = 1 - beta2 ** float(self.steps)
        step_sizes = [(lr / bias_correction1) * -1 for _ in ps for lr in lrs]
        denom = torch._foreach_sqrt(self.rows(exp_avg_sqs))          # per trial row, as are the ops below
        torch._foreach_div_(denom, [bias_correction2 ** 0.5] * len(denom))
        torch._foreach_add_(denom, self.spec.eps)
        torch._foreach_addcdiv_(self.rows(ps), self.rows(exp_avgs), denom, step_sizes)

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
        R = len(lrs)
        p_rows, g_rows = self.rows(ps), [row for g in grads for row in g.unbind(0)]
        for r, lr in enumerate(lrs):                               # alpha is one scalar per call: one call per trial
            torch._foreach_add_(p_rows[r::R], g_rows[r::R], alpha=-lr)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the trial rows in `index` (the others left the pack)."""
        self.rows.clear()
        for buffers in self.state.values():
            for name, buf in buffers.items():
                buffers[name] = buf[index]


@torch.no_grad()
def clip_grad_norm_per_trial(params: list[torch.Tensor], max_norm: float,
                             weights: torch.Tensor | None = None) -> torch.Tensor:
    """gdn.optim.clip_grad_norm for each trial row on its own: returns the (R,) global grad norms before clipping
    (of the gradients weighted by `weights`, a (P,) tensor on the gradients' device, if given) and scales each row's
    gradients by min(1, max_norm / (norm + eps)). max_norm 0 disables clipping."""
    grads = [p.grad for p in params]
    R = grads[0].shape[0]
    rows = [row for g in grads for row in g.unbind(0)]                  # [param][trial] order
    per_param = torch.stack(torch._foreach_norm(rows, 2.0)).view(len(grads), R)   # (P, R)
    if weights is not None:
        per_param = per_param * weights[:, None]
    total = torch.linalg.vector_norm(per_param.t().contiguous(), 2.0, dim=1)      # (R,)
    coef = ((max_norm if max_norm > 0 else math.inf) / (total + CLIP_EPS)).clamp(max=1.0)
    for r in range(R):
        torch._foreach_mul_(rows[r::R], coef[r])
    return total
