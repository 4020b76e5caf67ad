"""The Triton gated delta rule (gdn.ops.gated_delta_rule.triton) against the float64 reference: output, final state
and every gradient (dq, dk, dv, dg, dbeta, dh0).

Without CUDA the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set here before the kernels are
defined) at tiny shapes. With CUDA the same checks run on the GPU, plus the benchmark shapes (skipped without CUDA), which
also validates every fixed launch config the kernels use at those shapes.

Error metric: relative Frobenius norm |x - ref| / |ref| over the whole tensor, in float64; the measured error is
printed (pytest -s) and named in the failure. Tolerances: fp32 inputs 1e-4 (no TF32), bf16 inputs 1e-2.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from triton_env import rel_err, triton_device

DEVICE = triton_device()
CUDA = DEVICE == "cuda"

from gdn.ops.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule  # noqa: E402
from gdn.ops.gated_delta_rule.triton import MIN_CUDA_HEAD_DIM_K, triton_chunk_gated_delta_rule  # noqa: E402
from gdn.ops.gated_delta_rule.triton_fwd import _dot  # noqa: E402
from gdn.ops.gated_delta_rule.triton_tiled import MORE_BITS  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def make_inputs(B, T, H, K, V, dtype, gates, seed, with_h0):
    """Fresh random inputs. gates: "moderate" (g = logsigmoid(U(0,1)), fla's benchmark gates), "strong" (down to
    about -40 per token, as trained Qwen-style gates reach), or "zero" (no decay: the chunked form's hard case)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE)

    q, k, v = randn(B, T, H, K).to(dtype), randn(B, T, H, K).to(dtype), randn(B, T, H, V).to(dtype)
    u = torch.rand(B, T, H, generator=gen, device=DEVICE)
    g = {"moderate": F.logsigmoid(u), "strong": -40.0 * u ** 3, "zero": torch.zeros_like(u)}[gates]
    beta = torch.sigmoid(randn(B, T, H))
    h0 = 0.5 * randn(B, H, K, V) if with_h0 else None
    return q, k, v, g, beta, h0


def run(fn, q, k, v, g, beta, h0, do, dht, use_qk_l2norm, dtype=None):
    """Forward and backward of fn on copies of the inputs (cast to dtype if given); returns outputs and grads."""
    leaves = [x.detach().to(dtype or x.dtype).requires_grad_() for x in (q, k, v, g, beta)]
    h0_leaf = None if h0 is None else h0.detach().to(dtype or h0.dtype).requires_grad_()
    o, ht = fn(*leaves, initial_state=h0_leaf, output_final_state=dht is not None, use_qk_l2norm=use_qk_l2norm)
    loss = (o.double() * do.double()).sum()
    if dht is not None:
        loss = loss + (ht.double() * dht.double()).sum()
    loss.backward()
    grads = [x.grad for x in leaves] + ([h0_leaf.grad] if h0 is not None else [])
    return o, ht, grads


def inputs_and_output_grads(B, T, H, K, V, dtype, gates, seed, with_h0, with_ht):
    """make_inputs' tensors, then the gradients of o and (with_ht) of the final state that the backward gets."""
    q, k, v, g, beta, h0 = make_inputs(B, T, H, K, V, dtype, gates, seed, with_h0)
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    do = torch.randn(B, T, H, V, generator=gen, device=DEVICE).to(dtype)
    dht = torch.randn(B, H, K, V, generator=gen, device=DEVICE) if with_ht else None
    return q, k, v, g, beta, h0, do, dht


def check(B, T, H, K, V, dtype, gates="moderate", use_qk_l2norm=True, with_h0=True, with_ht=True, seed=0,
          reference=naive_recurrent_gated_delta_rule):
    q, k, v, g, beta, h0, do, dht = inputs_and_output_grads(B, T, H, K, V, dtype, gates, seed, with_h0, with_ht)

    o, ht, grads = run(triton_chunk_gated_delta_rule, q, k, v, g, beta, h0, do, dht, use_qk_l2norm)
    ro, rht, rgrads = run(reference, q, k, v, g, beta, h0, do, dht, use_qk_l2norm, dtype=torch.float64)

    names = ["o"] + (["ht"] if with_ht else []) + ["dq", "dk", "dv", "dg", "dbeta"] + (["dh0"] if with_h0 else [])
    got = [o] + ([ht] if with_ht else []) + grads
    ref = [ro] + ([rht] if with_ht else []) + rgrads
    tol = TOL[dtype]
    errors = {}
    for name, x, r in zip(names, got, ref):
        assert x is not None and x.shape == r.shape, f"{name}: shape {None if x is None else x.shape} vs {r.shape}"
        assert torch.isfinite(x).all(), f"{name} has NaN/inf"
        errors[name] = rel_err(x, r)
    print(f"\n[{B},{T},{H},{K},{V}] {dtype} gates={gates} l2={use_qk_l2norm}: "
          + " ".join(f"{n}={e:.1e}" for n, e in errors.items()))
    bad = {n: e for n, e in errors.items() if not e <= tol}
    assert not bad, f"relative error over {tol:g}: " + ", ".join(f"{n}={e:.2e}" for n, e in bad.items())
    assert o.dtype == q.dtype and grads[0].dtype == q.dtype and grads[3].dtype == g.dtype


# Tiny shapes: every branch (T = 1, one exact chunk, a ragged last chunk, 3 chunks, head dims that are not powers
# of two, K over one 64-wide tile, no L2 norm, no initial/final state, zero and strong gates, bf16).
TINY = [
    pytest.param(dict(B=2, T=70, H=2, K=32, V=16, dtype=torch.float32), id="fp32-T70-K32-V16"),
    pytest.param(dict(B=2, T=1, H=1, K=16, V=16, dtype=torch.float32, use_qk_l2norm=False, with_h0=False,
                      with_ht=False), id="fp32-T1-no-l2-no-state"),
    pytest.param(dict(B=1, T=130, H=1, K=24, V=40, dtype=torch.float32, gates="strong"), id="fp32-T130-K24-V40-strong"),
    pytest.param(dict(B=1, T=64, H=1, K=80, V=24, dtype=torch.float32, gates="zero"), id="fp32-T64-K80-zero-gates"),
    pytest.param(dict(B=1, T=70, H=2, K=32, V=32, dtype=torch.bfloat16), id="bf16-T70-K32-V32"),   # split-bf16 products
    pytest.param(dict(B=1, T=70, H=1, K=48, V=24, dtype=torch.bfloat16, gates="strong"), id="bf16-T70-K48-V24-tf32"),
    pytest.param(dict(B=2, T=70, H=2, K=16, V=32, dtype=torch.bfloat16), id="bf16-T70-K16-V32-masked-tile"),
]


@pytest.mark.parametrize("case", TINY)
def test_tiny_shapes_match_float64_recurrence(case):
    check(**case)


@triton.jit
def _rounding_kernel(x, y, bf, cast, prod, N: tl.constexpr):
    r = tl.arange(0, N)
    a = tl.load(x + r[:, None] * N + r[None, :])
    b = tl.load(y + r[:, None] * N + r[None, :])
    tl.store(bf + r[:, None] * N + r[None, :], a)                              # fp32 into a bf16 tensor
    tl.store(cast + r[:, None] * N + r[None, :], a.to(tl.bfloat16).to(tl.float32))
    tl.store(prod + r[:, None] * N + r[None, :], _dot(a, b, "tf32"))


def test_bf16_rounding_and_tf32_products_are_the_cards():
    """The interpreter must round as the card does, or its errors are not the card's: fp32 -> bf16 to nearest even
    (a cast and a store; Triton's interpreter truncates unless gdn.ops.backend.round_like_the_card patched it), and a
    "tf32" product of fp32 tiles as the card's tensor cores take it, operands truncated to 10 mantissa bits
    (triton_fwd._dot). On a card the same test checks the card itself."""
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    x, y = (torch.randn(32, 32, generator=gen, device=DEVICE) for _ in range(2))
    x[0, :4] = torch.tensor([float("inf"), -0.0, 3.0e38, 1.0 + 2 ** -8])                # 1 + 2^-8: a tie, to even
    bf, cast, prod = torch.empty_like(x, dtype=torch.bfloat16), torch.empty_like(x), torch.empty_like(x)
    _rounding_kernel[(1,)](x, y, bf, cast, prod, N=32)
    assert torch.equal(bf, x.to(torch.bfloat16)) and torch.equal(cast, x.to(torch.bfloat16).float())

    def truncated(t):
        return (t.view(torch.int32) & ~0x1FFF).view(torch.float32).double()
    x[0, :4] = 1.0
    _rounding_kernel[(1,)](x, y, bf, cast, prod, N=32)
    card = truncated(x) @ truncated(y)
    assert rel_err(prod, card) < 1e-6                                # fp32 accumulation; rounding would be ~1e-3
    assert rel_err(prod, x.double() @ y.double()) > 1e-5             # and it is not the fp32 product


def test_no_grad_forward_matches_and_saves_nothing():
    """Under no_grad the forward skips the tensors saved for the backward; the output must not change."""
    no_grad_forward_matches()


def no_grad_forward_matches():
    q, k, v, g, beta, h0 = make_inputs(1, 70, 1, 16, 16, torch.float32, "moderate", 3, True)
    o_grad, ht_grad = triton_chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0.requires_grad_(),
                                                    output_final_state=True, use_qk_l2norm=True)
    with torch.no_grad():
        o, ht = triton_chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                              use_qk_l2norm=True)
    assert torch.equal(o, o_grad.detach()) and torch.equal(ht, ht_grad.detach())
    assert triton_chunk_gated_delta_rule(q, k, v, g, beta)[1] is None


