"""Forward of the chunked gated delta rule: two kernels.

Notation as chunk.py (C = CHUNK_SIZE = 64 tokens per chunk, G the chunk-local cumsum of g, gamma = e^G,
Gam_ij = e^{G_i - G_j} for i >= j, T = (I + A)^-1).

1. `_chunk_prep_kernel`, one program per (chunk, b*h), every chunk at once. Fuses the L2 norm of q and k, the gate
   cumsum, K K^T and Q K^T, the UT transform T (an in-register block solve), and writes, all in fp32:
       w = T diag(beta gamma) k^      u = T diag(beta) v      Aqk = scale (q^ k^T o Gam), causal incl. diagonal
       T (for the backward)           G                       1/|q|, 1/|k| (with the L2 norm)
   Its K and V tile loops are unrolled (the fused path) or, with RUNTIME_LOOPS, runtime loops (the wide-head path's
   candidate, triton.TILED_PREP: slower on the card at K = 128; neither spills as the card compiles them).
2. `_chunk_state_fwd_kernel`, one program per (V tile, b*h), sequential over chunks, the state [K, BV] in fp32
   registers the whole time. Per chunk, with qg = scale gamma q^ and kg = e^{G_C - G} k^ applied as row scales
   (in fp32, so the 16-bit q and k enter the products unrounded):
       vn = u - w S          o = qg S + Aqk vn          S <- gamma_C S + kg^T vn
   It writes o and, when a backward will follow, the state at the start of every chunk (h) and vn.

Only differences G_i - G_j with i >= j, and G_C - G_r, are exponentiated (all <= 0; masked before exp).
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from gdn.ops.backend import round_like_the_card

round_like_the_card()                  # interpreted: bf16 rounding as on the card


@triton.jit
def _probe():
    pass


# Triton's CPU interpreter (TRITON_INTERPRET=1) multiplies bf16 tiles as their raw uint16 bits; there, _dot upcasts
# its operands (values already rounded to bf16, so the products are the same). triton.jit decides at definition
# whether a kernel compiles or is interpreted: ask it.
INTERPRETED = tl.constexpr(isinstance(_probe, InterpretedFunction))


@triton.jit
def _chunk_rows(i_b, i_h, i_t, T, H, BT: tl.constexpr):
    """Chunk i_t of batch i_b, head i_h: row0, the int64 index of its first token's row in a [B, T, H, ...] tensor
    (its row r is row0 + r * H; int64 because B * T * H * K passes 2^31 at long sequences), the rows' offsets
    c = 0..BT-1, and which of them are tokens (the last chunk may be short)."""
    row0 = (i_b.to(tl.int64) * T + i_t * BT) * H + i_h
    c = tl.arange(0, BT)
    return row0, c, i_t * BT + c < T


# On the card an fp32 operand of a product in "tf32" precision (16-bit inputs: every fp32-operand product there)
# keeps 10 of its 23 mantissa bits; the interpreter multiplies in fp32, so without this it would check a more
# precise kernel than the card runs. TF32_TRUNCATES: whether the card drops the low 13 bits (True) or rounds them to
# nearest (False); benchmarks/stress_errors.py --probe-tf32 measures which on a card: an H100 (Triton 3.6,
# 2026-12-07) truncates (a tl.dot 1.8e-7 from truncated operands' float64 product, 8.8e-4 from rounded ones'). With
# this and bf16 rounded to nearest (gdn.ops.backend.round_like_the_card) the interpreter's errors at the wide-head
# stress cases came within 0.19 (mean |log ratio|) of the card's, against 0.37 without it (the same seeds, but the
# card's inputs come from the CUDA generator: other draws; dbeta at strong gates, K = 256, 6.7e-3 here against the
# card's 7.9e-4, is this CPU draw's tail: 5.4e-4 to 2.6e-3 at seeds 1-7).
TF32_TRUNCATES = tl.constexpr(True)


@triton.jit
def _tf32(x):
    """x as the card's tensor cores read it in "tf32" precision: 10 mantissa bits (TF32_TRUNCATES says how)."""
    bits = x.to(tl.uint32, bitcast=True)
    if not TF32_TRUNCATES:
        bits += 0x1000                       # half of the lowest kept bit: to nearest, ties away from zero
    return (bits & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """a @ b with fp32 accumulation; PRECISION ("ieee" or "tf32") applies to fp32 operands (interpreted: as the card
    reads them, _tf32)."""
    if INTERPRETED:
        a32, b32 = a.to(tl.float32), b.to(tl.float32)
        if PRECISION == "tf32":
            if a.dtype == tl.float32:
                a32 = _tf32(a32)
            if b.dtype == tl.float32:
                b32 = _tf32(b32)
        c = tl.dot(a32, b32, input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=PRECISION)
    return c


@triton.jit
def _dot_input(a, b, PRECISION: tl.constexpr, SPLIT: tl.constexpr):
    """a @ b for an input tile a (bf16, fp16 or fp32, as loaded) and an fp32 b.

    SPLIT (bf16 a only): b is split into bf16 high and low parts, so the product keeps ~16 mantissa bits of b (TF32
    keeps 10), runs on the bf16 tensor cores, and a stays in shared memory instead of being widened to fp32 in
    registers. On Triton 3.6 / H100 this gave illegal memory accesses and NaN in the forward state pass once a
    transposed bf16 tile [K, 64] with K >= 64 is the A operand; it is validated only for K <= 32 (see triton.py).
    Otherwise a is widened to fp32 and the product runs in PRECISION (TF32 for 16-bit inputs)."""
    if a.dtype == tl.bfloat16 and SPLIT:
        b_hi = b.to(tl.bfloat16)
        b_lo = (b - b_hi.to(tl.float32)).to(tl.bfloat16)
        c = _dot(a, b_hi, PRECISION) + _dot(a, b_lo, PRECISION)
    else:
        c = _dot(a.to(tl.float32), b, PRECISION)
    return c


@triton.jit
def _unit_lower_inverse(A, scratch, BT: tl.constexpr, PRECISION: tl.constexpr):
    """(I + A)^-1 for a strictly lower-triangular fp32 [BT, BT] tile A (BT = 64).

    Forward substitution inside the four 16x16 diagonal blocks (all four at once, row by row), which gives the
    block-diagonal inverse D; then T = D - D A_off T, iterated from T = D, is exact after NB - 1 steps because
    D A_off is strictly block-lower. Row access into the blocks goes through scratch (4 KB per program)."""
    NB: tl.constexpr = BT // 16
    r = tl.arange(0, BT)
    same_block = (r[:, None] // 16) == (r[None, :] // 16)
    # [BT, BT] -> offset in [NB, 16, 16]: the diagonal blocks, one after another
    block_off = (r[:, None] // 16) * 256 + (r[:, None] % 16) * 16 + (r[None, :] % 16)
    tl.store(scratch + block_off, A, mask=same_block)
    tl.debug_barrier()

    b3 = tl.arange(0, NB)[:, None, None]
    i3 = tl.arange(0, 16)[None, :, None]
    j3 = tl.arange(0, 16)[None, None, :]
    D3 = tl.where((i3 == j3) & (b3 >= 0), 1.0, 0.0)           # (NB, 16, 16) identity blocks
    row_in_blocks = tl.arange(0, NB)[:, None] * 256 + tl.arange(0, 16)[None, :]
    for i in tl.static_range(1, 16):
        a_i = tl.load(scratch + row_in_blocks + i * 16)        # (NB, 16): row i of each block, zero for j >= i
        # row i <- e_i - sum_{j<i} a_ij D_j  (row i is still e_i and a_ii = 0)
        D3 = D3 - tl.where(i3 == i, tl.sum(a_i[:, :, None] * D3, axis=1)[:, None, :], 0.0)
    tl.debug_barrier()                                         # every row of A read before D overwrites it
    tl.store(scratch + b3 * 256 + i3 * 16 + j3, D3)
    tl.debug_barrier()
    D = tl.load(scratch + block_off, mask=same_block, other=0.0)
    A_off = tl.where((r[:, None] // 16) > (r[None, :] // 16), A, 0.0)
    T = D
    for _ in tl.static_range(NB - 1):
        T = D - _dot(D, _dot(A_off, T, PRECISION), PRECISION)
    return T


@triton.jit
def _kk_qk_tile(q, k, row0, c, row_ok, i_k, kk, qk, q_ss, k_ss, H, K: tl.constexpr, BK: tl.constexpr,
                USE_L2NORM: tl.constexpr, PRECISION: tl.constexpr):
    """K K^T and Q K^T (and the rows' sums of squares) plus K tile i_k's part, of the chunk's raw input rows."""
    cols = i_k * BK + tl.arange(0, BK)
    m = row_ok[:, None] & (cols[None, :] < K)
    off = c[:, None] * (H * K) + cols[None, :]
    q_t = tl.load(q + row0 * K + off, mask=m, other=0.)
    k_t = tl.load(k + row0 * K + off, mask=m, other=0.)
    if USE_L2NORM:
        q_ss += tl.sum(q_t.to(tl.float32) * q_t.to(tl.float32), 1)
        k_ss += tl.sum(k_t.to(tl.float32) * k_t.to(tl.float32), 1)
    kk += _dot(k_t, tl.trans(k_t), PRECISION)                  # raw inputs: exact products for 16-bit inputs
    qk += _dot(q_t, tl.trans(k_t), PRECISION)
    return kk, qk, q_ss, k_ss


@triton.jit
def _store_t_times_rows(x, out, row0, c, row_ok, i, Tm, row_scale, H, D: tl.constexpr, BD: tl.constexpr,
                        PRECISION: tl.constexpr):
    """Column tile i of out = Tm diag(row_scale) x, for x and out [B,T,H,D] (w from k, u from v)."""
    cols = i * BD + tl.arange(0, BD)
    m = row_ok[:, None] & (cols[None, :] < D)
    off = c[:, None] * (H * D) + cols[None, :]
    x_t = tl.load(x + row0 * D + off, mask=m, other=0.).to(tl.float32)
    tl.store(out + row0 * D + off, _dot(Tm, x_t * row_scale[:, None], PRECISION), mask=m)


@triton.jit
def _chunk_prep_kernel(
    q, k, v, g, beta,                    # inputs [B,T,H,K] x2, [B,T,H,V], [B,T,H] x2
    w, u, Aqk, Tinv,                     # out, fp32: [B,T,H,K], [B,T,H,V], [B,T,H,BT] x2
    Gcum, rq_out, rk_out,                # out, fp32 [B,T,H]: gate cumsum, 1/|q|, 1/|k| (these two with USE_L2NORM)
    scratch,                             # fp32, BT * 16 floats per program
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, EPS: tl.constexpr, PRECISION: tl.constexpr,
    RUNTIME_LOOPS: tl.constexpr,         # the K and V tile loops as runtime loops (else unrolled)
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NK: tl.constexpr = (K + BK - 1) // BK
    NV: tl.constexpr = (V + BV - 1) // BV
    # int64 scalar bases, int32 offsets inside the tile: row r of this chunk is token (b, i_t*BT + r, h)
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)

    # padding rows get g = 0 and beta = 0: G stays at G_C and they add nothing to A, W, U or the state
    g_r = tl.load(g + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    beta_r = tl.load(beta + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    G = tl.cumsum(g_r, 0)
    tl.store(Gcum + row0 + c * H, G, mask=row_ok)

    kk = tl.zeros([BT, BT], dtype=tl.float32)
    qk = tl.zeros([BT, BT], dtype=tl.float32)
    q_ss = tl.zeros([BT], dtype=tl.float32)
    k_ss = tl.zeros([BT], dtype=tl.float32)
    if RUNTIME_LOOPS:
        for i_k in range(NK):
            kk, qk, q_ss, k_ss = _kk_qk_tile(q, k, row0, c, row_ok, i_k, kk, qk, q_ss, k_ss, H, K, BK, USE_L2NORM,
                                             PRECISION)
    else:
        for i_k in tl.static_range(NK):
            kk, qk, q_ss, k_ss = _kk_qk_tile(q, k, row0, c, row_ok, i_k, kk, qk, q_ss, k_ss, H, K, BK, USE_L2NORM,
                                             PRECISION)
    if USE_L2NORM:
        rq = tl.rsqrt(q_ss + EPS)
        rk = tl.rsqrt(k_ss + EPS)
        tl.store(rq_out + row0 + c * H, rq, mask=row_ok)
        tl.store(rk_out + row0 + c * H, rk, mask=row_ok)
    else:
        rq = tl.full([BT], 1.0, dtype=tl.float32)
        rk = tl.full([BT], 1.0, dtype=tl.float32)

    causal = c[:, None] >= c[None, :]
    Gam = tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.)), 0.)
    cc_off = c[:, None] * (H * BT) + c[None, :]                 # a [BT, BT] tile of a [B,T,H,BT] tensor
    # Aqk = scale q^ k^T o Gam (zero above the diagonal, as Gam)
    tl.store(Aqk + row0 * BT + cc_off, scale * qk * rq[:, None] * rk[None, :] * Gam, mask=row_ok[:, None])
    A = tl.where(c[:, None] > c[None, :], (beta_r * rk)[:, None] * kk * rk[None, :] * Gam, 0.)

    pid = i_bh * tl.num_programs(0) + i_t
    Tm = _unit_lower_inverse(A, scratch + pid.to(tl.int64) * (BT * 16), BT, PRECISION)
    tl.store(Tinv + row0 * BT + cc_off, Tm, mask=row_ok[:, None])

    w_scale = beta_r * tl.exp(G) * rk                           # W = T diag(beta gamma) k^
    if RUNTIME_LOOPS:
        for i_k in range(NK):
            _store_t_times_rows(k, w, row0, c, row_ok, i_k, Tm, w_scale, H, K, BK, PRECISION)
        for i_v in range(NV):
            _store_t_times_rows(v, u, row0, c, row_ok, i_v, Tm, beta_r, H, V, BV, PRECISION)
    else:
        for i_k in tl.static_range(NK):
            _store_t_times_rows(k, w, row0, c, row_ok, i_k, Tm, w_scale, H, K, BK, PRECISION)
        for i_v in tl.static_range(NV):
            _store_t_times_rows(v, u, row0, c, row_ok, i_v, Tm, beta_r, H, V, BV, PRECISION)


@triton.jit
def _chunk_state_fwd_kernel(
    q, k,                                # inputs [B,T,H,K]
    w, u, Aqk, Gcum, rq_in, rk_in,       # from the prep kernel (fp32)
    h0,                                  # [B,H,K,V] or dummy
    o,                                   # out [B,T,H,V]
    h, vn,                               # out fp32 [B,NT,H,K,V], [B,T,H,V] (written when SAVE_FOR_BWD)
    ht,                                  # out fp32 [B,H,K,V] (written when STORE_FINAL)
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKP: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, SAVE_FOR_BWD: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    kc = tl.arange(0, BKP)
    vc = i_v * BV + tl.arange(0, BV)
    c = tl.arange(0, BT)
    kv_ok = (kc[:, None] < K) & (vc[None, :] < V)
    kv_off = kc[:, None] * V + vc[None, :]
    rk_off = c[:, None] * (H * K) + kc[None, :]                 # [BT, K] tile of a [B,T,H,K] tensor
    kr_off = kc[:, None] + c[None, :] * (H * K)                 # the same tile, read transposed: [K, BT]
    rv_off = c[:, None] * (H * V) + vc[None, :]
    cc_off = c[:, None] * (H * BT) + c[None, :]

    S = tl.zeros([BKP, BV], dtype=tl.float32)
    if HAS_H0:
        S += tl.load(h0 + i_bh.to(tl.int64) * K * V + kv_off, mask=kv_ok, other=0.).to(tl.float32)
    for i_t in range(NT):
        row0, _, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
        if SAVE_FOR_BWD:
            tl.store(h + ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V + kv_off, S, mask=kv_ok)
        mk = row_ok[:, None] & (kc[None, :] < K)
        mv = row_ok[:, None] & (vc[None, :] < V)
        w_t = tl.load(w + row0 * K + rk_off, mask=mk, other=0.)
        q_t = tl.load(q + row0 * K + rk_off, mask=mk, other=0.)
        # an A operand is read transposed from memory, never tl.trans'ed in registers (spills, and fla issue 640)
        kT_t = tl.load(k + row0 * K + kr_off, mask=tl.trans(mk), other=0.)
        a_t = tl.load(Aqk + row0 * BT + cc_off, mask=row_ok[:, None], other=0.)
        u_t = tl.load(u + row0 * V + rv_off, mask=mv, other=0.)
        G = tl.load(Gcum + row0 + c * H, mask=row_ok, other=0.)
        G_end = tl.load(Gcum + row0 + (tl.minimum(BT, T - i_t * BT) - 1) * H)
        q_scale = scale * tl.exp(G)                             # rows of qg = scale gamma q^
        k_scale = tl.exp(G_end - G)                             # rows of kg = e^{G_C - G} k^
        if USE_L2NORM:
            q_scale *= tl.load(rq_in + row0 + c * H, mask=row_ok, other=0.)
            k_scale *= tl.load(rk_in + row0 + c * H, mask=row_ok, other=0.)

        vn_t = u_t - _dot(w_t, S, PRECISION)
        o_t = q_scale[:, None] * _dot_input(q_t, S, PRECISION, SPLIT) + _dot(a_t, vn_t, PRECISION)
        tl.store(o + row0 * V + rv_off, o_t.to(o.dtype.element_ty), mask=mv)
        if SAVE_FOR_BWD:
            tl.store(vn + row0 * V + rv_off, vn_t, mask=mv)
        S = S * tl.exp(G_end) + _dot_input(kT_t, vn_t * k_scale[:, None], PRECISION, SPLIT)
    if STORE_FINAL:
        tl.store(ht + i_bh.to(tl.int64) * K * V + kv_off, S, mask=kv_ok)
