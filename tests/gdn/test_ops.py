"""The fast paths of the gated delta rule against the spec (the naive recurrence, float64), and the dispatch.

Errors are max-norm relative errors per named tensor: max|actual - expected| / max|expected|. The measured error of
every tensor is printed (pytest -s or -rP shows it); a failure names the tensor(s) that drifted and by how much.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from gdn.ops.gated_delta_rule import (chunk_gated_delta_rule, dispatch, gated_delta_rule, l2_normalize,
                                      naive_recurrent_gated_delta_rule)
from gdn.ops.rms_norm import rms_norm
from gdn.ops.short_conv import causal_conv1d_silu

# chunked vs recurrent, both in float64: the same exact arithmetic in another order, so only rounding differs
FLOAT64_TOL = 1e-10
# float32 inputs computed in float32 vs the float64 spec on the same inputs: measured at most 6e-7 (dg), T = 130
FLOAT32_TOL = 1e-5
# bf16 inputs: o and the input gradients come back rounded to bf16 (2^-9 relative); measured at most 2.3e-3 (o)
BF16_TOL = 1e-2


@pytest.fixture(autouse=True)
def _one_thread():
    """These shapes are tiny: a second intra-op thread only adds synchronisation, and on a busy 2-core box every op
    then waits for a descheduled thread (this file and test_naive.py: 67 s with 2 threads, 5 s with 1, under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# comparison helpers

def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected| (the absolute error when expected is all zeros); inf if not finite."""
    if not torch.isfinite(actual).all():
        return math.inf
    diff = (actual.double() - expected.double()).abs().max().item()
    ref = expected.double().abs().max().item()
    return diff / ref if ref > 0 else diff


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tol: float, label: str = ""):
    """Compare per named tensor, print every measured error, fail naming each tensor at or above tol."""
    assert actual.keys() == expected.keys()
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    print(f"{label}: " + ", ".join(f"{name} {err:.2e}" for name, err in errors.items()))
    failing = {name: err for name, err in errors.items() if not err < tol}
    assert not failing, f"{label}: relative error >= {tol:.0e} in " + ", ".join(
        f"{name} ({err:.3e})" for name, err in failing.items())


# ---------------------------------------------------------------------------------------------------------------
# inputs

@dataclass(frozen=True)
class Case:
    B: int
    T: int
    H: int
    K: int
    V: int
    gates: str = "ordinary"          # "zero" (g = 0), "ordinary" (the layer's gate at its init), "strong" (U(-20, 0))
    initial_state: bool = True
    l2norm: bool = True              # use_qk_l2norm; without it the inputs come with |k| <= 1.2, as the layer feeds
    inputs: str = "gaussian"         # "gaussian" (randn, sigmoid(randn)) or "uniform" (U(-1, 1), U(0, 1))

    @property
    def id(self) -> str:
        return (f"B{self.B}-T{self.T}-H{self.H}-K{self.K}-V{self.V}-{self.gates}-"
                f"{'h0' if self.initial_state else 'noh0'}-{'l2' if self.l2norm else 'raw'}-{self.inputs}")


def make_inputs(case: Case, seed: int, dtype=torch.float64) -> dict[str, torch.Tensor | None]:
    """Fresh random inputs shaped like the layer's (see gdn/model.py)."""
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = case.B, case.T, case.H, case.K, case.V

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=gen, dtype=torch.float64)

    if case.inputs == "gaussian":
        q, k, v = 3 * randn(B, T, H, K), 3 * randn(B, T, H, K), randn(B, T, H, V)
        beta = torch.sigmoid(randn(B, T, H))
    else:
        q, k, v = rand(B, T, H, K, low=-1), rand(B, T, H, K, low=-1), rand(B, T, H, V, low=-1)
        beta = rand(B, T, H)
    if not case.l2norm:
        # the rule is only stable for beta |k|^2 < 2: feed what an l2-normalising layer would, with norms 0.3..1.2
        q, k = l2_normalize(q), l2_normalize(k) * rand(B, T, H, 1, low=0.3, high=1.2)

    if case.gates == "zero":
        g = torch.zeros(B, T, H, dtype=torch.float64)
    elif case.gates == "strong":
        g = rand(B, T, H, low=-20.0, high=0.0)
    else:
        # g = -exp(A_log) softplus(a + dt_bias), A ~ U(1, 16), dt ~ logU(1e-3, 1e-1), dt_bias = softplus^-1(dt)
        A = rand(H, low=1.0, high=16.0)
        dt = torch.exp(rand(H, low=math.log(1e-3), high=math.log(1e-1)))
        dt_bias = dt + torch.log(-torch.expm1(-dt))
        g = -A * F.softplus(randn(B, T, H) + dt_bias)
    h0 = randn(B, H, K, V) if case.initial_state else None
    cast = lambda x: None if x is None else x.to(dtype)           # noqa: E731
    return dict(q=cast(q), k=cast(k), v=cast(v), g=g.to(dtype if dtype == torch.float64 else torch.float32),
                beta=beta.to(dtype if dtype == torch.float64 else torch.float32), initial_state=cast(h0))