# GPU only: the benchmark shapes (benchmarks/gdn_kernels.py) and a ragged one, in bf16 (as trained) and fp32.
# Reference: the recurrence where its autograd graph fits; above that the chunked PyTorch path in float64
# (itself tested against the recurrence in tests/gdn/test_ops.py), at B <= 2.
GPU_SHAPES = [(16, 1024, 6, 32, 64), (16, 1024, 6, 64, 128), (16, 1024, 6, 128, 256), (8, 2048, 16, 128, 128),
              (2, 16384, 16, 128, 128), (3, 1000, 4, 48, 80)]


GPU_CASES = [(shape, torch.bfloat16) for shape in GPU_SHAPES] + \
    [(shape, torch.float32) for shape in GPU_SHAPES] + \
    [(shape, torch.float16) for shape in GPU_SHAPES[:3]] + \
    [((2, 1024, 4, 256, 64), torch.bfloat16)] + \
    [((8, 512, 6, 256, 512), torch.bfloat16)]     # the heads of width 2048 (base 512): fla parity's 4x, the widest V
if MIN_CUDA_HEAD_DIM_K <= 16:         # the d = 128 proxy's heads (K = 16), once the kernels take them on CUDA
    GPU_CASES += [((16, 1024, 6, 16, 32), torch.bfloat16), ((16, 1024, 6, 16, 32), torch.float32)]
