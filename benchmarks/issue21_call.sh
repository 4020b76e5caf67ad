#!/bin/bash
# Issue 21's next device call, one H100, about 8 minutes; carry .flasite (fla's wheels, README's recipe):
#     run(command="bash benchmarks/issue21_call.sh", carry=[".flasite"], timeout_s=560)
# With less device time left, ISSUE21_S=<seconds> (default 480) is the whole call's deadline.
# It checks and times the default of 2026-12-08 (k dS and dq, dk's products on bf16 operands, Aqk^T dO in bf16,
# the state backward at 4 warps, 3 stages, all at K <= 128 only; checked on an H100 that day as ours-ops-w4 at the
# bf16 shapes):
# 1. every benchmark shape and dtype against the float64 reference, and the small cases (kernels_and_packing.py's
#    checks stage), while every timed cell compiles;
# 2. ours, fla and ours-lean (TILED_GRAD_COPIES=bf16, TILED_KTILE_CC=k-tiles, TILED_ROW_DOTS=k-tiles on top of the
#    default; the default before, ours-before, was timed beside this one on 2026-12-08 as ours) at every shape of the
#    reference table, wide first, CUDA ms per kernel.
# What comes back is three files under $OUT/k (summary.md, summary.json, details.tar.gz): the device returns at most 8.
cd "$(dirname "$0")/.."
mkdir -p "$OUT/k" /tmp/site && tar -C /tmp/site -xJf .flasite/site_all.tar.xz
IMPLS=ours,fla,ours-lean
S=${ISSUE21_S:-480}
PYTHONPATH=/tmp/site:. python3 benchmarks/kernels_and_packing.py --out "$OUT/k" --deadline "$S" \
    --checks-s $(( S * 170 / 480 )) --kernels-min-s $(( S * 280 / 480 )) --packing-s 0 --impls "$IMPLS" \
    --load-autotune benchmarks/autotune/fla-0.6.0-h100-triton3.6.tgz
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