def forward_and_grads(fn, inputs: dict, l2norm: bool, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    """o, final state and the gradient of <o, dO> + <S, dS> (random dO, dS) w.r.t. every input."""
    leaves = {name: x.detach().clone().requires_grad_() for name, x in inputs.items() if x is not None}
    o, S = fn(**leaves, output_final_state=True, use_qk_l2norm=l2norm, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    loss_dtype = torch.float64 if o.dtype == torch.float64 else torch.float32
    # bf16-representable cotangents, so that every dtype's run differentiates exactly the same loss
    dO, dS = (torch.randn(x.shape, generator=gen).to(torch.bfloat16).to(loss_dtype) for x in (o, S))
    loss = (o.to(loss_dtype) * dO).sum() + (S.to(loss_dtype) * dS).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    out = {"o": o.detach(), "final_state": S.detach()}
    out.update({f"d{name}": grad for name, grad in zip(leaves, grads)})
    return out


# ---------------------------------------------------------------------------------------------------------------
# chunked == recurrent in float64

SHAPES = [  # (B, T, H, K, V): T below, at, across and twice across the chunk of 64; K != V; head dims 8..64
    (2, 1, 2, 8, 16),
    (1, 63, 2, 16, 8),
    (2, 64, 1, 8, 8),
    (2, 65, 2, 32, 16),
    (1, 130, 1, 64, 32),
]
CASES = [Case(*shape) for shape in SHAPES]
CASES += [Case(1, 65, 2, 16, 32, gates=gates, initial_state=h0, l2norm=l2)
          for gates in ("zero", "ordinary", "strong") for h0 in (False, True) for l2 in (False, True)]
CASES += [Case(2, 130, 2, 8, 16, gates="strong"), Case(2, 130, 2, 8, 16, gates="zero", initial_state=False),
          Case(1, 100, 2, 16, 24, inputs="uniform"), Case(2, 70, 1, 64, 16, inputs="uniform", gates="strong")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_chunk_matches_recurrence_float64(case: Case):
    seed = hash(case.id) % 2**31
    inputs = make_inputs(case, seed)
    expected = forward_and_grads(naive_recurrent_gated_delta_rule, inputs, case.l2norm, seed)
    actual = forward_and_grads(chunk_gated_delta_rule, inputs, case.l2norm, seed)
    assert_close(actual, expected, FLOAT64_TOL, f"chunk vs naive, float64, {case.id}")


@pytest.mark.parametrize("chunk_size", [1, 16, 50])
def test_chunk_size_does_not_change_the_result(chunk_size):
    """Smaller and non-power-of-2 chunks (many chunks, ragged tail) agree with the recurrence too."""
    case = Case(2, 130, 2, 16, 8)
    inputs = make_inputs(case, seed=7)
    expected = forward_and_grads(naive_recurrent_gated_delta_rule, inputs, case.l2norm, seed=7)
    actual = forward_and_grads(chunk_gated_delta_rule, inputs, case.l2norm, seed=7, chunk_size=chunk_size)
    assert_close(actual, expected, FLOAT64_TOL, f"chunk_size={chunk_size}")


def test_state_carries_across_calls():
    """Running [0, 40) then [40, 130) from the returned state gives the one-call output and state."""
    case = Case(2, 130, 2, 16, 8)
    x = make_inputs(case, seed=3)
    o, S = chunk_gated_delta_rule(**x, output_final_state=True, use_qk_l2norm=True)
    first = {n: t[:, :40] for n, t in x.items() if n != "initial_state"}
    rest = {n: t[:, 40:] for n, t in x.items() if n != "initial_state"}
    o1, S1 = chunk_gated_delta_rule(**first, initial_state=x["initial_state"], output_final_state=True,
                                    use_qk_l2norm=True)
    o2, S2 = chunk_gated_delta_rule(**rest, initial_state=S1, output_final_state=True, use_qk_l2norm=True)
    assert_close({"o": torch.cat([o1, o2], 1), "final_state": S2}, {"o": o, "final_state": S}, FLOAT64_TOL, "split")


def test_empty_sequence_returns_the_initial_state():
    x = make_inputs(Case(2, 0, 2, 8, 4), seed=0)
    o, S = chunk_gated_delta_rule(**x, output_final_state=True)
    assert o.shape == (2, 0, 2, 4)
    assert torch.equal(S, x["initial_state"])


@pytest.mark.parametrize("l2norm", [False, True], ids=["raw", "l2"])
@pytest.mark.parametrize("T,chunk_size", [(5, 64), (7, 3)], ids=["one-chunk", "ragged-chunks"])
def test_chunk_gradcheck(T, chunk_size, l2norm):
    gen = torch.Generator().manual_seed(11)
    B, H, K, V = 1, 1, 3, 2
    args = [torch.randn(B, T, H, K, generator=gen, dtype=torch.float64),
            torch.randn(B, T, H, K, generator=gen, dtype=torch.float64) * 0.5,
            torch.randn(B, T, H, V, generator=gen, dtype=torch.float64),
            -torch.rand(B, T, H, generator=gen, dtype=torch.float64),
            torch.rand(B, T, H, generator=gen, dtype=torch.float64),
            torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)]
    args = [a.requires_grad_() for a in args]

    def fn(q, k, v, g, beta, h0):
        return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                      use_qk_l2norm=l2norm, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(fn, args)


# ---------------------------------------------------------------------------------------------------------------
# the dispatch

def _inputs(B=2, T=9, H=3, K=4, V=5, dtype=torch.float32):
    return make_inputs(Case(B, T, H, K, V), seed=0, dtype=dtype)


SHAPE_ERRORS = {
    "q-3d": (dict(q=torch.zeros(2, 9, 12)), r"q must be \[B, T, H, K\]"),
    "k-K": (dict(k=torch.zeros(2, 9, 3, 6)), r"k .* K=6 \(expected 4 from q\)"),
    "k-T": (dict(k=torch.zeros(2, 8, 3, 4)), r"k .* T=8 \(expected 9 from q\)"),
    "v-H": (dict(v=torch.zeros(2, 9, 2, 5)), r"v .* H=2 \(expected 3 from q\)"),
    "v-B": (dict(v=torch.zeros(1, 9, 3, 5)), r"v .* B=1 \(expected 2 from q\)"),
    "g-T": (dict(g=torch.zeros(2, 10, 3)), r"g .* T=10 \(expected 9 from q\)"),
    "beta-4d": (dict(beta=torch.zeros(2, 9, 3, 1)), r"beta must be \[B, T, H\]"),
    "h0-V": (dict(initial_state=torch.zeros(2, 3, 4, 6)), r"initial_state .* V=6 \(expected 5 from q and v\)"),
    "h0-K": (dict(initial_state=torch.zeros(2, 3, 5, 5)), r"initial_state .* K=5 \(expected 4 from q and v\)"),
    "k-dtype": (dict(k=torch.zeros(2, 9, 3, 4, dtype=torch.float64)), "q, k and v must share a dtype"),
    "g-int": (dict(g=torch.zeros(2, 9, 3, dtype=torch.long)), "g must be a floating-point tensor"),
    "h0-device": (dict(initial_state=torch.zeros(2, 3, 4, 5, device="meta")), "initial_state is on meta"),
}


@pytest.mark.parametrize("name", list(SHAPE_ERRORS))
def test_bad_inputs_raise_value_error_naming_the_dims(name):
    override, message = SHAPE_ERRORS[name]
    x = {**_inputs(), **override}
    with pytest.raises(ValueError, match=message):
        gated_delta_rule(**x)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        gated_delta_rule(**_inputs(), backend="cuda")
    x = torch.randn(2, 9, 8)
    with pytest.raises(ValueError, match="backend must be one of .* got 'fast'"):
        rms_norm(x, torch.ones(8), 1e-6, backend="fast")
    with pytest.raises(ValueError, match="backend must be one of .* got 'fast'"):
        causal_conv1d_silu(x, torch.ones(8, 1, 4), backend="fast")


@pytest.mark.parametrize("backend,fn", [("chunk", chunk_gated_delta_rule), ("naive", naive_recurrent_gated_delta_rule)])
def test_backend_runs_that_implementation_with_default_scale(backend, fn):
    x = _inputs()
    o, S = gated_delta_rule(**x, output_final_state=True, use_qk_l2norm=True, backend=backend)
    o_ref, S_ref = fn(**x, scale=x["q"].shape[-1] ** -0.5, output_final_state=True, use_qk_l2norm=True)
    assert torch.equal(o, o_ref) and torch.equal(S, S_ref)
    assert gated_delta_rule(**x, backend=backend)[1] is None


def test_the_explicit_backend_is_the_path_taken_and_auto_is_chunk_on_the_cpu(monkeypatch):
    """No environment variable switches the path (one that did is set here, and ignored)."""
    x = _inputs()
    naive, _ = naive_recurrent_gated_delta_rule(**x)
    chunk, _ = chunk_gated_delta_rule(**x)
    assert not torch.equal(naive, chunk)                           # float32 rounding tells the two paths apart
    monkeypatch.setenv("DELTAMU_GDN_BACKEND", "naive")
    assert torch.equal(gated_delta_rule(**x, backend="naive")[0], naive)
    assert torch.equal(gated_delta_rule(**x, backend="chunk")[0], chunk)
    assert torch.equal(gated_delta_rule(**x)[0], chunk)            # auto on the CPU, whatever the environment says
    monkeypatch.delenv("DELTAMU_GDN_BACKEND")
    assert torch.equal(gated_delta_rule(**x)[0], chunk)            # auto on the CPU


def test_auto_picks_triton_on_cuda_only_when_it_imports(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dispatch, "_load_triton", lambda: (chunk_gated_delta_rule, ""))
    assert dispatch.resolve_backend("auto", cuda) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 32, torch.bfloat16) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 128, torch.bfloat16) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 16, torch.bfloat16) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 256, torch.bfloat16) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 8, torch.bfloat16) == "chunk"       # never run on a card
    assert dispatch.resolve_backend("auto", cuda, 16, torch.float16) == "chunk"
    assert dispatch.resolve_backend("auto", cuda, 128, torch.float32) == "triton"
    assert dispatch.resolve_backend("auto", cuda, 256, torch.float32) == "chunk"      # fp32 K = 256: not on a card
    assert dispatch.resolve_backend("triton", cuda, 64, torch.bfloat16) == "triton"   # explicit: honoured
    assert dispatch.resolve_backend("auto", cpu) == "chunk"
    assert dispatch.resolve_backend("naive", cuda) == "naive"
    monkeypatch.setattr(dispatch, "_load_triton", lambda: (None, "ModuleNotFoundError: no triton here"))
    with pytest.warns(RuntimeWarning, match="no triton here"):
        assert dispatch.resolve_backend("auto", cuda) == "chunk"
    with pytest.raises(RuntimeError, match="no triton here"):
        dispatch.resolve_backend("triton", cpu)
    with pytest.raises(RuntimeError, match="no triton here"):
        dispatch.resolve_backend("triton", cuda, 64, torch.bfloat16)          # explicit: an error on CUDA too


