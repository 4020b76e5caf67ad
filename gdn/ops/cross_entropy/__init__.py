"""Cross-entropy of scaled logits: `cross_entropy` is the entry point, `cross_entropy_reference` the spec. The Triton
kernel (triton.py) is imported only when a backend asks for it."""
from gdn.ops.cross_entropy.dispatch import cross_entropy
from gdn.ops.cross_entropy.reference import cross_entropy_reference, scaled_logits

__all__ = ["cross_entropy", "cross_entropy_reference", "scaled_logits"]
