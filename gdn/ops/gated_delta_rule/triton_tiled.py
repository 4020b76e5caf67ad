"""The kernels of the wide-head path (K >= triton.TILED_MIN_K): the two state passes with the state held as 64-row
K sub-tiles, the output over every chunk at once, and the per-chunk gradient split over V tiles.

Why a separate path: at K >= 128 the fused kernels hold a [K, BV] fp32 state and [64, K] fp32 input tiles at once
and spill at the 255-register cap (benchmarks/triton_resources.py: 328-776 bytes a thread at K = 128). Here
- the forward state pass is only the sequential part (vn = u - w S, the state update; h and vn written), and the
  output o = qg S + Aqk vn is a separate kernel over every (V tile, chunk) at once, as fla splits it: the
  sequential chain, which bounds long sequences, loads w, u, k per chunk instead of also q and Aqk.
  Likewise the backward's within-chunk part of dvn, Aqk^T dO, is computed for every chunk at once ahead of its
  state pass (`_chunk_dvn_local_kernel`).
- the state is up to four [64, BV] sub-tiles (S0..S3) and each input tile is loaded where its sub-tile uses it.
  The K rows cannot go to separate programs: every chunk's vn = u - w S (and the backward's k dS) sums over all K
  rows of the state, so one program holds all of them and the K split is inside it.
- with bf16 inputs (BF16_OPS; OPDT = bf16) the products that the float64 checks showed insensitive to bf16 rounding take
  bf16 operands with fp32 accumulation: q S and k^T (kg vn) in the forward, q^T (qg dO) and w^T dvn in the
  backward, dvn v^T in the gradient; each has one operand that is a bf16 input already, the other (the state, a
  row-scaled vn or dO, dvn, w) rounded to bf16 on entry. The products that feed vn and dvn (w S, Aqk vn, Aqk^T dO,
  k dS) and the gradient's products with S and dS take fp32 operands (TF32) unless triton.TILED_BF16_MORE names them
  (MORE_BITS; by default w S and the gradient's four products over V take bf16 operands, Aqk vn, Aqk^T dO and k dS
  TF32): in bf16 they had put dbeta at 2.5e-2 and dk, dv at 9e-3 in the interpreter, which then truncated fp32 to
  bf16 (twice the card's rounding error); on an H100 all of them in bf16 stayed within 5.1e-3 at the stress cases,
  except Aqk vn at K = 256, V = 32 (a Triton fault: o 1.0 off). The state stays fp32 across chunks; the per-chunk
  states h and dh, w and the gradient's V-sums are stored in bf16 by default (triton.TILED_STATE, TILED_WU,
  TILED_SUMS), every other intermediate in fp32 (docs/benchmarks.md, "The interpreter rounded bf16 down" and "The
  bf16 candidate on the card", have the card's errors).
- the gradient kernel's V loop (the products with the state and its gradient, dO vn^T and dvn v^T) becomes a grid
  dimension (`_chunk_grad_vtile_kernel`), whose per-V-tile partial sums a small second kernel adds up, in a fixed
  order, before the rest of the per-chunk backward (`_chunk_grad_reduce_kernel`, sharing that rest with the fused
  kernel: triton_bwd._grad_finish). The default since 2026-12-07 (triton.TILED_GRAD = "ktile",
  `_chunk_grad_ktile_kernel`) splits the same products over K tiles instead, as fla's dq/dk kernel does, each
  program walking every V tile: no partial sums over V go through memory (at V = 256 the V-tile form writes and
  reads back four of each [B,T,H,K] sum), at the cost of reading each chunk's dO, vn, dvn once per K tile.

Notation and formulas as triton_fwd.py and triton_bwd.py.
"""
from __future__ import annotations

import triton
import triton.language as tl

from gdn.ops.gated_delta_rule.triton_bwd import (GRAD_ROWS, _grad_dg, _grad_dqdk_tile, _grad_dv, _grad_finish,
                                                 _grad_through_a)
from gdn.ops.gated_delta_rule.triton_fwd import _chunk_rows, _dot

# Products that take fp32 operands (TF32) or bf16 operands for bf16 inputs with
# triton.TILED_BF16_MORE (a bitmask of these; DELTAMU_GDN_TILED_BF16_MORE): w S (state forward),
# Aqk vn (output), Aqk^T dO (dvn's local part), k dS (state backward), dO S^T, dvn S^T, vn dS^T and dO vn^T (the
# gradient's products over V).
MORE_WS = tl.constexpr(1)
MORE_AV = tl.constexpr(2)
MORE_ADO = tl.constexpr(4)
MORE_KDS = tl.constexpr(8)
MORE_DOS = tl.constexpr(16)
MORE_DVNS = tl.constexpr(32)
MORE_VNDS = tl.constexpr(64)
MORE_DP = tl.constexpr(128)
MORE_DQDK = tl.constexpr(256)      # dq and dk's four products in _chunk_grad_dqdk_kernel (triton_bwd._grad_dqdk_tile)
MORE_BITS = dict(ws=MORE_WS.value, av=MORE_AV.value, ado=MORE_ADO.value, kds=MORE_KDS.value, dos=MORE_DOS.value,
                 dvns=MORE_DVNS.value, vnds=MORE_VNDS.value, dp=MORE_DP.value, dqdk=MORE_DQDK.value)   # the names


@triton.jit
def _rows_dot(x, row0, c, row_ok, j, S, H, K: tl.constexpr, BKS: tl.constexpr, OPDT: tl.constexpr,
              PRECISION: tl.constexpr):
    """x_j S for K sub-tile j: x a [B,T,H,K] tensor (its [BT, BKS] tile of this chunk), S a [BKS, BV] fp32 tile."""
    kc = j * BKS + tl.arange(0, BKS)
    x_t = tl.load(x + row0 * K + c[:, None] * (H * K) + kc[None, :], mask=row_ok[:, None] & (kc[None, :] < K),
                  other=0.)
    return _dot(x_t.to(OPDT), S.to(OPDT), PRECISION)


@triton.jit
def _cols_dot(x, row0, c, row_ok, j, y, H, K: tl.constexpr, BKS: tl.constexpr, OPDT: tl.constexpr,
              PRECISION: tl.constexpr):
    """x_j^T y for K sub-tile j, y [BT, BV] already in OPDT; x_j^T is read transposed from memory (an A operand is
    never tl.trans'ed in registers: fla issue 640)."""
    kc = j * BKS + tl.arange(0, BKS)
    xT_t = tl.load(x + row0 * K + kc[:, None] + c[None, :] * (H * K), mask=(kc[:, None] < K) & row_ok[None, :],
                   other=0.)
    return _dot(xT_t.to(OPDT), y, PRECISION)


@triton.jit
def _kv_offsets(j, vc, K: tl.constexpr, V: tl.constexpr, BKS: tl.constexpr):
    kc = j * BKS + tl.arange(0, BKS)
    return kc[:, None] * V + vc[None, :], (kc[:, None] < K) & (vc[None, :] < V)


@triton.jit
def _store_kv(ptr, base, j, vc, S, K: tl.constexpr, V: tl.constexpr, BKS: tl.constexpr):
    off, ok = _kv_offsets(j, vc, K, V, BKS)
    tl.store(ptr + base + off, S.to(ptr.dtype.element_ty), mask=ok)       # h and dh may be bf16 (TILED_STATE)


@triton.jit
def _load_kv(ptr, base, j, vc, K: tl.constexpr, V: tl.constexpr, BKS: tl.constexpr):
    off, ok = _kv_offsets(j, vc, K, V, BKS)
    return tl.load(ptr + base + off, mask=ok, other=0.).to(tl.float32)     # h0 may be any float dtype


