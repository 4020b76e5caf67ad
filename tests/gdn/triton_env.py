"""Where the Triton tests run: on the GPU when there is one, else in Triton's CPU interpreter at tiny shapes.

Triton decides compile-or-interpret when a kernel is defined, so a test module calls `triton_device()` before it
imports any kernel: without CUDA it sets TRITON_INTERPRET=1 and drops kernels an earlier test module imported
compiled (and the dispatch's cache of them). Skips the module where Triton is not installed."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from gdn.ops.backend import load_kernel


def triton_device() -> str:
    """ "cuda" or "cpu" (the interpreter)."""
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
        for name in [m for m in sys.modules if m.startswith("gdn.ops.") and m.rsplit(".", 1)[1].startswith("triton")]:
            del sys.modules[name]                  # the kernel modules: gdn.ops.<op>.triton*
        load_kernel.cache_clear()                  # and the kernels a dispatch already took from them
    pytest.importorskip("triton")
    return "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius norm |x - ref| / |ref| over the whole tensor, in float64."""
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()
