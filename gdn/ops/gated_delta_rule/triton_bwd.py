"""Backward of the chunked gated delta rule: two kernels.

1. `_chunk_state_bwd_kernel`, one program per (V tile, b*h), sequential over chunks in reverse, dS [K, BV] in fp32
   registers. With dS the gradient of the state at the end of the chunk (qg, kg as in the forward):
       dvn = Aqk^T dO + kg dS          dS <- gamma_C dS + qg^T dO - w^T dvn
   It writes dS per chunk (dh), dvn, and dh0.
2. `_chunk_grad_kernel`, one program per (chunk, b*h): everything else, from q, k, v, g, beta, dO, T and the saved
   or just computed h, dh, vn, dvn. The [C, C] algebra (dA = -T^T dT T^T, the gate terms, the l2-norm row dots)
   stays on chip; dq, dk, dv, dg (reverse chunk-local cumsum of dG) and dbeta are written once.

Derivation, per chunk (q^ = rq q, k^ = rk k, Gam causal incl. diagonal, Aqk = scale q^ k^T o Gam):
    O  = diag(gamma) scale q^ S + Aqk Vn        Vn = U - W S          S' = gamma_C S + (diag(e^{G_C - G}) k^)^T Vn
    W  = T diag(beta gamma) k^                  U  = T diag(beta) v   T  = (I + A)^-1, A = strict(diag(beta) k^k^T o Gam)
Every gradient of G is a sum of rowsums and colsums of [C, C] products, collected in dG; dg is its reverse cumsum.
Transposes of computed tiles go through memory (never tl.trans of a tl.dot result: Triton 3.4 to 3.7.0 miscompiles
it on Hopper, fla issue 640); A operands of tl.dot are read transposed from memory rather than tl.trans'ed.
"""
from __future__ import annotations

import triton
import triton.language as tl

from gdn.ops.gated_delta_rule.triton_fwd import _chunk_rows, _dot, _dot_input

GRAD_ROWS = tl.constexpr(9)   # row factors per chunk that _grad_finish hands to _grad_dqdk in another kernel (ROWS_OUT)


@triton.jit
def _chunk_state_bwd_kernel(
    q, k,                                # inputs [B,T,H,K]
    w, Aqk, Gcum, rq_in, rk_in,          # saved from the forward (fp32)
    do,                                  # [B,T,H,V]
    dht,                                 # [B,H,K,V] grad of the final state, or dummy
    dh, dvn,                             # out fp32: [B,NT,H,K,V] grad of the state at each chunk's end, [B,T,H,V]
    dh0,                                 # out fp32 [B,H,K,V], or dummy
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKP: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    kc = tl.arange(0, BKP)
    vc = i_v * BV + tl.arange(0, BV)
    c = tl.arange(0, BT)
    kv_ok = (kc[:, None] < K) & (vc[None, :] < V)
    kv_off = kc[:, None] * V + vc[None, :]
    rk_off = c[:, None] * (H * K) + kc[None, :]
    kr_off = kc[:, None] + c[None, :] * (H * K)                 # the same tile, read transposed: [K, BT]
    rv_off = c[:, None] * (H * V) + vc[None, :]
    ccT_off = c[:, None] + c[None, :] * (H * BT)                # a [BT, BT] tile, read transposed

    dS = tl.zeros([BKP, BV], dtype=tl.float32)
    if HAS_DHT:
        dS += tl.load(dht + i_bh.to(tl.int64) * K * V + kv_off, mask=kv_ok, other=0.).to(tl.float32)
    for i_rev in range(NT):
        i_t = NT - 1 - i_rev
        row0, _, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
        tl.store(dh + ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V + kv_off, dS, mask=kv_ok)
        mk = row_ok[:, None] & (kc[None, :] < K)
        mv = row_ok[:, None] & (vc[None, :] < V)
        # A operands are read transposed from memory, never tl.trans'ed in registers (spills, and fla issue 640)
        wT_t = tl.load(w + row0 * K + kr_off, mask=tl.trans(mk), other=0.)
        qT_t = tl.load(q + row0 * K + kr_off, mask=tl.trans(mk), other=0.)
        k_t = tl.load(k + row0 * K + rk_off, mask=mk, other=0.)
        aT_t = tl.load(Aqk + row0 * BT + ccT_off, mask=row_ok[None, :], other=0.)
        do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
        G = tl.load(Gcum + row0 + c * H, mask=row_ok, other=0.)
        G_end = tl.load(Gcum + row0 + (tl.minimum(BT, T - i_t * BT) - 1) * H)
        q_scale = scale * tl.exp(G)                             # rows of qg
        k_scale = tl.exp(G_end - G)                             # rows of kg
        if USE_L2NORM:
            q_scale *= tl.load(rq_in + row0 + c * H, mask=row_ok, other=0.)
            k_scale *= tl.load(rk_in + row0 + c * H, mask=row_ok, other=0.)

        dvn_t = _dot(aT_t, do_t, PRECISION) + k_scale[:, None] * _dot_input(k_t, dS, PRECISION, SPLIT)
        tl.store(dvn + row0 * V + rv_off, dvn_t, mask=mv)
        dS = dS * tl.exp(G_end) + _dot_input(qT_t, do_t * q_scale[:, None], PRECISION, SPLIT) \
            - _dot(wT_t, dvn_t, PRECISION)
    if STORE_DH0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + kv_off, dS, mask=kv_ok)