def test_triton_import_failure_means_not_available():
    """Whatever the state of the Triton kernels on this machine, loading them gives a function or a reason, never
    raises."""
    fn, why = dispatch._load_triton()
    assert (fn is None) == bool(why)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, FLOAT32_TOL), (torch.bfloat16, BF16_TOL)],
                         ids=["float32", "bfloat16"])
@pytest.mark.parametrize("backend", ["chunk", "naive"])
def test_low_precision_inputs_match_the_float64_spec(backend, dtype, tol):
    """Half and single precision inputs are computed in float32; o comes back in q's dtype, the state in float32."""
    case = Case(2, 130, 2, 16, 32)
    x = make_inputs(case, seed=5, dtype=dtype)
    x64 = {n: t.double() for n, t in x.items()}                    # the spec on exactly the same (rounded) inputs
    expected = forward_and_grads(naive_recurrent_gated_delta_rule, x64, True, seed=5)
    actual = forward_and_grads(lambda **kw: gated_delta_rule(**kw, backend=backend), x, True, seed=5)
    assert actual["o"].dtype == dtype and actual["final_state"].dtype == torch.float32
    assert actual["dg"].dtype == torch.float32 and actual["dq"].dtype == dtype
    assert_close(actual, expected, tol, f"{backend} {dtype} vs naive float64")
