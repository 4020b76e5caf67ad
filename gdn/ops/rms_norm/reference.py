"""RMSNorm and its SiLU-gated form in plain PyTorch (autograd): the spec the Triton kernel is tested against.

    y = x * rsqrt(mean(x^2) + eps) * weight  [* silu(gate)]

computed in float32 (float64 for float64 x) and rounded once to out_dtype (default x's dtype).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None,
                       out_dtype: torch.dtype | None = None) -> torch.Tensor:
    compute = torch.promote_types(x.dtype, torch.float32)
    xc = x.to(compute)
    y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)
    if gate is not None:
        y = y * F.silu(gate.to(compute))
    return y.to(out_dtype or x.dtype)