@triton.jit
def _state_subtiles(ptr, base, vc, LOAD: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BKS: tl.constexpr,
                    NKS: tl.constexpr, BV: tl.constexpr):
    """The state's (up to) four K sub-tiles at a V tile, fp32: zeros, plus the [K,V] tensor at `ptr` if LOAD (the
    initial state forward, the final state's gradient backward). Sub-tiles past NKS stay zero and unused."""
    S0 = tl.zeros([BKS, BV], dtype=tl.float32)
    S1 = tl.zeros([BKS, BV], dtype=tl.float32)
    S2 = tl.zeros([BKS, BV], dtype=tl.float32)
    S3 = tl.zeros([BKS, BV], dtype=tl.float32)
    if LOAD:
        S0 += _load_kv(ptr, base, 0, vc, K, V, BKS)
        if NKS > 1:
            S1 += _load_kv(ptr, base, 1, vc, K, V, BKS)
        if NKS > 2:
            S2 += _load_kv(ptr, base, 2, vc, K, V, BKS)
            S3 += _load_kv(ptr, base, 3, vc, K, V, BKS)
    return S0, S1, S2, S3


@triton.jit
def _store_state_and_rows_dot(out, hb, vc, x, row0, c, row_ok, S0, S1, S2, S3, H, K: tl.constexpr, V: tl.constexpr,
                              BKS: tl.constexpr, NKS: tl.constexpr, XDT: tl.constexpr, PRECISION: tl.constexpr):
    """Store the state's sub-tiles at the chunk's slot `hb` of `out`, and return x S (the chunk's rows of x, [BT,K],
    times the state, summed over the sub-tiles, operands in XDT)."""
    _store_kv(out, hb, 0, vc, S0, K, V, BKS)
    xs = _rows_dot(x, row0, c, row_ok, 0, S0, H, K, BKS, XDT, PRECISION)
    if NKS > 1:
        _store_kv(out, hb, 1, vc, S1, K, V, BKS)
        xs += _rows_dot(x, row0, c, row_ok, 1, S1, H, K, BKS, XDT, PRECISION)
    if NKS > 2:
        _store_kv(out, hb, 2, vc, S2, K, V, BKS)
        _store_kv(out, hb, 3, vc, S3, K, V, BKS)
        xs += _rows_dot(x, row0, c, row_ok, 2, S2, H, K, BKS, XDT, PRECISION)
        xs += _rows_dot(x, row0, c, row_ok, 3, S3, H, K, BKS, XDT, PRECISION)
    return xs


@triton.jit
def _chunk_scales(Gcum, rq_in, rk_in, row0, c, row_ok, i_t, T, scale, H, BT: tl.constexpr,
                  USE_L2NORM: tl.constexpr):
    """gamma_C and the row scales of qg = scale gamma q^ and kg = e^{G_C - G} k^ for chunk i_t."""
    G = tl.load(Gcum + row0 + c * H, mask=row_ok, other=0.)
    G_end = tl.load(Gcum + row0 + (tl.minimum(BT, T - i_t * BT) - 1) * H)
    q_scale = scale * tl.exp(G)
    k_scale = tl.exp(G_end - G)
    if USE_L2NORM:
        q_scale *= tl.load(rq_in + row0 + c * H, mask=row_ok, other=0.)
        k_scale *= tl.load(rk_in + row0 + c * H, mask=row_ok, other=0.)
    return tl.exp(G_end), q_scale, k_scale


@triton.jit
def _chunk_state_fwd_tiled_kernel(
    k,                                   # input [B,T,H,K]
    w, u, Gcum, rk_in,                   # from the prep kernel (fp32)
    h0,                                  # [B,H,K,V] or dummy
    h, vn,                               # out fp32 [B,NT,H,K,V], [B,T,H,V]: for the output kernel (and the backward)
    ht,                                  # out fp32 [B,H,K,V] (written when STORE_FINAL)
    T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKS: tl.constexpr, NKS: tl.constexpr,
    BV: tl.constexpr, USE_L2NORM: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
    PRECISION: tl.constexpr, BF16_OPS: tl.constexpr, MORE: tl.constexpr = 0,
    vn16=None,                           # out bf16 [B,T,H,V]: vn rounded to bf16 (triton.TILED_GRAD_COPIES), or None
):
    """The sequential part only: per chunk vn = u - w S, S <- gamma_C S + kg^T vn, h and vn written; the output
    (q S and Aqk vn) is left to `_chunk_output_kernel`, which runs over every chunk at once."""
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    WS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_WS & MORE) != 0 else tl.float32
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    vc = i_v * BV + tl.arange(0, BV)
    c = tl.arange(0, BT)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    base0 = i_bh.to(tl.int64) * K * V

    S0, S1, S2, S3 = _state_subtiles(h0, base0, vc, HAS_H0, K, V, BKS, NKS, BV)
    for i_t in range(NT):
        row0, _, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
        mv = row_ok[:, None] & (vc[None, :] < V)
        hb = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
        ws = _store_state_and_rows_dot(h, hb, vc, w, row0, c, row_ok, S0, S1, S2, S3, H, K, V, BKS, NKS, WS_DT,
                                       PRECISION)                                          # w S
        decay, _q_scale, k_scale = _chunk_scales(Gcum, rk_in, rk_in, row0, c, row_ok, i_t, T, 1.0, H, BT,
                                                 USE_L2NORM)
        vn_t = tl.load(u + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32) - ws
        tl.store(vn + row0 * V + rv_off, vn_t, mask=mv)
        if vn16 is not None:
            tl.store(vn16 + row0 * V + rv_off, vn_t.to(tl.bfloat16), mask=mv)
        vk = (vn_t * k_scale[:, None]).to(OPDT)
        S0 = S0 * decay + _cols_dot(k, row0, c, row_ok, 0, vk, H, K, BKS, OPDT, PRECISION)
        if NKS > 1:
            S1 = S1 * decay + _cols_dot(k, row0, c, row_ok, 1, vk, H, K, BKS, OPDT, PRECISION)
        if NKS > 2:
            S2 = S2 * decay + _cols_dot(k, row0, c, row_ok, 2, vk, H, K, BKS, OPDT, PRECISION)
            S3 = S3 * decay + _cols_dot(k, row0, c, row_ok, 3, vk, H, K, BKS, OPDT, PRECISION)
    if STORE_FINAL:
        _store_kv(ht, base0, 0, vc, S0, K, V, BKS)
        if NKS > 1:
            _store_kv(ht, base0, 1, vc, S1, K, V, BKS)
        if NKS > 2:
            _store_kv(ht, base0, 2, vc, S2, K, V, BKS)
            _store_kv(ht, base0, 3, vc, S3, K, V, BKS)


@triton.jit
def _chunk_output_kernel(
    q,                                   # input [B,T,H,K]
    Aqk, Gcum, rq_in,                    # from the prep kernel (fp32)
    h, vn,                               # from the state pass (fp32)
    o,                                   # out [B,T,H,V]
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKS: tl.constexpr, NKS: tl.constexpr,
    BV: tl.constexpr, USE_L2NORM: tl.constexpr, PRECISION: tl.constexpr, BF16_OPS: tl.constexpr,
    MORE: tl.constexpr = 0,
):
    """One program per (V tile, chunk, b*h): o = qg S + Aqk vn, with S the state at the chunk's start."""
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    AV_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_AV & MORE) != 0 else tl.float32
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    vc = i_v * BV + tl.arange(0, BV)
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    mv = row_ok[:, None] & (vc[None, :] < V)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    hb = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    qs = tl.zeros([BT, BV], dtype=tl.float32)
    for j in range(NKS):
        qs += _rows_dot(q, row0, c, row_ok, j, _load_kv(h, hb, j, vc, K, V, BKS), H, K, BKS, OPDT, PRECISION)
    _decay, q_scale, _k_scale = _chunk_scales(Gcum, rq_in, rq_in, row0, c, row_ok, i_t, T, scale, H, BT,
                                              USE_L2NORM)
    a_t = tl.load(Aqk + row0 * BT + c[:, None] * (H * BT) + c[None, :], mask=row_ok[:, None], other=0.)
    vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
    o_t = q_scale[:, None] * qs + _dot(a_t.to(AV_DT), vn_t.to(AV_DT), PRECISION)
    tl.store(o + row0 * V + rv_off, o_t.to(o.dtype.element_ty), mask=mv)


