"""The gated delta rule, written as plainly as possible. These functions are the spec.

Every fast path of the gated delta rule (chunked PyTorch, Triton) is tested against `naive_recurrent_gated_delta_rule`
run in float64.

Layout (same as fla): q, k [B, T, H, K]; v [B, T, H, V]; g (log alpha, <= 0), beta [B, T, H];
state S [B, H, K, V]. One step for one head:

    S   <- exp(g_t) * S
    v'  =  beta_t * (v_t - S^T k_t)
    S   <- S + k_t v'^T                 i.e. S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T
    o_t =  S^T (scale * q_t)

which is the paper's S_t = S_{t-1} a_t (I - b_t k_t k_t^T) + b_t v_t k_t^T with S transposed.
"""
from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-head L2 norm over the last dim, as fla's l2norm: x / sqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def naive_recurrent_gated_delta_rule(
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
    """Token-by-token recurrence. Computes in float64 when given float64, else in float32.

    Returns o [B, T, H, V] in q's dtype and, if asked, the final state [B, H, K, V] in the compute dtype.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    if scale is None:
        scale = K ** -0.5
    out_dtype = q.dtype
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    S = q.new_zeros(B, H, K, V)
    if initial_state is not None:
        S = S + initial_state.to(dtype)
    o = q.new_empty(B, T, H, V)
    for t in range(T):
        q_t, k_t, v_t = q[:, t], k[:, t], v[:, t]                     # (B, H, K), (B, H, K), (B, H, V)
        S = S * g[:, t].exp()[..., None, None]                        # decay: (B, H, K, V)
        v_new = beta[:, t, :, None] * (v_t - torch.einsum("bhkv,bhk->bhv", S, k_t))
        S = S + torch.einsum("bhk,bhv->bhkv", k_t, v_new)              # delta-rule write
        o[:, t] = torch.einsum("bhkv,bhk->bhv", S, q_t * scale)
    return o.to(out_dtype), (S if output_final_state else None)
