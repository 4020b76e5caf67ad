"""How every op in gdn.ops (the gated delta rule, RMSNorm, the short conv, the cross-entropy) picks and runs its
Triton kernel.

Each op takes `backend`, one of BACKENDS, chosen once by the model (GDNModel(..., backend=...)) and passed down:
    "auto"    the op's Triton kernel for CUDA tensors where it applies (and, for the gated delta rule and the
              cross-entropy, where it has been validated on a card), else plain PyTorch
    "triton"  the Triton kernel wherever it applies, on any device (on the CPU in Triton's interpreter,
              TRITON_INTERPRET=1); an error if it does not import
    "chunk"   plain PyTorch: the chunked algorithm for the gated delta rule, the reference for the others
    "naive"   plain PyTorch: the token-by-token recurrence for the gated delta rule, the reference for the others
Triton is imported only when a kernel is first asked for, so gdn imports with torch alone.

A kernel runs with autocast off (it owns its precision) and, under torch.func.vmap as packed training runs the model
(gdn.packed), once for all vmapped slices (`vmapped_call`): a Triton kernel or a custom autograd Function cannot be
vmapped op by op. The kernel is handed each vmapped input with its vmapped axis moved first (an input that is not
vmapped is expanded along a new first axis), and treats that axis as it likes: a batch to fold into its own (the
gated delta rule) or groups of rows with one weight each (RMSNorm, the short conv). Autograd records the kernel's
own graph and backward; only vmap is supported, not torch.func.grad or jvp around the op.
"""
from __future__ import annotations

import functools
import importlib
import warnings
from typing import Callable

import torch

BACKENDS = ("auto", "chunk", "naive", "triton")
SMS_OFF_CUDA = 132       # an H100's SM count: grids off CUDA are sized for the card the kernels are compiled for


def check_backend(backend: str) -> None:
    """Raise ValueError unless backend is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


@functools.cache
def load_kernel(module: str, name: str) -> tuple[Callable | None, str]:
    """(the function `name` of the kernel module `module`, "") or (None, why it does not import). Imported once,
    on first need."""
    try:
        return getattr(importlib.import_module(module), name), ""
    except ImportError as e:                                       # no triton, or a kernel that does not compile
        return None, f"{module} is not importable: {type(e).__name__}: {e}"


def pick_kernel(backend: str, device: torch.device, load: Callable[[], tuple[Callable | None, str]], *,
                applies: bool = True, validated: bool = True) -> Callable | None:
    """The Triton kernel a call with `backend` on `device` runs, or None for plain PyTorch.

    applies: the kernel takes these inputs (dtype, size); else PyTorch whatever the backend.
    validated: "auto" may take the kernel for these inputs on CUDA ("triton" takes it regardless).
    load: () -> (kernel or None, why), e.g. a partial of load_kernel.

    Raises ValueError for an unknown backend, RuntimeError when "triton" is asked for and the kernel does not import
    ("auto" then warns and runs PyTorch)."""
    check_backend(backend)
    if backend in ("chunk", "naive") or not applies:
        return None
    if backend == "auto" and (device.type != "cuda" or not validated):
        return None
    kernel, why = load()
    if kernel is None:
        if backend == "triton":
            raise RuntimeError(f"backend 'triton' was asked for but {why}")
        warnings.warn(f"{why}; the op runs in plain PyTorch", RuntimeWarning, stacklevel=3)
    return kernel


def run_kernel(kernel: Callable, *args, vmapped: Callable | None = None):
    """kernel(*args) with autocast off; under torch.func.vmap, `vmapped` (default: the kernel itself) once over all
    vmapped slices, each vmapped input with its vmapped axis first. args[0] is a tensor (it names the device)."""
    with torch.autocast(args[0].device.type, enabled=False):
        if torch._C._are_functorch_transforms_active():
            return vmapped_call(vmapped or kernel, *args)
        return kernel(*args)


def vmapped_call(fn: Callable, *args):
    """fn(*args) with vmapped tensors' vmapped axis first; call only while a functorch transform is active."""
    return _VmappedCall.apply(fn, *args)


class _VmappedCall(torch.autograd.Function):
    @staticmethod
    def forward(fn, *args):
        raise NotImplementedError("this op supports torch.func.vmap, not other torch.func transforms")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, fn, *args):
        N = info.batch_size

        def first(x, dim):
            if not isinstance(x, torch.Tensor):
                return x
            return x.movedim(dim, 0) if dim is not None else x.expand(N, *x.shape)

        out = fn(*(first(x, dim) for x, dim in zip(args, in_dims[1:])))
        if isinstance(out, tuple):
            return out, tuple(None if o is None else 0 for o in out)
        return out, 0


@functools.cache
def _cuda_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """The device's SM count, for sizing the kernels' grids; SMS_OFF_CUDA off CUDA, where the kernels run in the
    interpreter or are compiled ahead of time for an H100 (benchmarks/triton_resources.py)."""
    if device.type != "cuda":
        return SMS_OFF_CUDA
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


def round_like_the_card() -> None:
    """Make Triton's CPU interpreter round fp32 to bf16 to nearest even, as the card does (`cvt.rn.bf16.f32`); the
    interpreter (Triton 3.6-3.9) truncates, which doubled every bf16 rounding error the interpreted checks saw (at
    the wide-head stress cases 2-3 x the card's errors, 2026-12-07). Every kernel module calls this at import; it
    does nothing unless TRITON_INTERPRET=1, and patches the interpreter once."""
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.cast_impl, "rounds_to_nearest", False):
        return
    truncating = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = np.ascontiguousarray(src.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            nan = np.isnan(src.data)
            if nan.any():
                rounded = np.where(nan, np.uint16(0x7FC0), rounded)
            return interpreter.TensorHandle(rounded.reshape(np.shape(src.data)), tl.bfloat16)
        return truncating(self, src, dst_type)

    cast_impl.rounds_to_nearest = True
    builder.cast_impl = cast_impl
