"""A JobCreate -> what gdn and the database need: the SweepConfig, the (lr, seed) grid, the spec hash, and the
deployment's limits checked with the reason spelled out. Pure: no database, no torch computation."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gdn.data import BYTE_VOCAB
from gdn.model import count_params, train_flops_per_token
from gdn.parametrization import PARAMETRIZATION_VERSION
from gdn.sweep import lr_grid
from gdn.train import SweepConfig

from service.schemas import JobCreate
from service.settings import Settings

SPEC_VERSION = 1      # bump when the meaning of a stored spec changes: identical specs then stop being reused


class JobRejected(ValueError):
    """The job is valid JSON but cannot run here; the message says why."""


@dataclass
class PreparedJob:
    spec: dict                  # the request, normalised: defaults filled, `reuse` dropped
    sweep_config: dict          # SweepConfig.to_dict()
    grid: list[tuple[float, int]]
    spec_sha256: str
    steps: int


def canonical_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prepare(job: JobCreate, settings: Settings) -> PreparedJob:
    spec = job.model_dump(mode="json", exclude={"reuse"})
    model = dict(spec["model"])
    if model.get("vocab_size") is None:
        model["vocab_size"] = job.data.vocab_size or BYTE_VOCAB
    _check_data_source(job.data.source, settings)
    grid_size = (len(job.lr_grid.values) if job.lr_grid.values is not None else job.lr_grid.count) * len(job.seeds)
    if grid_size > settings.max_trials:     # before building the grid
        raise JobRejected(f"{grid_size} trials (learning rates x seeds) exceed the limit of {settings.max_trials}")
    try:
        config = SweepConfig.from_dict({
            "model": model, "parametrization": job.parametrization, "readout": job.readout,
            "output_mult": job.output_mult, "optimizer": spec["optimizer"], "schedule": spec["schedule"],
            "data": spec["data"], "eval_batches": job.eval_batches})
        lrs = (list(job.lr_grid.values) if job.lr_grid.values is not None
               else lr_grid(job.lr_grid.min, job.lr_grid.max, job.lr_grid.count))
    except (ValueError, TypeError) as e:
        raise JobRejected(str(e)) from None
    grid = [(lr, seed) for lr in lrs for seed in job.seeds]
    _check_limits(config, len(grid), settings)
    sweep_config = config.to_dict()
    digest = canonical_sha256({"spec_version": SPEC_VERSION, "parametrization_version": PARAMETRIZATION_VERSION,
                               "sweep_config": sweep_config, "grid": grid, "log_every": job.log_every})
    return PreparedJob(spec=spec, sweep_config=sweep_config, grid=grid, spec_sha256=digest,
                       steps=config.schedule.steps)


def _check_data_source(source: str, settings: Settings) -> None:
    if source == "builtin":
        return
    path = Path(source).resolve()
    roots = [Path(r).resolve() for r in settings.allowed_data_dirs]
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none (set DELTAMU_ALLOWED_DATA_DIRS)"
        raise JobRejected(f"data source {source!r} is not under an allowed data directory; allowed: {allowed}")
    if not path.exists():
        raise JobRejected(f"data source {source!r} does not exist on the server")


def _check_limits(config: SweepConfig, num_trials: int, settings: Settings) -> None:
    sched, model = config.schedule, config.model
    checks = [
        (num_trials <= settings.max_trials,
         f"{num_trials} trials (learning rates x seeds) exceed the limit of {settings.max_trials}"),
        (sched.steps <= settings.max_steps, f"{sched.steps} steps exceed the limit of {settings.max_steps}"),
        (model.width <= settings.max_proxy_width,
         f"proxy width {model.width} exceeds the limit of {settings.max_proxy_width}"),
        (model.depth <= settings.max_depth, f"depth {model.depth} exceeds the limit of {settings.max_depth}"),
        (sched.batch_size * sched.seq_len <= settings.max_tokens_per_step,
         f"batch_size x seq_len = {sched.batch_size * sched.seq_len} tokens per step exceed the limit of "
         f"{settings.max_tokens_per_step}: the proxy would not fit in memory"),
    ]
    for ok, reason in checks:
        if not ok:
            raise JobRejected(reason)
    params = count_params(config.model_at(model.width))
    if params > settings.max_proxy_params:
        raise JobRejected(f"the proxy has {params:.3g} parameters, above the limit of {settings.max_proxy_params:.3g}")
    flops = num_trials * sched.steps * sched.batch_size * sched.seq_len * train_flops_per_token(model)
    if flops > settings.max_job_flops:
        raise JobRejected(f"the job needs about {flops:.3g} training FLOPs, above the limit of "
                          f"{settings.max_job_flops:.3g} (days of GPU time): use fewer steps, trials or tokens")
