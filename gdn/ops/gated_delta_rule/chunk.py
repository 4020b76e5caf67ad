"""The chunked gated delta rule in plain PyTorch: the WY/UT form with gating, the readable twin of the Triton kernel.

Split the sequence into chunks of C tokens. In one chunk (rows r = 1..C), with G_r = sum_{i<=r} g_i the chunk-local
cumsum of the log decays, gamma_r = exp(G_r), Gam_ij = exp(G_i - G_j) for i >= j (0 above the diagonal), Q, K, V the
chunk's C x K, C x K, C x V tiles and S the [K, V] state at the start of the chunk:

    A   = strict_lower(diag(beta) (K K^T o Gam))            T = (I + A)^-1, unit lower-triangular (the UT transform)
    W   = T diag(beta o gamma) K                             U = T diag(beta) V
    Vn  = U - W S                                            the values corrected by the delta rule ("v_new")
    O   = scale [diag(gamma) Q S + ((Q K^T) o Gam) Vn]       Gam is causal, diagonal included
    S'  = gamma_C S + (diag(gamma_C / gamma) K)^T Vn

Everything except the state pass is computed for all chunks at once; only the state pass loops, over chunks.
Gradients come from autograd. The only exponentials taken are of G_i - G_j (i >= j), G_r and G_C - G_r, all <= 0:
strong decay underflows to 0 and never overflows to inf (no exp(-G), so no 0 * inf).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gdn.config import CHUNK_SIZE
from gdn.ops.gated_delta_rule.naive import l2_normalize


def _to_chunks(x: torch.Tensor, C: int, pad: int) -> torch.Tensor:
    """[B, T, H, *D] -> [B, H, N, C, *D], zero-padding T at the end to N * C tokens."""
    tail = x.ndim - 2                                              # H plus the feature dim, if any
    x = F.pad(x, (0, 0) * (tail - 1) + (0, 0, 0, pad))             # (B, N*C, H, *D)
    x = x.unflatten(1, (-1, C))                                    # (B, N, C, H, *D)
    return x.movedim(3, 1).contiguous()                            # (B, H, N, C, *D)


def _from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """[B, H, N, C, D] -> [B, T, H, D], dropping the padding."""
    x = x.movedim(1, 3)                                            # (B, N, C, H, D)
    return x.flatten(1, 2)[:, :T]                                  # (B, T, H, D)


def _gate_decays(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunk-local decays from g [B, H, N, C]: gamma_r = e^{G_r}, Gam_ij = e^{G_i - G_j} (i >= j, else 0) and
    e^{G_C - G_r}. Masked before exponentiating, so every exponent is <= 0."""
    G = g.cumsum(-1)                                               # (B, H, N, C)
    C = g.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=g.device).tril()
    # G_i - G_j, (B, H, N, C, C); negating the C-vector rather than subtracting spares the backward a C x C negation
    G_diff = G[..., :, None] + (-G)[..., None, :]
    Gam = G_diff.masked_fill(~causal, -math.inf).exp()             # exp(-inf) = 0 above the diagonal
    decay_to_end = (G[..., -1:] - G).exp()                         # (B, H, N, C): e^{G_C - G_r}
    return G.exp(), Gam, decay_to_end


def _wy_representation(k, v, beta, gamma, Gam):
    """W = T diag(beta o gamma) K and U = T diag(beta) V with T = (I + A)^-1, by one triangular solve per chunk."""
    K = k.shape[-1]
    beta_k = beta[..., None] * k                                   # (B, H, N, C, K)
    A = (beta_k @ k.transpose(-1, -2)) * Gam                       # (B, H, N, C, C), zero above the diagonal
    rhs = torch.cat([gamma[..., None] * beta_k, beta[..., None] * v], dim=-1)          # (B, H, N, C, K+V)
    # unitriangular: the solve reads only A's strict lower part and takes its diagonal as 1, i.e. it solves
    # (I + strict_lower(A)) X = rhs, and its gradient w.r.t. A is zero outside the strict lower part
    WU = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    return WU[..., :K], WU[..., K:]                                # W (B, H, N, C, K), U (B, H, N, C, V)


def _state_pass(k, W, U, gamma_end, decay_to_end, S):
    """The only sequential part: for each chunk, Vn = U - W S, then S <- gamma_C S + (e^{G_C - G} K)^T Vn.
    Returns the state at the start of each chunk [B, H, N, K, V], Vn [B, H, N, C, V] and the final state."""
    k_to_end = k * decay_to_end[..., None]                         # (B, H, N, C, K)
    starts, v_new = [], []
    for n in range(k.shape[2]):
        starts.append(S)
        Vn = U[:, :, n] - W[:, :, n] @ S                           # (B, H, C, V)
        S = gamma_end[:, :, n, None, None] * S + k_to_end[:, :, n].transpose(-1, -2) @ Vn
        v_new.append(Vn)
    return torch.stack(starts, dim=2), torch.stack(v_new, dim=2), S


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gated delta rule, chunked. Same contract as `naive_recurrent_gated_delta_rule`; inputs are not checked
    here (dispatch.gated_delta_rule does that).

    q, k [B, T, H, K]; v [B, T, H, V]; g (log alpha, <= 0, finite: -inf would make G_i - G_j = -inf + inf)
    and beta [B, T, H]; initial_state [B, H, K, V].
    Any T: the last chunk is zero-padded (k = v = beta = g = 0 leaves the state exactly unchanged) and the padding
    is dropped from o. Computes in float64 for float64 q, else in float32 (gates included).
    Returns o [B, T, H, V] in q's dtype and, if asked, the final state [B, H, K, V] in the compute dtype.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if scale is None:
        scale = K ** -0.5
    out_dtype = q.dtype
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * scale
    S = q.new_zeros(B, H, K, V)
    if initial_state is not None:
        S = S + initial_state.to(dtype)
    if T == 0:
        return q.new_empty(B, 0, H, V).to(out_dtype), (S if output_final_state else None)

    C = min(chunk_size, T)                                         # a sequence shorter than a chunk is one chunk
    pad = -T % C
    q, k, v, g, beta = (_to_chunks(x, C, pad) for x in (q, k, v, g, beta))  # (B, H, N, C, *)

    gamma, Gam, decay_to_end = _gate_decays(g)
    W, U = _wy_representation(k, v, beta, gamma, Gam)
    starts, v_new, S = _state_pass(k, W, U, gamma[..., -1], decay_to_end, S)

    o_inter = (gamma[..., None] * q) @ starts                      # (B, H, N, C, V): what the carried state gives
    o_intra = ((q @ k.transpose(-1, -2)) * Gam) @ v_new            # (B, H, N, C, V): the chunk itself, causal
    o = _from_chunks(o_inter + o_intra, T)                         # (B, T, H, V)
    return o.to(out_dtype), (S if output_final_state else None)