@triton.jit
def _chunk_state_bwd_tiled_kernel(
    q, k,                                # inputs [B,T,H,K]
    w, Gcum, rq_in, rk_in,               # saved from the forward (fp32)
    do,                                  # [B,T,H,V]
    dht,                                 # [B,H,K,V] grad of the final state, or dummy
    dh,                                  # out fp32 [B,NT,H,K,V]: grad of the state at each chunk's end
    dvn_local,                           # [B,T,H,V]: Aqk^T dO (_chunk_dvn_local_kernel); may be dvn itself
    dvn,                                 # out [B,T,H,V]: dvn = Aqk^T dO + kg dS
    dh0,                                 # out fp32 [B,H,K,V], or dummy
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKS: tl.constexpr, NKS: tl.constexpr,
    BV: tl.constexpr, USE_L2NORM: tl.constexpr, HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
    PRECISION: tl.constexpr, BF16_OPS: tl.constexpr, MORE: tl.constexpr = 0,
    dvn16=None,                          # out bf16 [B,T,H,V]: dvn rounded to bf16 (triton.TILED_GRAD_COPIES), or None
):
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    KDS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_KDS & MORE) != 0 else tl.float32
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    vc = i_v * BV + tl.arange(0, BV)
    c = tl.arange(0, BT)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    base0 = i_bh.to(tl.int64) * K * V

    dS0, dS1, dS2, dS3 = _state_subtiles(dht, base0, vc, HAS_DHT, K, V, BKS, NKS, BV)
    for i_rev in range(NT):
        i_t = NT - 1 - i_rev
        row0, _, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
        mv = row_ok[:, None] & (vc[None, :] < V)
        hb = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
        kdS = _store_state_and_rows_dot(dh, hb, vc, k, row0, c, row_ok, dS0, dS1, dS2, dS3, H, K, V, BKS, NKS,
                                        KDS_DT, PRECISION)                                         # k dS
        decay, q_scale, k_scale = _chunk_scales(Gcum, rq_in, rk_in, row0, c, row_ok, i_t, T, scale, H, BT,
                                                USE_L2NORM)
        do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.)
        dvn_t = tl.load(dvn_local + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32) + k_scale[:, None] * kdS
        tl.store(dvn + row0 * V + rv_off, dvn_t.to(dvn.dtype.element_ty), mask=mv)
        if dvn16 is not None:
            tl.store(dvn16 + row0 * V + rv_off, dvn_t.to(tl.bfloat16), mask=mv)
        qdo = (do_t.to(tl.float32) * q_scale[:, None]).to(OPDT)
        dvo = dvn_t.to(OPDT)
        dS0 = dS0 * decay + _cols_dot(q, row0, c, row_ok, 0, qdo, H, K, BKS, OPDT, PRECISION) \
            - _cols_dot(w, row0, c, row_ok, 0, dvo, H, K, BKS, OPDT, PRECISION)
        if NKS > 1:
            dS1 = dS1 * decay + _cols_dot(q, row0, c, row_ok, 1, qdo, H, K, BKS, OPDT, PRECISION) \
                - _cols_dot(w, row0, c, row_ok, 1, dvo, H, K, BKS, OPDT, PRECISION)
        if NKS > 2:
            dS2 = dS2 * decay + _cols_dot(q, row0, c, row_ok, 2, qdo, H, K, BKS, OPDT, PRECISION) \
                - _cols_dot(w, row0, c, row_ok, 2, dvo, H, K, BKS, OPDT, PRECISION)
            dS3 = dS3 * decay + _cols_dot(q, row0, c, row_ok, 3, qdo, H, K, BKS, OPDT, PRECISION) \
                - _cols_dot(w, row0, c, row_ok, 3, dvo, H, K, BKS, OPDT, PRECISION)
    if STORE_DH0:
        _store_kv(dh0, base0, 0, vc, dS0, K, V, BKS)
        if NKS > 1:
            _store_kv(dh0, base0, 1, vc, dS1, K, V, BKS)
        if NKS > 2:
            _store_kv(dh0, base0, 2, vc, dS2, K, V, BKS)
            _store_kv(dh0, base0, 3, vc, dS3, K, V, BKS)


@triton.jit
def _chunk_dvn_local_kernel(
    Aqk, do,                             # fp32 [B,T,H,BT] from the forward, dO [B,T,H,V]
    dvn,                                 # out fp32 [B,T,H,V]: Aqk^T dO, the part of dvn within the chunk
    T,
    H, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr, BF16_OPS: tl.constexpr = False,
    MORE: tl.constexpr = 0,
):
    """One program per (V tile, chunk, b*h), ahead of the backward state pass, which adds kg dS to it."""
    ADO_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_ADO & MORE) != 0 else tl.float32
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    vc = i_v * BV + tl.arange(0, BV)
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    mv = row_ok[:, None] & (vc[None, :] < V)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    aT_t = tl.load(Aqk + row0 * BT + c[:, None] + c[None, :] * (H * BT), mask=row_ok[None, :], other=0.)
    do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
    tl.store(dvn + row0 * V + rv_off, _dot(aT_t.to(ADO_DT), do_t.to(ADO_DT), PRECISION), mask=mv)


@triton.jit
def _chunk_grad_vtile_kernel(
    v, do, h, dh, vn, dvn,               # v, dO [B,T,H,V]; fp32 h, dh [B,NT,H,K,V], vn, dvn [B,T,H,V]
    dqi, dw, dkt,                        # out fp32 [NV, B,T,H,K]: this V tile's part of dO S^T, -dvn S^T, vn dS^T
    dP, dTu,                             # out fp32 [NV, B,T,H,BT]: its part of dO vn^T, dvn v^T
    sdS,                                 # out fp32 [NV, B*H*NT]: its part of sum(S o dS)
    T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BF16_OPS: tl.constexpr, PRECISION: tl.constexpr, MORE: tl.constexpr = 0,
):
    """One program per (V tile, chunk, b*h): the V-summed products of the per-chunk backward, for one V tile."""
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    DOS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DOS & MORE) != 0 else tl.float32      # dO S^T
    DVNS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DVNS & MORE) != 0 else tl.float32    # dvn S^T
    VNDS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_VNDS & MORE) != 0 else tl.float32    # vn dS^T
    DP_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DP & MORE) != 0 else tl.float32        # dO vn^T
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    NK: tl.constexpr = (K + BK - 1) // BK
    rows = tl.num_programs(1) * tl.num_programs(2)                # B*H*NT chunks
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    vc = i_v * BV + tl.arange(0, BV)
    mv = row_ok[:, None] & (vc[None, :] < V)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    h0ff = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    part = i_v.to(tl.int64) * T * tl.num_programs(2)              # offset of this V tile's slot, in rows of H
    do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
    vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
    dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.)
    s = tl.zeros([], dtype=tl.float32)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        kv_ok = (kc[:, None] < K) & (vc[None, :] < V)
        S_t = tl.load(h + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.).to(tl.float32)
        dS_t = tl.load(dh + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.).to(tl.float32)
        s += tl.sum(tl.sum(S_t * dS_t, 1), 0)
        mk = row_ok[:, None] & (kc[None, :] < K)
        off = (part + row0) * K + c[:, None] * (H * K) + kc[None, :]
        tl.store(dqi + off, _dot(do_t.to(DOS_DT), tl.trans(S_t.to(DOS_DT)), PRECISION), mask=mk)
        tl.store(dw + off, -_dot(dvn_t.to(DVNS_DT), tl.trans(S_t.to(DVNS_DT)), PRECISION), mask=mk)
        tl.store(dkt + off, _dot(vn_t.to(VNDS_DT), tl.trans(dS_t.to(VNDS_DT)), PRECISION), mask=mk)
    v_t = tl.load(v + row0 * V + rv_off, mask=mv, other=0.)
    cc = (part + row0) * BT + c[:, None] * (H * BT) + c[None, :]
    tl.store(dP + cc, _dot(do_t.to(DP_DT), tl.trans(vn_t.to(DP_DT)), PRECISION), mask=row_ok[:, None])
    tl.store(dTu + cc, _dot(dvn_t.to(OPDT), tl.trans(v_t.to(OPDT)), PRECISION), mask=row_ok[:, None])
    tl.store(sdS + i_v.to(tl.int64) * rows + i_bh * NT + i_t, s)


