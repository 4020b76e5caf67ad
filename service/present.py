"""ORM rows -> the API's public types (non-finite floats become null plus a `nonfinite` flag)."""
from __future__ import annotations

from gdn.corpus import known_train_tokens
from gdn.recommend import data_warnings
from gdn.spec import SweepConfig
from service import floats
from service.crud import TrialSummary
from service.models import JOB_TERMINAL, CurvePoint, Job, JobState, Trial, utcnow
from service.schemas import (BestSoFarPublic, CurvePointPublic, JobLinks, JobPublic, OptimumPublic, TransferPublic,
                             TrialCounts, TrialPublic, WidthTransferPublic)

_OPTIMUM_FLOATS = ("lr", "log2_lr", "loss", "log2_lr_std", "grid_lr", "near_best_lr_min", "near_best_lr_max")


def job_links(job_id: str) -> JobLinks:
    base = f"/v1/jobs/{job_id}"
    return JobLinks(self=base, trials=f"{base}/trials", recommendation=f"{base}/recommendation?width={{width}}",
                    plot=f"{base}/plot.png", cancel=f"{base}/cancel")


def optimum_public(stored: dict | None) -> OptimumPublic | None:
    if stored is None:
        return None
    optimum = floats.decode(stored)
    values, flags = floats.to_public({k: optimum.get(k) for k in _OPTIMUM_FLOATS})
    per_seed, seed_flags = floats.to_public({str(k): v for k, v in optimum.get("per_seed_lr", {}).items()})
    flags.update({f"per_seed_lr.{k}": v for k, v in seed_flags.items()})
    return OptimumPublic(**values, on_edge=optimum["on_edge"], warnings=optimum.get("warnings", []),
                         per_seed_lr=per_seed, nonfinite=flags)


def transfer_public(stored: dict | None) -> TransferPublic | None:
    """gdn's TransferSummary as stored; its floats are finite or None by construction, but for the optima."""
    if stored is None:
        return None
    transfer = floats.decode(stored)
    widths = [WidthTransferPublic(**{**w, "optimum": optimum_public(w["optimum"])}) for w in transfer["widths"]]
    return TransferPublic(**{**transfer, "widths": widths})


def data_regime(job: Job) -> tuple[SweepConfig, int | None, int | None]:
    """A job's sweep config, its corpus's training tokens (None: not known here without reading it) and the
    target's vocabulary (target_config's; None: not given)."""
    config = SweepConfig.from_dict(job.sweep_config)
    target_vocab = ((job.spec or {}).get("target_config") or {}).get("vocab_size")
    return config, known_train_tokens(config.data), target_vocab


def job_public(job: Job, summary: TrialSummary, queue_position: int | None = None) -> JobPublic:
    # steps, not trials: a horizon sweep's trials differ in length; an extension round adds trials (and steps)
    progress = 1.0 if job.state in JOB_TERMINAL else min(
        (summary.finished_steps + summary.running_steps) / max(summary.planned_steps, 1), 1.0)
    end = job.finished_at or (None if job.started_at is None else utcnow())
    elapsed = (end - job.started_at).total_seconds() if job.started_at and end else None
    config, train_tokens, target_vocab = data_regime(job)
    # every current trial's own steps (a horizon sweep's differ; an extension round adds trials)
    tokens_total = summary.planned_steps * config.schedule.batch_size * config.schedule.seq_len
    rate = summary.tokens_trained / elapsed if elapsed and summary.tokens_trained else None
    # the grid's remaining share at the throughput measured so far (a diverged trial stops early: its share is done)
    eta = (1.0 - progress) * tokens_total / rate if rate and job.state == JobState.RUNNING else None
    best = None if summary.best is None else BestSoFarPublic(
        width=summary.best[0], lr=summary.best[1], seed=summary.best[2], loss=summary.best[3])
    return JobPublic(
        id=job.id, state=job.state, created_at=job.created_at, updated_at=job.updated_at,
        started_at=job.started_at, finished_at=job.finished_at, elapsed_seconds=elapsed,
        trial_seconds=summary.trial_seconds, progress=progress,
        widths=job.widths, trials=TrialCounts(total=job.num_points, by_state=summary.counts, retries=summary.retries),
        optimum=optimum_public(job.optimum), transfer=transfer_public(job.transfer),
        horizon=floats.decode(job.horizon) if job.horizon else None, extend_rounds=job.extend_rounds or 0,
        error=job.error, warnings=data_warnings(config, train_tokens, target_vocab), spec_sha256=job.spec_sha256,
        spec=job.spec,
        links=job_links(job.id), queue_position=queue_position if job.state == JobState.QUEUED else None,
        best_so_far=best, tokens_trained=summary.tokens_trained, tokens_total=tokens_total, tokens_per_second=rate,
        eta_seconds=eta, loss_unit=config.data.loss_unit)


def point_public(p: CurvePoint) -> CurvePointPublic:
    values, flags = floats.to_public({"loss": p.loss, "grad_norm": p.grad_norm})
    return CurvePointPublic(step=p.step, tokens=p.tokens, lr=p.lr, seconds=p.seconds, nonfinite=flags, **values)


def trial_public(t: Trial, points: list[CurvePoint], curve_truncated: bool = False) -> TrialPublic:
    values, flags = floats.to_public({"final_val_loss": t.final_val_loss})
    return TrialPublic(
        id=t.id, point=t.point, width=t.width, lr=t.lr, seed=t.seed, steps=t.steps, attempt=t.attempt, retry_of=t.retry_of, retried=t.retried,
        state=t.state, worker=t.worker, started_at=t.started_at, heartbeat_at=t.heartbeat_at,
        finished_at=t.finished_at, diverged_step=t.diverged_step, reason=t.reason, error=t.error,
        tokens=t.tokens, seconds=t.seconds, num_params=t.num_params, device=t.device, data_sha256=t.data_sha256,
        backend=t.backend, trainer=t.trainer, cuda_graphs=t.cuda_graphs,
        nonfinite=flags, curve=[point_public(p) for p in points], curve_truncated=curve_truncated, **values)
