"""A pytest plugin for the card's float64 checks (benchmarks/kernels_and_packing.py loads it with `-p`): every test
hands the GPU memory it cached back when it ends.

Why: the checks run as many pytest processes (and xdist workers) at once on one card, beside the kernels compiling
for the timings. PyTorch's allocator keeps what a test freed for its own process, and a float64 reference at the
large shapes takes several GiB, so without this one worker's leftovers can run another out of memory: a failure of
the check that says nothing about the kernels."""
from __future__ import annotations

import sys


def pytest_runtest_teardown(item, nextitem):
    torch = sys.modules.get("torch")                 # a test that used the GPU has imported it already
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
