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
from typing import Callable

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
def _load_triton() -> Callable | None:
    try:
        from gdn.ops.triton.norm import MAX_D, triton_rms_norm
    except ImportError as e:
        warnings.warn(f"gdn.ops.triton.norm is not importable ({type(e).__name__}: {e}); RMSNorm runs in PyTorch",
                      RuntimeWarning, stacklevel=3)
        return None
    return lambda x, *args: triton_rms_norm(x, *args) if 0 < x.numel() and x.shape[-1] <= MAX_D else None


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _fused_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Triton for CUDA tensors of 32 bits or fewer (float64 stays on the reference, which is exact there)."""
    return x.device.type == "cuda" and torch.float64 not in (x.dtype, weight.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm of x [..., D] over its last dim, times weight [D], times silu(gate [..., D]) if given.

    Under torch.func.vmap (gdn.packed) the vmapped axis is folded into the rows and each vmapped slice keeps its own
    weight, so K trials take one launch."""
    out_dtype = _output_dtype(x)
    if _fused_applies(x, weight):
        fused = _load_triton()
        if fused is not None:
            with torch.autocast(x.device.type, enabled=False):
                if torch._C._are_functorch_transforms_active():
                    return vmapped_call(functools.partial(_grouped_rows, eps=eps, out_dtype=out_dtype), x, weight, gate)
                y = fused(x, weight, eps, gate, out_dtype)
            if y is not None:
                return y
    return rms_norm_reference(x, weight, eps, gate, out_dtype)


def _grouped_rows(x, weight, gate, eps, out_dtype):
    """x [N, ..., D], weight [N, D], gate None or like x: slice n of x normed with weight[n], in one fused call."""
    y = _load_triton()(x, weight, eps, gate, out_dtype)
    if y is None:                                   # a shape the kernel does not take
        y = rms_norm_reference(x, weight.view(x.shape[0], *([1] * (x.dim() - 2)), -1), eps, gate, out_dtype)
    return y
