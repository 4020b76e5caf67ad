"""The mixer's short causal depthwise convolution followed by SiLU: the one entry (causal_conv1d_silu), which picks
the Triton kernel or the reference.

    y[b, t, c] = silu( sum_j w[c, j] x[b, t - (W - 1) + j, c] ),   x = 0 before t = 0;   x, y (B, T, C)

Under autocast x and w are cast to the autocast dtype first, as autocast casts nn.Conv1d's input and weight; the
Triton kernel (triton.py) then sums in fp32 and rounds y once. It runs where the backend asks for it
(gdn.ops.backend: "auto" on CUDA); the reference (reference.py, nn.functional.conv1d) everywhere else, and is what
the kernel is tested against.
"""
from __future__ import annotations

import functools

import torch

from gdn.ops.backend import load_kernel, pick_kernel, run_kernel
from gdn.ops.short_conv.reference import causal_conv1d_silu_reference

_load_triton = functools.partial(load_kernel, "gdn.ops.short_conv.triton", "triton_causal_conv1d_silu")


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """silu(causal depthwise conv1d) of x (B, T, C) with weight (C, 1, W); y (B, T, C).

    The kernel takes non-empty tensors of 32 bits or fewer (float64 stays on the reference). Under torch.func.vmap
    (gdn.packed) it takes the vmapped axis N as groups of batch rows, each with its own weight, so K trials take one
    launch: (N, B, T, C) with (N, C, 1, W)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    applies = torch.float64 not in (x.dtype, weight.dtype) and x.numel() > 0
    kernel = pick_kernel(backend, x.device, _load_triton, applies=applies)
    if kernel is None:
        with torch.autocast(x.device.type, enabled=False):
            return causal_conv1d_silu_reference(x, weight)              # vmap batches this one op by op
    return run_kernel(kernel, x, weight)
