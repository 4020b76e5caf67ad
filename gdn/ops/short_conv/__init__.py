"""The short causal depthwise conv + SiLU: `causal_conv1d_silu` is the entry point, `causal_conv1d_silu_reference`
the spec. The Triton kernel (triton.py) is imported only when a backend asks for it."""
from gdn.ops.short_conv.dispatch import causal_conv1d_silu
from gdn.ops.short_conv.reference import causal_conv1d_silu_reference

__all__ = ["causal_conv1d_silu", "causal_conv1d_silu_reference"]
