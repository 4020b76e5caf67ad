"""Shared memory of every launch the Triton launchers make, compiled for an H100 (sm_90) on this CPU machine
(benchmarks/triton_resources.py): a launch over the card's limit fails only on the card, so it is caught here first.
bf16 at the largest head dims `auto` takes (fp16 tiles have the same bytes); fp32 is left to the command (its
full-precision products take minutes to compile)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _resources(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}     # compile for real, not interpret
    r = subprocess.run([sys.executable, "benchmarks/triton_resources.py", "--jobs", "2", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, [line for line in r.stdout.splitlines() if line.startswith("| bf16")], r


def test_every_bf16_launch_fits_an_h100():
    # bf16 takes the wide-head kernels from K = 128 (triton.TILED_MIN_K)
    rc, rows, r = _resources("--case", "bf16,256,64", "--case", "bf16,128,256")
    assert rc == 0, r.stdout + r.stderr[-2000:]
    assert len(rows) == 16 and not any("over" in row for row in rows)    # 8 kernels at each (the wide-head path)
    assert sum("_tiled_kernel" in row for row in rows) == 4


def test_the_two_stage_state_pass_at_k256_is_caught():
    """The configuration that failed on an H100 (2026-11-27, OutOfResources) before STATE_STAGES_MAX_K = 128."""
    rc, rows, r = _resources("--case", "bf16,256,64", "--stages-max-k", "256", "--tiled-min-k", "1000")
    assert rc == 1, r.stdout + r.stderr[-2000:]
    assert any("_chunk_state_fwd_kernel | 4 | 2 |" in row and "**over**" in row for row in rows)


def test_the_code_hash_sees_instructions_not_debug_information():
    """A kernel moved in its file, or its loop body moved into a helper, keeps its hash; a changed instruction
    does not."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from triton_resources import code_hash
    ptx = ("\t.loc\t1 441 0  // triton_tiled.py:441:0\n\tmov.u32 %r1, %tid.x;\n$L__tmp3:\n"
           "\tadd.s32 %r2, %r1, 4;  // a comment\n\tbra $L__tmp3;\n\t.section\t.debug_info\n.b8 116\n")
    moved = ("\t.loc\t1 453 0  // triton_tiled.py:453:0\n\tmov.u32 %r1, %tid.x;\n$L__tmp7:\n$L__tmp8:\n"
             "\t.file\t2 \"/elsewhere/triton_tiled.py\"\n\tadd.s32 %r2, %r1, 4;\n\tbra $L__tmp7;\n"
             "\t.section\t.debug_info\n.b8 119\n")
    assert code_hash(ptx) == code_hash(moved)
    assert code_hash(ptx) != code_hash(ptx.replace("%r1, 4", "%r1, 8"))


def test_launches_are_compiled_with_the_jits_specialisation():
    """Each argument as Triton's JIT specialises it at a launch on the card: 16-byte-aligned pointers and integers
    divisible by 16 carry tt.divisibility = 16 (what lets the compiler vectorise a load and pipeline it through
    cp.async), an unused optional pointer (None) becomes a constant, anything else stays a plain argument. Without
    the hints the tool compiled code the card never runs (2026-12-07). In its own process, compiled (not
    interpreted) kernels, as the tool runs."""
    code = """if True:
        import json, torch
        from triton_resources import compile_request, launcher, launches_for
        for kernel, args, kwargs in launches_for(torch.bfloat16, 128, 128, BH=24):
            if kernel.fn.__name__ == "_chunk_state_bwd_tiled_kernel":
                _name, signature, constexprs, attrs, options = compile_request(kernel, args, kwargs)
                index = {param: i for i, param in enumerate(signature)}
                print(json.dumps(dict(signature=signature, options=options,
                                      attrs={p: attrs.get((i,)) for p, i in index.items()},
                                      constexprs={p: repr(constexprs.get((i,))) for p, i in index.items()},
                                      shipped=[launcher.NUM_WARPS["state_bwd_tiled"],
                                               launcher.NUM_STAGES["state_bwd_tiled"]])))
                break
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(REPO, "benchmarks"), capture_output=True,
                       text=True, timeout=300, env=dict(env, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    signature, attrs, constexprs = got["signature"], got["attrs"], got["constexprs"]
    divisible = [["tt.divisibility", 16]]
    assert signature["q"] == "*bf16" and attrs["q"] == divisible
    assert signature["dvn_local"] == "*bf16" and attrs["dvn_local"] == divisible                # TILED_DVN
    assert signature["T"] == "i32" and attrs["T"] == divisible                          # one chunk: T = 64
    assert signature["H"] == "i32" and attrs["H"] is None                               # H = 24
    assert signature["dvn16"] == "constexpr" and constexprs["dvn16"] == "None"
    assert signature["scale"] == "fp32" and attrs["scale"] is None
    assert got["options"] == dict(zip(("num_warps", "num_stages"), got["shipped"]))


def test_the_narrow_ops_stop_at_k128_and_at_fp16():
    """k dS and dq, dk's products on bf16 operands, Aqk^T dO stored in bf16 and the state backward at 4 warps,
    3 stages (triton.NARROW_OPS_MAX_K): at bf16, K = 128, where an H100 checked them (2026-12-08); at K = 256 (an
    illegal memory access there) and at fp16 (264 KB of shared memory at 4 warps, 3 stages) the launches of before."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import torch
    from triton_resources import launches_for
    from gdn.ops.gated_delta_rule.triton_tiled import MORE_BITS
    narrow = MORE_BITS["kds"] | MORE_BITS["dqdk"]

    def state_bwd_and_dqdk(dtype, K, V):
        launches = {kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__: (args, kwargs)
                    for kernel, args, kwargs in launches_for(dtype, K, V, BH=32)}
        return launches["_chunk_state_bwd_tiled_kernel"], launches["_chunk_grad_dqdk_kernel"]

    for dtype, K, V, taken in ((torch.bfloat16, 128, 128, True), (torch.bfloat16, 128, 256, True),
                               (torch.bfloat16, 256, 64, False), (torch.float16, 128, 256, False)):
        (sb_args, sb), (_, dqdk) = state_bwd_and_dqdk(dtype, K, V)
        assert (sb["num_warps"], sb["num_stages"]) == ((4, 3) if taken else (8, 2 if K <= 128 else 1)), (dtype, K)
        bf16_narrow = [bool(launch["BF16_OPS"] and launch["MORE"] & narrow) for launch in (sb, dqdk)]
        assert bf16_narrow == [taken, taken], (dtype, K)
        dvn_local, dvn = sb_args[9], sb_args[10]                         # Aqk^T dO, and dvn itself
        assert (dvn_local.dtype == torch.bfloat16) == (taken and dtype == torch.bfloat16), (dtype, K)
        assert dvn.dtype == torch.float32
