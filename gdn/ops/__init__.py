"""The gated delta rule. `gated_delta_rule` is the one entry point; the others are re-exported for tests and reading."""
from gdn.ops.chunk import chunk_gated_delta_rule
from gdn.ops.dispatch import gated_delta_rule
from gdn.ops.naive import l2_normalize, naive_recurrent_gated_delta_rule

__all__ = ["gated_delta_rule", "chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule", "l2_normalize"]