@triton.jit
def _grad_by_k_v_tile(h, dh, do, vn, dvn, h0ff, row0, c, row_ok, kc, i_v, dqi_t, dw_t, dkt_t, s, H, K: tl.constexpr,
                      V: tl.constexpr, BV: tl.constexpr, BF16_OPS: tl.constexpr, MORE: tl.constexpr,
                      PRECISION: tl.constexpr):
    """V tile i_v of the gradient's products for the K columns kc: dO S^T, -dvn S^T, vn dS^T and sum(S o dS) added
    to the sums; returns them, and the tile's dO (fp32), vn and dvn as loaded."""
    DOS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DOS & MORE) != 0 else tl.float32      # dO S^T
    DVNS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DVNS & MORE) != 0 else tl.float32    # dvn S^T
    VNDS_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_VNDS & MORE) != 0 else tl.float32    # vn dS^T
    vc = i_v * BV + tl.arange(0, BV)
    mv = row_ok[:, None] & (vc[None, :] < V)
    rv_off = c[:, None] * (H * V) + vc[None, :]
    kv_ok = (kc[:, None] < K) & (vc[None, :] < V)
    S_t = tl.load(h + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.).to(tl.float32)
    dS_t = tl.load(dh + h0ff + kc[:, None] * V + vc[None, :], mask=kv_ok, other=0.).to(tl.float32)
    s += tl.sum(tl.sum(S_t * dS_t, 1), 0)
    do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
    vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
    dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.)
    dqi_t += _dot(do_t.to(DOS_DT), tl.trans(S_t.to(DOS_DT)), PRECISION)
    dw_t -= _dot(dvn_t.to(DVNS_DT), tl.trans(S_t.to(DVNS_DT)), PRECISION)
    dkt_t += _dot(vn_t.to(VNDS_DT), tl.trans(dS_t.to(VNDS_DT)), PRECISION)
    return dqi_t, dw_t, dkt_t, s, do_t, vn_t, dvn_t


@triton.jit
def _row_dots_part(rdots, i_k, i_bh, BH, NT, i_t, BT: tl.constexpr):
    """Where K tile i_k's two [BT] parts of chunk i_t's row dots lie in rdots ([NK, BH*NT, 2, BT], TILED_ROW_DOTS)."""
    return rdots + ((i_k * BH + i_bh).to(tl.int64) * NT + i_t) * (2 * BT)


@triton.jit
def _store_k_tile_sums(dqi, dw, dkt, sdS, q, k, rdots, dqi_t, dw_t, dkt_t, s, row0, c, row_ok, kc, i_k, i_t, i_bh,
                       NT, H, K: tl.constexpr, BT: tl.constexpr):
    """A K tile's sums over V as stored (fp32, or bf16: triton.TILED_SUMS), its part of sum(S o dS), and, when
    rdots is given (triton.TILED_ROW_DOTS), its parts of the row dots q.dO S^T and k.vn dS^T, taken from the
    sums as stored: the values _chunk_grad_rows_kernel would otherwise read back with q and k to make them."""
    mk = row_ok[:, None] & (kc[None, :] < K)
    off = row0 * K + c[:, None] * (H * K) + kc[None, :]
    tl.store(dqi + off, dqi_t.to(dqi.dtype.element_ty), mask=mk)
    tl.store(dw + off, dw_t.to(dw.dtype.element_ty), mask=mk)
    tl.store(dkt + off, dkt_t.to(dkt.dtype.element_ty), mask=mk)
    tl.store(sdS + i_k.to(tl.int64) * (tl.num_programs(1) * tl.num_programs(2)) + i_bh * NT + i_t, s)
    if rdots is not None:
        part = _row_dots_part(rdots, i_k, i_bh, tl.num_programs(2), NT, i_t, BT)
        q_t = tl.load(q + off, mask=mk, other=0.).to(tl.float32)
        k_t = tl.load(k + off, mask=mk, other=0.).to(tl.float32)
        # the sums as stored (rounded as the reduction would read them back), not the fp32 registers
        tl.store(part + c, tl.sum(q_t * dqi_t.to(dqi.dtype.element_ty).to(tl.float32), 1))
        tl.store(part + BT + c, tl.sum(k_t * dkt_t.to(dkt.dtype.element_ty).to(tl.float32), 1))


