"""gdn.ops.rms_norm: the fused Triton RMSNorm (plain and SiLU-gated) against the float64 reference, forward and every
gradient, on fresh random inputs; its vmap fold (one weight per trial) against per-trial calls; the output dtype rule.

Without CUDA the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set before they are defined) at small
shapes; with CUDA on the card, plus the packed proxy's shapes. Error: relative Frobenius norm in float64.
Tolerances: fp32 inputs 1e-5, 16-bit inputs 1e-2 (one rounding of y and of each gradient, ~2^-9 relative).
"""
from __future__ import annotations


import pytest
import torch
from torch.func import vmap

from triton_env import rel_err, triton_device

DEVICE = triton_device()
CUDA = DEVICE == "cuda"

from gdn.ops.rms_norm import rms_norm, rms_norm_reference  # noqa: E402
from gdn.ops.rms_norm.triton import triton_rms_norm  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def inputs(G, R, D, dtype, gated, seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = (3 * torch.randn(G, R, D, generator=gen, device=DEVICE)).to(dtype)
    weight = 1 + 0.5 * torch.randn(G, D, generator=gen, device=DEVICE)
    gate = torch.randn(G, R, D, generator=gen, device=DEVICE).to(dtype) if gated else None
    dy = torch.randn(G, R, D, generator=gen, device=DEVICE, dtype=torch.float64)
    return x, weight, gate, dy


def forward_backward(fn, x, weight, gate, dy):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, gate)]
    y = fn(*leaves)
    (y.double() * dy).sum().backward()
    return y, [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("G,R,D", [(1, 5, 16), (3, 37, 48), (2, 130, 100)])
def test_fused_matches_float64_reference(G, R, D, dtype, gated):
    """Grouped weights (row block g uses weight[g]), D not a power of two, rows not a multiple of the tile."""
    x, weight, gate, dy = inputs(G, R, D, dtype, gated, seed=G * 1000 + R + D)
    y, grads = forward_backward(lambda a, w, g: triton_rms_norm(a, w, g, eps=1e-6, out_dtype=dtype),
                                x, weight, gate, dy)
    ref, ref_grads = forward_backward(
        lambda a, w, g: rms_norm_reference(a, w.view(G, 1, D), 1e-6, g),
        x.double(), weight.double(), None if gate is None else gate.double(), dy)
    assert y.dtype == dtype and y.shape == x.shape
    errors = {"y": rel_err(y, ref)}
    for name, got, want in zip(("dx", "dweight", "dgate"), grads, ref_grads):
        if want is not None:
            assert got is not None and got.dtype == {"dweight": weight.dtype}.get(name, dtype)
            errors[name] = rel_err(got, want)
    print(f"\n[{G},{R},{D}] {dtype} gated={gated}: " + " ".join(f"{n}={e:.1e}" for n, e in errors.items()))
    bad = {n: e for n, e in errors.items() if not e <= TOL[dtype]}
    assert not bad, f"relative error over {TOL[dtype]:g}: {bad}"


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_vmapped_fused_norm_equals_each_trial_alone(gated):
    """Under vmap (packed trials, each with its own weight) rms_norm folds the trials into one fused launch; each
    trial's output and gradients must be what the fused op gives that trial alone."""
    K, B, T, H, V = 3, 2, 9, 2, 24
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    x = torch.randn(K, B, T, H, V, generator=gen, device=DEVICE).requires_grad_()
    weight = (1 + 0.5 * torch.randn(K, V, generator=gen, device=DEVICE)).requires_grad_()
    gate = torch.randn(K, B, T, H, V, generator=gen, device=DEVICE).requires_grad_() if gated else None
    dy = torch.randn(K, B, T, H, V, generator=gen, device=DEVICE)
    leaves = [t for t in (x, weight, gate) if t is not None]

    if gated:
        y = vmap(lambda a, w, g: rms_norm(a, w, 1e-6, gate=g, backend="triton"))(x, weight, gate)
    else:
        y = vmap(lambda a, w: rms_norm(a, w, 1e-6, backend="triton"))(x, weight)   # the Triton path on any device
    packed_grads = torch.autograd.grad((y * dy).sum(), leaves)

    for k in range(K):
        alone = [t[k].detach().requires_grad_() for t in leaves]
        y_k = rms_norm(alone[0], alone[1], 1e-6, gate=alone[2] if gated else None, backend="triton")
        grads_k = torch.autograd.grad((y_k * dy[k]).sum(), alone)
        torch.testing.assert_close(y[k], y_k, rtol=1e-6, atol=1e-6)
        for packed, single in zip(packed_grads, grads_k):
            torch.testing.assert_close(packed[k], single, rtol=1e-5, atol=1e-6)


def test_unbatched_weight_under_vmap():
    """A weight shared by every vmapped slice (in_dims None) is expanded; its gradient sums over the slices."""
    x = torch.randn(2, 5, 16, device=DEVICE)
    weight = torch.rand(16, device=DEVICE).requires_grad_()
    y = vmap(lambda a: rms_norm(a, weight, 1e-6, backend="triton"))(x)
    y.sum().backward()
    ref_w = weight.detach().double().requires_grad_()
    rms_norm_reference(x.double(), ref_w, 1e-6).sum().backward()
    torch.testing.assert_close(y.double(), rms_norm_reference(x.double(), weight.double(), 1e-6), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(weight.grad.double(), ref_w.grad, rtol=1e-5, atol=1e-5)


def test_output_dtype_follows_autocast():
    """Under autocast y comes out in the autocast dtype (what each linear reading it would cast it to), with the
    same rounding: one cast of the float32 result."""
    x, weight = torch.randn(4, 32, device=DEVICE), torch.rand(32, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = rms_norm(x, weight, 1e-6)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, rms_norm_reference(x, weight, 1e-6).to(torch.bfloat16))
    assert rms_norm(x, weight, 1e-6).dtype == torch.float32
    assert rms_norm(x.double(), weight.double(), 1e-6).dtype == torch.float64


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("gated,D", [(False, 256), (True, 64), (False, 2048), (True, 512)])
def test_proxy_shapes_on_the_card(gated, D):
    """The packed proxy's norms: 8 trials x 8 x 1024 tokens at d = 256 (V = 64 per head, 6 heads), and d = 2048."""
    rows = 8 * 1024 * (6 if gated else 1)
    G = 8 if D <= 512 else 2
    x, weight, gate, dy = inputs(G, rows, D, torch.bfloat16, gated, seed=D)
    y, grads = forward_backward(lambda a, w, g: triton_rms_norm(a, w, g, eps=1e-6, out_dtype=torch.bfloat16),
                                x, weight, gate, dy)
    ref, ref_grads = forward_backward(
        lambda a, w, g: rms_norm_reference(a, w.view(G, 1, D), 1e-6, g),
        x.double(), weight.double(), None if gate is None else gate.double(), dy)
    errors = [rel_err(y, ref)] + [rel_err(g, r) for g, r in zip(grads, ref_grads) if r is not None]
    print(f"\n[{G},{rows},{D}] gated={gated}: " + " ".join(f"{e:.1e}" for e in errors))
    assert max(errors) <= TOL[torch.bfloat16]
