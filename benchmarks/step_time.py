"""Seconds per training step of one proxy trial (train_trial's own loop), per width: where a sweep's time goes.

    python benchmarks/step_time.py --widths 128,512,1024 --depth 4 --seq-len 512 --batch-size 8 --steps 30
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gdn.config import GDNConfig, train_flops_per_token  # noqa: E402
from gdn.spec import ScheduleSpec, SweepConfig, TrialSpec  # noqa: E402
from gdn.train import train_trial  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="128,512,1024")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    print(f"{'width':>6} {'s/step':>8} {'tokens/s':>10} {'TFLOP/s':>8}")
    for width in (int(w) for w in args.widths.split(",")):
        config = SweepConfig(model=GDNConfig(width=width, depth=args.depth),
                             schedule=ScheduleSpec(steps=args.steps, warmup_steps=1, batch_size=args.batch_size,
                                                   seq_len=args.seq_len), eval_batches=1)
        train_trial(TrialSpec(config, lr=1e-3), log_every=args.steps)            # warm-up (compiles, caches)
        r = train_trial(TrialSpec(config, lr=1e-3), log_every=args.steps)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        per_step = r.curve[-1].seconds / args.steps
        tokens = args.batch_size * args.seq_len / per_step
        print(f"{width:>6} {per_step:>8.4f} {tokens:>10.0f} "
              f"{tokens * train_flops_per_token(config.model_at(width)) / 1e12:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
