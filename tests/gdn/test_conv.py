"""gdn.ops.short_conv: the fused Triton causal depthwise conv + SiLU against the float64 reference, forward and
gradients (x and the weight), on fresh random inputs; its vmap fold (one weight per trial) against per-trial calls; the
autocast rule.

Without CUDA the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set before they are defined) at small
shapes; with CUDA on the card, plus the packed proxy's shapes. Error: relative Frobenius norm in float64.
Tolerances: fp32 inputs 1e-5, bf16 inputs 1e-2.
"""
from __future__ import annotations


import pytest
import torch
from torch.func import vmap

from triton_env import rel_err, triton_device

DEVICE = triton_device()
CUDA = DEVICE == "cuda"

from gdn.ops.short_conv import causal_conv1d_silu, causal_conv1d_silu_reference  # noqa: E402
from gdn.ops.short_conv.triton import _rows_in_place, triton_causal_conv1d_silu  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def check(G, B, T, C, W, dtype, seed=0):
    """x (G, B, T, C) with weight (G, C, 1, W): slice g convolved with weight[g] (G = 1: one plain call)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(G, B, T, C, generator=gen, device=DEVICE).to(dtype)
    weight = (torch.randn(G, C, 1, W, generator=gen, device=DEVICE) / W ** 0.5).to(dtype)
    dy = torch.randn(G, B, T, C, generator=gen, device=DEVICE, dtype=torch.float64)

    xf, wf = x.clone().requires_grad_(), weight.clone().requires_grad_()
    y = triton_causal_conv1d_silu(xf, wf) if G > 1 else triton_causal_conv1d_silu(xf[0], wf[0])[None]
    (y.double() * dy).sum().backward()

    xr, wr = x.double().requires_grad_(), weight.double().requires_grad_()
    ref = torch.stack([causal_conv1d_silu_reference(xr[g], wr[g]) for g in range(G)])
    (ref * dy).sum().backward()

    assert y.dtype == dtype and y.shape == x.shape
    errors = {"y": rel_err(y, ref), "dx": rel_err(xf.grad, xr.grad), "dweight": rel_err(wf.grad, wr.grad)}
    assert xf.grad.dtype == dtype and wf.grad.dtype == dtype
    print(f"\n[{G},{B},{T},{C}] W={W} {dtype}: " + " ".join(f"{n}={e:.1e}" for n, e in errors.items()))
    bad = {n: e for n, e in errors.items() if not e <= TOL[dtype]}
    assert not bad, f"relative error over {TOL[dtype]:g}: {bad}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("G,B,T,C,W", [(1, 2, 5, 8, 4), (3, 2, 70, 40, 4), (2, 1, 130, 100, 3), (1, 1, 3, 16, 4)])
def test_fused_matches_float64_reference(G, B, T, C, W, dtype):
    """Grouped weights, T shorter than the kernel and not a multiple of the tile, C over one tile and ragged."""
    check(G, B, T, C, W, dtype, seed=G + B + T + C)


def test_vmapped_fused_conv_equals_each_trial_alone():
    """Under vmap (packed trials, each with its own weight) the conv is one fused launch; each trial's output and
    gradients must be what the fused op gives that trial alone."""
    K, B, T, C, W = 3, 2, 33, 24, 4
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    x = torch.randn(K, B, T, C, generator=gen, device=DEVICE).requires_grad_()
    weight = torch.randn(K, C, 1, W, generator=gen, device=DEVICE).requires_grad_()
    dy = torch.randn(K, B, T, C, generator=gen, device=DEVICE)
    y = vmap(lambda a, w: causal_conv1d_silu(a, w, backend="triton"))(x, weight)   # the Triton path on any device
    packed_grads = torch.autograd.grad((y * dy).sum(), (x, weight))
    for k in range(K):
        xk, wk = x[k].detach().requires_grad_(), weight[k].detach().requires_grad_()
        yk = causal_conv1d_silu(xk, wk, backend="triton")
        grads_k = torch.autograd.grad((yk * dy[k]).sum(), (xk, wk))
        torch.testing.assert_close(y[k], yk, rtol=1e-6, atol=1e-6)
        for packed, single in zip(packed_grads, grads_k):
            torch.testing.assert_close(packed[k], single, rtol=1e-5, atol=1e-5)


def test_autocast_casts_input_and_weight_as_conv1d_would():
    """Under autocast the result is the conv of the autocast-dtype input and weight, in that dtype."""
    x, weight = torch.randn(2, 9, 8, device=DEVICE), torch.randn(8, 1, 4, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = causal_conv1d_silu(x, weight)
    assert y.dtype == torch.bfloat16
    expected = causal_conv1d_silu_reference(x.bfloat16().double(), weight.bfloat16().double())
    assert rel_err(y, expected) < TOL[torch.bfloat16]


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("C", [192, 384, 1536])
def test_proxy_shapes_on_the_card(C):
    """The packed proxy's convs: 8 trials x 8 sequences x 1024 tokens, key and value channels at d = 256 and the
    value channels at d = 1024."""
    check(8, 8, 1024, C, 4, torch.bfloat16, seed=C)


@pytest.mark.parametrize("G", [1, 2])
def test_a_column_slice_of_wider_rows_is_read_in_place(G):
    """The mixer's one input GEMM (gdn.model) gives q, k and v as column slices of one (B, T, N) output: the kernel
    reads such a slice where it lies, and its output and gradients are those of the same values made contiguous."""
    B, T, C, W, N, at = 2, 37, 24, 4, 80, 16
    gen = torch.Generator(device=DEVICE).manual_seed(11 + G)
    wide = torch.randn(G, B, T, N, generator=gen, device=DEVICE).requires_grad_()
    weight = torch.randn(G, C, 1, W, generator=gen, device=DEVICE).requires_grad_()
    dy = torch.randn(G, B, T, C, generator=gen, device=DEVICE)
    part = wide[..., at:at + C]
    first = part[0]
    assert not part.is_contiguous() and _rows_in_place(first) is first                # no copy made
    y = triton_causal_conv1d_silu(part if G > 1 else first, weight if G > 1 else weight[0])
    grads = torch.autograd.grad((y.view(dy.shape) * dy).sum(), (wide, weight))

    dense = part.detach().clone().requires_grad_()
    weight2 = weight.detach().clone().requires_grad_()
    y2 = triton_causal_conv1d_silu(dense if G > 1 else dense[0], weight2 if G > 1 else weight2[0])
    dense_grads = torch.autograd.grad((y2.view(dy.shape) * dy).sum(), (dense, weight2))
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    torch.testing.assert_close(grads[0][..., at:at + C], dense_grads[0], rtol=0, atol=0)
    assert grads[0][..., :at].abs().max() == 0 and grads[0][..., at + C:].abs().max() == 0
    torch.testing.assert_close(grads[1], dense_grads[1], rtol=0, atol=0)
