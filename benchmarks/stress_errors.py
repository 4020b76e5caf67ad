"""Errors against the float64 recurrence at the stress cases, ours (any variant) beside fla 0.6.0, bf16 (issue 21).

    PYTHONPATH=/tmp/site:. python3 benchmarks/stress_errors.py --out $OUT/stress          # one GPU, about 2 minutes
    python benchmarks/stress_errors.py --impls ours --cases B --out /tmp/stress             # CPU (interpreted)

Why: the stress cases (zero gates, strong gates, ragged heads; tests/gdn/test_triton.py) are where bf16 storage and
bf16 operands come nearest the 1e-2 bound, and the interpreter's errors there are not the card's (it rounded fp32 to
bf16 by truncation until 2026-12-07; it still puts dbeta at strong gates, K = 256, 8 x over the card, and put dg at
zero gates with u and vn in bf16 at half the card's 9.9e-3). Each storage or operand switch goes through these cases
on a card before it becomes a default, beside fla's own errors at the same cases in the same call, and ours'
variants (gdn_kernels.OURS_VARIANTS) each in its own process: the switches are read at import.

Inputs and metric are tests/gdn/test_triton.py's `check` (its make_inputs and run): q, k, v in bf16, g and beta
fp32, an initial state, the final state's gradient, relative Frobenius error of o, ht and every gradient. Output:
stress.json (every record) and stress.md (the largest error per case and implementation, and which tensor).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# name -> (B, T, H, K, V, gates): the interpreter's four stress cases of docs/benchmarks.md ("Fewer bytes through
# bf16 storage"), then the same gates at card sizes, where the chunks and the state's growth are a real model's
CASES = {"A": (1, 192, 1, 128, 256, "zero"), "B": (1, 70, 2, 128, 80, "moderate"),
         "C": (1, 100, 1, 256, 32, "strong"), "E": (1, 320, 1, 128, 64, "zero"),
         "M2k": (1, 2048, 2, 128, 128, "moderate"), "Z2k": (1, 2048, 2, 128, 128, "zero"),
         "S2k": (1, 2048, 2, 128, 128, "strong")}
TOL = 1e-2                     # tests/gdn/test_triton.py's bound for bf16 inputs
DEFAULT_IMPLS = "ours,fla,ours-fp32,ours-wu-bf16,ours-bf16-all"


def _emit(**record) -> None:
    print("RESULT " + json.dumps(record), flush=True)


def _fla():
    """fla in the signature tests/gdn/test_triton.py's `run` calls."""
    from gdn_kernels import fla_chunk_gated_delta_rule
    fla_rule = fla_chunk_gated_delta_rule()

    def fn(q, k, v, g, beta, initial_state=None, output_final_state=False, use_qk_l2norm=True):
        return fla_rule(q, k, v, g, beta, initial_state=initial_state, output_final_state=output_final_state,
                        use_qk_l2norm_in_kernel=use_qk_l2norm)
    return fn


def cell(impl: str, names: list[str]) -> None:
    """One implementation at every named case, in this process."""
    sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests"), str(ROOT / "tests" / "gdn")]
    from gdn_kernels import OURS_VARIANTS
    if impl in OURS_VARIANTS:
        os.environ.update(OURS_VARIANTS[impl])                   # before the kernels' module is imported
    import torch
    import test_triton as t                                      # sets TRITON_INTERPRET without CUDA
    from gdn.ops.gated_delta_rule import naive_recurrent_gated_delta_rule
    from gdn.ops.gated_delta_rule.triton import TILED_MIN_K
    fn = _fla() if impl == "fla" else t.triton_chunk_gated_delta_rule
    for name in names:
        B, T, H, K, V, gates = CASES[name]
        q, k, v, g, beta, h0 = t.make_inputs(B, T, H, K, V, torch.bfloat16, gates, 0, True)
        gen = torch.Generator(device=t.DEVICE).manual_seed(1)
        do = torch.randn(B, T, H, V, generator=gen, device=t.DEVICE).to(torch.bfloat16)
        dht = torch.randn(B, H, K, V, generator=gen, device=t.DEVICE)
        try:
            o, ht, grads = t.run(fn, q, k, v, g, beta, h0, do, dht, True)
        except Exception as e:                                   # noqa: BLE001 (fla's backward may refuse a shape)
            _emit(impl=impl, case=name, error=f"{type(e).__name__}: {str(e)[:200]}")
            continue
        ro, rht, rgrads = t.run(naive_recurrent_gated_delta_rule, q, k, v, g, beta, h0, do, dht, True,
                                dtype=torch.float64)
        errors = {n: t.rel_err(x, r) for n, x, r in zip(("o", "ht", "dq", "dk", "dv", "dg", "dbeta", "dh0"),
                                                          [o, ht] + grads, [ro, rht] + rgrads)}
        wide = impl != "fla" and TILED_MIN_K[torch.bfloat16] is not None and K >= TILED_MIN_K[torch.bfloat16]
        _emit(impl=impl, case=name, shape=[B, T, H, K, V], gates=gates, errors=errors, wide_head_path=wide)