DTYPE_ID = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape,dtype", GPU_CASES,
                         ids=["x".join(map(str, s)) + "-" + DTYPE_ID[d] for s, d in GPU_CASES])
def test_benchmark_shapes_match_float64_reference(shape, dtype):
    B, T, H, K, V = shape
    recurrence_bytes = 4 * 8 * B * H * K * V * T                   # states its autograd graph keeps
    reference = naive_recurrent_gated_delta_rule if recurrence_bytes < 8e9 else chunk_gated_delta_rule
    if reference is chunk_gated_delta_rule:
        B = min(B, 2)
    check(B, T, H, K, V, dtype, reference=reference)


@pytest.mark.skipif(not CUDA or MIN_CUDA_HEAD_DIM_K <= 8, reason="needs CUDA, and K = 8 below the kernels' bound")
def test_head_dim_below_the_card_bound_takes_the_chunked_path():
    """K below MIN_CUDA_HEAD_DIM_K has not run on a card: such a call warns and still gives the right answer."""
    with pytest.warns(RuntimeWarning, match="chunked PyTorch path"):
        check(4, 512, 6, 8, 16, torch.bfloat16)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_auto_backend_is_triton_on_cuda():
    from gdn.ops.gated_delta_rule.dispatch import resolve_backend
    assert resolve_backend("auto", torch.device("cuda")) == "triton"


