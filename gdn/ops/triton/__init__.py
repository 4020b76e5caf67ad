"""Our Triton kernels for the chunked gated delta rule (private; call gdn.ops.gated_delta_rule).

chunk_fwd.py and chunk_bwd.py hold the kernels, chunk.py the launchers and the autograd Function. Triton decides
at import whether kernels compile or run in its CPU interpreter (TRITON_INTERPRET=1, used by the CPU tests)."""
from gdn.ops.triton.chunk import triton_chunk_gated_delta_rule

__all__ = ["triton_chunk_gated_delta_rule"]
