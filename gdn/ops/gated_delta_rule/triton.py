"""The Triton chunked gated delta rule: launchers, the autograd Function and the public entry.

Two paths, chosen in one place (`wide_heads`): below TILED_MIN_K (bf16 and fp16: 128; fp32: never) the fused
kernels (triton_fwd.py, triton_bwd.py; forward 2 launches: prep, state; backward 2: state, grad), which win where the
per-chunk work is small; at K >= TILED_MIN_K the wide-head kernels (triton_tiled.py; forward 3: prep, state,
output; backward 5: Aqk^T dO, state, the gradient by K tiles, its reduction, dq and dk), with bf16 operands in some
products for bf16 inputs (TILED_BF16).
Every intermediate is stored in fp32, except on the wide-head path with bf16 inputs: there the per-chunk states h,
dh, w and the gradient's V-sums are stored in bf16 (TILED_STATE, TILED_WU, TILED_SUMS), as fla stores them, and five
more products take bf16 operands (TILED_BF16_MORE); checked against float64 on an H100 at every bf16 benchmark shape
(docs/benchmarks.md, "The bf16 candidate on the card").
With fp32 inputs every tl.dot runs in full fp32 ("ieee", no TF32); with 16-bit inputs the products of two raw inputs
(K K^T, Q K^T) take them as they are and every other fp32-operand product runs in TF32.

Saved for the backward (besides the inputs): w [B,T,H,K]; Aqk, T [B,T,H,64]; G, 1/|q|, 1/|k| [B,T,H]; the state at
every chunk start h [B,NT,H,K,V]; vn [B,T,H,V].
"""
from __future__ import annotations

import os
import warnings

import torch
import triton

from gdn.ops.backend import num_sms
from gdn.ops.gated_delta_rule.chunk import CHUNK_SIZE, chunk_gated_delta_rule
from gdn.ops.gated_delta_rule.triton_bwd import GRAD_ROWS, _chunk_grad_kernel, _chunk_state_bwd_kernel
from gdn.ops.gated_delta_rule.triton_fwd import _chunk_prep_kernel, _chunk_state_fwd_kernel
from gdn.ops.gated_delta_rule.triton_tiled import (MORE_BITS, WY_PARTS, _chunk_dvn_local_kernel,
                                                   _chunk_grad_dqdk_kernel, _chunk_grad_dqk_kernel,
                                                   _chunk_grad_ktile_kernel, _chunk_grad_reduce_kernel,
                                                   _chunk_grad_rows_kernel, _chunk_grad_vtile_kernel,
                                                   _chunk_grad_wy_kernel, _chunk_output_kernel,
                                                   _chunk_state_bwd_tiled_kernel, _chunk_state_fwd_tiled_kernel)

# CHUNK_SIZE (64) tokens per chunk: the in-kernel solve splits a chunk into four 16-row blocks
MAX_HEAD_DIM_K = 256       # the state passes hold a whole [K, BV] state tile in registers
MAX_TILE = 64              # K and V tiles of the per-chunk kernels
L2NORM_EPS = 1e-6          # as naive.l2_normalize
SOLVE_SCRATCH = CHUNK_SIZE * 16   # floats of scratch per program for the block solve

# Fixed launch configs (num_warps per kernel). Each one is checked against the float64 reference by
# tests/gdn/test_triton.py on the GPU; change them only together with that run.
# Registers and spills below are as benchmarks/triton_resources.py gives them since 2026-12-07 (evening), with the
# JIT's argument specialisation, i.e. as the card compiles the kernels (sm_90, Triton 3.9 offline; ncu on an H100
# read 188 / 246 / 165 registers for the gradient by K tiles / the reduction / dq, dk, where this gives 189 / 255 /
# 166). Figures from before then were of unspecialised code (no load vectorised or pipelined) and overstated every
# spill: the choices made on them were then checked on the card by time, not by spills.
# The wide-head gradient V tiles at 8 warps. The gradient by K tiles at 4 warps, 2 stages and dq, dk,
# dv, dbeta at 4 warps, 1 stage, with the bf16 storage below: on an H100 (2026-12-07, commit 15e9431) they passed every
# 16-bit benchmark shape's float64 check, T = 16384 included (where 4 warps for every kernel at once crashed), and took
# 0.485 / 0.510 ms against 0.867 / 0.846 at 8 warps at (8, 2048, 16, 128, 128) (docs/benchmarks.md, "The bf16 candidate
# on the card"). The state forward at 4 warps, 2 stages: 0.147 ms against 0.204 at 8 warps there and 0.113 against 0.152
# at (16, 1024, 6, 128, 256), every 16-bit benchmark shape passed (H100, 2026-12-07, "Fewer bytes in the gradient"); at
# 3 stages 0.407 ms against 0.624 at (2, 16384, 16, 128, 128) and 0.195 against 0.203 at (8, 2048, 16, 128, 128). The
# reduction from the forward's rows at 4 warps: 0.404 / 0.810 ms against 0.507 / 1.023 at 8 warps at those two shapes
# (H100, 2026-12-07, "Launch configs at the long shape"; both passed the float64 checks at every bf16 benchmark shape as
# that call's ours-tuned, the reduction then in a layout reverted since; in this layout its outputs were within 1.5e-4
# of the checked 8-warp config's). The state backward with its k dS in TF32 stays at 8 warps: at 4 warps (2 or 3
# stages) its outputs were 1.1e2 (relative) off the 8-warp config's at T = 16384 (right at T = 2048, and 0.67 against
# 0.92 ms at the long shape): the kernel behind the morning's failure of every wide-head kernel at 4 warps at once.
# The wide-head state backward where its k dS takes bf16 operands (bf16 inputs, K <= NARROW_OPS_MAX_K) at 4 warps,
# 3 stages: on an H100 (2026-12-08, benchmarks' ours-ops-w4) it passed every bf16 benchmark shape at K = 128,
# T = 16384 included, where with k dS in TF32 4 warps had put the outputs 1.1e2 off (above), and with the other
# K <= 128 changes below took fwd+bwd 4.925 against 5.360 ms at (2, 16384, 16, 128, 128). Elsewhere
# (state_bwd_tiled_tf32: fp16, and K = 256) it stays at 8 warps: fp16 at K, V = 128, 256 with 4 warps, 3 stages
# needs 264 KB of shared memory (benchmarks/triton_resources.py), and at K = 256 that launch hit an illegal memory
# access on the card (2026-12-08).
NUM_WARPS = dict(prep=4, prep_looped=8, state_fwd=4, state_bwd=4, grad=8, state_fwd_tiled=4, state_bwd_tiled=4,
                 state_bwd_tiled_tf32=8, grad_vtile=8, grad_ktile=4, grad_reduce=8, grad_dqdk=4, output=4,
                 dvn_local=4, grad_dqk=8, grad_wy=8, grad_rows=4)