# The wide-head path (triton_tiled.py: K-sub-tiled state passes, the output and Aqk^T dO over all chunks, the
# gradient over a V-tile grid dimension and its reduction; bf16 operands in some products for bf16 inputs) runs from
# K = 128 up for bf16 and fp16 inputs. Its threshold is lowered here so the interpreter runs it at tiny shapes, in
# fp32 too: 1, 2 and 4 state sub-tiles, ragged K, V and T, V over one gradient V tile.
TILED = [
    pytest.param(dict(B=2, T=70, H=2, K=32, V=16, dtype=torch.float32), id="fp32-T70-K32-V16"),
    pytest.param(dict(B=1, T=130, H=1, K=80, V=72, dtype=torch.float32, gates="strong"), id="fp32-T130-K80-V72-strong"),
    pytest.param(dict(B=1, T=64, H=1, K=200, V=24, dtype=torch.float32, gates="zero", with_h0=False),
                 id="fp32-T64-K200-zero-gates"),
    pytest.param(dict(B=2, T=1, H=1, K=16, V=16, dtype=torch.float32, use_qk_l2norm=False, with_h0=False,
                      with_ht=False), id="fp32-T1-no-l2-no-state"),
    pytest.param(dict(B=1, T=70, H=2, K=128, V=80, dtype=torch.bfloat16), id="bf16-T70-K128-V80"),
    pytest.param(dict(B=1, T=100, H=1, K=256, V=32, dtype=torch.bfloat16, gates="strong"), id="bf16-T100-K256-strong"),
]
TILED_KERNELS = ("_chunk_state_fwd_tiled_kernel", "_chunk_output_kernel", "_chunk_dvn_local_kernel",
                 "_chunk_state_bwd_tiled_kernel", "_chunk_grad_vtile_kernel", "_chunk_grad_reduce_kernel")


@pytest.mark.skipif(bool(os.environ.get("DELTAMU_GDN_TILED_MIN_K")), reason="the threshold is overridden here")
def test_wide_head_path_runs_where_the_card_checked_it():
    """bf16 and fp16 from K = 128 (their card checks and timings, 2026-12-06); fp32 never (not checked there)."""
    wide_heads = triton_chunk_gated_delta_rule.__globals__["wide_heads"]
    assert [wide_heads(K, torch.bfloat16) for K in (64, 127, 128, 256)] == [False, False, True, True]
    assert wide_heads(128, torch.float16) and not wide_heads(64, torch.float16)
    assert not any(wide_heads(K, torch.float32) for K in (16, 128, 256))


@pytest.fixture
def launcher(monkeypatch):
    """The namespace of the launcher module that triton_chunk_gated_delta_rule runs in (another test module's
    triton_device() may have imported the kernels' modules anew since this one imported them), for patching."""
    return triton_chunk_gated_delta_rule.__globals__


@pytest.fixture
def wide_head_path(launcher, monkeypatch):
    """Every K takes the wide-head path; returns the names of the kernels launched."""
    launched = []

    class Spy:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launched.append(self.name)
            return self.kernel[grid]

    monkeypatch.setitem(launcher, "TILED_MIN_K", dict.fromkeys(launcher["TILED_MIN_K"], 1))
    for name in TILED_KERNELS + ("_chunk_grad_ktile_kernel", "_chunk_grad_dqdk_kernel", "_chunk_state_fwd_kernel",
                                 "_chunk_grad_kernel", "_chunk_grad_dqk_kernel", "_chunk_grad_wy_kernel",
                                 "_chunk_grad_rows_kernel"):
        monkeypatch.setitem(launcher, name, Spy(name, launcher[name]))
    return launched


