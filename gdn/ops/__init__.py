"""The mixer's fused ops, one folder per op (as fla's fla/ops/<op>/), each a plain-PyTorch spec beside its Triton
kernel and one public entry that checks the inputs and picks the backend:

    gated_delta_rule/   gated_delta_rule; naive.py (the spec), chunk.py (chunked PyTorch), triton*.py (the kernels)
    rms_norm/           rms_norm; reference.py, triton.py
    short_conv/         causal_conv1d_silu; reference.py, triton.py
    cross_entropy/      cross_entropy (the trainers' loss of scaled logits); reference.py, triton.py
    backend.py          the backend names, the lazy Triton import, running a kernel (autocast off, vmap)

Import from the op's folder, e.g. `from gdn.ops.gated_delta_rule import gated_delta_rule`: nothing is re-exported
here, so a folder and the function it is named after never shadow one another. Triton is imported only when a
backend asks for a kernel; gdn.ops imports with torch alone.
"""
