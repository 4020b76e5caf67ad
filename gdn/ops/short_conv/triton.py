"""The mixer's short causal depthwise convolution and its SiLU, as one Triton kernel each way (private; call
gdn.ops.short_conv.causal_conv1d_silu).

    a[b, t, c] = sum_j w[c, j] x[b, t - (W - 1) + j, c]   (x = 0 before t = 0),   y = silu(a)

Run through nn.Conv1d, this wants x as (B, C, T): under packed training every conv cost two strided copies each
way, a cuDNN depthwise kernel and separate SiLU kernels, about a third of a step's device time at d = 256
(profile of 2026-11-27, docs/benchmarks.md). Here x stays (B, T, C), is read once (W shifted tiles hit the cache)
and y is written once; the backward recomputes a instead of storing it.

Batches can be grouped: `weight` is [G, C, W] and batch row b uses weight[b // (B / G)] (K trials of a pack in one
launch). The weight gradient is summed per program in fp32, then over the programs of a group: deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.ops.backend import round_like_the_card

round_like_the_card()                  # interpreted: bf16 rounding as on the card

BLOCK_T = 64
BLOCK_C = 64


@triton.jit
def _shifted(X, base, t, c, T, C, row, shift):
    """x at times t + shift (zero outside [0, T)), channels c, rows `row` elements apart: a [BLOCK_T, BLOCK_C] fp32
    tile."""
    ts = t + shift
    mask = ((ts >= 0) & (ts < T))[:, None] & (c < C)[None, :]
    return tl.load(X + base + ts[:, None].to(tl.int64) * row + c[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _preactivation(X, Wt, base, w_base, t, c, T, C, row, shift,
                   W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    a = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for j in tl.static_range(W):
        w = tl.load(Wt + w_base + c * W + j, mask=c < C, other=0.0).to(tl.float32)
        a += _shifted(X, base, t, c, T, C, row, shift - (W - 1) + j) * w[None, :]
    return a


@triton.jit
def _conv_silu_fwd_kernel(X, Wt, Y, T, C, x_batch, x_row, batches_per_group,
                          W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # x's rows may be wider than C (x_row): a column slice of a wider projection is read where it lies
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2)
    w_base = (b // batches_per_group) * C * W
    a = _preactivation(X, Wt, b.to(tl.int64) * x_batch, w_base, t, c, T, C, x_row, 0, W, BLOCK_T, BLOCK_C)
    mask = (t < T)[:, None] & (c < C)[None, :]
    y = a * tl.sigmoid(a)
    tl.store(Y + b.to(tl.int64) * T * C + t[:, None].to(tl.int64) * C + c[None, :], y.to(Y.dtype.element_ty),
             mask=mask)


@triton.jit
def _conv_silu_bwd_kernel(X, Wt, DY, DX, DW_PARTIAL, T, C, x_batch, x_row, batches_per_group,
                          W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    # dx[t] = sum_s w[W-1-s] da[t+s], with da = dy * silu'(a) recomputed at each of the W shifts s;
    # dw[j] = sum_t da[t] x[t-(W-1)+j].
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    base = b.to(tl.int64) * T * C                                  # of dy and dx, which are (B, T, C)
    x_base = b.to(tl.int64) * x_batch
    w_base = (b // batches_per_group) * C * W
    dx = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    da_here = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for s in tl.static_range(W):
        a = _preactivation(X, Wt, x_base, w_base, t, c, T, C, x_row, s, W, BLOCK_T, BLOCK_C)
        dy = _shifted(DY, base, t, c, T, C, C, s)                     # zero past T: no gradient from there
        sig = tl.sigmoid(a)
        da = dy * sig * (1.0 + a * (1.0 - sig))
        w = tl.load(Wt + w_base + c * W + (W - 1 - s), mask=c_ok, other=0.0).to(tl.float32)
        dx += da * w[None, :]
        if s == 0:
            da_here = da
    mask = (t < T)[:, None] & c_ok[None, :]
    tl.store(DX + base + t[:, None].to(tl.int64) * C + c[None, :], dx.to(DX.dtype.element_ty), mask=mask)
    row = (b * tl.num_programs(0) + pid_t).to(tl.int64) * W * C
    for j in tl.static_range(W):
        part = tl.sum(da_here * _shifted(X, x_base, t, c, T, C, x_row, j - (W - 1)), axis=0)
        tl.store(DW_PARTIAL + row + j * C + c, part, mask=c_ok)


def _rows_in_place(x: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) as the kernels read it, any batch and time strides but channels contiguous: a copy only where
    they are not."""
    return x if x.stride(2) == 1 or x.shape[2] == 1 else x.contiguous()


def _grid(B: int, T: int, C: int) -> tuple[int, int, int]:
    return triton.cdiv(T, BLOCK_T), triton.cdiv(C, BLOCK_C), B


class TritonCausalConvSiLU(torch.autograd.Function):
    """x [B, T, C], weight [G, C, W] (G divides B) -> silu(causal depthwise conv) [B, T, C] in x's dtype. x may be
    a column slice of wider rows (channels contiguous): it is read in place, not copied."""

    @staticmethod
    def forward(ctx, x, weight):
        B, T, C = x.shape
        G, _, W = weight.shape
        x = _rows_in_place(x)
        weight = weight.contiguous()
        y = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
        _conv_silu_fwd_kernel[_grid(B, T, C)](x, weight, y, T, C, x.stride(0), x.stride(1), B // G,
                                              W=W, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        B, T, C = x.shape
        G, _, W = weight.shape
        grid = _grid(B, T, C)
        dx = torch.empty(B, T, C, dtype=x.dtype, device=x.device)
        dw_partial = torch.empty(B * grid[0], W, C, dtype=torch.float32, device=x.device)
        _conv_silu_bwd_kernel[grid](x, weight, dy.contiguous(), dx, dw_partial, T, C, x.stride(0), x.stride(1),
                                    B // G, W=W, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        dw = dw_partial.view(G, -1, W, C).sum(1).transpose(1, 2)         # [G, C, W]
        return dx, dw.to(weight.dtype)


def triton_causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [B, T, C] with weight [C, 1, W] (nn.Conv1d's depthwise layout), or x [G, B, T, C] with weight [G, C, 1, W]
    (one weight per leading slice)."""
    C, W = weight.shape[-3], weight.shape[-1]
    y = TritonCausalConvSiLU.apply(x.reshape(-1, *x.shape[-2:]), weight.reshape(-1, C, W))
    return y.view(x.shape)
