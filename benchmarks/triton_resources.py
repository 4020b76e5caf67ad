"""What our kernels' launches need on a card, found on any machine: each launch the launchers make is recorded (not
run), compiled for the card's architecture (Triton compiles to a cubin without a GPU), and its shared memory per
program compared with what one program may have there; registers and stack (spill space) per thread come with it.

Why: a launch that asks for more shared memory than the card has fails only on the card (OutOfResources), as the
two-stage state passes did at K = 256 on an H100 (docs/benchmarks.md, Kernels), and device time is scarce. This
catches that class of failure in CI. It says nothing about correctness or speed (tests/gdn/test_triton.py and
benchmarks/gdn_kernels.py on the card do).

    python benchmarks/triton_resources.py                      # the shipped launch configs, sm_90 (H100, H200)
    python benchmarks/triton_resources.py --stages-max-k 256   # as before the K = 256 fix: must report a failure

The last column, a hash of each kernel's PTX without its debug information (line numbers, source paths, labels),
shows whether a change to the kernels' source changes what runs: a refactor whose hashes are unchanged compiles
to the same instructions for that card, and needs no new card time to be trusted.

Run it without TRITON_INTERPRET=1 (the interpreter's kernels cannot be compiled). Exit status 1 if any launch is
over the limit.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime import jit  # noqa: E402

import gdn.ops.gated_delta_rule.triton as launcher  # noqa: E402  (the gated delta rule's launchers)

# Shared memory one program may have (the opt-in maximum per block), by compute capability.
SHARED_LIMIT = {90: 232_448}
# The largest tiles of each input dtype that `auto` takes (gdn.ops.gated_delta_rule.dispatch.TRITON_VALIDATED_K),
# fp32 at K = 64 too: shared memory grows with K and V, so these bound every smaller head dim.
CASES = [(torch.bfloat16, 256, 64), (torch.bfloat16, 128, 256), (torch.float16, 128, 256), (torch.float32, 64, 128),
         (torch.float32, 128, 256)]
TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32"}
KERNELS = ("_chunk_prep_kernel", "_chunk_state_fwd_kernel", "_chunk_state_bwd_kernel", "_chunk_grad_kernel",
           "_chunk_state_fwd_tiled_kernel", "_chunk_output_kernel", "_chunk_dvn_local_kernel",
           "_chunk_state_bwd_tiled_kernel",
           "_chunk_grad_vtile_kernel", "_chunk_grad_ktile_kernel", "_chunk_grad_reduce_kernel",
           "_chunk_grad_rows_kernel", "_chunk_grad_dqdk_kernel", "_chunk_grad_dqk_kernel", "_chunk_grad_wy_kernel")


@contextmanager
def recorded_launches():
    """Inside, the launchers record each kernel launch (kernel, positional args, keyword args) instead of running
    it; the list fills as they are called."""
    launches, saved = [], {name: getattr(launcher, name) for name in KERNELS}

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    try:
        for name, kernel in saved.items():
            setattr(launcher, name, Recorder(kernel))
        yield launches
    finally:
        for name, kernel in saved.items():
            setattr(launcher, name, kernel)


def launches_for(dtype: torch.dtype, K: int, V: int, BH: int = 1024) -> list:
    """The launches of one forward and backward at head dims (K, V). BH (batch x heads) only moves the state passes'
    V tile, which is widest for large BH, so the default is the worst case."""
    T = launcher.CHUNK_SIZE
    q, k = (torch.zeros(1, T, BH, K, dtype=dtype) for _ in range(2))
    v, do = (torch.zeros(1, T, BH, V, dtype=dtype) for _ in range(2))
    g, beta = (torch.zeros(1, T, BH, dtype=dtype) for _ in range(2))
    with recorded_launches() as launches:
        _o, _ht, saved = launcher.chunk_fwd(q, k, v, g, beta, K ** -0.5, None, False, True, True)
        launcher.chunk_bwd(q, k, v, g, beta, K ** -0.5, True, saved, do, None, False)
    return launches


def compile_request(kernel, args: tuple, kwargs: dict) -> tuple[str, dict, dict, dict, dict]:
    """(kernel name, signature, constexprs, attributes, options) of a recorded launch: what triton.compile needs,
    picklable. Each argument is specialised as Triton's JIT specialises it at a launch on the card: a pointer 16-byte
    aligned and an integer divisible by 16 carry tt.divisibility = 16, an integer equal to 1 and None become
    constants. Without those hints (before 2026-12-07 evening) the compiler could not vectorise a load or pipeline
    it through cp.async (under 4 bytes a thread), and every figure here was of code the card never ran."""
    options = {key: kwargs[key] for key in ("num_warps", "num_stages") if key in kwargs}
    bound = dict(zip(kernel.arg_names, args)) | {k: v for k, v in kwargs.items() if k not in options}
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(kernel.params):
        value = bound.get(param.name, param.default)
        if param.is_constexpr:
            signature[param.name], constexprs[(i,)] = "constexpr", value
            continue
        kind, attr = jit.native_specialize_impl(BaseBackend, value, param.is_const, not param.do_not_specialize,
                                                not param.do_not_specialize_on_alignment)
        if kind == "constexpr":
            signature[param.name], constexprs[(i,)] = kind, attr
        else:
            signature[param.name] = kind
            if attr:
                attrs[(i,)] = BaseBackend.parse_attr(attr)
    return kernel.fn.__name__, signature, constexprs, attrs, options


def code_hash(ptx: str) -> str:
    """A short hash of PTX's instructions: the debug sections (source paths, lengths), .loc / .file lines,
    comments and the debug labels ($L__tmp..., where inlined helpers begin and end) left out."""
    code = ptx.split("\t.section\t.debug")[0]
    lines = (re.sub(r"\s*//.*", "", line) for line in code.splitlines()
             if not re.match(r"\s*(\.loc|\.file)\b", line))
    lines = (re.sub(r"\$L__(tmp|func_begin|func_end)\d+", "$L", line) for line in lines)
    kept = [line for line in lines if line.strip() and line.strip() != "$L:"]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:12]


def resource_usage(request: tuple[str, dict, dict, dict], arch: int = 90) -> dict[str, int]:
    """Shared memory per program, and registers and stack (spill space) per thread, of a compile_request compiled
    for compute capability `arch`; the last two read from the cubin with the cuobjdump Triton ships (-1 if absent)."""
    name, signature, constexprs, attrs, options = request
    compiled = triton.compile(ASTSource(fn=getattr(launcher, name), signature=signature, constexprs=constexprs,
                                        attrs=attrs),
                              target=GPUTarget("cuda", arch, 32), options=options)
    usage = {"shared": compiled.metadata.shared, "regs": -1, "stack": -1, "code": code_hash(compiled.asm["ptx"])}
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if os.path.exists(cuobjdump):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            out = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
        for key, field in (("regs", "REG"), ("stack", "STACK")):
            found = re.search(rf"\b{field}:(\d+)", out)
            usage[key] = int(found.group(1)) if found else -1
    return usage


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_LIMIT))
    ap.add_argument("--stages-max-k", type=int, default=None,
                    help="override STATE_STAGES_MAX_K (the largest K whose state passes are pipelined)")
    ap.add_argument("--tiled-min-k", type=int, default=None,
                    help="override TILED_MIN_K for every dtype (the head dim from which the wide-head kernels "
                         "run; 1000: never)")
    ap.add_argument("--case", action="append", help="dtype,K,V (e.g. bf16,256,64) instead of the default cases")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles at a time")
    args = ap.parse_args(argv)
    if args.stages_max_k is not None:
        launcher.STATE_STAGES_MAX_K = args.stages_max_k
    if args.tiled_min_k is not None:
        launcher.TILED_MIN_K = dict.fromkeys(launcher.TILED_MIN_K, args.tiled_min_k)
    by_name = {name: dtype for dtype, name in TYPES.items()}
    cases = [(by_name[d], int(K), int(V)) for d, K, V in (c.split(",") for c in args.case)] if args.case else CASES
    rows = [(dtype, K, V, compile_request(kernel, a, kw)) for dtype, K, V in cases
            for kernel, a, kw in launches_for(dtype, K, V)]
    with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        usages = list(pool.map(resource_usage, [r[3] for r in rows], [args.arch] * len(rows)))
    limit = SHARED_LIMIT[args.arch]
    print(f"| dtype | K | V | kernel | warps | stages | shared bytes (limit {limit:,}) | registers / thread | "
          "stack bytes / thread (spills) | PTX code hash |\n|---|---|---|---|---|---|---|---|---|---|")
    for (dtype, K, V, (name, _sig, _c, _a, options)), u in zip(rows, usages):
        print(f"| {TYPES[dtype]} | {K} | {V} | {name} | {options.get('num_warps')} | {options.get('num_stages')} | "
              f"{u['shared']:,}{' **over**' if u['shared'] > limit else ''} | {u['regs']} | {u['stack']:,} | "
              f"{u['code']} |")
    over = sum(u["shared"] > limit for u in usages)
    print(f"{over} launch(es) over the limit" if over else "every launch fits")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
