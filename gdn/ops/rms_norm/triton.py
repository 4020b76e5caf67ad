"""RMSNorm, optionally gated by SiLU, as one Triton kernel each way (private; call gdn.ops.rms_norm.rms_norm).

    y = x * rsqrt(mean(x^2) + eps) * w  [* silu(gate)],  computed in fp32, rounded once to y's dtype.

Unfused, PyTorch runs this as a dozen elementwise kernels each way with fp32 temporaries, and under bf16 autocast every
linear that reads y casts it again: in a packed training step these were about half of all bytes moved (census of
2026-11-27, docs/benchmarks.md, Packed training). Here x (and gate) are read once and y written once, in the dtype
its consumers want.

Rows can be grouped: `weight` is [G, D] and row r of x [M, D] uses weight[r // (M / G)], so K trials of a pack
(gdn.packed: x [K * rows, D], weight [K, D]) are one launch. The weight gradient is reduced per group in two steps
(each program sums its rows in fp32, then the partial sums are added), without atomics: the result is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.ops.backend import num_sms, round_like_the_card

round_like_the_card()                  # interpreted: bf16 rounding as on the card

TILE_ELEMENTS = 8192     # rows x D per program


@triton.jit
def _rms_norm_fwd_kernel(X, W, GATE, Y, RSTD, M, D, rows_per_group, eps,
                         HAS_GATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    mask = row_ok[:, None] & (cols < D)[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    group = rows // rows_per_group
    w = tl.load(W + group[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w
    if HAS_GATE:
        gate = tl.load(GATE + offs, mask=mask, other=0.0).to(tl.float32)
        y = y * gate * tl.sigmoid(gate)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def _rms_norm_bwd_kernel(X, W, GATE, DY, RSTD, DX, DGATE, DW_PARTIAL, D, rows_per_group, rows_per_program,
                         HAS_GATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # Program (group, part) takes rows [part * rows_per_program, ...) of its group and writes its share of that
    # group's weight gradient to DW_PARTIAL[group, part].
    group, part = tl.program_id(0), tl.program_id(1)
    parts = tl.num_programs(1)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    w = tl.load(W + group * D + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_D], dtype=tl.float32)
    first = part * rows_per_program
    last = tl.minimum(first + rows_per_program, rows_per_group)
    for start in range(first, last, BLOCK_M):
        local = start + tl.arange(0, BLOCK_M)
        row_ok = local < last
        rows = group * rows_per_group + local
        mask = row_ok[:, None] & col_ok[None, :]
        offs = rows[:, None].to(tl.int64) * D + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        xhat = x * rstd[:, None]
        if HAS_GATE:
            gate = tl.load(GATE + offs, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(gate)
            normed = xhat * w[None, :]
            dgate = dy * normed * sig * (1.0 + gate * (1.0 - sig))
            tl.store(DGATE + offs, dgate.to(DGATE.dtype.element_ty), mask=mask)
            dy = dy * gate * sig                                    # the gradient reaching the norm's output
        dw += tl.sum(dy * xhat, axis=0)
        dxhat = dy * w[None, :]
        dx = (dxhat - xhat * (tl.sum(dxhat * xhat, axis=1) / D)[:, None]) * rstd[:, None]
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW_PARTIAL + (group * parts + part) * D + cols, dw, mask=col_ok)


def _block_m(D: int) -> int:
    return max(1, min(64, TILE_ELEMENTS // triton.next_power_of_2(D)))


def _parts_per_group(rows_per_group: int, groups: int, block_m: int, device: torch.device) -> int:
    """How many programs share one group's rows in the backward: about four per SM in all, each at least one tile."""
    return max(1, min(triton.cdiv(rows_per_group, block_m), triton.cdiv(4 * num_sms(device), groups)))


class TritonRMSNorm(torch.autograd.Function):
    """x [M, D], weight [G, D] (G divides M), gate None or [M, D] -> y [M, D] in out_dtype."""

    @staticmethod
    def forward(ctx, x, weight, gate, eps, out_dtype):
        M, D = x.shape
        G = weight.shape[0]
        x, weight = x.contiguous(), weight.contiguous()
        gate = None if gate is None else gate.contiguous()
        y = torch.empty(M, D, dtype=out_dtype, device=x.device)
        rstd = torch.empty(M, dtype=torch.float32, device=x.device)
        block_m = _block_m(D)
        _rms_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x, weight, gate if gate is not None else x, y, rstd, M, D, M // G, eps,
            HAS_GATE=gate is not None, BLOCK_M=block_m, BLOCK_D=triton.next_power_of_2(D))
        ctx.save_for_backward(x, weight, gate, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, gate, rstd = ctx.saved_tensors
        M, D = x.shape
        G = weight.shape[0]
        rows_per_group = M // G
        block_m = _block_m(D)
        parts = _parts_per_group(rows_per_group, G, block_m, x.device)
        rows_per_program = triton.cdiv(triton.cdiv(rows_per_group, parts), block_m) * block_m
        parts = triton.cdiv(rows_per_group, rows_per_program)
        dx = torch.empty_like(x)
        dgate = None if gate is None else torch.empty_like(gate)
        dw_partial = torch.empty(G, parts, D, dtype=torch.float32, device=x.device)
        _rms_norm_bwd_kernel[(G, parts)](
            x, weight, gate if gate is not None else x, dy.contiguous(), rstd, dx,
            dgate if dgate is not None else dx, dw_partial, D, rows_per_group, rows_per_program,
            HAS_GATE=gate is not None, BLOCK_M=block_m, BLOCK_D=triton.next_power_of_2(D))
        return dx, dw_partial.sum(1).to(weight.dtype), dgate, None, None


def triton_rms_norm(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None, *, eps: float,
                    out_dtype: torch.dtype) -> torch.Tensor:
    """x [..., D] with weight [D], or x [G, ..., D] with weight [G, D] (one weight per leading slice); D <= MAX_D
    (dispatch.py)."""
    D = x.shape[-1]
    grouped = weight.reshape(-1, D)
    y = TritonRMSNorm.apply(x.reshape(-1, D), grouped, None if gate is None else gate.reshape(-1, D), eps,
                            out_dtype)
    return y.view(x.shape)