@triton.jit
def _chunk_grad_kernel(
    q, k, v, g, beta, do,                # inputs and dO
    h, dh, vn, dvn, Tinv,                # from the forward and the state backward (fp32)
    dqi, dw, dkt,                        # fp32 [B,T,H,K] scratch: dO S^T, -dvn S^T, vn dS^T (written, then read)
    dq, dk, dv, dg, dbeta,               # out
    scratch,                             # fp32, 2 * BT * BT floats per program
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, EPS: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
):
    # The passes are ordered so that few fp32 [BT, BT] tiles are live at once (each is 32 registers a thread at
    # 4 warps); [BT, K] products go through global scratch (L2), [BT, BT] ones through this program's scratch.
    # Runtime loops, not static_range: unrolled, the loads of every tile get hoisted and spill.
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    NK: tl.constexpr = (K + BK - 1) // BK
    NV: tl.constexpr = (V + BV - 1) // BV
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    h0ff = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    scr = scratch + (i_bh * tl.num_programs(0) + i_t).to(tl.int64) * (2 * BT * BT)

    # 1. products with the state at the chunk start S and the state gradient at its end dS, per K tile
    sdS = tl.zeros([], dtype=tl.float32)                         # sum(S o dS)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        dqi_t = tl.zeros([BT, BK], dtype=tl.float32)
        dw_t = tl.zeros([BT, BK], dtype=tl.float32)
        dkt_t = tl.zeros([BT, BK], dtype=tl.float32)
        for i_v in range(NV):
            vc = i_v * BV + tl.arange(0, BV)
            mv = row_ok[:, None] & (vc[None, :] < V)
            kv_ok = (kc[:, None] < K) & (vc[None, :] < V)
            rv_off = c[:, None] * (H * V) + vc[None, :]
            do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.)
            vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
            dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.)
            S_t = tl.load(h + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.)
            dS_t = tl.load(dh + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.)
            dqi_t += _dot_input(do_t, tl.trans(S_t), PRECISION, SPLIT)
            dw_t -= _dot(dvn_t, tl.trans(S_t), PRECISION)
            dkt_t += _dot(vn_t, tl.trans(dS_t), PRECISION)
            sdS += tl.sum(tl.sum(S_t * dS_t, 1), 0)
        mk = row_ok[:, None] & (kc[None, :] < K)
        rk_off = c[:, None] * (H * K) + kc[None, :]
        tl.store(dqi + row0 * K + rk_off, dqi_t, mask=mk)
        tl.store(dw + row0 * K + rk_off, dw_t, mask=mk)
        tl.store(dkt + row0 * K + rk_off, dkt_t, mask=mk)
    tl.debug_barrier()                                           # read back below by other threads

    # 2. dP = dO vn^T and dTu = dvn v^T
    dP = tl.zeros([BT, BT], dtype=tl.float32)
    dTu = tl.zeros([BT, BT], dtype=tl.float32)
    for i_v in range(NV):
        vc = i_v * BV + tl.arange(0, BV)
        mv = row_ok[:, None] & (vc[None, :] < V)
        rv_off = c[:, None] * (H * V) + vc[None, :]
        do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.)
        vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
        dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.)
        v_t = tl.load(v + row0 * V + rv_off, mask=mv, other=0.)
        dP += _dot_input(do_t, tl.trans(vn_t), PRECISION, SPLIT)
        dTu += _dot(dvn_t, tl.trans(v_t.to(tl.float32)), PRECISION)
    _grad_finish(q, k, v, g, beta, dvn, Tinv, dqi, dw, dkt, dq, dk, dv, dg, dbeta, scr, dP, dTu, sdS, scale,
                 row0, c, row_ok, scr, H, K, V, BT, BK, BV, USE_L2NORM, EPS, PRECISION)


