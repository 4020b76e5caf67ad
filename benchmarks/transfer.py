"""The transfer study: does the LR tuned at the base width hold at every width, and is the model it gives as good
as SP tuned by hand at that width? Writes every trial to a JSONL file as it finishes and docs/transfer.md from it.

Per arm (optimizer x parametrization x readout) and horizon (training steps), widths are swept in order: the base
width on a grid around the arm's starting point, each wider width on a grid centred on the previous width's
optimum, every grid extended on a side whose best point is its edge (until the optimum is interior or the edge
diverged). All grid points lie on one lattice, 2^(k/2), so argmin shifts are counted in grid steps. Then, at every
width, a "transfer" trial runs at exactly the base width's fitted optimum: the LR a user of deltamu would get.

    python benchmarks/transfer.py --scale cpu                     # the CPU study (widths 32..256), resumable
    python benchmarks/transfer.py --scale gpu --out $OUT/t.jsonl  # the GPU study (widths 128..1024)
    python benchmarks/transfer.py --report-only --results docs/transfer/cpu.jsonl --md docs/transfer.md
    python benchmarks/transfer.py --scale gpu --data tok32k.bin --vocab-size 32768 ...  # at a BPE's vocabulary

--data / --tokenizer run every arm on another corpus or tokenizer (a tokenizer.json from `deltamu tokenizer train`,
or ids pre-tokenized into a .bin, which needs no tokenizer library where the study runs); every record says its
vocab, and one results file holds one vocab.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdn.config import GDNConfig  # noqa: E402
from gdn.corpus import vocab_of  # noqa: E402
from gdn.spec import BACKENDS, DataSpec, OptimizerSpec, ScheduleSpec, SweepConfig, TrialSpec  # noqa: E402
from gdn.parametrization import BASE_MULTS, get_parametrization  # noqa: E402
from gdn.fit import edge_extension, fit_optimum  # noqa: E402
from gdn.train import run  # noqa: E402

STEP_LOG2 = 0.5          # grid spacing: 2^0.5
GRID_POINTS = 6          # initial points per grid
MAX_EXTENSIONS = 4       # rounds of extending a grid whose best point is on its edge


Mults = tuple[float, float]          # (output_mult, init_mult): base-width hyperparameters that μP carries
RECORD_DEFAULTS = {"init_mult": 1.0}  # fields that older result lines lack


def mults_of(record: dict) -> Mults:
    return record["output_mult"], record.get("init_mult", 1.0)


@dataclass(frozen=True)
class Arm:
    name: str
    optimizer: str
    parametrization: str
    readout: str | None = None
    output_mults: tuple[float, ...] = (1.0,)   # several: tuned at the base width, the best one carried
    init_mults: tuple[float, ...] = (1.0,)     # likewise for sigma_0 of the matrices
    start_log2_lr: float = -7.0                # where the base width's grid is centred
    weight_decay_rule: str = "coupled"         # gdn.parametrization.WEIGHT_DECAY_RULES
    # the arm this one equals at the base width (m = 1), whose base-width trials it takes instead of running the
    # same trials again: the weight-decay rule acts through the LR multipliers, which are all 1 there
    same_at_base: str | None = None

    @property
    def mults(self) -> list[Mults]:
        return [(om, im) for om in self.output_mults for im in self.init_mults]


def check_same_at_base(arm: Arm) -> None:
    """Refuse an arm's same_at_base unless the two arms differ only in their weight-decay rule and the table turns
    both into the same per-group numbers at m = 1 (so the shared trials are the ones this arm would have run)."""
    source = ARMS[arm.same_at_base]
    differs = [f.name for f in dataclasses.fields(Arm) if f.name not in ("name", "same_at_base", "weight_decay_rule")
               and getattr(arm, f.name) != getattr(source, f.name)]
    groups = [get_parametrization(a.parametrization, a.readout, om, im, a.optimizer, a.weight_decay_rule)
              .groups(1.0, a.optimizer) for a in (arm, source) for om, im in a.mults]
    if differs or groups[:len(arm.mults)] != groups[len(arm.mults):]:
        raise ValueError(f"arm {arm.name} is not {source.name} at the base width ({', '.join(differs) or 'groups'} "
                         "differ): it needs its own base-width trials")


def with_shared_base(records: list[dict], arms: Iterable[str] | None = None) -> list[dict]:
    """The records, plus, for every arm with same_at_base (of `arms`; default: those with records), its source's
    base-width trials (the narrowest width the source swept at that horizon) under this arm's name, marked
    `shared_from`."""
    present = {r["arm"] for r in records}
    shared = []
    for arm in (ARMS[a] for a in (present if arms is None else arms)
                if a in ARMS and ARMS[a].same_at_base in present):
        source = [r for r in records if r["arm"] == arm.same_at_base]
        for h in {r["horizon"] for r in source}:
            base = min((r["width"] for r in source if r["horizon"] == h and r["kind"] == "grid"), default=None)
            if any(r["arm"] == arm.name and r["horizon"] == h and r["width"] == base for r in records):
                continue                  # it ran its own there (a results file from before the sharing)
            shared += [{**r, "arm": arm.name, "shared_from": r["arm"]} for r in source
                       if r["horizon"] == h and r["width"] == base]
    return records + shared


def shipped(name: str, optimizer: str, parametrization: str, start_log2_lr: float) -> Arm:
    """An arm of a preset as shipped: its default readout and the base-width constants BASE_MULTS gives it."""
    output_mult, init_mult = BASE_MULTS[parametrization][optimizer]
    return Arm(name, optimizer, parametrization, "tied-scaled", output_mults=(output_mult,),
               init_mults=(init_mult,), start_log2_lr=start_log2_lr)


ARMS: dict[str, Arm] = {a.name: a for a in [
    Arm("adamw-sp", "adamw", "sp", start_log2_lr=-7.5),
    Arm("adamw-mup", "adamw", "mup", "tied-scaled", start_log2_lr=-7.5),
    Arm("adamw-mup-tied", "adamw", "mup", "tied", start_log2_lr=-7.5),
    Arm("adamw-mup-untied-zero", "adamw", "mup", "untied-zero", start_log2_lr=-7.5),
    Arm("adamw-mup-untied-scaled", "adamw", "mup", "untied-scaled", start_log2_lr=-7.5),
    shipped("adamw-mup-default", "adamw", "mup", start_log2_lr=-7.5),          # the preset as shipped
    Arm("adamw-mup-alpha", "adamw", "mup", "tied-scaled", output_mults=(1.0, 2.0, 4.0, 8.0), start_log2_lr=-7.5),
    Arm("adamw-mup-tuned", "adamw", "mup", "tied-scaled", output_mults=(2.0, 4.0, 8.0), init_mults=(1.0, 2.0, 4.0),
        start_log2_lr=-7.5),
    Arm("adamw-mup-paper-code", "adamw", "mup-paper-code", start_log2_lr=-7.5),
    Arm("sgd-sp", "sgd", "sp", start_log2_lr=-4.0),
    Arm("sgd-mup-original", "sgd", "mup-original", start_log2_lr=-2.5),
    Arm("sgd-mup", "sgd", "mup", "tied-scaled", start_log2_lr=-2.5),
    Arm("sgd-mup-tied", "sgd", "mup", "tied", start_log2_lr=-2.5),
    shipped("sgd-mup-default", "sgd", "mup", start_log2_lr=-4.0),              # the SGD preset as shipped
    shipped("sgd-mup-sgd", "sgd", "mup-sgd", start_log2_lr=-4.0),              # matrices' init ~ m^-1/6
    # the AdamW preset as shipped, its weight decay independent of the LR multiplier (issue 18)
    dataclasses.replace(shipped("adamw-mup-default", "adamw", "mup", start_log2_lr=-7.5), name="adamw-mup-wdind",
                        weight_decay_rule="independent", same_at_base="adamw-mup-default"),
]}
SP_OF = {"adamw": "adamw-sp", "sgd": "sgd-sp"}


@dataclass(frozen=True)
class Scale:
    widths: tuple[int, ...]
    depth: int
    seq_len: int
    batch_size: int
    horizons: tuple[int, ...]
    seeds: tuple[int, ...]
    eval_batches: int
    arms: tuple[str, ...]
    warmup_frac: float = 0.1
    grid_points: int = GRID_POINTS
    data: DataSpec = DataSpec("builtin")
    vocab_size: int = 256                      # the data's (vocab_of(data)), set with it
    # arms run at the wider widths only at the LR transferred from the base width (no grids there): criteria (2)
    # and (3) for 2 trials a width instead of a sweep's 10-12, not (1)
    transfer_only: tuple[str, ...] = ()


SCALES = {
    "tiny": Scale(widths=(32, 64), depth=1, seq_len=32, batch_size=4, horizons=(20,), seeds=(0,), eval_batches=2,
                  arms=("adamw-sp", "adamw-mup"), grid_points=3),
    "cpu": Scale(widths=(32, 64, 128, 256), depth=2, seq_len=64, batch_size=8, horizons=(250, 1000),
                 seeds=(0, 1), eval_batches=16, grid_points=5,
                 arms=("adamw-sp", "adamw-mup-tuned", "adamw-mup-tied", "sgd-sp", "sgd-mup")),
    "gpu": Scale(widths=(128, 256, 512, 1024), depth=4, seq_len=512, batch_size=8, horizons=(250, 1000),
                 seeds=(0, 1), eval_batches=16, arms=tuple(ARMS)),
    # The GPU study at a 32k BPE (issue 18), cut to two device calls: the GPU scale's shapes at 1000 steps, widths
    # 128 and 1024 (512 is one more call: --widths 128,512,1024 resumes and adds it), 5-point grids, SP and the
    # shipped preset swept, the preset with independent weight decay at the transferred LR only (at the base width
    # it is the preset's own trials). Meant with --data a 32k .bin and --centre-from docs/transfer/gpu.jsonl
    # (docs/transfer.md, "Small corpora, the weight-decay rule and the vocabulary").
    "gpu32k": Scale(widths=(128, 1024), depth=4, seq_len=512, batch_size=8, horizons=(1000,), seeds=(0, 1),
                    eval_batches=16, grid_points=5, arms=("adamw-sp", "adamw-mup-default", "adamw-mup-wdind"),
                    transfer_only=("adamw-mup-wdind",)),
}


def lattice(k: int) -> float:
    return 2.0 ** (k * STEP_LOG2)


def nearest_k(log2_lr: float) -> int:
    return round(log2_lr / STEP_LOG2)


# --- running trials -----------------------------------------------------------------------------------------------

def _config(scale: Scale, arm: Arm, horizon: int, mults: tuple[float, float]) -> SweepConfig:
    return SweepConfig(
        model=GDNConfig(width=scale.widths[0], depth=scale.depth, vocab_size=scale.vocab_size),
        parametrization=arm.parametrization, readout=arm.readout, output_mult=mults[0], init_mult=mults[1],
        optimizer=OptimizerSpec(name=arm.optimizer, weight_decay_rule=arm.weight_decay_rule),
        schedule=ScheduleSpec(steps=horizon, warmup_steps=max(1, int(scale.warmup_frac * horizon)),
                              batch_size=scale.batch_size, seq_len=scale.seq_len),
        data=scale.data, eval_batches=scale.eval_batches)


def _spec(job: dict) -> TrialSpec:
    return TrialSpec(SweepConfig.from_dict(job["config"]), lr=job["lr"], seed=job["seed"], width=job["width"],
                     backend=job.get("backend", "auto"))


def _record(job: dict, r, packed: int = 1) -> dict:
    return {**job["key"], "lr": job["lr"], "status": r.status, "final_val_loss": r.final_val_loss,
            "seconds": r.seconds / packed, "tokens": r.tokens, "num_params": r.num_params, "device": r.device,
            "data_sha256": r.data_sha256, "diverged_step": r.diverged_step, "packed": packed,
            "vocab_size": job["config"]["model"]["vocab_size"], "tokenizer": job["config"]["data"]["tokenizer"],
            "curve": [(p.step, round(p.loss, 5)) for p in r.curve]}


def _run_jobs(jobs: list[dict]) -> list[dict]:
    """Several trials of one architecture, through gdn.train.run as the worker trains them (a lone trial, or a
    pack, which on CUDA replays CUDA graphs)."""
    specs = [_spec(j) for j in jobs]
    results = run(specs, log_every=max(1, specs[0].config.schedule.steps // 20))
    return [_record(j, r, packed=len(jobs)) for j, r in zip(jobs, results)]


def _init_worker(threads: int, gpus: tuple[str, ...] = (), counter=None) -> None:
    """Per worker process: its torch threads and, given GPUs, one of them (round robin by start order), set before
    CUDA starts so that every trial of this worker runs there."""
    if gpus:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    import torch
    torch.set_num_threads(threads)


def read_records(path: Path) -> list[dict]:
    """The trials of a results file, one JSON object a line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Study:
    def __init__(self, scale: Scale, results_path: Path, workers: int, threads: int, pack: int = 1,
                 concurrent_widths: bool = False, gpus: tuple[str, ...] = (), backend: str = "auto",
                 prior: list[dict] = ()):
        for arm in (ARMS[a] for a in scale.arms if ARMS[a].same_at_base):
            if arm.same_at_base not in scale.arms:
                raise ValueError(f"arm {arm.name} takes its base-width trials from {arm.same_at_base}: run that "
                                 "arm too")
            check_same_at_base(arm)
        self.scale = scale
        self.prior = list(prior)         # another study's trials, which only centre this one's first grids
        self.gpus = gpus
        self.concurrent_widths = concurrent_widths
        self.path = results_path
        self.workers = workers
        self.threads = threads
        self.pack = pack
        self.backend = backend
        self.records = read_records(results_path) if results_path.exists() else []

    def _key(self, arm: str, horizon: int, width: int, kind: str, lr: float, seed: int, mults: Mults):
        return {"arm": arm, "horizon": horizon, "width": width, "kind": kind, "lr_key": f"{lr:.10g}",
                "seed": seed, "output_mult": mults[0], "init_mult": mults[1]}

    def _have(self, key: dict) -> bool:
        return any(all(r.get(k, RECORD_DEFAULTS.get(k)) == v for k, v in key.items()) for r in self.records)

    def run(self, jobs: list[dict]) -> None:
        """Run the jobs not yet in the results file, in parallel processes, appending each result as it lands."""
        jobs = [j for j in jobs if not self._have(j["key"])]
        if not jobs:
            return
        groups = defaultdict(list)   # trials of one architecture and schedule can share a pack
        for j in jobs:
            groups[json.dumps(j["config"], sort_keys=True), j["width"]].append(j)
        units = [g[i:i + self.pack] for g in groups.values() for i in range(0, len(g), self.pack)]
        units.sort(key=lambda u: -u[0]["width"])                 # widest first: the stragglers are the cheap ones
        print(f"  running {len(jobs)} trials as {len(units)} packs on {self.workers} workers", flush=True)
        ctx = multiprocessing.get_context("spawn")
        done = 0
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(self.threads, self.gpus, ctx.Value("i", 0))) as pool, \
                self.path.open("a") as out:
            futures = [pool.submit(_run_jobs, u) for u in units]
            for fut in cf.as_completed(futures):
                try:
                    recs = fut.result()
                except Exception as exc:    # e.g. a pack that did not fit beside the others: rerun next time
                    print(f"  a pack failed and is left for the next invocation: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}", flush=True)
                    continue
                for rec in recs:
                    done += 1
                    self.records.append(rec)
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                    print(f"  [{done}/{len(jobs)}] {rec['arm']} h={rec['horizon']} w={rec['width']} {rec['kind']} "
                          f"lr={rec['lr']:.4g} seed={rec['seed']} -> {rec['status']} {rec['final_val_loss']:.4f} "
                          f"({rec['seconds']:.0f}s)", flush=True)

    def job(self, arm: Arm, horizon: int, width: int, kind: str, lr: float, seed: int, mults: Mults) -> dict:
        return {"key": self._key(arm.name, horizon, width, kind, lr, seed, mults), "lr": lr, "seed": seed,
                "width": width, "config": _config(self.scale, arm, horizon, mults).to_dict(), "backend": self.backend}

    def grid_records(self, arm: str, horizon: int, width: int, mults: Mults | None = None) -> list[dict]:
        return [r for r in with_shared_base(self.records, self.scale.arms) if r["arm"] == arm
                and r["horizon"] == horizon and r["width"] == width and r["kind"] == "grid"
                and (mults is None or mults_of(r) == mults)]

    def fit(self, arm: str, horizon: int, width: int, mults: Mults | None = None):
        recs = self.grid_records(arm, horizon, width, mults)
        return fit_optimum([r["lr"] for r in recs], [_loss(r) for r in recs], [r["seed"] for r in recs])

    # --- one width of one arm: a grid, extended until its optimum is interior ---
    def sweep_width(self, items: list[tuple[Arm, int, int, float, int]], extra: list[dict] = ()) -> None:
        """items: (arm, horizon, width, mults, centre k). Runs all grids (and any extra jobs) together, then extends
        edges."""
        n = self.scale.grid_points
        jobs = list(extra)
        for arm, horizon, width, om, k0 in items:
            ks = range(k0 - n // 2, k0 - n // 2 + n)
            jobs += [self.job(arm, horizon, width, "grid", lattice(k), s, om) for k in ks for s in self.scale.seeds]
        self.run(jobs)
        for _ in range(MAX_EXTENSIONS):
            jobs = []
            for arm, horizon, width, om, _k0 in items:
                jobs += self._extension(arm, horizon, width, om)
            if not jobs:
                break
            self.run(jobs)

    def _extension(self, arm: Arm, horizon: int, width: int, om: Mults) -> list[dict]:
        recs = self.grid_records(arm.name, horizon, width, om)
        if not recs:        # its first round failed: nothing to extend yet
            return []
        new = edge_extension([r["lr"] for r in recs], [_loss(r) for r in recs], [r["seed"] for r in recs],
                             step_log2=STEP_LOG2)
        # snapped back onto the lattice, so a resumed study finds these trials by their exact lr
        return [self.job(arm, horizon, width, "grid", lattice(nearest_k(math.log2(lr))), s, om)
                for lr in new for s in self.scale.seeds]

    def run_study(self) -> None:
        """Horizon by horizon (the short one first, so a partial run still covers every width), width by width."""
        for horizon in self.scale.horizons:
            self.run_horizon(horizon)

    def run_horizon(self, h: int) -> None:
        scale = self.scale
        arms = [ARMS[a] for a in scale.arms]
        base = scale.widths[0]
        # base width: every arm (but those that share another's), every output multiplier candidate
        print(f"horizon {h}, width {base} (base)", flush=True)
        self.sweep_width([(arm, h, base, om, self.base_k(arm, h, om)) for arm in arms if not arm.same_at_base
                          for om in arm.mults])
        chosen = {arm.name: self.best_mults(arm, h) for arm in arms}
        swept = [arm for arm in arms if arm.name not in scale.transfer_only]      # grids at the wider widths too
        if self.concurrent_widths:
            # Every wider width at once, centred where a shorter horizon says its optimum lies relative to the base
            # width's; the transfer trials (the base optimum is known now) ride in the same round. Fills a GPU with
            # packs instead of walking the widths one round at a time; the edge extensions still make every
            # optimum interior, so only the number of rounds changes, not the answer.
            items = [(arm, h, w, chosen[arm.name], self.predicted_k(arm.name, h, w, chosen[arm.name]))
                     for arm in swept for w in scale.widths[1:]]
            self.sweep_width(items, extra=self.transfer_jobs(arms, h, chosen))
        else:
            previous = {arm.name: nearest_k(self.fit(arm.name, h, base, chosen[arm.name]).log2_lr) for arm in swept}
            for width in scale.widths[1:]:
                print(f"horizon {h}, width {width}", flush=True)
                self.sweep_width([(arm, h, width, chosen[arm.name], previous[arm.name]) for arm in swept])
                previous = {arm.name: nearest_k(self.fit(arm.name, h, width, chosen[arm.name]).log2_lr)
                            for arm in swept}
        print(f"horizon {h}, transfer trials", flush=True)
        self.run(self.transfer_jobs(arms, h, chosen))

    def transfer_jobs(self, arms: list[Arm], h: int, chosen: dict[str, Mults]) -> list[dict]:
        """Every width at the base width's fitted optimum: what a user of deltamu would be told to run (an arm that
        shares another's base width takes its transfer trials there too)."""
        jobs = []
        for arm in arms:
            om = chosen[arm.name]
            lr = self.fit(arm.name, h, self.scale.widths[0], om).lr
            widths = self.scale.widths[1:] if arm.same_at_base else self.scale.widths
            jobs += [self.job(arm, h, w, "transfer", lr, s, om) for w in widths for s in self.scale.seeds]
        return jobs

    def base_k(self, arm: Arm, h: int, om: Mults) -> int:
        """Where the base width's first grid is centred: the prior study's optimum there (--centre-from), else the
        arm's starting point."""
        prior = _fit([r for r in self.prior if r["arm"] == arm.name and r["horizon"] == h], self.scale.widths[0], om)
        return nearest_k(prior.log2_lr if prior else arm.start_log2_lr)

    def prior_shift(self, arm: str, h: int, width: int, om: Mults) -> float:
        """log2 of how far the prior study's optimum at this width lay from its base width's (0 if it has not both)."""
        recs = [r for r in self.prior if r["arm"] == arm and r["horizon"] == h]
        fits = [_fit(recs, w, om) for w in (width, self.scale.widths[0])]
        return fits[0].log2_lr - fits[1].log2_lr if all(fits) else 0.0

    def predicted_k(self, arm: str, h: int, width: int, om: Mults) -> int:
        """The base width's optimum at horizon h, moved by the shift the longest shorter horizon measured at this
        width (none measured: the narrower widths' trend, else the prior study's shift, else none)."""
        base = self.scale.widths[0]
        log2_lr = self.fit(arm, h, base, om).log2_lr
        for shorter in sorted({r["horizon"] for r in self.records if r["horizon"] < h}, reverse=True):
            if self.grid_records(arm, shorter, width, om) and self.grid_records(arm, shorter, base, om):
                log2_lr += self.fit(arm, shorter, width, om).log2_lr - self.fit(arm, shorter, base, om).log2_lr
                return nearest_k(log2_lr)
        # No shorter horizon reached this width (a width added to a finished study): carry on the trend of the two
        # widest narrower widths measured at this horizon, linear in log2(width), as SP's drift is.
        done = [w for w in self.scale.widths if base < w < width and self.grid_records(arm, h, w, om)]
        if done:
            points = ([base] + done)[-2:]
            fitted = [self.fit(arm, h, w, om).log2_lr for w in points]
            slope = (fitted[1] - fitted[0]) / math.log2(points[1] / points[0])
            return nearest_k(fitted[1] + slope * math.log2(width / points[1]))
        # Nothing measured at this horizon beyond the base (a study's first round): the shift the prior study
        # (--centre-from, e.g. the byte-level one for a study at a BPE's vocabulary) measured there; else none.
        return nearest_k(log2_lr + self.prior_shift(arm, h, width, om))

    def best_mults(self, arm: Arm, horizon: int) -> Mults:
        """The (output, init) multipliers with the best fitted loss at the base width: what μP then carries."""
        base = self.scale.widths[0]
        return min(arm.mults, key=lambda om: self.fit(arm.name, horizon, base, om).loss)


def _loss(r: dict) -> float:
    v = r["final_val_loss"]
    return v if v is not None and math.isfinite(v) else math.inf


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.inf


# --- the report ---------------------------------------------------------------------------------------------------

@dataclass
class ArmSummary:
    arm: str
    horizon: int
    mults: Mults
    rows: list[dict] = field(default_factory=list)
    argmin_range_steps: float = math.nan
    worst_vs_sp_pct: float = math.nan
    monotone: bool | None = None      # None: a width lacks its transfer trials (not run yet)
    verdict: str = "-"                # criterion (2) over the widths, within the seed noise: the worst of them


NOISE_SIGMAS = 2.0                    # a difference within this many standard deviations is a tie


NEAR_BEST = 1.05                      # seed noise is pooled over trials within 5 % of their sweep's best


def seed_noise(records: list[dict]) -> dict[tuple[int, int], float]:
    """Per (horizon, width): the relative standard deviation of one seed's final loss, pooled over the trials run
    with more than one seed near their sweep's optimum (within NEAR_BEST of the best seed mean of that arm, horizon
    and width; far from it, at an edge of the grid, seeds scatter more and say nothing about the comparison)."""
    groups = defaultdict(list)
    for r in records:
        if r["status"] == "COMPLETED" and math.isfinite(_loss(r)):
            groups[r["arm"], r["horizon"], r["width"], r["kind"], r["lr_key"], mults_of(r)].append(_loss(r))
    best = defaultdict(lambda: math.inf)
    for (arm, horizon, width, *_), losses in groups.items():
        best[arm, horizon, width] = min(best[arm, horizon, width], _mean(losses))
    pooled = defaultdict(lambda: [0.0, 0])                        # sum of squared relative deviations, dof
    for (arm, horizon, width, *_), losses in groups.items():
        m = _mean(losses)
        if len(losses) > 1 and m <= NEAR_BEST * best[arm, horizon, width]:
            pooled[horizon, width][0] += sum(((x - m) / m) ** 2 for x in losses)
            pooled[horizon, width][1] += len(losses) - 1
    return {key: math.sqrt(ss / dof) for key, (ss, dof) in pooled.items() if dof}


def _verdict(diff_pct: float, noise_pct: float) -> str:
    if not (math.isfinite(diff_pct) and math.isfinite(noise_pct)):
        return "-"
    return "better" if diff_pct < -noise_pct else "worse" if diff_pct > noise_pct else "tie"


def summarise(records: list[dict], scale_widths: list[int] | None = None) -> list[ArmSummary]:
    by = defaultdict(list)
    for r in with_shared_base(records):
        by[r["arm"], r["horizon"]].append(r)
    summaries = []
    for (arm, horizon), recs in sorted(by.items()):
        widths = sorted({r["width"] for r in recs if r["kind"] in ("grid", "transfer")})   # transfer-only ones too
        base = min((r["width"] for r in recs if r["kind"] == "grid"), default=None)
        if base is None:
            continue
        # the carried output multiplier: the one the wider widths (or the transfer trials) ran with
        oms = [mults_of(r) for r in recs if r["kind"] == "transfer" or r["width"] != base]
        om = oms[0] if oms else min({mults_of(r) for r in recs},
                                    key=lambda m: min(_grid_means([r for r in recs if mults_of(r) == m]).values()))
        s = ArmSummary(arm, horizon, om)
        base_fit = _fit(recs, base, om)
        for w in widths:
            fit = _fit(recs, w, om)
            grid = [r for r in recs if r["kind"] == "grid" and r["width"] == w and mults_of(r) == om]
            transfer = [_loss(r) for r in recs if r["kind"] == "transfer" and r["width"] == w]
            if not grid and not transfer:
                continue
            means = _grid_means(grid)
            best_key = min(means, key=means.get, default=None)
            best = means.get(best_key, math.nan)
            row = {"width": w, "argmin_lr": fit.lr if fit else math.nan,
                   "shift_steps": ((fit.log2_lr - base_fit.log2_lr) / STEP_LOG2) if fit and base_fit else math.nan,
                   "on_edge": bool(fit and fit.on_edge), "best_loss": best,
                   "transfer_loss": _mean(transfer) if transfer else math.nan, "transfer_seeds": len(transfer),
                   "best_seeds": sum(1 for r in grid if float(r["lr_key"]) == best_key),
                   "seconds": sum(r["seconds"] for r in recs if r["width"] == w and "shared_from" not in r)}
            row["regret"] = row["transfer_loss"] - best
            s.rows.append(row)
        shifts = [r["shift_steps"] for r in s.rows if math.isfinite(r["shift_steps"])]
        s.argmin_range_steps = (max(shifts) - min(shifts)) if len(shifts) > 1 else math.nan
        t = [r["transfer_loss"] for r in s.rows]
        s.monotone = (all(b < a for a, b in zip(t, t[1:])) if len(t) > 1 and all(map(math.isfinite, t))
                      else None)
        summaries.append(s)
    # criterion (2): against SP's own best at every width (same optimizer and horizon), and how that difference
    # compares with the seed noise: the standard deviation of a difference of two seed means is the per-seed one
    # times sqrt(1/n_a + 1/n_b); SP's best is the smallest of its grid means, which favours SP.
    best_sp = {(x.arm, x.horizon, r["width"]): r for x in summaries for r in x.rows}
    noise = seed_noise(records)
    for s in summaries:
        sp = SP_OF.get(ARMS[s.arm].optimizer if s.arm in ARMS else "", None)
        excess, verdicts = [], []
        for r in s.rows:
            ref = best_sp.get((sp, s.horizon, r["width"]))
            r["sp_best"] = ref["best_loss"] if ref else math.nan
            r["vs_sp_pct"] = 100 * (r["transfer_loss"] - r["sp_best"]) / r["sp_best"] if ref else math.nan
            sd = noise.get((s.horizon, r["width"]), math.nan)
            r["noise_pct"] = (100 * NOISE_SIGMAS * sd * math.sqrt(1 / r["transfer_seeds"] + 1 / ref["best_seeds"])
                              if ref and r["transfer_seeds"] and ref["best_seeds"] else math.nan)
            r["verdict"] = _verdict(r["vs_sp_pct"], r["noise_pct"])
            if math.isfinite(r["vs_sp_pct"]):
                excess.append(r["vs_sp_pct"])
            if r["verdict"] != "-":
                verdicts.append(r["verdict"])
        s.worst_vs_sp_pct = max(excess) if excess else math.nan
        s.verdict = next((v for v in ("worse", "tie", "better") if v in verdicts), "-")
    return summaries


def variant_rows(summaries: list[ArmSummary], records: list[dict]) -> list[dict]:
    """Every arm that equals another at the base width (same_at_base: the weight-decay rule) against that arm, width
    by width, at the LR transferred from the base (the same LR for both), judged against the seed noise as
    criterion (2) is."""
    rows_of = {(s.arm, s.horizon): {r["width"]: r for r in s.rows} for s in summaries}
    noise = seed_noise(records)
    out = []
    for s in summaries:
        source = ARMS[s.arm].same_at_base if s.arm in ARMS else None
        theirs = rows_of.get((source, s.horizon))
        if not theirs:
            continue
        for r in s.rows:
            ref = theirs.get(r["width"])
            if not ref or not (r["transfer_seeds"] and ref["transfer_seeds"]):
                continue
            diff = 100 * (r["transfer_loss"] - ref["transfer_loss"]) / ref["transfer_loss"]
            sd = noise.get((s.horizon, r["width"]), math.nan)
            band = 100 * NOISE_SIGMAS * sd * math.sqrt(1 / r["transfer_seeds"] + 1 / ref["transfer_seeds"])
            out.append({"arm": s.arm, "against": source, "horizon": s.horizon, "width": r["width"],
                        "loss": r["transfer_loss"], "their_loss": ref["transfer_loss"], "diff_pct": diff,
                        "noise_pct": band, "verdict": _verdict(diff, band)})
    return out


def _grid_means(grid: list[dict]) -> dict[float, float]:
    by = defaultdict(list)
    for r in grid:
        by[r["lr_key"]].append(_loss(r))
    return {float(k): _mean(v) for k, v in by.items()}


def _fit(recs: list[dict], width: int, om: Mults):
    grid = [r for r in recs if r["kind"] == "grid" and r["width"] == width and mults_of(r) == om]
    try:
        return fit_optimum([r["lr"] for r in grid], [_loss(r) for r in grid], [r["seed"] for r in grid])
    except ValueError:
        return None


def plot_arm(recs: list[dict], s: ArmSummary, path: Path) -> None:
    from gdn.plots import transfer_png
    mine = [r for r in recs if r["arm"] == s.arm and r["horizon"] == s.horizon and mults_of(r) == s.mults]
    grid = [r for r in mine if r["kind"] == "grid"]
    base_lr = next((r["lr"] for r in mine if r["kind"] == "transfer"), None)
    optima = {row["width"]: (row["argmin_lr"], row["best_loss"]) for row in s.rows}
    png = transfer_png(title=f"{s.arm}, {s.horizon} steps",
                       completed=[(r["width"], r["lr"], r["seed"], _loss(r)) for r in grid
                                  if r["status"] == "COMPLETED"],
                       diverged=[(r["width"], r["lr"]) for r in grid if r["status"] != "COMPLETED"],
                       optima=optima, base_lr=base_lr)
    path.write_bytes(png)


def _f(x: float, fmt: str = ".4f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def write_report(records: list[dict], md_path: Path, plot_dir: Path, header: str) -> str:
    summaries = summarise(records)
    view = with_shared_base(records)
    plot_dir.mkdir(parents=True, exist_ok=True)
    lines = [header, "", f"(2) within the seed noise: 'tie' where the difference is within {NOISE_SIGMAS:g} standard "
             "deviations of a difference of seed means (per-seed noise pooled over the multi-seed trials within "
             f"{100 * (NEAR_BEST - 1):g} % of their sweep's best at that width and horizon), 'better' or 'worse' beyond; the summary's verdict "
             "is the worst width's. SP's best is the smallest of its grid means, which favours SP.", "",
             "| arm | horizon | (1) argmin range, grid steps | (2) worst vs tuned SP | (2) within noise | "
             "(3) wider is better |", "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.arm} | {s.horizon} | {_f(s.argmin_range_steps, '.1f')} | "
                     f"{_f(s.worst_vs_sp_pct, '+.2f')} % | {s.verdict} | "
                     f"{ {True: 'yes', False: 'no', None: '-'}[s.monotone]} |")
    variants = variant_rows(summaries, records)
    if variants:
        lines += ["", "Arms that equal another at the base width (one weight-decay rule against the other: the same "
                  "trials at m = 1), against it at the LR transferred from there, within the seed noise as in (2):",
                  "", "| arm | against | horizon | width | loss at transferred lr | its loss | difference | "
                  f"noise ({NOISE_SIGMAS:g} sd) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {v['arm']} | {v['against']} | {v['horizon']} | {v['width']} | {_f(v['loss'])} | "
                  f"{_f(v['their_loss'])} | {_f(v['diff_pct'], '+.2f')} % | ±{_f(v['noise_pct'], '.2f')} % | "
                  f"{v['verdict']} |" for v in variants]
    for s in summaries:
        png = plot_dir / f"{md_path.stem}-{s.arm}-{s.horizon}.png"     # one folder serves every scale
        plot_arm(view, s, png)
        tuned = "" if s.mults == (1.0, 1.0) else f" (tuned at the base width: output multiplier {s.mults[0]:g}, " \
                                                 f"init multiplier {s.mults[1]:g})"
        lines += ["", f"#### {s.arm}, {s.horizon} steps{tuned}", "",
                  f"![{s.arm} {s.horizon}]({os.path.relpath(png, md_path.parent)})", "",
                  "| width | argmin lr | shift (steps) | best loss | loss at transferred lr | regret | SP best | vs SP | "
                  f"noise ({NOISE_SIGMAS:g} sd) | verdict | trial seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in s.rows:
            lines.append(f"| {r['width']} | {_f(r['argmin_lr'], '.3g')}{' (edge)' if r['on_edge'] else ''} | "
                         f"{_f(r['shift_steps'], '+.1f')} | {_f(r['best_loss'])} | {_f(r['transfer_loss'])} | "
                         f"{_f(r['regret'], '+.4f')} | {_f(r['sp_best'])} | {_f(r['vs_sp_pct'], '+.2f')} % | "
                         f"±{_f(r['noise_pct'], '.2f')} % | {r['verdict']} | {r['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    md_path.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    ap.add_argument("--arms", default=None, help="comma-separated subset of the scale's arms")
    ap.add_argument("--horizons", default=None, help="comma-separated steps, overriding the scale's")
    ap.add_argument("--widths", default=None, help="comma-separated widths, overriding the scale's")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, overriding the scale's (results are kept "
                                                  "per seed, so adding one reruns only its trials)")
    ap.add_argument("--results", default=None, help="JSONL of trials (appended; existing trials are skipped)")
    ap.add_argument("--md", default=None, help="write the report here (default: docs/transfer/<scale>.md)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--pack", type=int, default=1, help="train up to this many trials of one width as one pack")
    ap.add_argument("--concurrent-widths", action="store_true",
                    help="sweep every wider width in one round, centred by the shorter horizon's shifts (for a GPU "
                         "with room for many packs)")
    ap.add_argument("--gpus", default="", help="comma-separated GPU indices; the workers take them round robin")
    ap.add_argument("--grid-points", type=int, default=None, help="points of each first grid, overriding the scale's")
    ap.add_argument("--transfer-only", default=None,
                    help="comma-separated arms run at the wider widths only at the transferred LR, overriding the "
                         "scale's ('' for none: their grids are then added to a finished study)")
    ap.add_argument("--centre-from", default=None,
                    help="another study's results (JSONL) whose optima centre this one's first grids: the base width "
                         "on its base optimum, the wider widths by its shifts (edges are still extended, so this "
                         "changes the number of rounds, not the answer)")
    ap.add_argument("--backend", default="auto", choices=BACKENDS, help="the gated delta rule's backend (gdn.ops)")
    ap.add_argument("--data", default="builtin", help="the corpus of every arm (gdn.spec.DataSpec.source)")
    ap.add_argument("--tokenizer", default="bytes", help="a tokenizer.json (or tiktoken file) for a text --data")
    ap.add_argument("--vocab-size", type=int, default=None, help="the vocab of a .bin/.npy --data")
    ap.add_argument("--token-dtype", choices=["uint16", "uint32"], default=None, help="the ids' type in a .bin")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--card", default=None, help="the card the results came from (for --report-only elsewhere)")
    args = ap.parse_args(argv)

    scale = SCALES[args.scale]
    if args.arms:
        scale = dataclasses.replace(scale, arms=tuple(args.arms.split(",")))
    if args.horizons:
        scale = dataclasses.replace(scale, horizons=tuple(int(x) for x in args.horizons.split(",")))
    if args.widths:
        scale = dataclasses.replace(scale, widths=tuple(int(x) for x in args.widths.split(",")))
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(int(x) for x in args.seeds.split(",")))
    if args.grid_points:
        scale = dataclasses.replace(scale, grid_points=args.grid_points)
    if args.transfer_only is not None:
        scale = dataclasses.replace(scale, transfer_only=tuple(a for a in args.transfer_only.split(",") if a))
    data = DataSpec(args.data, args.vocab_size, tokenizer=args.tokenizer, token_dtype=args.token_dtype)
    scale = dataclasses.replace(scale, data=data, vocab_size=vocab_of(data))
    repo = Path(__file__).resolve().parents[1]
    results = Path(args.results or repo / "docs" / "transfer" / f"{args.scale}.jsonl")
    results.parent.mkdir(parents=True, exist_ok=True)
    md = Path(args.md or repo / "docs" / "transfer" / f"{args.scale}.md")
    prior = read_records(Path(args.centre_from)) if args.centre_from else []
    try:
        study = Study(scale, results, args.workers, args.threads, args.pack, args.concurrent_widths,
                      tuple(g for g in args.gpus.split(",") if g), args.backend, prior)
    except ValueError as e:
        ap.error(str(e))
    vocabs = {r.get("vocab_size", 256) for r in study.records}
    if vocabs - {scale.vocab_size} and not args.report_only:
        ap.error(f"{results} holds trials at vocab {sorted(vocabs)}, not {scale.vocab_size}: give another --results")
    start = time.time()
    if not args.report_only:
        study.run_study()
    wall = time.time() - start
    import torch
    card = args.card or (torch.cuda.get_device_name() if torch.cuda.is_available()
                         else f"CPU ({platform.processor() or 'x86_64'}, {os.cpu_count()} cores)")
    header = (f"### Scale `{args.scale}`: widths {list(scale.widths)}, depth {scale.depth}, seq {scale.seq_len}, "
              f"batch {scale.batch_size}, horizons {list(scale.horizons)}, seeds {list(scale.seeds)}, "
              f"vocab {', '.join(map(str, sorted(vocabs))) if args.report_only and vocabs else scale.vocab_size} "
              + (f"(data {scale.data.source}, ids already tokenized)" if scale.data.pretokenized
                 else f"(data {scale.data.source}, tokenizer {scale.data.tokenizer})")
              + (f", at the transferred LR only beyond the base: {', '.join(scale.transfer_only)}"
                 if scale.transfer_only else "") + "\n\n"
              f"Card: {card}. Date: {time.strftime('%Y-%m-%d')}. Trials: {len(study.records)}. "
              f"Trial time: {sum(r['seconds'] for r in study.records) / 3600:.1f} h in all (packed trials counted "
              f"as their share of the pack). Wall time of this invocation: {wall:.0f} s.\n"
              f"Command: `python benchmarks/transfer.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    print(write_report(study.records, md, md.parent / "plots", header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