def tiled_kernels(grad: str, dqdk: str, reduce: str = "full") -> list[str]:
    """The wide-head path's kernels with its gradient's products per V tile ("vtile") or per K tile ("ktile"), and
    dq, dk, dv, dbeta made in the reduction ("inline") or in a kernel of their own ("split"), the reduction after the
    K tiles and before that kernel being the full one or the one from the forward's rows (`reduce`); or the gradient
    in two kernels ("wy", whatever dqdk says)."""
    if grad == "wy":
        return sorted([name for name in TILED_KERNELS if name not in ("_chunk_grad_vtile_kernel",
                                                                     "_chunk_grad_reduce_kernel")]
                      + ["_chunk_grad_dqk_kernel", "_chunk_grad_wy_kernel"])
    swap = {"_chunk_grad_vtile_kernel": "_chunk_grad_ktile_kernel"} if grad == "ktile" else {}
    if grad == "ktile" and dqdk == "split" and reduce == "rows":
        swap["_chunk_grad_reduce_kernel"] = "_chunk_grad_rows_kernel"
    return sorted([swap.get(name, name) for name in TILED_KERNELS]
                  + (["_chunk_grad_dqdk_kernel"] if dqdk == "split" else []))


@pytest.mark.parametrize("case", TILED)
def test_wide_head_path_matches_float64_recurrence(case, wide_head_path, launcher):
    check(**case)
    assert sorted(set(wide_head_path)) == tiled_kernels(launcher["TILED_GRAD"], launcher["TILED_DQDK"],
                                                        launcher["TILED_REDUCE"])                     # no fused


@pytest.mark.parametrize("case", TILED)
def test_wide_head_path_with_the_gradient_by_v_tiles(case, wide_head_path, launcher, monkeypatch):
    """DELTAMU_GDN_TILED_GRAD=vtile, TILED_DQDK=inline (the default checked on the card on 2026-12-06): the
    gradient's V-summed products per V tile, their partial sums added in the reduction, which also makes dq, dk,
    dv, dbeta: one K tile and several, ragged K and V, V over one V tile."""
    monkeypatch.setitem(launcher, "TILED_GRAD", "vtile")
    monkeypatch.setitem(launcher, "TILED_DQDK", "inline")
    check(**case)
    assert sorted(set(wide_head_path)) == tiled_kernels("vtile", "inline")


@pytest.mark.parametrize("case", TILED)
def test_wide_head_path_with_the_gradient_in_two_kernels(case, wide_head_path, launcher, monkeypatch):
    """DELTAMU_GDN_TILED_GRAD=wy: dq^ and the Aqk terms of dk^ per K tile, then the backward through T, dv, dbeta,
    dg and the l2-norm per chunk: one K tile and several (K = 200: four, the last ragged), ragged V, one token, no
    l2-norm, zero and strong gates, bf16 at K = 128 and 256."""
    monkeypatch.setitem(launcher, "TILED_GRAD", "wy")
    check(**case)
    assert sorted(set(wide_head_path)) == tiled_kernels("wy", launcher["TILED_DQDK"])


# The other settings of the switches (triton.py: TILED_PREP, TILED_STATE, TILED_DQDK, TILED_GRAD, TILED_WU,
# TILED_SUMS, TILED_BF16_MORE) at the cases whose tiles they change: the prep's tile loops at run time at one K tile
# and several (ragged K and V, fp32 and bf16); dq, dk, dv, dbeta in a kernel of their own after the gradient per V
# tile, and in the reduction after the gradient per K tile; h alone in bf16; the gradient's V-sums in fp32; the
# fp32 form (the default until 2026-12-07, benchmarks/gdn_kernels.py's ours-fp32: every intermediate in fp32, TF32
# in every product with the state, the full reduction); the full reduction alone; u and vn in bf16 (ours-wu-bf16);
# dvn in bf16 (ours-dvn: at strong gates, K = 256, the interpreter puts dbeta at 2.9e-2, the card did not with u
# and vn in bf16 too); dO vn^T and dvn v^T summed in
# the gradient's K tiles 0 and 1 instead of an extra program (ours-ktile-cc), alone and with the bf16 copies of vn
# and dvn (ours-copies, also checked bit for bit below); the row dots for dg and the l2-norm made in the K tiles
# (ours-row-dots), and the three together (ours-lean); and all eight named products on bf16 operands at the
# moderate case (ours-bf16-all: at strong gates, K = 256, the interpreter puts its dbeta at 2.4e-2 for these
# inputs, the card 4.7e-4 for its own draw, docs/benchmarks.md); the default until 2026-12-08 (ours-before: no k dS
# or dq, dk products on bf16 operands, Aqk^T dO in fp32), each of those two products alone, and Aqk^T dO in fp32
# alone. At K = 256 the default keeps k dS and dq, dk in TF32 and Aqk^T dO in fp32 (triton.NARROW_OPS_MAX_K; with
# k dS in bf16 there the strong-gate case fails: dbeta 2.4e-2).
FP32_FORM = dict(TILED_STATE="fp32", TILED_WU="fp32", TILED_SUMS="fp32", TILED_BF16_MORE=0, TILED_CC="fp32",
                 TILED_REDUCE="full")