@triton.jit
def _grad_finish(
    q, k, v, g, beta, dvn, Tinv,         # inputs, the state backward's dvn, the forward's T
    dqi, dw, dkt,                        # fp32 [B,T,H,K]: dO S^T, -dvn S^T, vn dS^T, summed over V
    dq, dk, dv, dg, dbeta,               # out
    scr,                                 # this program's scratch, 2 * BT * BT floats (fp32, or bf16: TILED_CC)
    dP, dTu, sdS,                        # dO vn^T, dvn v^T [BT, BT] (or with DP_IN_MEMORY their fp32
                                         # [B,T,H,BT] tensors) and sum(S o dS), summed over V
    scale, row0, c, row_ok,
    rows,                                # fp32 [GRAD_ROWS, BT] of this chunk (written when ROWS_OUT), or dummy
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, EPS: tl.constexpr, PRECISION: tl.constexpr, ROWS_OUT: tl.constexpr = False,
    DP_IN_MEMORY: tl.constexpr = False,
):
    """Steps 3-6 of the per-chunk backward (module docstring), from the products over V of steps 1-2; with
    ROWS_OUT steps 3-4 only, the row factors of steps 5-6 written to `rows` for `_grad_dv` and `_grad_dqdk` in
    another kernel (with `scr`).
    With DP_IN_MEMORY dP and dTu are loaded after step 3, not held through its K loop. With ROWS_OUT step 5 (dv,
    dbeta) is left to `_grad_dv` there too.
    """
    NK: tl.constexpr = (K + BK - 1) // BK
    NV: tl.constexpr = (V + BV - 1) // BV
    cc_off = c[:, None] * BT + c[None, :]
    ccT_off = c[:, None] + c[None, :] * BT
    # 3. per K tile: norms, K K^T, Q K^T and the row products with step 1's tiles
    g_r = tl.load(g + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    beta_r = tl.load(beta + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    G = tl.cumsum(g_r, 0)
    G_end = tl.sum(tl.where(c == BT - 1, G, 0.), 0)
    gamma = tl.exp(G)
    decay_end = tl.exp(G_end - G)
    kk = tl.zeros([BT, BT], dtype=tl.float32)
    qk = tl.zeros([BT, BT], dtype=tl.float32)
    dwk = tl.zeros([BT, BT], dtype=tl.float32)                # dW k^T
    q_ss = tl.zeros([BT], dtype=tl.float32)
    k_ss = tl.zeros([BT], dtype=tl.float32)
    rs_q_dqi = tl.zeros([BT], dtype=tl.float32)               # rowsum(q o dO S^T)
    rs_k_dkt = tl.zeros([BT], dtype=tl.float32)               # rowsum(k o vn dS^T)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        mk = row_ok[:, None] & (kc[None, :] < K)
        rk_off = c[:, None] * (H * K) + kc[None, :]
        q_t = tl.load(q + row0 * K + rk_off, mask=mk, other=0.)
        k_t = tl.load(k + row0 * K + rk_off, mask=mk, other=0.)
        kk += _dot(k_t, tl.trans(k_t), PRECISION)
        qk += _dot(q_t, tl.trans(k_t), PRECISION)
        q_t = q_t.to(tl.float32)
        k_t = k_t.to(tl.float32)
        if USE_L2NORM:
            q_ss += tl.sum(q_t * q_t, 1)
            k_ss += tl.sum(k_t * k_t, 1)
        rs_q_dqi += tl.sum(q_t * tl.load(dqi + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32), 1)
        rs_k_dkt += tl.sum(k_t * tl.load(dkt + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32), 1)
        dwk += _dot(tl.load(dw + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32), tl.trans(k_t), PRECISION)
    if USE_L2NORM:
        rq = tl.rsqrt(q_ss + EPS)
        rk = tl.rsqrt(k_ss + EPS)
    else:
        rq = tl.full([BT], 1.0, dtype=tl.float32)
        rk = tl.full([BT], 1.0, dtype=tl.float32)
    if DP_IN_MEMORY:
        cc = row0 * BT + c[:, None] * (H * BT) + c[None, :]
        dP = tl.load(dP + cc, mask=row_ok[:, None], other=0.).to(tl.float32)      # fp32, or bf16 (TILED_CC)
        dTu = tl.load(dTu + cc, mask=row_ok[:, None], other=0.).to(tl.float32)

    # 4. [C, C] algebra, in an order that ends each tile's life early
    causal = c[:, None] >= c[None, :]
    Gam = tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.)), 0.)
    dS_qk = tl.where(causal, dP * scale * Gam, 0.)              # grad of q^ k^T (through Aqk)
    Z = dS_qk * qk * rq[:, None] * rk[None, :]                   # = dP o Aqk
    Z_rows, Z_cols = tl.sum(Z, 1), tl.sum(Z, 0)
    tl.store(scr + cc_off, dS_qk)

    dWKn = dwk * rk[None, :]                                     # dW k^^T
    Tm = tl.load(Tinv + row0 * BT + c[:, None] * (H * BT) + c[None, :], mask=row_ok[:, None], other=0.)
    c_w = tl.sum(Tm * dWKn, 0)                                   # rowsum(k^ o T^T dW), indexed by row of k
    dT = dWKn * (beta_r * gamma)[None, :] + dTu * beta_r[None, :]
    Tt = tl.load(Tinv + row0 * BT + c[None, :] * (H * BT) + c[:, None], mask=row_ok[None, :], other=0.)  # T^T
    Y0, dX, Y_rows, Y_cols = _grad_through_a(dT, Tt, Gam, kk, rk, beta_r, c, PRECISION)
    tl.store(scr + BT * BT + cc_off, dX)

    z = _grad_dg(dg, G_end, gamma, decay_end, beta_r, rq, rk, rs_q_dqi, rs_k_dkt, Z_rows, Z_cols, c_w, Y_rows,
                 Y_cols, sdS, scale, row0, c, row_ok, H, BT)

    # 5. dv = beta T^T dvn, and dbeta
    dbeta_r = gamma * c_w + tl.sum(Y0, 1)
    if not ROWS_OUT:
        _grad_dv(v, dvn, dv, dbeta, Tt, beta_r, dbeta_r, row0, c, row_ok, H, V, BT, BV, PRECISION)

    # row dots q^.dq^ and k^.dk^ for the l2-norm backward, from [C, C] terms
    q_dot = scale * gamma * rq * rs_q_dqi + Z_rows
    k_dot = Z_cols + z + beta_r * gamma * c_w + Y_rows + Y_cols

    if ROWS_OUT:
        tl.store(rows + c, rq)
        tl.store(rows + BT + c, rk)
        tl.store(rows + 2 * BT + c, scale * gamma)
        tl.store(rows + 3 * BT + c, decay_end)
        tl.store(rows + 4 * BT + c, beta_r * gamma)
        tl.store(rows + 5 * BT + c, q_dot)
        tl.store(rows + 6 * BT + c, k_dot)
        tl.store(rows + 7 * BT + c, beta_r)
        tl.store(rows + 8 * BT + c, dbeta_r)
    else:
        _grad_dqdk(q, k, dqi, dw, dkt, dq, dk, scr, Tt, rq, rk, scale * gamma, decay_end, beta_r * gamma, q_dot,
                   k_dot, row0, c, row_ok, H, K, BT, BK, USE_L2NORM, PRECISION)


