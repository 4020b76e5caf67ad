"""The mixer's short causal depthwise convolution followed by SiLU, in plain PyTorch (nn.functional.conv1d,
autograd): the spec the Triton kernel is tested against.

    y[b, t, c] = silu( sum_j w[c, j] x[b, t - (W - 1) + j, c] ),   x = 0 before t = 0;   x, y (B, T, C)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_silu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), weight (C, 1, W) as nn.Conv1d(C, C, W, groups=C) holds it."""
    T, W = x.shape[1], weight.shape[-1]
    a = F.conv1d(x.transpose(1, 2), weight, padding=W - 1, groups=x.shape[-1])[..., :T]   # causal: drop the right pad
    return F.silu(a.transpose(1, 2))
