"""The mixer's short causal depthwise convolution followed by SiLU: the one entry (causal_conv1d_silu), the
reference, and the dispatch to Triton.

    y[b, t, c] = silu( sum_j w[c, j] x[b, t - (W - 1) + j, c] ),   x = 0 before t = 0;   x, y (B, T, C)

Under autocast x and w are cast to the autocast dtype first, as autocast casts nn.Conv1d's input and weight; the
Triton kernels (gdn.ops.triton.conv) then sum in fp32 and round y once. They run for CUDA tensors; the reference
(nn.functional.conv1d, autograd) everywhere else and is what they are tested against.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from gdn.ops.fold import vmapped_call


def causal_conv1d_silu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), weight (C, 1, W) as nn.Conv1d(C, C, W, groups=C) holds it."""
    T, W = x.shape[1], weight.shape[-1]
    a = F.conv1d(x.transpose(1, 2), weight, padding=W - 1, groups=x.shape[-1])[..., :T]   # causal: drop the right pad
    return F.silu(a.transpose(1, 2))


@functools.cache
def _load_triton() -> Callable | None:
    try:
        from gdn.ops.triton.conv import triton_causal_conv1d_silu
    except ImportError as e:
        warnings.warn(f"gdn.ops.triton.conv is not importable ({type(e).__name__}: {e}); the short conv runs in "
                      "PyTorch", RuntimeWarning, stacklevel=3)
        return None
    return triton_causal_conv1d_silu


def _fused_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Triton for CUDA tensors of 32 bits or fewer (float64 stays on the reference)."""
    return x.device.type == "cuda" and torch.float64 not in (x.dtype, weight.dtype) and x.numel() > 0


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """silu(causal depthwise conv1d) of x (B, T, C) with weight (C, 1, W); y (B, T, C).

    Under torch.func.vmap (gdn.packed) the fused kernel takes the vmapped axis N as groups of batch rows, each
    with its own weight, so K trials take one launch."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        fused = _load_triton() if _fused_applies(x, weight) else None
        if fused is None:
            return causal_conv1d_silu_reference(x, weight)              # vmap batches this one op by op
        if torch._C._are_functorch_transforms_active():
            return vmapped_call(fused, x, weight)                       # (N, B, T, C) with (N, C, 1, W)
        return fused(x, weight)