VARIANTS = [pytest.param(switches, TILED[i], id=f"{name}-{TILED[i].id}") for name, switches, cases in (
    ("prep-looped", dict(TILED_PREP="looped"), (1, 4, 5)),
    ("h-bf16", dict(TILED_STATE="h-bf16"), (4, 5)),
    ("dqdk-split-vtile", dict(TILED_DQDK="split", TILED_GRAD="vtile"), (0,)),
    ("dqdk-inline-ktile", dict(TILED_DQDK="inline", TILED_GRAD="ktile"), (1, 4)),
    ("fp32-form", FP32_FORM, (4, 5)),
    ("bf16-all-operands", {"TILED_BF16_MORE": 255}, (4,)),
    ("before-2026-12-08", {"TILED_BF16_MORE": 241, "TILED_DVN": "fp32"}, (4, 5)),
    ("kds-bf16-alone", {"TILED_BF16_MORE": 249}, (4, 5)),
    ("dqdk-bf16-alone", {"TILED_BF16_MORE": 241 | 256}, (4, 5)),
    ("wide-grad-tiles", dict(TILED_GRAD_KTILE_BLOCK_V=64, TILED_GRAD_BLOCK_V=128, GRAD_BLOCK_V=64), (4,)),
    ("sums-fp32", dict(TILED_SUMS="fp32"), (4, 5)),
    ("reduce-full", dict(TILED_REDUCE="full"), (1, 3, 4, 5)),
    ("wu-bf16", dict(TILED_WU="bf16"), (4, 5)),
    ("dvn-bf16", dict(TILED_DVN="bf16"), (4,)),
    ("dvn-local-fp32", dict(TILED_DVN="fp32"), (4, 5)),
    ("ktile-cc-in-k-tiles", dict(TILED_KTILE_CC="k-tiles"), (0, 1, 4, 5)),
    ("ktile-cc-in-k-tiles-with-copies", dict(TILED_KTILE_CC="k-tiles", TILED_GRAD_COPIES="bf16"), (4,)),
    ("row-dots-in-k-tiles", dict(TILED_ROW_DOTS="k-tiles"), (1, 4, 5)),
    ("lean", dict(TILED_KTILE_CC="k-tiles", TILED_GRAD_COPIES="bf16", TILED_ROW_DOTS="k-tiles"), (5,)))
    for i in cases]


@pytest.mark.parametrize("switches,case", VARIANTS)
def test_wide_head_path_variants_match_float64_recurrence(switches, case, wide_head_path, launcher, monkeypatch):
    for name, value in switches.items():
        monkeypatch.setitem(launcher, name, value)
    check(**case.values[0])
    assert ("_chunk_grad_dqdk_kernel" in wide_head_path) == (launcher["TILED_DQDK"] == "split")
    in_bf16 = launcher["STATE_BF16"][launcher["TILED_STATE"]] + launcher["WU_BF16"][launcher["TILED_WU"]] \
        + launcher["DVN_BF16"][launcher["TILED_DVN"]]
    bf16_inputs = case.values[0]["dtype"] == torch.bfloat16
    stored = ("h", "dh", "w", "vn", "dvn", "dvn_local")
    assert [launcher["_stored_dtype"](w, True, case.values[0]["dtype"]) == torch.bfloat16 for w in stored] \
        == [w in in_bf16 and bf16_inputs for w in stored]
    assert launcher["_stored_dtype"]("h", False, case.values[0]["dtype"]) == torch.float32     # the fused path


