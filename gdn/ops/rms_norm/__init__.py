"""RMSNorm, plain and SiLU-gated: `rms_norm` is the entry point, `rms_norm_reference` the spec. The Triton kernel
(triton.py) is imported only when a backend asks for it."""
from gdn.ops.rms_norm.dispatch import rms_norm
from gdn.ops.rms_norm.reference import rms_norm_reference

__all__ = ["rms_norm", "rms_norm_reference"]
