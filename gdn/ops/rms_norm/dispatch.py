"""RMSNorm and its SiLU-gated form: the one entry (rms_norm), which picks the Triton kernel or the reference.

    y = x * rsqrt(mean(x^2) + eps) * weight  [* silu(gate)]

computed in float32 (float64 for float64 x) and rounded once to the output dtype: under autocast the autocast dtype,
which is what every consumer of y (a linear) would cast it to; otherwise x's dtype. The Triton kernel (triton.py)
runs where the backend asks for it (gdn.ops.backend: "auto" on CUDA); the reference (reference.py, plain PyTorch)
everywhere else, and is what the kernel is tested against.
"""
from __future__ import annotations

import functools

import torch

from gdn.ops.backend import load_kernel, pick_kernel, run_kernel
from gdn.ops.rms_norm.reference import rms_norm_reference

MAX_D = 8192             # one Triton program holds a whole row (D floats) in registers; longer rows: the reference

_load_triton = functools.partial(load_kernel, "gdn.ops.rms_norm.triton", "triton_rms_norm")


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None,
             backend: str = "auto") -> torch.Tensor:
    """RMSNorm of x [..., D] over its last dim, times weight [D], times silu(gate [..., D]) if given.

    The kernel takes non-empty tensors of 32 bits or fewer (float64 stays on the reference, which is exact there)
    with D <= MAX_D. Under torch.func.vmap (gdn.packed) it takes the vmapped axis N as groups of rows, each with its
    own weight (x [N, ..., D], weight [N, D]), so K trials take one launch."""
    out_dtype = _output_dtype(x)
    applies = torch.float64 not in (x.dtype, weight.dtype) and x.numel() > 0 and x.shape[-1] <= MAX_D
    kernel = pick_kernel(backend, x.device, _load_triton, applies=applies)
    if kernel is None:
        return rms_norm_reference(x, weight, eps, gate, out_dtype)     # vmap batches this one op by op
    return run_kernel(functools.partial(kernel, eps=eps, out_dtype=out_dtype), x, weight, gate)