@pytest.mark.parametrize("case", [TILED[4], TILED[5]])
def test_gradient_reading_bf16_copies_of_vn_and_dvn_is_bit_for_bit_the_same(case, wide_head_path, launcher,
                                                                          monkeypatch):
    """DELTAMU_GDN_TILED_GRAD_COPIES=bf16: the state passes also write vn and dvn rounded to bf16 and the gradient by
    K tiles reads those; it rounds the fp32 tensors to bf16 for every product it takes them into, so o, the final
    state and every gradient are the same bits as without the copies (ragged V, strong gates, K = 256 among the
    cases); and the copies are not made where a product would take the fp32 values."""
    shape = [case[d] for d in "BTHKV"]
    q, k, v, g, beta, h0, do, dht = inputs_and_output_grads(*shape, case["dtype"], case.get("gates", "moderate"), 3,
                                                            True, True)
    without = run(triton_chunk_gated_delta_rule, q, k, v, g, beta, h0, do, dht, True)
    monkeypatch.setitem(launcher, "TILED_GRAD_COPIES", "bf16")
    assert launcher["_grad_copies"](True, torch.bfloat16) == (True, True)
    assert launcher["_grad_copies"](True, torch.float16) == (False, False)        # no bf16 products for fp16
    made = []
    real_empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda x, **kw: made.append(kw.get("dtype")) or real_empty_like(x, **kw))
    with_copies = run(triton_chunk_gated_delta_rule, q, k, v, g, beta, h0, do, dht, True)
    assert made.count(torch.bfloat16) >= 2                                          # vn's copy and dvn's
    for a, b in zip([without[0], without[1], *without[2]], [with_copies[0], with_copies[1], *with_copies[2]]):
        assert torch.equal(a, b)
    monkeypatch.setitem(launcher, "TILED_BF16_MORE", MORE_BITS["dvns"])              # dO vn^T, vn dS^T in TF32
    assert launcher["_grad_copies"](True, torch.bfloat16) == (False, True)


