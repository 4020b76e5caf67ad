"""The fused cross-entropy (gdn.ops.cross_entropy, backend "triton") against the trainers' PyTorch loss (the
reference: `(logits * scale).float()`, then F.cross_entropy), forward and forward+backward, at the card test shapes
(tests/gdn/test_cross_entropy.py): the packed proxy's 4096 tokens a step at vocabularies 256 to 128256, and as the
packed trainer calls it, 8 trials of 512 tokens each with its own multiplier (groups; the reference takes them one
at a time). Each shape is first checked against the float64 loss and gradient; a shape that fails is reported and
not timed.

    python benchmarks/cross_entropy.py --out $OUT/ce                      # on the card: about a minute
    python benchmarks/cross_entropy.py --tiny --out /tmp/ce               # CPU smoke run (interpreted)

Prints a table and writes cross_entropy.json under --out: per shape, the errors, median ms (triton.testing.do_bench)
and the peak memory of a forward+backward for each path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"       # before the kernel module is first imported

from gdn.ops.cross_entropy import cross_entropy, cross_entropy_reference  # noqa: E402

# (groups or None, N, V, dtype): groups G give logits [G, N, V] with one scale per group
SHAPES = [(None, 4096, 32768, "bf16"), (8, 512, 32768, "bf16"), (None, 4096, 256, "bf16"),
          (None, 2048, 50257, "bf16"), (None, 1024, 128256, "bf16"), (None, 4096, 32768, "fp32")]
TINY_SHAPES = [(None, 64, 300, "bf16"), (4, 16, 300, "bf16"), (None, 32, 1000, "fp32")]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOL = {"loss": 1e-5, "grad": {"bf16": 1e-2, "fp16": 1e-2, "fp32": 1e-5}}
SCALE = 0.7         # a logit multiplier, as the packed trainer passes it: a tensor (one per group: 0.7 + 0.1 g)
PATHS = {"ours": "triton", "torch": "chunk"}   # backend names: "chunk" takes the reference


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def loss_fn(backend: str, scale: torch.Tensor):
    return lambda z, t: cross_entropy(z, t, scale=scale, backend=backend)


def check(logits, target, scale, dtype_name) -> dict:
    z = logits.detach().clone().requires_grad_()
    loss = loss_fn("triton", scale)(z, target)
    loss.sum().backward()
    z64 = logits.detach().double().requires_grad_()
    ref = cross_entropy_reference(z64, target, scale.double(), torch.float64)
    ref.sum().backward()
    errors = dict(err_loss=rel_err(loss, ref), err_grad=rel_err(z.grad, z64.grad))
    errors["ok"] = errors["err_loss"] <= TOL["loss"] and errors["err_grad"] <= TOL["grad"][dtype_name]
    return errors


def timed_ms(fn, leaf) -> float:
    if leaf.is_cuda:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=[leaf], return_mode="median")
    fn()                                                     # off CUDA: one warm call, then one timed
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def time_path(backend, logits, target, scale) -> dict:
    z = logits.detach().clone().requires_grad_()
    fn = loss_fn(backend, scale)

    def forward():
        with torch.no_grad():
            fn(z, target)

    def forward_backward():
        fn(z, target).sum().backward()

    row = dict(fwd_ms=timed_ms(forward, z), fwdbwd_ms=timed_ms(forward_backward, z))
    if z.is_cuda:
        z.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward()
        torch.cuda.synchronize()
        row["peak_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="small shapes (the CPU smoke run)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = TINY_SHAPES if args.tiny or device == "cpu" else SHAPES
    env = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreted)",
               torch=torch.__version__, python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M"))
    rows = []
    print(f"{env['device']}, torch {env['torch']}\n{'[G x] N x V dtype':22s} {'err loss':>9s} {'err grad':>9s} "
          f"{'ours fwd':>9s} {'torch fwd':>9s} {'ours f+b':>9s} {'torch f+b':>9s} {'x':>5s} {'GiB ours/torch':>15s}")
    for G, N, V, dtype_name in shapes:
        lead = (N,) if G is None else (G, N)
        gen = torch.Generator(device=device).manual_seed(V)
        logits = (3 * torch.randn(*lead, V, generator=gen, device=device)).to(DTYPES[dtype_name])
        target = torch.randint(0, V, lead, generator=gen, device=device)
        scale = SCALE + (0.1 * torch.arange(G, device=device) if G else torch.tensor(0.0, device=device))
        row = dict(G=G, N=N, V=V, dtype=dtype_name, **check(logits, target, scale, dtype_name))
        if row["ok"]:
            for name, backend in PATHS.items():
                row[name] = time_path(backend, logits, target, scale)
        rows.append(row)
        label = f"{'' if G is None else f'{G} x '}{N} x {V} {dtype_name}"
        if not row["ok"]:
            print(f"{label:22s} {row['err_loss']:9.1e} {row['err_grad']:9.1e}  FAILED the float64 check: not timed")
            continue
        ours, ref = row["ours"], row["torch"]
        mem = (f"{ours['peak_extra_gib']:6.2f} / {ref['peak_extra_gib']:6.2f}" if "peak_extra_gib" in ours else "")
        print(f"{label:22s} {row['err_loss']:9.1e} {row['err_grad']:9.1e} {ours['fwd_ms']:9.3f} {ref['fwd_ms']:9.3f} "
              f"{ours['fwdbwd_ms']:9.3f} {ref['fwdbwd_ms']:9.3f} {ref['fwdbwd_ms'] / ours['fwdbwd_ms']:5.1f} {mem:>15s}",
              flush=True)
        del logits, target
        if device == "cuda":
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cross_entropy.json").write_text(json.dumps(dict(env=env, scale=SCALE, rows=rows), indent=1))
    if not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