@triton.jit
def _chunk_grad_ktile_kernel(
    v, do, h, dh, vn, dvn,               # as _chunk_grad_vtile_kernel
    dqi, dw, dkt,                        # out fp32 [B,T,H,K]: dO S^T, -dvn S^T, vn dS^T, summed over V
    dP, dTu,                             # out fp32 [B,T,H,BT]: dO vn^T, dvn v^T, summed over V
    sdS,                                 # out fp32 [NK, B*H*NT]: each K tile's part of sum(S o dS)
    T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    BF16_OPS: tl.constexpr, PRECISION: tl.constexpr, MORE: tl.constexpr = 0, CC_IN_K_TILES: tl.constexpr = False,
    q=None, k=None,                      # inputs [B,T,H,K], for the row dots (or None)
    rdots=None,                          # out fp32 [NK, B*H*NT, 2, BT]: the row dots' parts (TILED_ROW_DOTS), or None
):
    """The same products as _chunk_grad_vtile_kernel, split over K instead of V: one program per (K tile, chunk,
    b*h) sums its columns of dO S^T, -dvn S^T, vn dS^T (and its part of sum(S o dS)) over every V tile, and one more
    program per (chunk, b*h), i_k = NK, sums dO vn^T and dvn v^T. The V-tile kernel writes its partial sums, NV of
    each, and the reduction reads them back; here each sum is written once. The NK + 1 programs of a chunk are
    launched next to each other (i_k varies fastest), so the chunk's dO, vn and dvn they all read come from L2.
    CC_IN_K_TILES (NK >= 2; triton.TILED_KTILE_CC = "k-tiles"): no extra program; K tile 0 sums dO vn^T and K tile 1
    dvn v^T from the dO, vn and dvn tiles it loads anyway (v besides), one [C, C] accumulator each."""
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    DP_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DP & MORE) != 0 else tl.float32        # dO vn^T
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    NK: tl.constexpr = (K + BK - 1) // BK
    NV: tl.constexpr = (V + BV - 1) // BV
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    h0ff = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    if CC_IN_K_TILES or i_k < NK:
        kc = i_k * BK + tl.arange(0, BK)
        dqi_t = tl.zeros([BT, BK], dtype=tl.float32)
        dw_t = tl.zeros([BT, BK], dtype=tl.float32)
        dkt_t = tl.zeros([BT, BK], dtype=tl.float32)
        s = tl.zeros([], dtype=tl.float32)
        if CC_IN_K_TILES:
            cc_t = tl.zeros([BT, BT], dtype=tl.float32)      # dO vn^T in K tile 0, dvn v^T in K tile 1
        for i_v in range(NV):
            dqi_t, dw_t, dkt_t, s, do_t, vn_t, dvn_t = _grad_by_k_v_tile(
                h, dh, do, vn, dvn, h0ff, row0, c, row_ok, kc, i_v, dqi_t, dw_t, dkt_t, s, H, K, V, BV, BF16_OPS,
                MORE, PRECISION)
            if CC_IN_K_TILES:
                if i_k == 0:
                    cc_t += _dot(do_t.to(DP_DT), tl.trans(vn_t.to(DP_DT)), PRECISION)
                elif i_k == 1:
                    vc = i_v * BV + tl.arange(0, BV)
                    v_t = tl.load(v + row0 * V + c[:, None] * (H * V) + vc[None, :],
                                  mask=row_ok[:, None] & (vc[None, :] < V), other=0.)
                    cc_t += _dot(dvn_t.to(OPDT), tl.trans(v_t.to(OPDT)), PRECISION)
        if CC_IN_K_TILES:
            cc = row0 * BT + c[:, None] * (H * BT) + c[None, :]
            if i_k == 0:
                tl.store(dP + cc, cc_t.to(dP.dtype.element_ty), mask=row_ok[:, None])
            elif i_k == 1:
                tl.store(dTu + cc, cc_t.to(dTu.dtype.element_ty), mask=row_ok[:, None])
        _store_k_tile_sums(dqi, dw, dkt, sdS, q, k, rdots, dqi_t, dw_t, dkt_t, s, row0, c, row_ok, kc, i_k, i_t, i_bh,
                           NT, H, K, BT)
    else:
        dP_t = tl.zeros([BT, BT], dtype=tl.float32)
        dTu_t = tl.zeros([BT, BT], dtype=tl.float32)
        for i_v in range(NV):
            vc = i_v * BV + tl.arange(0, BV)
            mv = row_ok[:, None] & (vc[None, :] < V)
            rv_off = c[:, None] * (H * V) + vc[None, :]
            do_t = tl.load(do + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
            vn_t = tl.load(vn + row0 * V + rv_off, mask=mv, other=0.)
            dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.)
            v_t = tl.load(v + row0 * V + rv_off, mask=mv, other=0.)
            dP_t += _dot(do_t.to(DP_DT), tl.trans(vn_t.to(DP_DT)), PRECISION)
            dTu_t += _dot(dvn_t.to(OPDT), tl.trans(v_t.to(OPDT)), PRECISION)
        cc = row0 * BT + c[:, None] * (H * BT) + c[None, :]
        tl.store(dP + cc, dP_t.to(dP.dtype.element_ty), mask=row_ok[:, None])       # fp32, or bf16 (TILED_CC)
        tl.store(dTu + cc, dTu_t.to(dTu.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _chunk_grad_reduce_kernel(
    q, k, v, g, beta,                    # inputs
    dvn, Tinv,                           # from the state backward and the forward
    dqi, dw, dkt, dP, dTu, sdS,          # the parts (_chunk_grad_vtile_kernel, _chunk_grad_ktile_kernel); slot 0
                                         # gets their sums
    dq, dk, dv, dg, dbeta,               # out
    scratch,                             # 2 * BT * BT floats per program (fp32, or bf16: triton.TILED_CC)
    rows,                                # fp32 [B*H*NT, GRAD_ROWS, BT] (written when SPLIT_DQDK), or dummy
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NVP: tl.constexpr,                   # parts of dqi, dw, dkt, dP, dTu (V tiles; 1 from the K-tile kernel)
    NSS: tl.constexpr,                   # parts of sdS (V tiles, or K tiles)
    USE_L2NORM: tl.constexpr, EPS: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_DQDK: tl.constexpr,            # leave dq, dk to _chunk_grad_dqdk_kernel (rows and scratch for it)
):
    """One program per (chunk, b*h): the parts summed (in a fixed order: the same bits every run), then the rest of
    the per-chunk backward, as the fused kernel (with SPLIT_DQDK all but dq and dk)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    NK: tl.constexpr = (K + BK - 1) // BK
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    slot = (T * tl.num_programs(1)).to(tl.int64)                  # rows of H between the parts' slots
    if NVP > 1:
        for i_k in range(NK):
            kc = i_k * BK + tl.arange(0, BK)
            mk = row_ok[:, None] & (kc[None, :] < K)
            off = row0 * K + c[:, None] * (H * K) + kc[None, :]
            a = tl.load(dqi + off, mask=mk, other=0.)
            b = tl.load(dw + off, mask=mk, other=0.)
            e = tl.load(dkt + off, mask=mk, other=0.)
            for i_v in range(1, NVP):
                a += tl.load(dqi + i_v * slot * K + off, mask=mk, other=0.)
                b += tl.load(dw + i_v * slot * K + off, mask=mk, other=0.)
                e += tl.load(dkt + i_v * slot * K + off, mask=mk, other=0.)
            tl.store(dqi + off, a, mask=mk)
            tl.store(dw + off, b, mask=mk)
            tl.store(dkt + off, e, mask=mk)
    if SPLIT_DQDK and NVP == 1:
        dP_t, dTu_t = dP, dTu                                     # loaded by _grad_finish after its K loop
    else:
        cc = row0 * BT + c[:, None] * (H * BT) + c[None, :]
        dP_t = tl.load(dP + cc, mask=row_ok[:, None], other=0.).to(tl.float32)
        dTu_t = tl.load(dTu + cc, mask=row_ok[:, None], other=0.).to(tl.float32)
        for i_v in range(1, NVP):
            dP_t += tl.load(dP + i_v * slot * BT + cc, mask=row_ok[:, None], other=0.).to(tl.float32)
            dTu_t += tl.load(dTu + i_v * slot * BT + cc, mask=row_ok[:, None], other=0.).to(tl.float32)
    s = tl.load(sdS + i_bh * NT + i_t)
    for i_s in range(1, NSS):
        s += tl.load(sdS + i_s * NT * tl.num_programs(1) + i_bh * NT + i_t)
    tl.debug_barrier()                                            # the sums are read back by other threads
    chunk = (i_bh * tl.num_programs(0) + i_t).to(tl.int64)
    _grad_finish(q, k, v, g, beta, dvn, Tinv, dqi, dw, dkt, dq, dk, dv, dg, dbeta, scratch + chunk * (2 * BT * BT),
                 dP_t, dTu_t, s, scale, row0, c, row_ok, rows + chunk * (GRAD_ROWS * BT), H, K, V, BT, BK, BV,
                 USE_L2NORM, EPS, PRECISION, ROWS_OUT=SPLIT_DQDK, DP_IN_MEMORY=SPLIT_DQDK and NVP == 1)


@triton.jit
def _inverse_norms(rq_in, rk_in, row0, c, row_ok, H, BT: tl.constexpr, USE_L2NORM: tl.constexpr):
    """1/|q|, 1/|k| of the chunk's rows as the forward saved them (ones without the l2-norm)."""
    if USE_L2NORM:
        rq = tl.load(rq_in + row0 + c * H, mask=row_ok, other=0.)
        rk = tl.load(rk_in + row0 + c * H, mask=row_ok, other=0.)
    else:
        rq = tl.full([BT], 1.0, dtype=tl.float32)
        rk = tl.full([BT], 1.0, dtype=tl.float32)
    return rq, rk


@triton.jit
def _chunk_grad_rows_kernel(
    q, k, beta,                          # inputs
    Aqk, Tinv, Gcum, rq_in, rk_in,       # from the forward (fp32): Aqk, T, the gate cumsum, 1/|q|, 1/|k|
    dqi, dw, dkt, dP, dTu, sdS,          # _chunk_grad_ktile_kernel's sums over V
    dg,                                  # out
    scratch,                             # out: dS_qk, dX, 2 * BT * BT floats a chunk (fp32, or bf16: TILED_CC)
    rows,                                # out fp32 [B*H*NT, GRAD_ROWS, BT]: the row factors of dq, dk, dv, dbeta
    scale, T,
    H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, NSS: tl.constexpr, USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr, SUMS_BF16: tl.constexpr,
    rdots=None,                          # the row dots' parts from _chunk_grad_ktile_kernel (TILED_ROW_DOTS), or None
):
    """One program per (chunk, b*h): _chunk_grad_reduce_kernel's work after the gradient by K tiles, with dq, dk,
    dv, dbeta left to _chunk_grad_dqdk_kernel (triton.TILED_REDUCE = "rows"), holding fewer [C, C] tiles at once:
    G, 1/|q|, 1/|k| come from the forward instead of from q and k again, Z = dS_qk o q^k^T is dP o Aqk (Aqk, saved
    by the forward, is scale q^k^T o Gam) instead of a Q K^T summed over the K loop, and K K^T is summed just before
    its one use, after dT, instead of beside dW k^T through the K loop. The same formulas as _grad_finish."""
    DWK_DT: tl.constexpr = tl.bfloat16 if SUMS_BF16 else tl.float32
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    NK: tl.constexpr = (K + BK - 1) // BK
    row0, c, row_ok = _chunk_rows(i_bh // H, i_bh % H, i_t, T, H, BT)
    cc_off = c[:, None] * BT + c[None, :]
    cc = row0 * BT + c[:, None] * (H * BT) + c[None, :]
    chunk = (i_bh * tl.num_programs(0) + i_t).to(tl.int64)
    scr = scratch + chunk * (2 * BT * BT)

    # dW k^T and the row dots q.dO S^T, k.vn dS^T over the K tiles (with the V-sums stored in bf16, for bf16 inputs
    # only, dW k^T on bf16 operands: the same values TF32 would take)
    dwk = tl.zeros([BT, BT], dtype=tl.float32)
    rs_q_dqi = tl.zeros([BT], dtype=tl.float32)
    rs_k_dkt = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        mk = row_ok[:, None] & (kc[None, :] < K)
        rk_off = row0 * K + c[:, None] * (H * K) + kc[None, :]
        k_t = tl.load(k + rk_off, mask=mk, other=0.)
        dwk += _dot(tl.load(dw + rk_off, mask=mk, other=0.).to(DWK_DT), tl.trans(k_t.to(DWK_DT)), PRECISION)
        if rdots is None:
            rs_q_dqi += tl.sum(tl.load(q + rk_off, mask=mk, other=0.).to(tl.float32)
                               * tl.load(dqi + rk_off, mask=mk, other=0.).to(tl.float32), 1)
            rs_k_dkt += tl.sum(k_t.to(tl.float32) * tl.load(dkt + rk_off, mask=mk, other=0.).to(tl.float32), 1)
        else:                                    # made by the K-tile programs, added in the same K-tile order
            part = _row_dots_part(rdots, i_k, i_bh, tl.num_programs(1), NT, i_t, BT)
            rs_q_dqi += tl.load(part + c)
            rs_k_dkt += tl.load(part + BT + c)

    # padding rows of a short last chunk take G_C, as g = 0 there
    G_end = tl.load(Gcum + row0 + (tl.minimum(BT, T - i_t * BT) - 1) * H)
    G = tl.where(row_ok, tl.load(Gcum + row0 + c * H, mask=row_ok, other=0.), G_end)
    gamma = tl.exp(G)
    decay_end = tl.exp(G_end - G)
    beta_r = tl.load(beta + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    rq, rk = _inverse_norms(rq_in, rk_in, row0, c, row_ok, H, BT, USE_L2NORM)
    causal = c[:, None] >= c[None, :]

    # the Aqk terms: dS_qk for dq, dk; Z's row and column sums for dg and the l2-norm
    dP_t = tl.load(dP + cc, mask=row_ok[:, None], other=0.).to(tl.float32)
    dS_qk = tl.where(causal, dP_t * scale * tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.)), 0.)
    tl.store(scr + cc_off, dS_qk.to(scr.dtype.element_ty))
    Z = dP_t * tl.load(Aqk + cc, mask=row_ok[:, None], other=0.)
    Z_rows, Z_cols = tl.sum(Z, 1), tl.sum(Z, 0)

    # the terms through T and A
    dWKn = dwk * rk[None, :]                                     # dW k^^T
    c_w = tl.sum(tl.load(Tinv + cc, mask=row_ok[:, None], other=0.) * dWKn, 0)
    dT = dWKn * (beta_r * gamma)[None, :] \
        + tl.load(dTu + cc, mask=row_ok[:, None], other=0.).to(tl.float32) * beta_r[None, :]
    Tt = tl.load(Tinv + row0 * BT + c[None, :] * (H * BT) + c[:, None], mask=row_ok[None, :], other=0.)  # T^T
    kk = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        k_t = tl.load(k + row0 * K + c[:, None] * (H * K) + kc[None, :], mask=row_ok[:, None] & (kc[None, :] < K),
                      other=0.)
        kk += _dot(k_t, tl.trans(k_t), PRECISION)
    # Gam again, below the diagonal only (all _grad_through_a reads): not held from dS_qk through the loops
    strict = c[:, None] > c[None, :]
    Gam = tl.where(strict, tl.exp(tl.where(strict, G[:, None] - G[None, :], 0.)), 0.)
    Y0, dX, Y_rows, Y_cols = _grad_through_a(dT, Tt, Gam, kk, rk, beta_r, c, PRECISION)
    tl.store(scr + BT * BT + cc_off, dX.to(scr.dtype.element_ty))

    s = tl.load(sdS + i_bh * NT + i_t)
    for i_s in range(1, NSS):
        s += tl.load(sdS + i_s * NT * tl.num_programs(1) + i_bh * NT + i_t)
    z = _grad_dg(dg, G_end, gamma, decay_end, beta_r, rq, rk, rs_q_dqi, rs_k_dkt, Z_rows, Z_cols, c_w, Y_rows,
                 Y_cols, s, scale, row0, c, row_ok, H, BT)
    # _grad_finish's ROWS_OUT rows, each computed where it is stored (the order the card's checks compiled)
    rw = rows + chunk * (GRAD_ROWS * BT)
    tl.store(rw + c, rq)
    tl.store(rw + BT + c, rk)
    tl.store(rw + 2 * BT + c, scale * gamma)
    tl.store(rw + 3 * BT + c, decay_end)
    tl.store(rw + 4 * BT + c, beta_r * gamma)
    tl.store(rw + 5 * BT + c, scale * gamma * rq * rs_q_dqi + Z_rows)                     # q^.dq^
    tl.store(rw + 6 * BT + c, Z_cols + z + beta_r * gamma * c_w + Y_rows + Y_cols)       # k^.dk^
    tl.store(rw + 7 * BT + c, beta_r)
    tl.store(rw + 8 * BT + c, gamma * c_w + tl.sum(Y0, 1))                               # dbeta's terms so far


@triton.jit
def _chunk_grad_dqdk_kernel(
    q, k, v,                             # inputs
    Tinv,                                # fp32 [B,T,H,BT] from the forward
    dvn,                                 # fp32 [B,T,H,V] from the state backward
    dqi, dw, dkt,                        # fp32 [B,T,H,K] sums over V (slot 0 of _chunk_grad_reduce_kernel's parts)
    scratch, rows,                       # written by _chunk_grad_reduce_kernel with SPLIT_DQDK
    dq, dk, dv, dbeta,                   # out
    T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, PRECISION: tl.constexpr, BF16_OPS: tl.constexpr = False, MORE: tl.constexpr = 0,
):
    """One program per (K tile, chunk, b*h), and one more per (chunk, b*h) (i_k = NK): steps 6 (dq, dk, for its
    K tile) and 5 (dv, dbeta) of the per-chunk backward, after _chunk_grad_reduce_kernel with SPLIT_DQDK. The split
    costs a read of T (16 KB a chunk) per program (a chunk's programs run next to each other: mostly from L2) and
    the rows (GRAD_ROWS * BT floats a chunk); in one kernel T^T stays live from step 4 to step 6 beside the [C, C]
    algebra's tiles, and the loop over K tiles holds every scratch tile it re-reads."""
    DQDK_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DQDK & MORE) != 0 else tl.float32
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NK: tl.constexpr = (K + BK - 1) // BK
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    chunk = (i_bh * tl.num_programs(1) + i_t).to(tl.int64)
    rw = rows + chunk * (GRAD_ROWS * BT)
    Tt = tl.load(Tinv + row0 * BT + c[None, :] * (H * BT) + c[:, None], mask=row_ok[None, :], other=0.)  # T^T
    if i_k < NK:
        _grad_dqdk_tile(q, k, dqi, dw, dkt, dq, dk, scratch + chunk * (2 * BT * BT), Tt, tl.load(rw + c),
                        tl.load(rw + BT + c), tl.load(rw + 2 * BT + c), tl.load(rw + 3 * BT + c),
                        tl.load(rw + 4 * BT + c), tl.load(rw + 5 * BT + c), tl.load(rw + 6 * BT + c), row0, c,
                        row_ok, i_k, H, K, BT, BK, USE_L2NORM, PRECISION, DQDK_DT)
    else:
        _grad_dv(v, dvn, dv, dbeta, Tt, tl.load(rw + 7 * BT + c), tl.load(rw + 8 * BT + c), row0, c, row_ok, H, V,
                 BT, BV, PRECISION)


# The gradient in two kernels (triton.TILED_GRAD = "wy"), split as fla's dq/dk kernel and its WY backward split it:
# what needs every V tile but one K tile (dO S^T, dvn S^T, vn dS^T, and through dS_qk = dO vn^T the Aqk terms of dq
# and dk) is finished per K tile in the first, and only what needs every K tile (the WY representation's backward
# through T, and the l2-norm's row dots) is left to the second, one program per chunk. The three-kernel form
# (_chunk_grad_ktile_kernel, the reduction, _chunk_grad_dqdk_kernel) writes the three [B,T,H,K] sums over V and
# reads them back twice; here dq^ and the partial dk^ are written once, finished, and read back once.
# Row sums over K become sums of per-K-tile parts (WY_PARTS rows of BT a tile: q^.dq^, k^.dk^ so far, and dG's
# terms), added in a fixed order by the second kernel.
WY_PARTS = tl.constexpr(3)


@triton.jit
def _chunk_grad_dqk_kernel(
    q, k, g, do, h, dh, vn, dvn,         # inputs; fp32 h, dh [B,NT,H,K,V] (or bf16, TILED_STATE), vn, dvn
    rq_in, rk_in,                        # fp32 [B,T,H] 1/|q|, 1/|k| from the forward (read with USE_L2NORM)
    dqn, dkp, dw,                        # out fp32 [B,T,H,K]: dq^ (before the l2-norm), dk^ without the terms
                                         # through T, -dvn S^T
    parts,                               # out fp32 [NK, B*H*NT, WY_PARTS, BT]: this K tile's q^.dq^, k^.dk^, dG
    scr,                                 # fp32 scratch, BT * BT floats per program: dS_qk, read back transposed
    scale, T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, BF16_OPS: tl.constexpr, PRECISION: tl.constexpr, MORE: tl.constexpr = 0,
):
    """One program per (K tile, chunk, b*h), the K tiles of a chunk launched next to each other (i_k fastest): the
    V loop of _chunk_grad_ktile_kernel plus dP = dO vn^T (each K tile makes its own, as fla's kernel does), then
    with dS_qk = causal(scale dP o Gam):
        dq^ = scale gamma dO S^T + dS_qk k^            dk^ (so far) = dS_qk^T q^ + e^{G_C - G} vn dS^T."""
    DP_DT: tl.constexpr = tl.bfloat16 if BF16_OPS and (MORE_DP & MORE) != 0 else tl.float32        # dO vn^T
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    NV: tl.constexpr = (V + BV - 1) // BV
    row0, c, row_ok = _chunk_rows(i_b, i_h, i_t, T, H, BT)
    h0ff = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    kc = i_k * BK + tl.arange(0, BK)
    dqi_t = tl.zeros([BT, BK], dtype=tl.float32)
    dw_t = tl.zeros([BT, BK], dtype=tl.float32)
    dkt_t = tl.zeros([BT, BK], dtype=tl.float32)
    dP = tl.zeros([BT, BT], dtype=tl.float32)
    s = tl.zeros([], dtype=tl.float32)
    for i_v in range(NV):
        dqi_t, dw_t, dkt_t, s, do_t, vn_t, _ = _grad_by_k_v_tile(
            h, dh, do, vn, dvn, h0ff, row0, c, row_ok, kc, i_v, dqi_t, dw_t, dkt_t, s, H, K, V, BV, BF16_OPS, MORE,
            PRECISION)
        dP += _dot(do_t.to(DP_DT), tl.trans(vn_t.to(DP_DT)), PRECISION)
    mk = row_ok[:, None] & (kc[None, :] < K)
    rk_off = c[:, None] * (H * K) + kc[None, :]
    tl.store(dw + row0 * K + rk_off, dw_t, mask=mk)

    # padding rows get g = 0: G stays at G_C there, as in the forward
    G = tl.cumsum(tl.load(g + row0 + c * H, mask=row_ok, other=0.).to(tl.float32), 0)
    G_end = tl.sum(tl.where(c == BT - 1, G, 0.), 0)
    decay_end = tl.exp(G_end - G)
    rq, rk = _inverse_norms(rq_in, rk_in, row0, c, row_ok, H, BT, USE_L2NORM)
    causal = c[:, None] >= c[None, :]
    Gam = tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.)), 0.)
    dS_qk = tl.where(causal, dP * scale * Gam, 0.)              # grad of q^ k^T (through Aqk)
    cc_off = c[:, None] * BT + c[None, :]
    pid = (i_bh * tl.num_programs(1) + i_t) * tl.num_programs(0) + i_k
    scr = scr + pid.to(tl.int64) * (BT * BT)
    tl.store(scr + cc_off, dS_qk)
    q_t = tl.load(q + row0 * K + rk_off, mask=mk, other=0.)
    k_t = tl.load(k + row0 * K + rk_off, mask=mk, other=0.)
    # this K tile's parts of the row sums, each from the same tile so that what cancels cancels exactly (at the
    # diagonal of Z): q^.dq^ = a + rowsum(Z), k^.dk^ so far = colsum(Z) + z, dG's terms the first minus the second
    # and, at the last row, e^{G_C} sum(S o dS) + sum(z) (the terms of G_C); a = scale gamma rq rowsum(q o dO S^T),
    # Z = dS_qk o q^k^T, z = e^{G_C - G} rk rowsum(k o vn dS^T)
    Z = dS_qk * _dot(q_t, tl.trans(k_t), PRECISION) * rq[:, None] * rk[None, :]
    q_scale = scale * tl.exp(G)
    qn = q_t.to(tl.float32)
    kn = k_t.to(tl.float32)
    a = q_scale * rq * tl.sum(qn * dqi_t, 1)
    z = decay_end * rk * tl.sum(kn * dkt_t, 1)
    Z_rows, Z_cols = tl.sum(Z, 1), tl.sum(Z, 0)
    qn = qn * rq[:, None]
    kn = kn * rk[:, None]
    dqn_t = q_scale[:, None] * dqi_t + _dot(dS_qk, kn, PRECISION)
    tl.store(dqn + row0 * K + rk_off, dqn_t, mask=mk)
    tl.debug_barrier()                                           # dS_qk is read back transposed by other threads
    dk_t = _dot(tl.load(scr + c[:, None] + c[None, :] * BT), qn, PRECISION) + decay_end[:, None] * dkt_t
    tl.store(dkp + row0 * K + rk_off, dk_t, mask=mk)
    q_dot = a + Z_rows
    k_dot = Z_cols + z
    dG = a + Z_rows - Z_cols - z + tl.where(c == BT - 1, tl.exp(G_end) * s + tl.sum(z, 0), 0.)
    out = parts + ((i_k * tl.num_programs(2) + i_bh).to(tl.int64) * NT + i_t) * (WY_PARTS * BT)
    tl.store(out + c, q_dot)
    tl.store(out + BT + c, k_dot)
    tl.store(out + 2 * BT + c, dG)


