"""Celery tasks: thin glue from a queued trial to gdn.train and back to the database. Tasks take ids only,
re-read state from the database, and are idempotent: a duplicate delivery finds the trial claimed and returns."""
from __future__ import annotations

import os

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready

from gdn.train import SweepConfig, TrialCancelled, TrialSpec, train_trial
from service import crud
from service.db import transaction
from service.queue import enqueue_trials
from service.settings import get_settings
from worker import reaper
from worker.celery_app import app
from worker.runtime import Heartbeat, log, sessions


@app.task(name="deltamu.run_trial", bind=True, ignore_result=True)
def run_trial(self, trial_id: int) -> str:
    settings = get_settings()
    worker = f"{self.request.hostname}:{os.getpid()}"
    with transaction(sessions()) as session:
        claimed = crud.claim_trial(session, trial_id=trial_id, worker=worker)
    if claimed is None:
        log.info("trial %s not claimable (duplicate delivery, taken, or job cancelled): skipped", trial_id)
        return "skipped"

    def store_point(point) -> None:
        with transaction(sessions()) as session:
            crud.append_point(session, trial_id=trial_id, worker=worker, point=vars(point))

    retry_id, outcome = None, "failed"
    try:
        spec = TrialSpec(config=SweepConfig.from_dict(claimed.sweep_config), lr=claimed.lr, seed=claimed.seed,
                         device=settings.device)
        with Heartbeat(trial_id, worker, settings.heartbeat_seconds) as beat:
            result = train_trial(spec, progress=store_point, should_stop=beat.should_stop,
                                 log_every=claimed.spec["log_every"])
        with transaction(sessions()) as session:
            crud.finish_trial(session, trial_id=trial_id, worker=worker, result=result.to_dict())
        outcome = result.status
    except TrialCancelled:
        with transaction(sessions()) as session:
            crud.stop_trial(session, trial_id=trial_id, worker=worker)
        outcome = "cancelled"
    except Exception as e:  # an infrastructure error: FAILED, retried as a new attempt while attempts remain
        log.exception("trial %s failed", trial_id)
        timed_out = isinstance(e, SoftTimeLimitExceeded)    # it would time out again: no retry
        with transaction(sessions()) as session:
            retry_id = crud.fail_trial(session, trial_id=trial_id, worker=worker, error=f"{type(e).__name__}: {e}",
                                       max_attempts=0 if timed_out else settings.max_attempts)
    if retry_id is not None:
        enqueue_trials(app, sessions(), settings.queue, [retry_id])
    return outcome


@app.task(name="deltamu.reap", ignore_result=True)
def reap() -> int:
    """One reaper pass, for deployments that prefer Celery beat to the worker's reaper thread."""
    return reaper.reap_once(app)


@worker_ready.connect
def _start_reaper(sender=None, **_) -> None:
    reaper.start_thread(app)
