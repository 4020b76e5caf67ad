"""Our Triton kernels (private; call gdn.ops.gated_delta_rule, gdn.ops.norm.rms_norm, gdn.ops.conv.causal_conv1d_silu).

chunk_fwd.py and chunk_bwd.py hold the chunked gated delta rule's kernels, chunk.py their launchers and autograd
Function; norm.py and conv.py the fused RMSNorm and short conv + SiLU, each with its Function. Triton decides at
import whether kernels compile or run in its CPU interpreter (TRITON_INTERPRET=1, used by the CPU tests)."""
from gdn.ops.triton.chunk import triton_chunk_gated_delta_rule

__all__ = ["triton_chunk_gated_delta_rule"]
