"""The spec itself: the naive recurrence against the paper's form of the rule, its limiting cases, and gradcheck.

(The chunked path is checked against this recurrence in test_ops.py.)
"""
from __future__ import annotations

import pytest
import torch

from gdn.ops.gated_delta_rule import l2_normalize, naive_recurrent_gated_delta_rule

FLOAT64_TOL = 1e-12  # two float64 evaluations of the same products in another order: rounding only


@pytest.fixture(autouse=True)
def _one_thread():
    """These shapes are tiny: a second intra-op thread only adds synchronisation, and on a busy 2-core box every op
    then waits for a descheduled thread (this file and test_ops.py: 67 s with 2 threads, 5 s with 1, under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(B=2, T=20, H=2, K=6, V=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = l2_normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64))
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    g = -2 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return [x.to(dtype) for x in (q, k, v, g, beta, h0)]


def _paper_form(q, k, v, g, beta, h0, scale):
    """S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T and o_t = S_t^T (scale q_t), one matrix at a time."""
    B, T, H, K = q.shape
    o = torch.empty(B, T, H, v.shape[-1], dtype=q.dtype)
    S_final = torch.empty_like(h0)
    eye = torch.eye(K, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            S = h0[b, h]
            for t in range(T):
                k_t, a_t, b_t = k[b, t, h], g[b, t, h].exp(), beta[b, t, h]
                S = a_t * (eye - b_t * torch.outer(k_t, k_t)) @ S + b_t * torch.outer(k_t, v[b, t, h])
                o[b, t, h] = S.T @ (scale * q[b, t, h])
            S_final[b, h] = S
    return o, S_final


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("l2norm", [False, True], ids=["raw", "l2"])
def test_recurrence_is_the_papers_rule(l2norm):
    q, k, v, g, beta, h0 = _inputs()
    scale = 0.3
    o, S = naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=h0, output_final_state=True,
                                            use_qk_l2norm=l2norm)
    if l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    o_ref, S_ref = _paper_form(q, k, v, g, beta, h0, scale)
    errors = {"o": _rel(o, o_ref), "final_state": _rel(S, S_ref)}
    print("naive vs paper form:", errors)
    assert max(errors.values()) < FLOAT64_TOL, errors


def test_no_write_and_no_decay_keeps_the_initial_state():
    """beta = 0 and g = 0: S_t = S_0 for all t, so o_t = S_0^T (scale q_t) exactly."""
    q, k, v, g, beta, h0 = _inputs()
    o, S = naive_recurrent_gated_delta_rule(q, k, v, torch.zeros_like(g), torch.zeros_like(beta), scale=0.5,
                                            initial_state=h0, output_final_state=True)
    assert torch.equal(S, h0)
    torch.testing.assert_close(o, torch.einsum("bhkv,bthk->bthv", h0, 0.5 * q), rtol=0, atol=1e-14)


def test_full_decay_forgets_everything_before():
    """alpha = exp(-1000) = 0 at token t0: from t0 on, the outputs are those of a fresh run started at t0."""
    q, k, v, g, beta, h0 = _inputs()
    t0 = 7
    g[:, t0] = -1000.0
    o, S = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o_fresh, S_fresh = naive_recurrent_gated_delta_rule(q[:, t0:], k[:, t0:], v[:, t0:], g[:, t0:], beta[:, t0:],
                                                        output_final_state=True)
    assert torch.equal(o[:, t0:], o_fresh) and torch.equal(S, S_fresh)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_output_in_q_dtype_and_state_in_compute_dtype(dtype):
    q, k, v, g, beta, h0 = _inputs(T=3, dtype=dtype)
    o, S = naive_recurrent_gated_delta_rule(q, k, v, g.float(), beta.float(), initial_state=h0,
                                            output_final_state=True)
    assert o.dtype == dtype
    assert S.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert naive_recurrent_gated_delta_rule(q, k, v, g, beta)[1] is None


def test_l2_normalize():
    x = torch.randn(3, 4, 8, dtype=torch.float64) * 10
    torch.testing.assert_close(l2_normalize(x).norm(dim=-1), torch.ones(3, 4, dtype=torch.float64),
                               rtol=0, atol=1e-8)
    zero = torch.zeros(2, 8)
    assert torch.equal(l2_normalize(zero), zero)                   # eps keeps a zero vector finite


@pytest.mark.parametrize("l2norm", [False, True], ids=["raw", "l2"])
def test_naive_gradcheck(l2norm):
    args = [x.requires_grad_() for x in _inputs(B=1, T=4, H=1, K=3, V=2, seed=1)]

    def fn(q, k, v, g, beta, h0):
        return naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                                use_qk_l2norm=l2norm)

    assert torch.autograd.gradcheck(fn, args)