@triton.jit
def _grad_dg(dg, G_end, gamma, decay_end, beta_r, rq, rk, rs_q_dqi, rs_k_dkt, Z_rows, Z_cols, c_w, Y_rows, Y_cols,
             sdS, scale, row0, c, row_ok, H, BT: tl.constexpr):
    """dg, stored: the reverse cumsum of dG, the row sums minus column sums of the [C, C] terms plus the row terms.
    Returns z = rowsum(k~ o dk~), k~ = e^{G_C - G} k^ (a term of k^.dk^ too)."""
    z = decay_end * rk * rs_k_dkt
    dG = scale * gamma * rq * rs_q_dqi + Z_rows - Z_cols - z + beta_r * gamma * c_w + Y_rows - Y_cols
    dG += tl.where(c == BT - 1, tl.exp(G_end) * sdS + tl.sum(z, 0), 0.)   # the terms of G_C, at the last row
    tl.store(dg + row0 + c * H, tl.cumsum(dG, 0, reverse=True).to(dg.dtype.element_ty), mask=row_ok)
    return z


@triton.jit
def _grad_through_a(dT, Tt, Gam, kk, rk, beta_r, c, PRECISION: tl.constexpr):
    """Step 4 from dT, the gradient of T = (I + A)^-1, on through A = strict(diag(beta) k^k^T o Gam): dA = -T^T dT T^T,
    Y0 = dA o k^k^T o Gam (for dbeta), dX = beta_i dA o Gam, and the row and column sums of Y = dX o k^k^T."""
    dA = -_dot(_dot(Tt, dT, PRECISION), Tt, PRECISION)
    strict = c[:, None] > c[None, :]
    Y0 = tl.where(strict, dA * Gam * kk * rk[:, None] * rk[None, :], 0.)
    dX = tl.where(strict, dA * Gam * beta_r[:, None], 0.)
    Y = Y0 * beta_r[:, None]
    return Y0, dX, tl.sum(Y, 1), tl.sum(Y, 0)