def probe_tf32() -> dict:
    """How the card reads an fp32 operand in "tf32" precision: a [64, 64] @ [64, 64] tl.dot on random fp32 tiles
    against float64 products of the operands truncated to 10 mantissa bits and rounded to nearest; the card's result
    is within fp32 accumulation error of one of them and about 1e-4 from the other."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def mm(a, b, c, N: tl.constexpr):
        r = tl.arange(0, N)
        x = tl.load(a + r[:, None] * N + r[None, :])
        y = tl.load(b + r[:, None] * N + r[None, :])
        tl.store(c + r[:, None] * N + r[None, :], tl.dot(x, y, input_precision="tf32"))

    gen = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn(64, 64, generator=gen, device="cuda") for _ in range(2))
    c = torch.empty_like(a)
    mm[(1,)](a, b, c, N=64)

    def tf32(x, nearest):
        bits = x.view(torch.int32).long() & 0xFFFFFFFF
        bits = ((bits + (0x1000 if nearest else 0)) & 0xFFFFE000)
        return torch.where(bits >= 2 ** 31, bits - 2 ** 32, bits).int().view(torch.float32)

    ref = {mode: (tf32(a, mode == "nearest").double() @ tf32(b, mode == "nearest").double())
           for mode in ("truncate", "nearest")}
    err = {mode: ((c.double() - r).norm() / r.norm()).item() for mode, r in ref.items()}
    return dict(probe="tf32", relative_error=err, card_reads=min(err, key=err.get))


def table(records: list[dict], impls: list[str], names: list[str]) -> str:
    """The largest error of each case and implementation (and its tensor); over TOL in bold."""
    by = {(r["impl"], r["case"]): r for r in records}
    lines = ["| case (B, T, H, K, V, gates) | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for name in names:
        B, T, H, K, V, gates = CASES[name]
        row = [f"{name} ({B}, {T}, {H}, {K}, {V}, {gates})"]
        for impl in impls:
            r = by.get((impl, name))
            if r is None or "errors" not in r:
                row.append("-" if r is None else "error")
                continue
            worst = max(r["errors"], key=r["errors"].get)
            text = f"{worst} {r['errors'][worst]:.1e}"
            row.append(f"**{text}**" if not r["errors"][worst] <= TOL else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impls", default=DEFAULT_IMPLS, help="ours, fla, or gdn_kernels.OURS_VARIANTS' names")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--timeout", type=float, default=240, help="seconds for all (the processes run at once)")
    ap.add_argument("--out", default=os.environ.get("OUT", ".out") + "/stress")
    ap.add_argument("--probe-tf32", action="store_true", help="first, on a card: how it rounds fp32 operands to TF32")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = [n for n in args.cases.split(",") if n]
    if unknown := sorted(set(names) - set(CASES)):
        sys.exit(f"stress_errors: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    if args.cell:
        cell(args.cell, names)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.probe_tf32:
        found = probe_tf32()
        (out / "tf32.json").write_text(json.dumps(found))
        print(json.dumps(found), flush=True)
    impls = [i for i in args.impls.split(",") if i]
    records, started = [], time.perf_counter()
    procs = {impl: subprocess.Popen([sys.executable, __file__, "--cell", impl, "--cases", ",".join(names)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for impl in impls}                                  # all at once: each is mostly compile and Python
    for impl, proc in procs.items():
        try:
            text, _ = proc.communicate(timeout=max(1.0, args.timeout - (time.perf_counter() - started)))
            status = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            text, status = proc.communicate()[0], "timeout"
        got = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
        records += got
        if status != 0:
            records.append(dict(impl=impl, status=status, tail=text[-2000:]))
        print(f"{impl}: {len(got)} cases, exit {status}", flush=True)
    (out / "stress.json").write_text(json.dumps(records, indent=1))
    md = table([r for r in records if "case" in r], impls, names)
    (out / "stress.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
