"""One forward and backward of the gated delta rule at a shape, twice (the first compiles): a target for a kernel
profiler, which then times the second call's kernels alone.

    ncu --clock-control none -k "regex:_chunk_grad_rows_kernel|_chunk_grad_dqdk_kernel" --launch-skip 2 \\
        --launch-count 2 --section SpeedOfLight --section WarpStateStats \\
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\\.ratio" \\
        python3 benchmarks/one_step.py 8,2048,16,128,128 [ours | fla | an OURS_VARIANTS name]

(--launch-skip: the number of matching kernels one call launches, so that the first call's are skipped.)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdn_kernels import _impl, _inputs  # noqa: E402


def main() -> None:
    import torch
    shape = tuple(int(x) for x in sys.argv[1].split(","))
    fn = _impl(sys.argv[2] if len(sys.argv) > 2 else "ours")
    xs, do = _inputs(*shape)
    xs = [x.requires_grad_() for x in xs]
    for _ in range(2):
        fn(*xs).backward(do)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