@triton.jit
def _chunk_grad_wy_kernel(
    q, k, v, g, beta,                    # inputs
    dvn, Tinv, rq_in, rk_in,             # the state backward's dvn; the forward's T, 1/|q|, 1/|k|
    dqn, dkp, dw, parts,                 # _chunk_grad_dqk_kernel's
    dq, dk, dv, dg, dbeta,               # out
    scr,                                 # fp32 scratch, BT * BT floats per program: dX, read back transposed
    T,
    H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NK: tl.constexpr, USE_L2NORM: tl.constexpr, BF16_OPS: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (chunk, b*h): the backward through W = T diag(beta gamma) k^ and U = T diag(beta) v
    (dT = dW k^^T diag(beta gamma) + dU v^T diag(beta)... as _grad_finish's step 4, from dW = -dvn S^T summed by the
    first kernel), dv and dbeta, dg, and dq, dk with the l2-norm's backward."""
    OPDT: tl.constexpr = tl.bfloat16 if BF16_OPS else tl.float32
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    row0, c, row_ok = _chunk_rows(i_bh // H, i_bh % H, i_t, T, H, BT)
    g_r = tl.load(g + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    beta_r = tl.load(beta + row0 + c * H, mask=row_ok, other=0.).to(tl.float32)
    G = tl.cumsum(g_r, 0)
    gamma = tl.exp(G)
    rq, rk = _inverse_norms(rq_in, rk_in, row0, c, row_ok, H, BT, USE_L2NORM)
    q_dot = tl.zeros([BT], dtype=tl.float32)
    k_dot = tl.zeros([BT], dtype=tl.float32)
    dG = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(NK):
        part = parts + ((i_k * tl.num_programs(1) + i_bh).to(tl.int64) * NT + i_t) * (WY_PARTS * BT)
        q_dot += tl.load(part + c)
        k_dot += tl.load(part + BT + c)
        dG += tl.load(part + 2 * BT + c)

    # dv = beta T^T dvn, dbeta's term rowsum(v o T^T dvn), and dTu = dvn v^T, in one pass over V
    Tt = tl.load(Tinv + row0 * BT + c[None, :] * (H * BT) + c[:, None], mask=row_ok[None, :], other=0.)  # T^T
    dTu = tl.zeros([BT, BT], dtype=tl.float32)
    dbeta_r = tl.zeros([BT], dtype=tl.float32)
    NV: tl.constexpr = (V + BV - 1) // BV
    for i_v in range(NV):
        vc = i_v * BV + tl.arange(0, BV)
        mv = row_ok[:, None] & (vc[None, :] < V)
        rv_off = c[:, None] * (H * V) + vc[None, :]
        dvn_t = tl.load(dvn + row0 * V + rv_off, mask=mv, other=0.).to(tl.float32)
        v_t = tl.load(v + row0 * V + rv_off, mask=mv, other=0.)
        dru = _dot(Tt, dvn_t, PRECISION)                        # T^T dvn
        tl.store(dv + row0 * V + rv_off, (beta_r[:, None] * dru).to(dv.dtype.element_ty), mask=mv)
        dbeta_r += tl.sum(dru * v_t.to(tl.float32), 1)
        dTu += _dot(dvn_t.to(OPDT), tl.trans(v_t.to(OPDT)), PRECISION)

    # K K^T and dW k^T over every K tile
    kk = tl.zeros([BT, BT], dtype=tl.float32)
    dwk = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        mk = row_ok[:, None] & (kc[None, :] < K)
        rk_off = c[:, None] * (H * K) + kc[None, :]
        k_t = tl.load(k + row0 * K + rk_off, mask=mk, other=0.)
        kk += _dot(k_t, tl.trans(k_t), PRECISION)
        dwk += _dot(tl.load(dw + row0 * K + rk_off, mask=mk, other=0.), tl.trans(k_t.to(tl.float32)), PRECISION)

    # the [C, C] algebra through T and A = strict(diag(beta) k^k^T o Gam), as _grad_finish
    dWKn = dwk * rk[None, :]                                     # dW k^^T
    Tm = tl.load(Tinv + row0 * BT + c[:, None] * (H * BT) + c[None, :], mask=row_ok[:, None], other=0.)
    c_w = tl.sum(Tm * dWKn, 0)                                   # rowsum(k^ o T^T dW), indexed by row of k
    dT = dWKn * (beta_r * gamma)[None, :] + dTu * beta_r[None, :]
    causal = c[:, None] >= c[None, :]
    Gam = tl.where(causal, tl.exp(tl.where(causal, G[:, None] - G[None, :], 0.)), 0.)
    Y0, dX, Y_rows, Y_cols = _grad_through_a(dT, Tt, Gam, kk, rk, beta_r, c, PRECISION)
    scr = scr + (i_bh * tl.num_programs(0) + i_t).to(tl.int64) * (BT * BT)
    cc_off = c[:, None] * BT + c[None, :]
    tl.store(scr + cc_off, dX)

    dG += beta_r * gamma * c_w + Y_rows - Y_cols
    tl.store(dg + row0 + c * H, tl.cumsum(dG, 0, reverse=True).to(dg.dtype.element_ty), mask=row_ok)
    dbeta_r += gamma * c_w + tl.sum(Y0, 1)
    tl.store(dbeta + row0 + c * H, dbeta_r.to(dbeta.dtype.element_ty), mask=row_ok)
    k_dot += beta_r * gamma * c_w + Y_rows + Y_cols

    tl.debug_barrier()                                           # dX is read back transposed by other threads
    dXs = tl.load(scr + cc_off) + tl.load(scr + c[:, None] + c[None, :] * BT)
    w_scale = beta_r * gamma
    for i_k in range(NK):
        kc = i_k * BK + tl.arange(0, BK)
        mk = row_ok[:, None] & (kc[None, :] < K)
        rk_off = c[:, None] * (H * K) + kc[None, :]
        dqn_t = tl.load(dqn + row0 * K + rk_off, mask=mk, other=0.)
        kn = tl.load(k + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) * rk[:, None]
        dkn = tl.load(dkp + row0 * K + rk_off, mask=mk, other=0.) + _dot(dXs, kn, PRECISION) \
            + w_scale[:, None] * _dot(Tt, tl.load(dw + row0 * K + rk_off, mask=mk, other=0.), PRECISION)
        if USE_L2NORM:
            qn = tl.load(q + row0 * K + rk_off, mask=mk, other=0.).to(tl.float32) * rq[:, None]
            dqn_t = rq[:, None] * (dqn_t - qn * q_dot[:, None])
            dkn = rk[:, None] * (dkn - kn * k_dot[:, None])
        tl.store(dq + row0 * K + rk_off, dqn_t.to(dq.dtype.element_ty), mask=mk)
        tl.store(dk + row0 * K + rk_off, dkn.to(dk.dtype.element_ty), mask=mk)
