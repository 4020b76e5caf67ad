"""The science commands of `deltamu`: sweep, recommend, coordcheck, tokenizer train. (`service/cli.py` adds the
service ones.)"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gdn.config import GDNConfig
from gdn.spec import DataSpec, OptimizerSpec, ScheduleSpec, SweepConfig
from gdn.parametrization import PRESETS


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _add_model_args(p: argparse.ArgumentParser, width: int, depth: int) -> None:
    p.add_argument("--width", type=int, default=width, help="model width d (the base width)")
    p.add_argument("--depth", type=int, default=depth, help=f"number of blocks (default {depth})")
    p.add_argument("--width-axis", choices=["head_dim", "heads"], default="head_dim",
                   help="how width grows: head_dim (the paper: 6 heads, wider heads) or heads (fixed head dims, "
                        "more heads)")
    p.add_argument("--parametrization", default="mup", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--readout", default=None, help="readout rule (default: the preset's)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="default adamw")
    p.add_argument("--weight-decay", type=float, default=None, help="default: 0.1 under AdamW, 0 under SGD")
    p.add_argument("--weight-decay-rule", choices=["coupled", "independent"], default="coupled",
                   help="coupled: torch's lr x wd per group (default, what the study measured); independent: each "
                        "group's wd divided by its LR multiplier")
    p.add_argument("--output-mult", type=float, default=None,
                   help="logit multiplier tuned at the base width (default: the preset's; mup: 4)")
    p.add_argument("--init-mult", type=float, default=None,
                   help="sigma_0 multiplier of the matrices tuned at the base width (default: the preset's; mup: 2)")


def _add_schedule_args(p: argparse.ArgumentParser, steps: int, seq_len: int, batch_size: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 10%% of steps)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"sequences per step (default {batch_size})")
    p.add_argument("--seq-len", type=int, default=seq_len, help=f"tokens per sequence (default {seq_len})")
    p.add_argument("--min-lr", type=float, default=0.0,
                   help="the cosine schedule's floor, absolute for a group of LR multiplier 1 (default 0)")
    _add_data_args(p)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="builtin", help="'builtin'; a UTF-8 text file or folder; a .jsonl, "
                   ".parquet or .arrow file (or folder) with a text column; or token ids in a .bin or .npy")
    p.add_argument("--vocab-size", type=int, default=None, help="vocab size of a .bin or .npy corpus")
    p.add_argument("--tokenizer", default="bytes",
                   help="'bytes', a tokenizer.json (e.g. from `deltamu tokenizer train`), or a tiktoken BPE file")
    p.add_argument("--text-column", default="text", help="the text column of a .jsonl/.parquet/.arrow corpus")
    p.add_argument("--token-dtype", choices=["uint16", "uint32"], default=None,
                   help="the ids' type in a .bin (default: uint16 up to vocab 65,536, else uint32)")


def _data_spec(args) -> DataSpec:
    return DataSpec(args.data, args.vocab_size, tokenizer=args.tokenizer, text_column=args.text_column,
                    token_dtype=args.token_dtype)


def _config(args, parametrization: str | None = None) -> SweepConfig:
    from gdn.corpus import vocab_of
    data = _data_spec(args) if hasattr(args, "data") else DataSpec()
    vocab = vocab_of(data)
    model = GDNConfig(width=args.width, depth=args.depth, width_axis=args.width_axis, vocab_size=vocab)
    schedule = ScheduleSpec()
    if hasattr(args, "steps"):
        warmup = args.warmup if args.warmup is not None else max(1, args.steps // 10)
        schedule = ScheduleSpec(steps=args.steps, warmup_steps=warmup, batch_size=args.batch_size,
                                seq_len=args.seq_len, min_lr=args.min_lr)
    return SweepConfig(model=model, parametrization=parametrization or args.parametrization, readout=args.readout,
                       output_mult=args.output_mult, init_mult=args.init_mult,
                       optimizer=OptimizerSpec(name=args.optimizer, weight_decay=args.weight_decay,
                                               weight_decay_rule=args.weight_decay_rule),
                       schedule=schedule, data=data)


# --- sweep ------------------------------------------------------------------------------------------------------

def cmd_sweep(args) -> int:
    from tqdm import tqdm

    from gdn.data import load_corpus
    from gdn.fit import edge_extension, fit_optimum, lr_grid
    from gdn.pack_plan import plan_packs
    from gdn.recommend import data_warnings
    from gdn.spec import TrialSpec
    from gdn.train import run
    from gdn.trial import resolve_device

    config = _config(args)
    lrs = args.lrs or lr_grid(args.lr_min, args.lr_max, args.count)
    if args.max_extend_rounds < 0:
        raise ValueError(f"--max-extend-rounds must be >= 0, got {args.max_extend_rounds}")
    corpus = load_corpus(config.data, config.schedule.seq_len)       # tokenized (and cached) before the bar starts
    regime = data_warnings(config, len(corpus.train))
    for w in regime:
        print(f"warning: {w}", file=sys.stderr)
    # On a GPU the trials train in packs (batched, CUDA graphs: docs/benchmarks.md, Packed training); on a CPU
    # one after another, where a pack does not pay. gdn.train.run picks the trainer of each.
    on_gpu = resolve_device(args.device).type == "cuda"
    steps = config.schedule.steps
    results: list[tuple[float, int, object]] = []
    rounds = 0
    with tqdm(total=0, unit="step", desc="sweep", file=sys.stderr, disable=args.quiet) as bar:
        while lrs:
            specs = [TrialSpec(config, lr=lr, seed=seed, device=args.device) for seed in args.seeds for lr in lrs]
            bar.total += len(specs) * steps          # an extension round grows the total
            bar.refresh()
            packs = plan_packs(specs) if on_gpu else [[i] for i in range(len(specs))]
            done = [0] * len(specs)
            for pack in packs:
                def progress(j, point, pack=pack):
                    i = pack[j]
                    bar.update(point.step - done[i])
                    bar.set_postfix(lr=f"{specs[i].lr:.3g}", seed=specs[i].seed, loss=f"{point.loss:.3f}")
                    done[i] = point.step

                for i, r in zip(pack, run([specs[i] for i in pack], progress=progress)):
                    results.append((specs[i].lr, specs[i].seed, r))
                    bar.update(steps - done[i])  # a diverged trial stops early
                    done[i] = steps
            # the best point on an edge: more learning rates beyond it, at the grid's spacing, in bounded rounds
            lrs = edge_extension([lr for lr, _, _ in results], [r.final_val_loss for *_, r in results],
                                 [s for _, s, _ in results]) if rounds < args.max_extend_rounds else []
            if lrs:
                rounds += 1
                print(f"round {rounds}: the best lr is on the grid's edge; trying {', '.join(f'{x:.4g}' for x in lrs)}",
                      file=sys.stderr)

    optimum = fit_optimum([lr for lr, _, _ in results], [r.final_val_loss for *_, r in results],
                          [s for _, s, _ in results])
    print(f"{'lr':>10} {'seed':>5} {'val loss':>9}  status")
    for lr, seed, r in sorted(results, key=lambda t: (t[0], t[1])):
        loss = f"{r.final_val_loss:.4f}" if math.isfinite(r.final_val_loss) else "-"
        print(f"{lr:>10.4g} {seed:>5} {loss:>9}  {r.status}")
    spread = f" (log2 std {optimum.log2_lr_std:.2f})" if optimum.log2_lr_std is not None else ""
    print(f"optimum: lr = {optimum.lr:.4g} (log2 {optimum.log2_lr:.2f}){spread}, val loss {optimum.loss:.4f}"
          f"{'  [on the grid edge]' if optimum.on_edge else ''}")
    print(f"extension rounds: {rounds} of at most {args.max_extend_rounds}")
    print(f"corpus: {corpus.description}, vocab {corpus.vocab_size}, {len(corpus.train):,} training tokens")
    for w in optimum.warnings + regime:
        print(f"warning: {w}")
    if args.json:
        out = {"config": config.to_dict(), "optimum": optimum.to_dict(), "extend_rounds": rounds, "warnings": regime,
               "vocab_size": corpus.vocab_size, "train_tokens": len(corpus.train),
               "trials": [{"lr": lr, "seed": s, **r.to_dict()} for lr, s, r in results]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=_json_default)
    if args.plot:
        from gdn.plots import sweep_png
        png = sweep_png(title=f"{config.parametrization}, width {config.base_width}, {config.schedule.steps} steps",
                        completed=[(lr, s, r.final_val_loss) for lr, s, r in results if r.status == "COMPLETED"],
                        diverged=[(lr, s) for lr, s, r in results if r.status != "COMPLETED"],
                        optimum_lr=optimum.lr, optimum_loss=optimum.loss, on_edge=optimum.on_edge,
                        near_best=(optimum.near_best_lr_min, optimum.near_best_lr_max),
                        loss_unit=config.data.loss_unit)
        with open(args.plot, "wb") as f:
            f.write(png)
    return 0


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON-serialisable: {type(x)}")


# --- recommend --------------------------------------------------------------------------------------------------

def cmd_recommend(args) -> int:
    from gdn.fit import Optimum
    from gdn.recommend import SweepResult, recommend

    config = _config(args)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    optimum = Optimum(lr=args.lr, log2_lr=math.log2(args.lr), loss=math.nan, log2_lr_std=None, on_edge=False)
    rec = recommend(SweepResult(config, optimum), args.target_width, target_vocab=args.target_vocab).to_dict()
    if args.json:
        print(json.dumps(rec, indent=2, default=_json_default))
        return 0
    print_recommendation(rec)
    return 0


def print_recommendation(rec: dict) -> None:
    """The readable table of a recommendation (gdn.spec.Recommendation.to_dict(), or the API's answer)."""
    print(f"{rec['parametrization']['name']} ({rec['parametrization']['readout']} readout, "
          f"{rec['parametrization']['width_axis']} axis), {rec['optimizer']['name']}: base width "
          f"{rec['base_width']} -> {rec['target_width']} (m = {rec['width_mult']:g}), base lr {rec['base_lr']:.4g}")
    print(f"{'group':<12} {'lr':>11} {'x lr':>8} {'init':>13} {'init std':>9} {'wd':>6}")
    for g in rec["groups"]:
        std = "-" if g["init_std"] is None else f"{g['init_std']:.4g}"
        print(f"{g['role']:<12} {g['lr']:>11.4g} {g['lr_multiplier']:>8.4g} {g['init']:>13} {std:>9} "
              f"{g['weight_decay']:>6g}")
    fm = rec["forward_multipliers"]
    print(f"logit multiplier {fm['logits']:.4g}; gated-delta-rule scale {fm['gdn_scale']:.4g}")
    t = rec["target_model"]
    print(f"target: {t['num_params'] / 1e6:.1f}M params, {t['num_heads']} heads of k {t['head_k_dim']} / "
          f"v {t['head_v_dim']}, mlp {t['mlp_hidden']}; one proxy trial costs "
          f"{100 * rec['cost']['trial_share']:.3g}% of a target run of the same tokens")
    for warning in rec["warnings"]:
        print(f"warning: {warning}")


# --- coordcheck -------------------------------------------------------------------------------------------------

BASELINES = ("sp",)      # expected to fail the check (its activations grow with width): the comparison, not a FAIL


def cmd_coordcheck(args) -> int:
    """Exit 1 when a parametrization other than the SP baseline fails, with why and what to try."""
    from gdn.coordcheck import coord_check, explain, format_table, format_update_table, plot

    args.width = args.widths[0]            # the narrowest model is the base
    # The check is of the table's width exponents, which constants tuned at the base width do not change; with
    # them (mup: logits x 4, sigma_0 x 2) a 64-wide model is still far from its large-width behaviour
    # (mlp.out 0.52 at 64, 0.13-0.14 from 256 on), so they default to 1 here.
    args.output_mult = 1.0 if args.output_mult is None else args.output_mult
    args.init_mult = 1.0 if args.init_mult is None else args.init_mult
    threshold = {} if args.threshold is None else {"threshold": args.threshold}
    checks = [coord_check(_config(args, parametrization=name), args.widths, lr=args.lr, steps=args.steps,
                          seeds=range(args.seeds), **threshold)
              for name in args.parametrization.split(",")]
    failed = [c for c in checks if not c.passed and c.parametrization not in BASELINES]
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for c in checks:
            baseline = " (the baseline: expected to grow)" if c.parametrization in BASELINES else ""
            print(f"== {c.parametrization} ({'flat' if c.passed else 'FAILS: ' + ', '.join(c.failing)}{baseline})")
            print(format_table(c))
            if args.updates:
                print(format_update_table(c))
    if args.plot:
        plot(checks, args.plot)
    for c in failed:
        print(f"deltamu coordcheck: FAIL: {c.parametrization}: " + "\n  ".join(explain(c)), file=sys.stderr)
    return 1 if failed else 0


# --- tokenizer train -------------------------------------------------------------------------------------------

def cmd_tokenizer_train(args) -> int:
    from tqdm import tqdm

    from gdn.corpus import iter_documents, source_kind
    from gdn.tokenizer import train_bpe

    data = DataSpec(args.data, text_column=args.text_column)
    if source_kind(data) == "tokens":
        raise ValueError(f"{args.data} holds token ids already: a tokenizer trains on text")
    with tqdm(iter_documents(data), unit="doc", desc=f"reading {args.data}", file=sys.stderr,
              disable=args.quiet) as docs:
        vocab = train_bpe(docs, args.vocab, Path(args.output), show_progress=not args.quiet)
    print(f"wrote {args.output}: byte-level BPE, vocab {vocab}"
          + (f" (the corpus gave no more merges than that; {args.vocab} asked)" if vocab < args.vocab else ""))
    return 0


def cmd_tokenizer_encode(args) -> int:
    """Tokenize a corpus into a raw .bin of ids (the token cache's file, copied out): a machine without the
    tokenizer library, or without the text, trains on it as --data FILE --vocab-size V."""
    from gdn.corpus import write_token_file
    from gdn.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer.dtype.itemsize < 2:
        raise ValueError("a byte-level corpus needs no encoding: use the text itself as --data")
    out = write_token_file(DataSpec(args.data, tokenizer=args.tokenizer, text_column=args.text_column), tokenizer,
                           Path(args.output))
    print(f"wrote {out.path}: {out.count:,} ids as {out.dtype} ({out.path.stat().st_size:,} bytes), "
          f"vocab {out.vocab_size}, sha256 {out.sha256}; train on it with --data {out.path} "
          f"--vocab-size {out.vocab_size}" + (" --token-dtype uint32" if out.dtype == "uint32" else ""))
    return 0


# --- cache ----------------------------------------------------------------------------------------------------

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """'20G', '512M', '1000000' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in SIZE_UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 20G, 512M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a size is not negative: {text!r}")
    return int(value * SIZE_UNITS[unit])


def _cache_rows(entries) -> str:
    import datetime as dt
    lines = [f"{'size':>10}  {'tokens':>14}  {'last used (UTC)':<16}  source (tokenizer)"]
    for e in entries:
        used = dt.datetime.fromtimestamp(e.last_used, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        lines.append(f"{e.bytes / (1 << 20):>8.1f}MB  {e.count:>14,}  {used:<16}  {e.source} ({e.tokenizer})")
    return "\n".join(lines)


def cmd_cache_list(args) -> int:
    from gdn.corpus import cache_dir, cache_entries
    entries = cache_entries()
    print(f"token cache {cache_dir() / 'tokens'}: {len(entries)} entries, "
          f"{sum(e.bytes for e in entries) / (1 << 20):.1f} MB, least recently used first")
    if entries:
        print(_cache_rows(entries))
    return 0


def cmd_cache_prune(args) -> int:
    from gdn.corpus import cache_entries, prune_cache
    if args.older_than is None and args.max_size is None:
        raise ValueError("say what to remove: --older-than DAYS and/or --max-size SIZE")
    removed = prune_cache(older_than_s=None if args.older_than is None else args.older_than * 86400,
                          max_bytes=args.max_size, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} entries, {sum(e.bytes for e in removed) / (1 << 20):.1f} MB"
          + ("" if args.dry_run else f"; {len(cache_entries())} left"))
    if removed:
        print(_cache_rows(removed))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("sweep", help="run an LR sweep of the proxy here, with a progress bar",
                       description="Train the proxy at each learning rate (and seed; on a GPU several at once, "
                                   "as packs), then fit the optimum.")
    _add_model_args(p, width=64, depth=2)
    _add_schedule_args(p, steps=200, seq_len=128, batch_size=16)
    p.add_argument("--lrs", type=_floats, default=None, help="comma-separated learning rates")
    p.add_argument("--lr-min", type=float, default=2e-3, help="smallest LR of the log-spaced grid (default 0.002)")
    p.add_argument("--lr-max", type=float, default=3.2e-2, help="largest LR of the grid (default 0.032)")
    p.add_argument("--count", type=int, default=5, help="learning rates in the grid (default 5)")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--max-extend-rounds", type=int, default=2,
                   help="rounds of learning rates added beyond the grid's edge while the best one is there (0: none)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cpu")
    p.add_argument("--json", default=None, help="write every trial and the optimum to this file")
    p.add_argument("--plot", default=None, help="write loss vs learning rate to this PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("recommend", help="muP-scaled hyperparameters for a target width, from a tuned base LR")
    _add_model_args(p, width=256, depth=8)
    p.add_argument("--base-width", dest="width", type=int, default=256,
                   help="the width the LR was tuned at (default 256)")
    p.add_argument("--target-width", type=int, required=True, help="the width you will train")
    p.add_argument("--lr", type=float, required=True, help="the best LR found at the base width")
    p.add_argument("--target-vocab", type=int, default=None,
                   help="the target's vocabulary: a warning when it is not the proxy's")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the whole recommendation as JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("coordcheck", help="activation size vs width per tensor, with a verdict",
                       description="Train a few steps at each width; compare each tensor's growth with muP's.")
    _add_model_args(p, width=64, depth=2)
    _add_schedule_args(p, steps=6, seq_len=32, batch_size=8)
    p.add_argument("--widths", type=_ints, required=True, help="e.g. 64,128,256,512 (the first is the base)")
    p.add_argument("--lr", type=float, default=1e-2, help="constant LR of the few training steps")
    p.add_argument("--seeds", type=int, default=2, help="number of seeds to average")
    p.add_argument("--threshold", type=float, default=None,
                   help="largest |slope - expected slope| that passes (default 0.25)")
    p.add_argument("--json", action="store_true", help="print every check as JSON")
    p.add_argument("--updates", action="store_true",
                   help="also print each parameter kind's update size per width and its slope (muP wants 0)")
    p.add_argument("--plot", default=None, help="write size vs width to this PNG")
    p.set_defaults(func=cmd_coordcheck)

    p = sub.add_parser("tokenizer", help="tokenizers for your corpus")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE (the tokenizers library) on a corpus",
                        description="Train a byte-level BPE on DATA and write its tokenizer.json, for jobs to name "
                                    "as data.tokenizer (--tokenizer).")
    t.add_argument("data", help="'builtin', a text file or folder, or a .jsonl/.parquet/.arrow file or folder")
    t.add_argument("--vocab", type=int, required=True, help="the vocabulary size to reach, e.g. 32768")
    t.add_argument("-o", "--output", required=True, help="the tokenizer.json to write")
    t.add_argument("--text-column", default="text", help="the text column of a .jsonl/.parquet/.arrow corpus")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_tokenizer_train)
    t = tsub.add_parser("encode", help="tokenize a corpus into a .bin of ids (no tokenizer needed to train on it)")
    t.add_argument("data", help="'builtin', a text file or folder, or a .jsonl/.parquet/.arrow file or folder")
    t.add_argument("--tokenizer", required=True, help="a tokenizer.json or a tiktoken BPE file")
    t.add_argument("-o", "--output", required=True, help="the .bin to write")
    t.add_argument("--text-column", default="text", help="the text column of a .jsonl/.parquet/.arrow corpus")
    t.set_defaults(func=cmd_tokenizer_encode)

    p = sub.add_parser("cache", help="the token cache ($DELTAMU_CACHE_DIR): list it, prune it",
                       description="Workers tokenize a corpus once per (corpus, tokenizer) into the token cache and "
                                   "read it from there; nothing removes an entry but this command.")
    csub = p.add_subparsers(dest="cache_command", required=True)
    c = csub.add_parser("list", help="every entry: size, tokens, last use, corpus and tokenizer")
    c.set_defaults(func=cmd_cache_list)
    c = csub.add_parser("prune", help="remove entries unused for a while, or the least recently used beyond a size")
    c.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="remove the entries no trial has read for this many days")
    c.add_argument("--max-size", type=_size, default=None, metavar="SIZE",
                   help="then remove the least recently used until the cache fits this size (e.g. 20G)")
    c.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    c.set_defaults(func=cmd_cache_prune)


def run(args) -> int:
    """Run a parsed command; bad input becomes a one-line message and exit code 2."""
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"deltamu {args.command}: error: {msg}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdn", description="deltamu's science commands")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return run(parser.parse_args(argv))
