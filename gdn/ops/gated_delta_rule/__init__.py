"""The gated delta rule. `gated_delta_rule` is the one entry point; the others are re-exported for tests and reading.
The Triton kernels (triton.py, triton_fwd.py, triton_bwd.py) are imported only when a backend asks for them."""
from gdn.ops.gated_delta_rule.chunk import CHUNK_SIZE, chunk_gated_delta_rule
from gdn.ops.gated_delta_rule.dispatch import gated_delta_rule
from gdn.ops.gated_delta_rule.naive import l2_normalize, naive_recurrent_gated_delta_rule

__all__ = ["gated_delta_rule", "chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule", "l2_normalize",
           "CHUNK_SIZE"]
