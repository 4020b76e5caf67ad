"""RMSNorm and its SiLU-gated form: the one entry (rms_norm), the reference, and the dispatch to Triton.

    y = x * rsqrt(mean(x^2) + eps) * weight  [* silu(gate)]

computed in float32 (float64 for float64 x) and rounded once to the output dtype: under autocast the autocast dtype,
which is what every consumer of y (a linear) would cast it to; otherwise x's dtype. The Triton kernels
(gdn.ops.triton.norm) run for CUDA tensors; the reference (plain PyTorch, autograd) everywhere else and is what
they are tested against.
"""
from __future__ import annotations

import functools
import warnings
import torch
import torch.nn.functional as F

from gdn.ops.fold import vmapped_call


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None,
                       out_dtype: torch.dtype | None = None) -> torch.Tensor:
    compute = torch.promote_types(x.dtype, torch.float32)
    xc = x.to(compute)
    y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)
    if gate is not None:
        y = y * F.silu(gate.to(compute))
    return y.to(out_dtype or x.dtype)


@functools.cache
def _load_triton():
    """gdn.ops.triton.norm, or None where it does not import (imported on first need)."""
    try:
        from gdn.ops.triton import norm as kernels
    except ImportError as e:
        warnings.warn(f"gdn.ops.triton.norm is not importable ({type(e).__name__}: {e}); RMSNorm runs in PyTorch",
                      RuntimeWarning, stacklevel=3)
        return None
    return kernels


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _fused_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Triton for non-empty CUDA tensors of 32 bits or fewer (float64 stays on the reference, which is exact there)
    whose rows the kernel holds in registers (MAX_D)."""
    if x.device.type != "cuda" or torch.float64 in (x.dtype, weight.dtype) or x.numel() == 0:
        return False
    kernels = _load_triton()
    return kernels is not None and x.shape[-1] <= kernels.MAX_D


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm of x [..., D] over its last dim, times weight [D], times silu(gate [..., D]) if given.

    Under torch.func.vmap (gdn.packed) the fused kernel takes the vmapped axis N as groups of rows, each with its
    own weight (x [N, ..., D], weight [N, D]), so K trials take one launch."""
    out_dtype = _output_dtype(x)
    if not _fused_applies(x, weight):
        return rms_norm_reference(x, weight, eps, gate, out_dtype)     # vmap batches this one op by op
    fused = functools.partial(_load_triton().triton_rms_norm, eps=eps, out_dtype=out_dtype)
    with torch.autocast(x.device.type, enabled=False):
        if torch._C._are_functorch_transforms_active():
            return vmapped_call(fused, x, weight, gate)
        return fused(x, weight, gate)
