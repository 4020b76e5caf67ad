"""The mean cross-entropy of scale * logits as one Triton kernel each way (private; call
gdn.ops.cross_entropy.cross_entropy).

Forward: one program per row walks the vocabulary in blocks of BLOCK_V, keeping a running max m and a running sum
s = sum exp(s z - m) in fp32 (each block rescales s by exp(m_old - m_new)), then stores the row's loss
lse - s z_t and its logsumexp lse = m + log s. Backward: one program per (row, vocabulary block) writes
    dz = (softmax(s z) - onehot(t)) * s * dloss / N
in the logits' dtype, recomputing the softmax from z and the saved lse. Bytes moved: z read twice, dz written once;
no [N, V] fp32 tensor is made.

Rows can be grouped: logits [G, N, V] are G groups of N rows (the packed trainer's trials), group g with its own
scale and its own mean, all in one launch each way, the gradient written straight into one [G, N, V] tensor.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.ops.backend import round_like_the_card

round_like_the_card()                  # interpreted: bf16 rounding as on the card

MAX_BLOCK_V = 4096       # vocabulary entries a program holds at once: 16 fp32 registers a thread at 8 warps


@triton.jit
def _cross_entropy_fwd_kernel(Z, TARGET, SCALE, LOSS, LSE, V, stride_row, rows_per_group, scale_stride, scale_value,
                              SCALE_IN_MEMORY: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    z_row = Z + row.to(tl.int64) * stride_row
    if SCALE_IN_MEMORY:
        s = tl.load(SCALE + (row // rows_per_group) * scale_stride).to(tl.float32)
    else:
        s = scale_value
    cols = tl.arange(0, BLOCK_V)
    m = tl.zeros((), dtype=tl.float32) - float("inf")             # running max of s z
    total = tl.zeros((), dtype=tl.float32)                         # running sum of exp(s z - m)
    for start in range(0, V, BLOCK_V):
        offs = start + cols
        ok = offs < V
        x = tl.where(ok, tl.load(z_row + offs, mask=ok, other=0.0).to(tl.float32) * s, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=0))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(total)
    t = tl.load(TARGET + row)
    in_range = (t >= 0) & (t < V)
    x_t = tl.load(z_row + t, mask=in_range, other=float("nan")).to(tl.float32) * s
    tl.store(LOSS + row, lse - x_t)
    tl.store(LSE + row, lse)


@triton.jit
def _cross_entropy_bwd_kernel(Z, TARGET, SCALE, LSE, DLOSS, DZ, V, stride_row, stride_dz_row, rows_per_group,
                              scale_stride, scale_value, inv_n, SCALE_IN_MEMORY: tl.constexpr, BLOCK_V: tl.constexpr):
    row, block = tl.program_id(0), tl.program_id(1)
    group = row // rows_per_group
    if SCALE_IN_MEMORY:
        s = tl.load(SCALE + group * scale_stride).to(tl.float32)
    else:
        s = scale_value
    offs = block * BLOCK_V + tl.arange(0, BLOCK_V)
    ok = offs < V
    x = tl.load(Z + row.to(tl.int64) * stride_row + offs, mask=ok, other=0.0).to(tl.float32) * s
    p = tl.exp(x - tl.load(LSE + row))
    t = tl.load(TARGET + row)
    d = tl.where(offs == t, p - 1.0, p)
    coef = s * tl.load(DLOSS + group).to(tl.float32) * inv_n
    tl.store(DZ + row.to(tl.int64) * stride_dz_row + offs, (d * coef).to(DZ.dtype.element_ty), mask=ok)


def _launch_config(V: int, block_v: int | None) -> tuple[int, int]:
    block = block_v or min(MAX_BLOCK_V, triton.next_power_of_2(V))
    return block, 8 if block >= 2048 else 4


def _scale_args(scale, logits: torch.Tensor):
    """(SCALE pointer, its stride over groups, scale_value, SCALE_IN_MEMORY): a tensor scale is read by the kernel,
    so a step captured in a CUDA graph never copies it to the host."""
    if isinstance(scale, torch.Tensor):
        flat = scale.reshape(-1)
        return flat, (flat.stride(0) if flat.numel() > 1 else 0), 1.0, True
    return logits, 0, float(scale), False


class TritonCrossEntropy(torch.autograd.Function):
    """logits [M, V] (unit stride along V) in G groups of M / G rows, target [M] int64, scale -> each group's mean
    loss (G,), fp32."""

    @staticmethod
    def forward(ctx, logits, target, scale, groups, block_v):
        if logits.stride(1) != 1:
            logits = logits.contiguous()
        target = target.contiguous()
        M, V = logits.shape
        loss = torch.empty(M, dtype=torch.float32, device=logits.device)
        lse = torch.empty(M, dtype=torch.float32, device=logits.device)
        scale_ptr, scale_stride, scale_value, in_memory = _scale_args(scale, logits)
        block, warps = _launch_config(V, block_v)
        _cross_entropy_fwd_kernel[(M,)](logits, target, scale_ptr, loss, lse, V, logits.stride(0), M // groups,
                                        scale_stride, scale_value,
                                        SCALE_IN_MEMORY=in_memory, BLOCK_V=block, num_warps=warps)
        ctx.save_for_backward(logits, target, lse, *([scale_ptr] if in_memory else []))
        ctx.scale_stride, ctx.scale_value, ctx.in_memory = scale_stride, scale_value, in_memory
        ctx.groups, ctx.block_v = groups, block_v
        return loss.view(groups, M // groups).mean(1)

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse, *scale = ctx.saved_tensors
        M, V = logits.shape
        dz = torch.empty_like(logits, memory_format=torch.contiguous_format)
        block, warps = _launch_config(V, ctx.block_v)
        N = M // ctx.groups
        _cross_entropy_bwd_kernel[(M, triton.cdiv(V, block))](
            logits, target, scale[0] if ctx.in_memory else logits, lse, dloss.contiguous(), dz, V,
            logits.stride(0), dz.stride(0), N, ctx.scale_stride, ctx.scale_value, 1.0 / N,
            SCALE_IN_MEMORY=ctx.in_memory, BLOCK_V=block, num_warps=warps)
        return dz, None, None, None, None


def triton_cross_entropy(logits: torch.Tensor, target: torch.Tensor, scale: float | torch.Tensor = 1.0, *,
                         block_v: int | None = None) -> torch.Tensor:
    """The mean cross-entropy of scale * logits [N, V] against target [N] (0-d), or each group's, logits [G, N, V],
    target [G, N], scale one number or (G,) -> (G,) (dispatch.py checks the inputs). block_v: the vocabulary block
    (a power of two; default min(MAX_BLOCK_V, V rounded up)); the tests take small ones so that a small V spans
    several blocks."""
    if logits.ndim == 2:
        return TritonCrossEntropy.apply(logits, target, scale, 1, block_v)[0]
    G, N, V = logits.shape
    return TritonCrossEntropy.apply(logits.reshape(G * N, V), target.reshape(G * N), scale, G, block_v)