NUM_STAGES = dict(prep=1, prep_looped=1, state_fwd=2, state_bwd=2, grad=1, state_fwd_tiled=3, state_bwd_tiled=3,
                  state_bwd_tiled_tf32=2, grad_vtile=1, grad_ktile=2, grad_reduce=1, grad_dqdk=1, output=1,
                  dvn_local=1, grad_dqk=1, grad_wy=1, grad_rows=1)
# At K = 256 two stages of the state passes' [BT, K] fp32 tiles need 258 KB of shared memory, over an H100's 227 KB
# (OutOfResources on the card, 2026-11-27): there they run unpipelined.
STATE_STAGES_MAX_K = 128
# Split-bf16 products of input tiles with fp32 tiles (see _dot_input) up to this K; TF32 above. On Triton 3.6 / H100
# the split form is validated at K = 32 (forward and backward); at K >= 64 it crashed the forward state pass
# (illegal memory access, NaN), where TF32 was right (docs/benchmarks.md, Kernels, 2026-11-26). To check a new card
# or Triton version against the reference, change it here and run tests/gdn/test_triton.py there.
SPLIT_MAX_K = 32
# On the card the kernels crashed (illegal memory access, split or TF32 products alike) at K = 16 with 16-wide K
# tiles (H100, Triton 3.6, 2026-11-26). K tiles are now at least 32 wide (_k_tile), and K = 16 then matched the
# float64 reference on the card in bf16 and fp32, forward and every gradient (2026-11-27, docs/benchmarks.md,
# Kernels). Narrower K has not run there and takes the chunked path on CUDA. To check another card or Triton
# version against the reference, lower it here and run tests/gdn/test_triton.py there.
MIN_CUDA_HEAD_DIM_K = 16
GRAD_BLOCK_V = 32          # V tile of the grad kernel (its [C, C] fp32 tiles fill the registers)

# The wide-head path (triton_tiled.py) from this head dim K up, per input dtype (None: never). At K = 128-256 the
# fused kernels spill and lost to fla 0.6.0 by 1.8-2.7 x on an H100; at K <= 64 they beat it (docs/benchmarks.md,
# Kernels). On an H100 (Triton 3.6, 2026-12-06, commit 2107bcb; docs/benchmarks.md, "The wide-head kernels on the
# card") the wide-head path matched the float64 reference in bf16 at every benchmark shape (K = 128 at V = 128 and
# 256, K = 256 at V = 64) and in fp16 at K = 128, V = 256 (fp16's only wide check shape; `auto` takes fp16 up to
# K = 128), and beat the fused kernels by 11-24 % fwd+bwd at every wide shape (bf16): on from K = 128 for both.
# fp32 stays on the fused kernels: of its checks only [2, 1024, 6, 128, 256] ran on the wide-head path before that
# call's time limit cut the rest (the K = 128, V = 128 shapes, whose tiles differ, did not run), and no fp32 timing
# of the path exists. To turn it on, have benchmarks/kernels_and_packing.py's "fp32-wide-tiled" checks pass on a
# card first. DELTAMU_GDN_TILED_MIN_K, where set, replaces every dtype's threshold: the benchmark times the fused
# path in the same call with 100000, and the card's fp32 checks of the path run with 128.
TILED_MIN_K: dict[torch.dtype, int | None] = {torch.bfloat16: 128, torch.float16: 128, torch.float32: None}
if os.environ.get("DELTAMU_GDN_TILED_MIN_K"):
    TILED_MIN_K = dict.fromkeys(TILED_MIN_K, int(os.environ["DELTAMU_GDN_TILED_MIN_K"]))
# bf16 inputs on the wide-head path: bf16 operands with fp32 accumulation in the products the float64 checks allow
# (triton_tiled.py says which). "0": TF32 for every product there, as on the fused path.
TILED_BF16 = os.environ.get("DELTAMU_GDN_TILED_BF16", "1") != "0"


def _switch(name: str, default: str, choices: tuple[str, ...]) -> str:
    """The wide-head path's variant named by environment variable `name` (read once, at import)."""
    value = os.environ.get(name, default)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _switch_bits(name: str, bits: dict[str, int], default: str = "") -> int:
    """The bitmask of the comma-separated names in environment variable `name` (read once, at import; unset:
    `default`'s names; set but empty: 0)."""
    names = [n for n in os.environ.get(name, default).split(",") if n]
    if unknown := sorted(set(names) - set(bits)):
        raise ValueError(f"{name} takes a comma-separated list of {', '.join(bits)}, got {', '.join(unknown)}")
    return sum({bits[n] for n in names})


