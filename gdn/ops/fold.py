"""Running a fused op (a Triton kernel, a custom autograd Function) under torch.func.vmap, as packed training does.

Such an op cannot be vmapped op by op. `vmapped_call(fn, *args)` runs fn once on plain tensors instead, each
vmapped input with its vmapped axis moved first (an input that is not vmapped is expanded along a new first axis),
and hands fn's outputs back to vmap as batched along that first axis. fn then treats the axis as it likes: a batch
to fold into its own (the gated delta rule) or groups of rows with one weight each (RMSNorm, the short conv).
Autograd records fn's own graph and backward; only vmap is supported, not torch.func.grad or jvp around the op.
"""
from __future__ import annotations

from typing import Callable

import torch


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