def test_the_storage_switches_default_to_bf16_and_read_the_environment():
    """The wide-head path's storage switches default to the set the card checked (bf16 h, dh, w, V-sums, [C, C]
    intermediates, five bf16 products, the reduction from the forward's rows), and the benchmarks' fp32 form
    (gdn_kernels.FP32, as a card call sets it) turns them back."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gdn_kernels import FP32
    code = ("import gdn.ops.gated_delta_rule.triton as L; print(L.TILED_STATE, L.TILED_WU, L.TILED_SUMS, "
            "L.TILED_BF16_MORE, L.TILED_CC, L.TILED_REDUCE, L.TILED_DVN)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAMU_GDN_TILED")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    default_more = sum(MORE_BITS[n] for n in ("ws", "dos", "dvns", "vnds", "dp", "kds", "dqdk"))
    assert out.stdout.split() == ["bf16", "w-bf16", "bf16", str(default_more), "bf16", "rows", "local-bf16"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, **FP32}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fp32", "fp32", "fp32", "0", "fp32", "full", "fp32"]


def test_launch_configs_from_the_environment_are_read_and_checked():
    """DELTAMU_GDN_LAUNCH (how a sweep's picks are checked on a card before they ship): kernel=WARPSxSTAGES and
    TILE=N items; a misspelt kernel or a bad config is refused with its name, and a process started with the variable
    launches with it."""
    parse = triton_chunk_gated_delta_rule.__globals__["launch_overrides"]
    assert parse("output=8x1, grad_dqdk=16x2,TILED_GRAD_KTILE_BLOCK_V=64") == \
        ({"output": (8, 1), "grad_dqdk": (16, 2)}, {"TILED_GRAD_KTILE_BLOCK_V": 64})
    assert parse("") == ({}, {})
    for bad, says in (("outptu=8x1", "'outptu' is neither a kernel"), ("output=3x1", "'output=3x1' is not"),
                      ("output=8", "'output=8' is not"), ("GRAD_BLOCK_V=48", "'GRAD_BLOCK_V=48' is not")):
        with pytest.raises(ValueError, match=re.escape(says)):
            parse(bad)
    code = ("import gdn.ops.gated_delta_rule.triton as t, torch; "
            "print(t.NUM_WARPS['output'], t.NUM_STAGES['output'], t.tiles(1, 128, 256, torch.device('cpu'), "
            "torch.bfloat16)['BVK'])")
    env = {**os.environ, "DELTAMU_GDN_LAUNCH": "output=8x2,TILED_GRAD_KTILE_BLOCK_V=64"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["8", "2", "64"]


def test_the_state_passes_v_tile_can_be_set_for_a_sweep(launcher, monkeypatch):
    """TILED_STATE_BLOCK_V (a DELTAMU_GDN_LAUNCH tile): the wide-head state passes' V tile in place of the rule's,
    at most V rounded up; unset, (2, 16384, 16, 128, 128) on an H100's 132 SMs takes 32-wide tiles."""
    monkeypatch.setitem(launcher, "num_sms", lambda device: 132)
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    assert launcher["tiles"](32, 128, 128, cpu, bf16)["BVS"] == 32
    assert launcher["launch_overrides"]("TILED_STATE_BLOCK_V=64") == ({}, {"TILED_STATE_BLOCK_V": 64})
    monkeypatch.setitem(launcher, "TILED_STATE_BLOCK_V", 64)
    assert launcher["tiles"](32, 128, 128, cpu, bf16)["BVS"] == 64
    assert launcher["tiles"](32, 128, 40, cpu, bf16)["BVS"] == 64
    assert launcher["tiles"](32, 128, 24, cpu, bf16)["BVS"] == 32


def test_wide_head_bf16_products_switch_reads_names(monkeypatch):
    """DELTAMU_GDN_TILED_BF16_MORE: product names to a bitmask (triton_tiled.MORE_BITS), the default where unset;
    unknown names refused."""
    switch_bits, bits = triton_chunk_gated_delta_rule.__globals__["_switch_bits"], {"ws": 1, "dp": 128}
    monkeypatch.setenv("DELTAMU_GDN_TILED_BF16_MORE", "ws,dp")
    assert switch_bits("DELTAMU_GDN_TILED_BF16_MORE", bits) == 129
    monkeypatch.setenv("DELTAMU_GDN_TILED_BF16_MORE", "")
    assert switch_bits("DELTAMU_GDN_TILED_BF16_MORE", bits, "dp") == 0                  # set but empty: none
    monkeypatch.delenv("DELTAMU_GDN_TILED_BF16_MORE")
    assert switch_bits("DELTAMU_GDN_TILED_BF16_MORE", bits, "dp") == 128                # unset: the default
    monkeypatch.setenv("DELTAMU_GDN_TILED_BF16_MORE", "ws,qs")
    with pytest.raises(ValueError, match="qs"):
        switch_bits("DELTAMU_GDN_TILED_BF16_MORE", bits)


def test_wide_head_path_no_grad_forward_matches(wide_head_path):
    no_grad_forward_matches()
    assert "_chunk_output_kernel" in wide_head_path


def test_wide_head_path_with_fp32_intermediates_for_bf16(wide_head_path, launcher, monkeypatch):
    """DELTAMU_GDN_TILED_BF16=0: bf16 inputs with fp32 operands (TF32 products) everywhere on the wide-head path."""
    monkeypatch.setitem(launcher, "TILED_BF16", False)
    check(B=1, T=70, H=1, K=64, V=40, dtype=torch.bfloat16)


@pytest.mark.parametrize("case", [dict(B=1, T=70, H=2, K=128, V=72, dtype=torch.bfloat16),
                                  dict(B=1, T=70, H=1, K=200, V=40, dtype=torch.float32, gates="strong")],
                         ids=["bf16-K128-V72", "fp32-K200-V40-strong"])
@pytest.mark.parametrize("state_bv", [64, 32])
def test_wide_head_path_with_wide_state_tiles(case, state_bv, wide_head_path, launcher, monkeypatch):
    """With more programs than SMs the state passes take their widest V tiles (here: one SM), ragged in V; at
    K <= 128 64 wide, or 32 with DELTAMU_GDN_TILED_STATE_BV=32."""
    monkeypatch.setitem(launcher, "num_sms", lambda device: 1)
    monkeypatch.setitem(launcher, "TILED_STATE_BV", state_bv)
    widest = state_bv if case["K"] <= 128 else 32
    assert launcher["tiles"](case["B"] * case["H"], case["K"], case["V"], torch.device(DEVICE),
                             case["dtype"])["BVS"] == widest
    check(**case)