# The wide-head path's variants, each switched by its environment variable, so that one card call
# (benchmarks/kernels_and_packing.py, the columns ours-<variant>, and gdn_kernels.OURS_VARIANTS) checks and times
# it beside the default. The defaults are what the card checked: on an H100 (Triton 3.6, 2026-12-07, commit
# c14be0b; docs/benchmarks.md, "The gradient by K tiles on the card") the gradient by K tiles with dq, dk, dv, dbeta
# split off (TILED_GRAD=ktile, TILED_DQDK=split) passed the float64 checks at every wide bf16 and fp16 benchmark
# shape, and its gradient kernels took 1.13 ms against the V-tile form's 1.75 at (16, 1024, 6, 128, 256); the
# looped prep and the 32-wide state tiles were slower there (TILED_PREP, TILED_STATE_BV keep their defaults).
# Storage and operands (TILED_STATE, TILED_SUMS, TILED_WU, TILED_BF16_MORE), bf16 inputs only: h, dh, w and the
# gradient's V-sums stored in bf16, and bf16 operands in w S and the gradient's dO S^T, dvn S^T, vn dS^T, dO vn^T.
# On an H100 (2026-12-07, commit 15e9431; docs/benchmarks.md, "The bf16 candidate on the card") this set passed the
# float64 checks at every bf16 benchmark shape, T = 16384 included, kept the worst error at the stress cases at
# 4.4e-3 (fp32 storage: 3.2e-3; bound 1e-2), and took 0.93-0.96 x the fp32 form's fwd+bwd (0.75-0.76 x with the
# 4-warp gradient kernels above). These had been kept fp32 until then because in the interpreter bf16 put dg, dk or
# dbeta over the bound at the stress cases, but the interpreter rounded fp32 to bf16 by truncation (twice the card's
# error; it now rounds to nearest, gdn.ops.backend.round_like_the_card). The set leaves out Aqk vn ("av"), whose
# bf16 product gave o 1.0 relative error at K = 256, V = 32 on that card (a Triton fault, as below for transposed
# bf16 operands; the interpreter's o was 3e-3), and k dS ("kds") and Aqk^T dO ("ado"): with k dS on bf16 operands
# the interpreter puts dbeta at 2.4e-2 at strong gates, K = 256 (tests/gdn/test_triton.py's inputs at seed 0, drawn
# by the CPU's generator; 6.7e-3 without), and over seeds 0-7 at 3.7e-4 to 2.4e-2 (median 1.5e-3) against 5.4e-4 to
# 6.7e-3 (median 1.1e-3): the same median, a heavier tail (the card's 4.7e-4 there was of other inputs, drawn by the
# CUDA generator from the same seed, 2026-12-07 evening). fp16 inputs keep fp32 storage: they
# carry 3 more mantissa bits than bf16 storage, and no fp16 check of it has run on a card. Setting the variables to
# "fp32" (and DELTAMU_GDN_TILED_BF16_MORE to "") gives the fp32 form (benchmarks' ours-fp32).
# - DELTAMU_GDN_TILED_GRAD, the gradient's V-summed products: "ktile" (_chunk_grad_ktile_kernel, one program per K
#   tile walking every V tile, each sum written once) or "vtile" (_chunk_grad_vtile_kernel, one program per V
#   tile, their partial sums added by the reduction; the default checked and timed on 2026-12-06), or "wy" (two
#   kernels, as fla splits its backward: _chunk_grad_dqk_kernel per K tile finishes dq^ and the Aqk terms of dk^
#   from its own dO vn^T, and _chunk_grad_wy_kernel per chunk does the backward through T, dv, dbeta, dg and the
#   l2-norm; no separate reduction or dq/dk kernel, TILED_DQDK does not apply). On an H100 (2026-12-07, commit
#   5d52a16; docs/benchmarks.md, "The gradient in two kernels") it passed the float64 checks at every 16-bit
#   benchmark shape but took 1.27 ms against the default's 1.13 at (16, 1024, 6, 128, 256): its K-tile kernel spills.
# - DELTAMU_GDN_TILED_PREP, the prep kernel (shared with the fused path): "unrolled" (its K and V tile loops
#   unrolled, 4 warps, as the fused path runs it) or "looped" (runtime loops, 8 warps). Compiled for sm_90
#   (benchmarks/triton_resources.py, bf16) neither spills: the unrolled form takes 250 / 231 / 245 registers a
#   thread at K, V = 128, 256 / 128, 128 / 256, 64, looped at 8 warps 209 / 205 / 205. The same products in the
#   same order. On the card (2026-12-07) the looped prep took 0.385 ms against the unrolled 0.212 at
#   (16, 1024, 6, 128, 256).
# - DELTAMU_GDN_TILED_STATE, the per-chunk states h and their gradients dh as stored (written by the state passes,
#   read by the output and the gradient kernels): "fp32", "h-bf16" (h in bf16) or "bf16" (dh too; the default),
#   for bf16 inputs only (fp16 and fp32 inputs keep fp32), half the bytes. The state passes still carry the state
#   in fp32 registers; the output kernel rounds h to bf16 for its product with bf16 inputs either way.
TILED_GRAD = _switch("DELTAMU_GDN_TILED_GRAD", "ktile", ("ktile", "vtile", "wy"))
TILED_PREP = _switch("DELTAMU_GDN_TILED_PREP", "unrolled", ("unrolled", "looped"))
STATE_BF16 = {"fp32": (), "h-bf16": ("h",), "bf16": ("h", "dh")}      # TILED_STATE: what it stores in bf16
TILED_STATE = _switch("DELTAMU_GDN_TILED_STATE", "bf16", tuple(STATE_BF16))
# - DELTAMU_GDN_TILED_DQDK, where dq, dk, dv and dbeta are made: "inline" (in _chunk_grad_reduce_kernel, after the
#   [C, C] algebra and dg, as the fused kernel does) or "split" (_chunk_grad_dqdk_kernel after it, one program per
#   K tile for dq, dk and one for dv, dbeta: each reads T again, 16 KB a chunk, mostly from L2, and GRAD_ROWS row
#   factors a chunk go through memory). Compiled for sm_90 (bf16, with the gradient by K tiles and the full
#   reduction) the reduction spills 168 / 176 / 224 bytes a thread inline at K, V = 128, 256 / 128, 128 / 256, 64,
#   and none split (244 registers), the new kernel none (166). Default "split" (the card, above).
TILED_DQDK = _switch("DELTAMU_GDN_TILED_DQDK", "split", ("split", "inline"))
# - DELTAMU_GDN_TILED_STATE_BV, the widest V tile of the wide-head state passes at K <= 128 (_tiled_state_block_v):
#   "64" or "32" (twice the programs, each re-reading every chunk's w and k; compiled for sm_90 at K, V = 128, 256,
#   neither spills: the forward / backward pass take 232 / 225 registers and 148 / 148 KB of shared memory a
#   program at 64, 143 / 185 and 124 / 116 KB at 32; shared memory, not registers, holds either to one program an
#   SM). On the card (2026-12-07) 32 was slower at (16, 1024, 6, 128, 256): 0.306 / 0.355 ms against 0.220 / 0.281.
TILED_STATE_BV = int(_switch("DELTAMU_GDN_TILED_STATE_BV", "64", ("64", "32")))
# - DELTAMU_GDN_TILED_SUMS, the gradient by K tiles' V-summed products dO S^T, -dvn S^T, vn dS^T as stored between
#   its kernel and the two after it (three [B,T,H,K] tensors, written once and read twice: 1.2 GB a fwd+bwd at
#   (8, 2048, 16, 128, 128) in fp32): "fp32" or "bf16" (the default; bf16 inputs, TILED_GRAD=ktile only; half the
#   bytes).
TILED_SUMS = _switch("DELTAMU_GDN_TILED_SUMS", "bf16", ("fp32", "bf16"))
# - DELTAMU_GDN_TILED_BF16_MORE, products of the wide-head path that take bf16 operands (fp32 accumulation) for
#   bf16 inputs on top of TILED_BF16's: a comma-separated list of triton_tiled.MORE_BITS' names (ws: w S, av: Aqk
#   vn, ado: Aqk^T dO, kds: k dS, dos: dO S^T, dvns: dvn S^T, vnds: vn dS^T, dp: dO vn^T, dqdk: dq and dk's four
#   products after the reduction, with T^T and the normalised q, k rounded to bf16 as fla's backward takes them);
#   default ws,dos,dvns,vnds,dp,kds,dqdk ("": TF32 for all nine).
TILED_BF16_MORE = _switch_bits("DELTAMU_GDN_TILED_BF16_MORE", MORE_BITS, "ws,dos,dvns,vnds,dp,kds,dqdk")
# k dS ("kds") and dq, dk's products ("dqdk") take bf16 operands, where named, Aqk^T dO is stored in bf16 where
# TILED_DVN says so, and the state backward runs at 4 warps (state_bwd_tiled above), only up to this head dim K; above
# it, as before 2026-12-08. On an H100 (2026-12-08, docs/benchmarks.md, "The state backward at 4 warps") the four
# together passed every bf16 benchmark shape at K = 128 and hit an illegal memory access at K = 256; and over seeds
# 0-7 at strong gates, K = 256, k dS on bf16 operands put dbeta over the bound once in the interpreter, at 2.4e-2.
NARROW_OPS_MAX_K = 128
NARROW_OPS = ("kds", "dqdk")       # the TILED_BF16_MORE products NARROW_OPS_MAX_K bounds
# - DELTAMU_GDN_TILED_WU, the prep's w, u and the state pass's vn as stored on the wide-head path for 16-bit
#   inputs: "fp32", "w-bf16" (w in bf16; the default), "wu-bf16" (w and u) or "bf16" (vn too; u's rounding goes
#   straight into vn: o 9.2e-3 in the truncating interpreter); every reader widens them to fp32
#   (or rounds them to bf16 for a bf16 product anyway).
#   "bf16" is not the default: on an H100 (2026-12-07) u and vn in bf16 put dg at 9.9e-3 (bound 1e-2) at the
#   zero-gate stress case (1, 320, 1, 128, 64) against 4.2e-3 (the interpreter: 4.9e-3; docs/benchmarks.md, "Fewer
#   bytes in the gradient").
WU_BF16 = {"fp32": (), "w-bf16": ("w",), "wu-bf16": ("w", "u"), "bf16": ("w", "u", "vn")}   # TILED_WU: in bf16
TILED_WU = _switch("DELTAMU_GDN_TILED_WU", "w-bf16", tuple(WU_BF16))
# - DELTAMU_GDN_TILED_DVN, vn's gradient dvn as stored (the state backward's output, read by the gradient's
#   kernels) and its part within the chunk, Aqk^T dO (written by _chunk_dvn_local_kernel, read by the state
#   backward, which adds k dS): "fp32" (both), "local-bf16" (the part within the chunk in bf16, dvn fp32: half the
#   bytes of the state backward's pipelined loads of it; compiled for sm_90 at K, V = 128, 256 it needs 140 KB of
#   shared memory a program against 148 at the shipped 64-wide tiles, 8 warps, 2 stages, 170 against 178 at
#   32-wide tiles, 4 warps, 3 stages; no spills either way) or
#   "bf16" (both; bf16 inputs only, as fla stores them). In the interpreter bf16 put dbeta at 2.9e-2 at strong
#   gates, K = 256 (tests/gdn/test_triton.py's bf16-T100-K256-strong; 6.7e-3 without), but on an H100
#   dbeta stayed within 3.4e-3 there (2026-12-07, with u and vn in bf16 too, whose dg at zero gates hid whether
#   dvn alone is within the bound: 1.1e-2 with all three): not the default until a card checks it alone.
#   "local-bf16" is the default, at K <= NARROW_OPS_MAX_K only (fp32 above): on an H100 (2026-12-08) it passed
#   every bf16 benchmark shape at K = 128 with the state backward at 4 warps (benchmarks' ours-ops-w4).
DVN_BF16 = {"fp32": (), "local-bf16": ("dvn_local",), "bf16": ("dvn_local", "dvn")}      # TILED_DVN: in bf16
TILED_DVN = _switch("DELTAMU_GDN_TILED_DVN", "local-bf16", tuple(DVN_BF16))
# - DELTAMU_GDN_TILED_CC, the gradient's [C, C] intermediates between its kernels as stored: dO vn^T and dvn v^T
#   (the gradient by K tiles to the reduction), dS_qk and dX (the reduction to dq, dk): "fp32" or "bf16" (bf16
#   inputs only, the default; fla rounds its dS_qk and dA to bf16 for its products too). Every reader widens them to
#   fp32. On an H100 (2026-12-07) the dq/dk kernel took 0.441 ms against 0.505 at (8, 2048, 16, 128, 128), and with
#   TILED_REDUCE=rows and the state forward at 4 warps every 16-bit benchmark shape passed its float64 check and the
#   stress cases stayed within 4.5e-3.
TILED_CC = _switch("DELTAMU_GDN_TILED_CC", "bf16", ("fp32", "bf16"))
# - DELTAMU_GDN_TILED_REDUCE, the kernel between the gradient by K tiles and dq, dk (TILED_GRAD=ktile,
#   TILED_DQDK=split): "full" (_chunk_grad_reduce_kernel, shared with the V-tile form) or "rows"
#   (_chunk_grad_rows_kernel: G, 1/|q|, 1/|k| and Aqk from the forward, so no Q K^T and no norms over the K loop,
#   and K K^T summed just before its use; the default). Compiled for sm_90 (bf16, K = V = 128) it spills none at 8
#   warps (234 registers; the full reduction 244), 112 bytes a thread at 4 (240): one program an SM either way by
#   its 57 KB of shared memory and registers, and on an H100 it
#   took 0.504 ms against 0.519 at (8, 2048, 16, 128, 128) (with TILED_CC's bf16 loads): fewer products, about the
#   same time, so the reduction's time is not its arithmetic.
TILED_REDUCE = _switch("DELTAMU_GDN_TILED_REDUCE", "rows", ("full", "rows"))
# - DELTAMU_GDN_TILED_GRAD_COPIES, what the gradient by K tiles reads of vn and dvn: "none" (the stored tensors) or
#   "bf16" (bf16 copies the state passes write beside them). The same gradient, bit for bit: that kernel rounds both
#   to bf16 for every product it takes them into (dO vn^T, vn dS^T, dvn S^T with TILED_BF16_MORE's dp, vnds and
#   dvns, dvn v^T on bf16 operands), so only where those are bf16 products (_grad_copies) does it read the copies,
#   half the bytes. Why: it reads a chunk's vn and dvn once per K tile and once more for dP and dTu, and on an H100
#   (ncu, 2026-12-07, (8, 2048, 16, 128, 128)) it ran at 79 % of L2's throughput and 61 % of DRAM's, its warps
#   waiting on loads. The cost: a bf16 store of each in the sequential state passes. Not yet timed on a card.
TILED_GRAD_COPIES = _switch("DELTAMU_GDN_TILED_GRAD_COPIES", "none", ("none", "bf16"))
# - DELTAMU_GDN_TILED_KTILE_CC, where the gradient by K tiles sums dO vn^T and dvn v^T: "extra" (one more program a
#   chunk, which reads the chunk's dO, vn, dvn and v again) or "k-tiles" (K tile 0 sums dO vn^T and K tile 1 dvn
#   v^T from the tiles they load anyway: a [C, C] accumulator more in each, no extra program; at K <= 64, one K
#   tile, the extra program stays). The same products in the same order. Not yet timed on a card.
TILED_KTILE_CC = _switch("DELTAMU_GDN_TILED_KTILE_CC", "extra", ("extra", "k-tiles"))
# - DELTAMU_GDN_TILED_ROW_DOTS, where the row dots q.dO S^T and k.vn dS^T (for dg and the l2-norm) are made, with
#   the reduction from the forward's rows: "reduction" (it reads q, k and the two sums back per K tile) or "k-tiles"
#   (each K-tile program of the gradient by K tiles dots its sums as stored with its q and k columns and writes
#   the two [BT] parts; the reduction adds them in the same K-tile order): the reduction, latency-bound at one
#   program an SM (ncu, 2026-12-07), then loads two of its five tiles a K tile. The same products; the sums'
#   order within a tile may differ. Not yet timed on a card.
TILED_ROW_DOTS = _switch("DELTAMU_GDN_TILED_ROW_DOTS", "reduction", ("reduction", "k-tiles"))
TILED_SUBTILE_K = 64       # rows of a state sub-tile (at most 4 of them: MAX_HEAD_DIM_K)
TILED_GRAD_BLOCK_V = 64    # V tile of the gradient's V-tile grid dimension
# V tile of the K-tile gradient's loop: compiled for sm_90 (benchmarks/triton_resources.py, bf16, K = V = 128,
# 8 warps) neither spills: 180 registers a thread at 64 (72 KB of shared memory), 148 at 32 (36 KB)
TILED_GRAD_KTILE_BLOCK_V = 32
# V tile of the wide-head state passes when set (> 0), in place of _tiled_state_block_v's choice: for sweeps, e.g.
# whether the state backward's failure at 4 warps at (2, 16384, 16, 128, 128), the one benchmark shape whose state
# passes take 32-wide tiles, follows the tile or the length
TILED_STATE_BLOCK_V = 0
LAUNCH_TILES = ("TILED_GRAD_KTILE_BLOCK_V", "TILED_GRAD_BLOCK_V", "GRAD_BLOCK_V",     # what DELTAMU_GDN_LAUNCH may set
                "TILED_STATE_BLOCK_V")


