"""The mean cross-entropy of scale * logits in plain PyTorch (autograd): the spec the Triton kernel is tested against,
and what the trainers compute wherever the kernel is not taken.

    loss = mean_i ( logsumexp_j(s z_ij) - s z_i,t_i ),   z = logits [N, V], t = target [N], s = scale

The product s z is formed as a multiplication in the logits' dtype forms it (a tensor scale rounded to that dtype
first, as torch.func.vmap's batched multiply by a per-trial multiplier did in the packed trainer), then the loss is
taken in float32 whatever the logits' dtype (float64 logits too), or in `dtype` (float64: the tests' exact
reference). That is bit for bit what the trainers computed before this op existed (`(logits * logit_mult).float()`,
then F.cross_entropy). The Triton kernel keeps s z in fp32 instead: one rounding fewer, which is within its
tolerance of the float64 loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_logits(logits: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """scale * logits in logits' dtype; a tensor scale is first rounded to that dtype."""
    if isinstance(scale, torch.Tensor):
        return logits * scale.to(logits.dtype)
    return logits if scale == 1.0 else logits * scale


def cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor, scale: float | torch.Tensor = 1.0,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """logits [N, V], target [N] -> the mean loss (0-d); or groups, logits [G, N, V], target [G, N], scale one
    number or one per group (G,) -> each group's mean loss (G,), one group at a time."""
    if logits.ndim == 3:
        scales = scale if isinstance(scale, torch.Tensor) and scale.numel() > 1 else [scale] * logits.shape[0]
        return torch.stack([cross_entropy_reference(z, t, s, dtype) for z, t, s in zip(logits, target, scales)])
    return F.cross_entropy(scaled_logits(logits, scale).to(dtype), target)