@triton.jit
def _grad_dv(v, dvn, dv, dbeta, Tt, beta_r, dbeta_r, row0, c, row_ok, H, V: tl.constexpr, BT: tl.constexpr,
             BV: tl.constexpr, PRECISION: tl.constexpr):
    """Step 5 of the per-chunk backward: dv = beta T^T dvn, and dbeta (dbeta_r: its terms from step 4)."""
    NV: tl.constexpr = (V + BV - 1) // BV
    for i_v in range(NV):
        vc = i_v * BV + tl.arange(0, BV)
        mv = row_ok[:, None] & (vc[None, :] < V)
        rv_off = c[:, None] * (H * V) + vc[None, :]
        dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
        v_t = tl.load(v + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
        dru = _dot(Tt, dvn_t, PRECISION)                        # T^T dvn
        tl.store(dv + row0 * V + rv_off, (beta_r[:, None] * dru).to(dv.dtype.element_ty), mask=mv)
        dbeta_r += tl.sum(dru * v_t, 1)
    tl.store(dbeta + row0 + c * H, dbeta_r.to(dbeta.dtype.element_ty), mask=row_ok)


@triton.jit
def _grad_dqdk(
    q, k, dqi, dw, dkt,                  # inputs, and _grad_finish's fp32 [B,T,H,K] sums over V
    dq, dk,                              # out
    scr,                                 # the chunk's fp32 scratch: dS_qk, dX (written by _grad_finish)
    Tt,                                  # T^T [BT, BT] fp32
    rq, rk, q_scale, decay_end, w_scale, q_dot, k_dot,   # [BT] row factors (_grad_finish)
    row0, c, row_ok,
    H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, USE_L2NORM: tl.constexpr, PRECISION: tl.constexpr,
):
    """Step 6 of the per-chunk backward: dq and dk per K tile; dS_qk and dX come back from scratch, plain and
    transposed."""
    NK: tl.constexpr = (K + BK - 1) // BK
    tl.debug_barrier()
    for i_k in range(NK):
        _grad_dqdk_tile(q, k, dqi, dw, dkt, dq, dk, scr, Tt, rq, rk, q_scale, decay_end, w_scale, q_dot, k_dot, row0,
                        c, row_ok, i_k, H, K, BT, BK, USE_L2NORM, PRECISION)


@triton.jit
def _grad_dqdk_tile(q, k, dqi, dw, dkt, dq, dk, scr, Tt, rq, rk, q_scale, decay_end, w_scale, q_dot, k_dot, row0, c,
                    row_ok, i_k, H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, USE_L2NORM: tl.constexpr,
                    PRECISION: tl.constexpr, OPDT: tl.constexpr = tl.float32):
    """K tile i_k of _grad_dqdk. OPDT: the operands' dtype in its four products (fp32: TF32 for 16-bit inputs;
    bf16: the [C, C] tiles, T^T and the normalised q, k tiles rounded to bf16, as fla's backward takes them)."""
    cc_off = c[:, None] * BT + c[None, :]
    ccT_off = c[:, None] + c[None, :] * BT
    kc = i_k * BK + tl.arange(0, BK)
    mk = row_ok[:, None] & (kc[None, :] < K)
    rk_off = c[:, None] * (H * K) + kc[None, :]
    qn = tl.load(q + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) * rq[:, None]
    kn = tl.load(k + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) * rk[:, None]
    kn_op = kn.to(OPDT)
    dqn = q_scale[:, None] * tl.load(dqi + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) \
        + _dot(tl.load(scr + cc_off).to(OPDT), kn_op, PRECISION)
    if USE_L2NORM:
        dqn = rq[:, None] * (dqn - qn * q_dot[:, None])
    tl.store(dq + row0 * K + rk_off, dqn.to(dq.dtype.element_ty), mask=mk)
    dXs = tl.load(scr + BT * BT + cc_off).to(tl.float32) + tl.load(scr + BT * BT + ccT_off).to(tl.float32)
    dkn = _dot(tl.load(scr + ccT_off).to(OPDT), qn.to(OPDT), PRECISION) + _dot(dXs.to(OPDT), kn_op, PRECISION) \
        + decay_end[:, None] * tl.load(dkt + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) \
        + w_scale[:, None] * _dot(Tt.to(OPDT), tl.load(dw + row0 * K + rk_off, mask=mk, other=0.).to(OPDT), PRECISION)
    if USE_L2NORM:
        dkn = rk[:, None] * (dkn - kn * k_dot[:, None])
    tl.store(dk + row0 * K + rk_off, dkn.to(dk.dtype.element_ty), mask=mk)