def launch_overrides(text: str) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """DELTAMU_GDN_LAUNCH's value, comma-separated `kernel=WARPSxSTAGES` (a key of NUM_WARPS) and `TILE=N` (one of
    LAUNCH_TILES), as ({kernel: (warps, stages)}, {tile constant: N}); anything else is an error naming it."""
    configs, tiles = {}, {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, _, value = item.partition("=")
        try:
            if key in NUM_WARPS:
                warps, stages = (int(x) for x in value.split("x"))
                if warps not in (1, 2, 4, 8, 16, 32) or stages < 1:
                    raise ValueError
                configs[key] = (warps, stages)
            elif key in LAUNCH_TILES:
                tiles[key] = int(value)
                if tiles[key] < 16 or tiles[key] & (tiles[key] - 1):
                    raise ValueError
            else:
                raise KeyError
        except KeyError:
            raise ValueError(f"DELTAMU_GDN_LAUNCH: {key!r} is neither a kernel ({', '.join(NUM_WARPS)}) nor a tile "
                             f"({', '.join(LAUNCH_TILES)})") from None
        except ValueError:
            raise ValueError(f"DELTAMU_GDN_LAUNCH: {item!r} is not kernel=WARPSxSTAGES (warps a power of two up to "
                             "32, stages >= 1) or TILE=N (a power of two >= 16)") from None
    return configs, tiles


# - DELTAMU_GDN_LAUNCH: launch configs and tiles for one process in place of the shipped ones above, e.g.
#   "output=8x1,grad_dqdk=16x1,TILED_GRAD_KTILE_BLOCK_V=64": how benchmarks/kernel_configs.py's picks are checked
#   and timed on a card beside the shipped configs (gdn_kernels.py's column ours-tuned) before they replace them.
def set_launch(text: str) -> None:
    """Launch this process's kernels with the settings `text` names, in DELTAMU_GDN_LAUNCH's form (launch_overrides);
    what it does not name keeps its value."""
    configs, tiles = launch_overrides(text)
    for key, (warps, stages) in configs.items():
        NUM_WARPS[key], NUM_STAGES[key] = warps, stages
    globals().update(tiles)


set_launch(os.environ.get("DELTAMU_GDN_LAUNCH", ""))


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _k_tile(K: int) -> int:
    """K tiles are never narrower than 32: K < 32 then runs the tile shapes checked on the card at K = 32, with
    the extra columns masked to zero (K = 16 tiles crashed there; see MIN_CUDA_HEAD_DIM_K)."""
    return max(32, triton.next_power_of_2(K))


def _state_block_v(BH: int, V: int, BKP: int, device: torch.device) -> int:
    """V tile of the sequential state passes: they have only B*H*ceil(V/BV) programs, so narrow the tile until
    the GPU has two programs per SM (never below 16; at most 32 for K >= 128, where the state tile is big)."""
    sms = num_sms(device)
    BV = min(_pow2(V), MAX_TILE if BKP < 128 else 32)
    while BV > 16 and BH * triton.cdiv(V, BV) < 2 * sms:
        BV //= 2
    return BV


def _state_stages(which: str, BKP: int) -> int:
    return NUM_STAGES[which] if BKP <= STATE_STAGES_MAX_K else 1


def _tiled_state_block_v(BH: int, V: int, BKP: int, device: torch.device) -> int:
    """V tile of the wide-head state passes. Their pipelined [BT, K] input tiles take 116-148 KB of shared memory a
    program at K = 128 (benchmarks/triton_resources.py), so programs run in waves of one per SM: take the narrowest tile
    from 16 up whose B*H*ceil(V/BV) programs fit one wave, else the widest (fewer waves, fewer re-reads of each chunk's
    w and k): 64 at K <= 128 (TILED_STATE_BV), 32 above (compiled for sm_90 at BV = 64 the passes spill none at K = 128,
    400 / 216 bytes a thread at K = 256; at BV = 32 none at either)."""
    if TILED_STATE_BLOCK_V:
        return min(TILED_STATE_BLOCK_V, _pow2(V))
    widest = min(TILED_STATE_BV if BKP <= 128 else 32, _pow2(V))
    BV = 16
    while BV < widest and BH * triton.cdiv(V, BV) > num_sms(device):
        BV *= 2
    return BV


def tiles(BH: int, K: int, V: int, device: torch.device, dtype: torch.dtype) -> dict[str, int]:
    """Every tile size the kernels launch with for inputs of `dtype`: BK, BV (prep), BKP, BVS (the state passes),
    BVG (grad), BVT (the wide-head gradient's V tiles), BVK (the V loop of its K-tile form)."""
    BKP = _k_tile(K)
    BVS = _tiled_state_block_v(BH, V, BKP, device) if wide_heads(K, dtype) else _state_block_v(BH, V, BKP, device)
    return dict(BK=min(BKP, MAX_TILE), BV=min(_pow2(V), MAX_TILE), BKP=BKP, BVS=BVS,
                BVG=min(_pow2(V), GRAD_BLOCK_V), BVT=min(_pow2(V), TILED_GRAD_BLOCK_V),
                BVK=min(_pow2(V), TILED_GRAD_KTILE_BLOCK_V))


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def wide_heads(K: int, dtype: torch.dtype) -> bool:
    """The one dispatch point between the fused kernels and the wide-head kernels."""
    threshold = TILED_MIN_K.get(dtype)
    return threshold is not None and K >= threshold


def _bf16_operands(dtype: torch.dtype) -> bool:
    """Whether the wide-head path's bf16-tolerant products (triton_tiled.py) take bf16 operands for inputs of
    `dtype` (else fp32 operands, in the call's precision)."""
    return dtype == torch.bfloat16 and TILED_BF16


def _stored_dtype(which: str, tiled: bool, dtype: torch.dtype) -> torch.dtype:
    """The dtype intermediate `which` is stored in (h, dh: TILED_STATE; w, u, vn: TILED_WU; dvn, dvn_local:
    TILED_DVN), for inputs of `dtype` on the path `tiled` picked: bf16 only on the wide-head path for bf16 inputs,
    else fp32."""
    bf16 = STATE_BF16[TILED_STATE] + WU_BF16[TILED_WU] + DVN_BF16[TILED_DVN]
    return torch.bfloat16 if tiled and which in bf16 and dtype == torch.bfloat16 else torch.float32


def _grad_copies(tiled: bool, dtype: torch.dtype) -> tuple[bool, bool]:
    """(vn, dvn): whether the state pass writes a bf16 copy of it for the gradient by K tiles (TILED_GRAD_COPIES):
    only where that kernel would round the stored fp32 tensor to bf16 for every product it takes it into, so that
    reading the copy gives the same bits."""
    if not (TILED_GRAD_COPIES == "bf16" and tiled and TILED_GRAD == "ktile" and _bf16_operands(dtype)):
        return False, False
    bf16_products = lambda *names: all(MORE_BITS[n] & TILED_BF16_MORE for n in names)     # noqa: E731
    return (_stored_dtype("vn", tiled, dtype) == torch.float32 and bf16_products("dp", "vnds"),
            _stored_dtype("dvn", tiled, dtype) == torch.float32 and bf16_products("dvns"))


def _more_at(K: int) -> int:
    """TILED_BF16_MORE at head dim K: without NARROW_OPS above NARROW_OPS_MAX_K."""
    if K <= NARROW_OPS_MAX_K:
        return TILED_BF16_MORE
    return TILED_BF16_MORE & ~sum(MORE_BITS[name] for name in NARROW_OPS)


def _kds_bf16(more: int, dtype: torch.dtype) -> bool:
    """Whether the wide-head state backward's k dS takes bf16 operands (it then runs as state_bwd_tiled, else as
    state_bwd_tiled_tf32)."""
    return _bf16_operands(dtype) and bool(more & MORE_BITS["kds"])


def _subtiles(BKP: int) -> tuple[int, int]:
    """(rows of a state sub-tile, how many) for a K tile of BKP rows."""
    BKS = min(TILED_SUBTILE_K, BKP)
    return BKS, BKP // BKS


def _launch(q: torch.Tensor, v: torch.Tensor):
    """What every launch of a call needs: the dims (B, T, H, K, V), chunk length and count (BT, NT), the dot
    precision, the device and the tile sizes (tiles)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    return (B, T, H, K, V, CHUNK_SIZE, triton.cdiv(T, CHUNK_SIZE), _precision(q.dtype), q.device,
            tiles(B * H, K, V, q.device, q.dtype))


def chunk_fwd(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm, save_for_bwd):
    B, T, H, K, V, BT, NT, prec, dev, t = _launch(q, v)
    f32 = torch.float32
    BK, BV, BKP, BVS = t["BK"], t["BV"], t["BKP"], t["BVS"]
    tiled = wide_heads(K, q.dtype)
    w = torch.empty(B, T, H, K, dtype=_stored_dtype("w", tiled, q.dtype), device=dev)
    u = torch.empty(B, T, H, V, dtype=_stored_dtype("u", tiled, q.dtype), device=dev)
    Aqk, Tinv = (torch.empty(B, T, H, BT, dtype=f32, device=dev) for _ in range(2))
    Gcum, rq, rk = (torch.empty(B, T, H, dtype=f32, device=dev) for _ in range(3))
    scratch = torch.empty(NT * B * H * SOLVE_SCRATCH, dtype=f32, device=dev)
    prep = "prep_looped" if tiled and TILED_PREP == "looped" else "prep"
    _chunk_prep_kernel[(NT, B * H)](
        q, k, v, g, beta, w, u, Aqk, Tinv, Gcum, rq, rk, scratch, scale, T,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_L2NORM=use_qk_l2norm, EPS=L2NORM_EPS, PRECISION=prec,
        RUNTIME_LOOPS=prep == "prep_looped", num_warps=NUM_WARPS[prep], num_stages=NUM_STAGES[prep])

    o = torch.empty(B, T, H, V, dtype=q.dtype, device=dev)
    keep = save_for_bwd or tiled                    # the wide-head output kernel reads h and vn
    h = torch.empty(B, NT, H, K, V, dtype=_stored_dtype("h", tiled, q.dtype), device=dev) if keep else w
    vn = torch.empty(B, T, H, V, dtype=_stored_dtype("vn", tiled, q.dtype), device=dev) if keep else w
    ht = torch.empty(B, H, K, V, dtype=f32, device=dev) if output_final_state else None
    h0 = initial_state if initial_state is not None else w
    which = "state_fwd_tiled" if tiled else "state_fwd"
    flags = dict(H=H, K=K, V=V, BT=BT, BV=BVS, USE_L2NORM=use_qk_l2norm, HAS_H0=initial_state is not None,
                 STORE_FINAL=ht is not None, PRECISION=prec, num_warps=NUM_WARPS[which],
                 num_stages=_state_stages(which, BKP))
    if tiled:
        BKS, NKS = _subtiles(BKP)
        bf16_ops = _bf16_operands(q.dtype)
        # vn rounded to bf16 for the gradient by K tiles, saved in vn's place (TILED_GRAD_COPIES)
        vn16 = torch.empty_like(vn, dtype=torch.bfloat16) if save_for_bwd and _grad_copies(True, q.dtype)[0] \
            else None
        _chunk_state_fwd_tiled_kernel[(triton.cdiv(V, BVS), B * H)](
            k, w, u, Gcum, rk, h0, h, vn, ht if ht is not None else w, T, BKS=BKS, NKS=NKS, BF16_OPS=bf16_ops,
            MORE=TILED_BF16_MORE, vn16=vn16, **flags)
        BVO = t["BVT"]
        _chunk_output_kernel[(triton.cdiv(V, BVO), NT, B * H)](
            q, Aqk, Gcum, rq, h, vn, o, scale, T, H=H, K=K, V=V, BT=BT, BKS=BKS, NKS=NKS, BV=BVO,
            USE_L2NORM=use_qk_l2norm, PRECISION=prec, BF16_OPS=bf16_ops, MORE=TILED_BF16_MORE,
            num_warps=NUM_WARPS["output"], num_stages=NUM_STAGES["output"])
        if vn16 is not None:
            vn = vn16                               # all the backward reads of vn: the gradient by K tiles
    else:
        _chunk_state_fwd_kernel[(triton.cdiv(V, BVS), B * H)](
            q, k, w, u, Aqk, Gcum, rq, rk, h0, o, h, vn, ht if ht is not None else w, scale, T, BKP=BKP,
            SAVE_FOR_BWD=save_for_bwd, SPLIT=BKP <= SPLIT_MAX_K, **flags)
    saved = (w, Aqk, Tinv, Gcum, rq, rk, h, vn) if save_for_bwd else None
    return o, ht, saved


def chunk_bwd(q, k, v, g, beta, scale, use_qk_l2norm, saved, do, dht, has_h0):
    w, Aqk, Tinv, Gcum, rq, rk, h, vn = saved
    B, T, H, K, V, BT, NT, prec, dev, t = _launch(q, v)
    f32 = torch.float32
    BK, BVG, BKP, BVS = t["BK"], t["BVG"], t["BKP"], t["BVS"]

    tiled = wide_heads(K, q.dtype)
    dh = torch.empty(B, NT, H, K, V, dtype=_stored_dtype("dh", tiled, q.dtype), device=dev)
    dvn = torch.empty(B, T, H, V, dtype=_stored_dtype("dvn", tiled, q.dtype), device=dev)
    # dvn's part within the chunk, Aqk^T dO (the wide-head path): in dvn itself, or its own bf16 tensor (TILED_DVN)
    local_dtype = _stored_dtype("dvn_local", tiled, q.dtype) if K <= NARROW_OPS_MAX_K else dvn.dtype
    dvn_local = dvn if local_dtype == dvn.dtype else torch.empty_like(dvn, dtype=local_dtype)
    more = _more_at(K)
    # dvn rounded to bf16 for the gradient by K tiles (TILED_GRAD_COPIES)
    dvn16 = torch.empty_like(dvn, dtype=torch.bfloat16) if _grad_copies(tiled, q.dtype)[1] else None
    dh0 = torch.empty(B, H, K, V, dtype=f32, device=dev) if has_h0 else None
    dht_ = dht if dht is not None else w
    dh0_ = dh0 if dh0 is not None else w
    which = "state_bwd" if not tiled else "state_bwd_tiled" if _kds_bf16(more, q.dtype) else "state_bwd_tiled_tf32"
    flags = dict(H=H, K=K, V=V, BT=BT, BV=BVS, USE_L2NORM=use_qk_l2norm, HAS_DHT=dht is not None,
                 STORE_DH0=has_h0, PRECISION=prec, num_warps=NUM_WARPS[which], num_stages=_state_stages(which, BKP))
    if tiled:
        BKS, NKS = _subtiles(BKP)
        _chunk_dvn_local_kernel[(triton.cdiv(V, t["BVT"]), NT, B * H)](
            Aqk, do, dvn_local, T, H=H, V=V, BT=BT, BV=t["BVT"], PRECISION=prec, BF16_OPS=_bf16_operands(q.dtype),
            MORE=TILED_BF16_MORE, num_warps=NUM_WARPS["dvn_local"], num_stages=NUM_STAGES["dvn_local"])
        _chunk_state_bwd_tiled_kernel[(triton.cdiv(V, BVS), B * H)](
            q, k, w, Gcum, rq, rk, do, dht_, dh, dvn_local, dvn, dh0_, scale, T, BKS=BKS, NKS=NKS,
            BF16_OPS=_bf16_operands(q.dtype), MORE=more, dvn16=dvn16, **flags)
    else:
        _chunk_state_bwd_kernel[(triton.cdiv(V, BVS), B * H)](
            q, k, w, Aqk, Gcum, rq, rk, do, dht_, dh, dvn, dh0_, scale, T, BKP=BKP, SPLIT=BKP <= SPLIT_MAX_K,
            **flags)

    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dv = torch.empty_like(v)
    dg = torch.empty_like(g)
    dbeta = torch.empty_like(beta)
    # the gradient by K tiles' [C, C] intermediates (dO vn^T, dvn v^T, and dS_qk, dX in this scratch): TILED_CC
    bf16 = q.dtype == torch.bfloat16
    cc = torch.bfloat16 if tiled and TILED_GRAD == "ktile" and TILED_CC == "bf16" and bf16 else f32
    scratch = torch.empty(NT * B * H * 2 * BT * BT, dtype=cc, device=dev)
    outs = (dq, dk, dv, dg, dbeta, scratch, scale, T)
    if tiled and TILED_GRAD == "wy":
        # per K tile dq^ and the Aqk terms of dk^, then per chunk the backward through T and the l2-norm
        NK = triton.cdiv(K, BK)
        bf16_ops = _bf16_operands(q.dtype)
        dqn, dkp, dw = (torch.empty(B, T, H, K, dtype=f32, device=dev) for _ in range(3))
        parts = torch.empty(NK * B * H * NT * WY_PARTS.value * BT, dtype=f32, device=dev)
        scr = scratch if NK <= 2 else torch.empty(NK * NT * B * H * BT * BT, dtype=f32, device=dev)
        _chunk_grad_dqk_kernel[(NK, NT, B * H)](
            q, k, g, do, h, dh, vn, dvn, rq, rk, dqn, dkp, dw, parts, scr, scale, T, H=H, K=K, V=V, BT=BT, BK=BK,
            BV=t["BVK"], USE_L2NORM=use_qk_l2norm, BF16_OPS=bf16_ops, PRECISION=prec, MORE=TILED_BF16_MORE,
            num_warps=NUM_WARPS["grad_dqk"], num_stages=NUM_STAGES["grad_dqk"])
        _chunk_grad_wy_kernel[(NT, B * H)](
            q, k, v, g, beta, dvn, Tinv, rq, rk, dqn, dkp, dw, parts, dq, dk, dv, dg, dbeta, scr, T, H=H, K=K, V=V,
            BT=BT, BK=BK, BV=BVG, NK=NK, USE_L2NORM=use_qk_l2norm, BF16_OPS=bf16_ops, PRECISION=prec,
            num_warps=NUM_WARPS["grad_wy"], num_stages=NUM_STAGES["grad_wy"])
    elif tiled:
        # the V-summed products (per V tile, or per K tile over every V tile: TILED_GRAD), then their sums and the
        # rest per chunk
        BVT = t["BVT"]
        NK = triton.cdiv(K, BK)
        by_k = TILED_GRAD == "ktile"
        NVP = 1 if by_k else triton.cdiv(V, BVT)
        NSS = NK if by_k else NVP
        sums = torch.bfloat16 if by_k and TILED_SUMS == "bf16" and bf16 else f32
        dqi, dw, dkt = (torch.empty(NVP, B, T, H, K, dtype=sums, device=dev) for _ in range(3))
        dP, dTu = (torch.empty(NVP, B, T, H, BT, dtype=cc, device=dev) for _ in range(2))
        sdS = torch.empty(NSS, B * H * NT, dtype=f32, device=dev)
        cc_in_k_tiles = by_k and TILED_KTILE_CC == "k-tiles" and NK >= 2
        extra = {"CC_IN_K_TILES": True} if cc_in_k_tiles else {}
        split = TILED_DQDK == "split"
        from_rows = by_k and split and TILED_REDUCE == "rows"          # the reduction from the forward's rows
        # the row dots' parts per K tile for it (TILED_ROW_DOTS)
        rdots = torch.empty(NK * B * H * NT * 2 * BT, dtype=f32, device=dev) \
            if from_rows and TILED_ROW_DOTS == "k-tiles" else None
        if rdots is not None:
            extra.update(q=q, k=k, rdots=rdots)
        kernel, grid, which, BVP = ((_chunk_grad_ktile_kernel, (NK + (not cc_in_k_tiles), NT, B * H), "grad_ktile",
                                     t["BVK"]) if by_k
                                    else (_chunk_grad_vtile_kernel, (NVP, NT, B * H), "grad_vtile", BVT))
        kernel[grid](
            v, do, h, dh, vn, dvn if dvn16 is None else dvn16, dqi, dw, dkt, dP, dTu, sdS, T, H=H, K=K, V=V, BT=BT,
            BK=BK, BV=BVP, BF16_OPS=_bf16_operands(q.dtype), MORE=TILED_BF16_MORE, PRECISION=prec,
            num_warps=NUM_WARPS[which], num_stages=NUM_STAGES[which], **extra)
        rows = torch.empty(B * H * NT * GRAD_ROWS.value * BT, dtype=f32, device=dev) if split else scratch
        if from_rows:
            _chunk_grad_rows_kernel[(NT, B * H)](
                q, k, beta, Aqk, Tinv, Gcum, rq, rk, dqi, dw, dkt, dP, dTu, sdS, dg, scratch, rows, scale, T, H=H, K=K,
                BT=BT, BK=BK, NSS=NSS, USE_L2NORM=use_qk_l2norm, PRECISION=prec, SUMS_BF16=sums == torch.bfloat16,
                rdots=rdots, num_warps=NUM_WARPS["grad_rows"], num_stages=NUM_STAGES["grad_rows"])
        else:
            _chunk_grad_reduce_kernel[(NT, B * H)](
                q, k, v, g, beta, dvn, Tinv, dqi, dw, dkt, dP, dTu, sdS, dq, dk, dv, dg, dbeta, scratch, rows, scale,
                T, H=H, K=K, V=V, BT=BT, BK=BK, BV=BVG, NVP=NVP, NSS=NSS, USE_L2NORM=use_qk_l2norm, EPS=L2NORM_EPS,
                PRECISION=prec, SPLIT_DQDK=split, num_warps=NUM_WARPS["grad_reduce"],
                num_stages=NUM_STAGES["grad_reduce"])
        if split:
            _chunk_grad_dqdk_kernel[(NK + 1, NT, B * H)](
                q, k, v, Tinv, dvn, dqi, dw, dkt, scratch, rows, dq, dk, dv, dbeta, T, H=H, K=K, V=V, BT=BT, BK=BK,
                BV=BVG, USE_L2NORM=use_qk_l2norm, PRECISION=prec, BF16_OPS=_bf16_operands(q.dtype),
                MORE=more, num_warps=NUM_WARPS["grad_dqdk"], num_stages=NUM_STAGES["grad_dqdk"])
    else:
        dqi, dw, dkt = (torch.empty(B, T, H, K, dtype=f32, device=dev) for _ in range(3))
        _chunk_grad_kernel[(NT, B * H)](
            q, k, v, g, beta, do, h, dh, vn, dvn, Tinv, dqi, dw, dkt, *outs,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BVG, USE_L2NORM=use_qk_l2norm, EPS=L2NORM_EPS, PRECISION=prec,
            SPLIT=BKP <= SPLIT_MAX_K, num_warps=NUM_WARPS["grad"], num_stages=NUM_STAGES["grad"])
    return dq, dk, dv, dg, dbeta, dh0


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm):
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        h0 = initial_state.contiguous() if initial_state is not None else None
        save_for_bwd = any(ctx.needs_input_grad[:5]) or ctx.needs_input_grad[6]
        o, ht, saved = chunk_fwd(q, k, v, g, beta, scale, h0, output_final_state, use_qk_l2norm, save_for_bwd)
        if save_for_bwd:
            ctx.save_for_backward(q, k, v, g, beta, *saved)
        ctx.scale, ctx.use_qk_l2norm = scale, use_qk_l2norm
        ctx.h0_dtype = None if h0 is None else h0.dtype
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, beta, *saved = ctx.saved_tensors
        do = do.contiguous()
        dht = dht.contiguous() if dht is not None else None
        dq, dk, dv, dg, dbeta, dh0 = chunk_bwd(q, k, v, g, beta, ctx.scale, ctx.use_qk_l2norm, saved, do, dht,
                                               has_h0=ctx.h0_dtype is not None)
        if dh0 is not None:
            dh0 = dh0.to(ctx.h0_dtype)
        return dq, dk, dv, dg, dbeta, None, dh0, None, None


def triton_chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gated delta rule on our Triton kernels; same contract as chunk.chunk_gated_delta_rule.

    q, k [B, T, H, K] and v [B, T, H, V] share one dtype (bf16, fp16 or fp32); g (log alpha <= 0) and beta are
    [B, T, H] of any float dtype (read as fp32); initial_state [B, H, K, V] (fp32 recommended). Returns o [B, T, H, V]
    in q's dtype and the final state [B, H, K, V] in fp32 (or None). Any T and V; K <= 256 (on CUDA K >= 16).

    float64 inputs, K > 256, and K < 16 on CUDA run on the chunked PyTorch path instead (the kernels have no fp64
    mode, hold a whole K column of the state in registers, and have not run on a card below K = 16)."""
    K = q.shape[-1]
    if scale is None:
        scale = K ** -0.5
    too_small = q.is_cuda and K < MIN_CUDA_HEAD_DIM_K
    if q.dtype == torch.float64 or K > MAX_HEAD_DIM_K or too_small or q.shape[1] == 0:
        if K > MAX_HEAD_DIM_K or too_small:
            lo = MIN_CUDA_HEAD_DIM_K if q.is_cuda else 1
            warnings.warn(f"triton gated delta rule supports {lo} <= K <= {MAX_HEAD_DIM_K} here, got K={K}: running "
                          "the chunked PyTorch path", RuntimeWarning, stacklevel=2)
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, use_qk_l2norm=use_qk_l2norm)
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    o, ht = ChunkGatedDeltaRuleFunction.apply(q, k, v, g, beta, float(scale), initial_state, output_final_state,
                                              use_qk_l2norm)
    return o, ht
