"""The one public entry to the gated delta rule: check the inputs, set the defaults, pick the backend.

Backends (same contract, same outputs up to rounding; the choice is the caller's, see gdn.ops.backend):
    "naive"   token-by-token recurrence (naive.py), the spec; slow, float64-capable
    "chunk"   chunked WY/UT form in plain PyTorch (chunk.py); autograd, any device
    "triton"  our Triton kernels (triton.py), imported only when first asked for
    "auto"    "triton" for CUDA tensors when the kernels import and are validated at the call's K and dtype
              (TRITON_VALIDATED_K), else "chunk"
"""
from __future__ import annotations

import functools

import torch

from gdn.ops.backend import load_kernel, pick_kernel, run_kernel
from gdn.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
from gdn.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

_load_triton = functools.partial(load_kernel, "gdn.ops.gated_delta_rule.triton", "triton_chunk_gated_delta_rule")

# Where "auto" may pick the Triton kernels: the head dims (K, inclusive range) whose forward and every gradient
# have been checked against the float64 reference on an H100 (tests/gdn/test_triton.py; docs/benchmarks.md,
# Kernels): bf16 at K = 16, 32, 48, 64, 128, 256; fp16 at K = 32, 64, 128; fp32 (no TF32) at K = 16, 32, 48, 64, 128.
# Elsewhere "auto" takes the chunked path until that check has run. From K = 128 bf16 and fp16 inputs take the
# launcher's wide-head kernels (triton.TILED_MIN_K), which passed those checks on an H100 on 2026-12-06 (bf16 at
# K = 128 and 256, fp16 at K = 128); fp32 stays on the fused kernels, checked there on 2026-11-27.
TRITON_VALIDATED_K = {torch.bfloat16: (16, 256), torch.float16: (32, 128), torch.float32: (16, 128)}


def resolve_backend(backend: str, device: torch.device, head_k_dim: int | None = None,
                    dtype: torch.dtype | None = None) -> str:
    """The backend a call with `backend` on `device` runs: "chunk", "naive" or "triton". With the call's head_k_dim
    and dtype, "auto" picks Triton only where it is validated on the GPU (TRITON_VALIDATED_K)."""
    lo, hi = TRITON_VALIDATED_K.get(dtype, (0, -1))
    validated = head_k_dim is None or lo <= head_k_dim <= hi
    if pick_kernel(backend, device, _load_triton, validated=validated) is not None:
        return "triton"
    return "naive" if backend == "naive" else "chunk"


def _check_dims(name: str, x: torch.Tensor, layout: str, expected: dict[str, int], source: str) -> None:
    """Raise ValueError if x is not [layout] or if any of its dims named in `expected` differs."""
    dims = layout.split()
    if x.ndim != len(dims):
        raise ValueError(f"{name} must be [{', '.join(dims)}] ({len(dims)} dims), got shape {tuple(x.shape)}")
    wrong = [f"{d}={size} (expected {expected[d]} from {source})"
             for d, size in zip(dims, x.shape) if d in expected and size != expected[d]]
    if wrong:
        raise ValueError(f"{name} of shape {tuple(x.shape)} must be [{', '.join(dims)}], but has " + ", ".join(wrong))


def _check_inputs(q, k, v, g, beta, initial_state) -> None:
    _check_dims("q", q, "B T H K", {}, "")
    B, T, H, K = q.shape
    _check_dims("k", k, "B T H K", dict(B=B, T=T, H=H, K=K), "q")
    _check_dims("v", v, "B T H V", dict(B=B, T=T, H=H), "q")
    V = v.shape[-1]
    _check_dims("g", g, "B T H", dict(B=B, T=T, H=H), "q")
    _check_dims("beta", beta, "B T H", dict(B=B, T=T, H=H), "q")
    if K == 0 or V == 0:
        raise ValueError(f"head dims must be positive, got K={K}, V={V}")
    if initial_state is not None:
        _check_dims("initial_state", initial_state, "B H K V", dict(B=B, H=H, K=K, V=V), "q and v")

    named = dict(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    for name, x in named.items():
        if x is not None and not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x is not None and x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; all inputs must share one device")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gated delta rule  S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,  o_t = S_t^T (scale q_t).

    Args:
        q, k: [B, T, H, K], one dtype with v.
        v: [B, T, H, V].
        g: [B, T, H], log alpha (<= 0, natural log); the backends compute it in float32 (float64 for float64 q).
        beta: [B, T, H], the write strength (post-sigmoid).
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] state before the first token; default zeros.
        output_final_state: also return the state after the last token.
        use_qk_l2norm: L2-normalise q and k per head first (eps 1e-6), inside the op.
        backend: "auto", "chunk", "naive" or "triton" (see the module docstring).

    Returns:
        o [B, T, H, V] in q's dtype, and the final state [B, H, K, V] (float32, float64 for float64 q) or None.

    Raises:
        ValueError: inputs of the wrong shape, dtype or device (the message names the dims), or an unknown backend.
        RuntimeError: backend "triton" asked for but the Triton kernels do not import.
    """
    _check_inputs(q, k, v, g, beta, initial_state)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    name = resolve_backend(backend, q.device, q.shape[-1], q.dtype)
    if name == "triton":
        impl = _load_triton()[0]
    else:
        impl = chunk_gated_delta_rule if name == "chunk" else naive_recurrent_gated_delta_rule

    def call(q, k, v, g, beta, initial_state):
        return impl(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                    output_final_state=output_final_state, use_qk_l2norm=use_qk_l2norm)

    # Each backend owns its precision (the chunked path computes half-precision inputs in float32): an enclosing
    # autocast region must not push its inner matmuls back down to bf16. Under torch.func.vmap (gdn.packed): one
    # call for all trials.
    return run_kernel(call, q, k, v, g, beta, initial_state, vmapped=functools.partial(_fold_into_batch, call))


def _fold_into_batch(call, q, k, v, g, beta, initial_state):
    """The backend once over the vmapped axis N folded into the batch, [N, B, ...] -> [N * B, ...]: packed training
    (gdn.packed) vmaps the model over K trials, and a Triton backend cannot be vmapped op by op."""
    N = q.shape[0]
    o, S = call(*(x.flatten(0, 1) for x in (q, k, v, g, beta)),
                None if initial_state is None else initial_state.flatten(0, 1))
    return o.unflatten(0, (N, -1)), None if S is None else S.unflatten(0, (N, -1))
