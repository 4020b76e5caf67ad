"""Celery tasks: thin glue from a queued trial to gdn.train (or, packed with more trials of its job and width,
gdn.packed) and back to the database. Tasks take ids only, re-read state from the database, and are idempotent:
a duplicate delivery, or the delivery of a trial another task packed, finds the trial claimed and returns; the
delivery of a trial still RUNNING under a dead worker (its heartbeat stale) takes it over as a new attempt. A claim
that meets a database error is retried with backoff (Celery's retry), never acknowledged away."""
from __future__ import annotations

import datetime as dt
import os
from collections import Counter

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready

from gdn.spec import TrialCancelled
from gdn.train import run
from service import crud
from service.crud import ClaimedTrial
from service.db import transaction
from service.models import utcnow
from service.queue import RUN_TRIAL, enqueue_trials
from service.settings import Settings, get_settings
from worker import packing, reaper
from worker.celery_app import app
from worker.runtime import DATABASE_DOWN, Heartbeat, log, sessions, through_outage


@app.task(name=RUN_TRIAL, bind=True, ignore_result=True)
def run_trial(self, trial_id: int) -> str:
    settings = get_settings()
    worker = f"{self.request.hostname}:{os.getpid()}"
    try:
        with transaction(sessions()) as session:
            claimed = crud.claim_trial(session, trial_id=trial_id, worker=worker, max_attempts=settings.max_attempts,
                                       stale_before=utcnow() - dt.timedelta(seconds=settings.stale_after_seconds))
    except DATABASE_DOWN as e:  # retried, never acknowledged away; past the last retry the reaper re-drives it
        delay = min(2.0 ** self.request.retries, settings.claim_retry_max_delay_seconds)
        log.warning("trial %s: the claim met a database error (%s: %s); retry %d of %d in %.0f s", trial_id,
                    type(e).__name__, e, self.request.retries + 1, settings.claim_retries, delay)
        raise self.retry(exc=e, countdown=delay, max_retries=settings.claim_retries)
    if claimed is None:
        log.info("trial %s not claimable (duplicate delivery, packed by another task, taken, or job cancelled): "
                 "skipped", trial_id)
        return "skipped"
    if claimed.trial_id != trial_id:
        log.warning("trial %s was RUNNING under a worker whose heartbeat is stale: taken over as attempt %d "
                    "(trial %s)", trial_id, claimed.attempt, claimed.trial_id)

    trials, stored, retry_ids = [claimed], {}, []       # stored: trial id -> status, as results land
    try:
        with Heartbeat([claimed.trial_id], worker, settings.heartbeat_seconds) as beat:
            trials += packing.claim_mates(claimed, worker, settings)
            beat.add([t.trial_id for t in trials[1:]])
            _train(trials, worker, beat, stored, settings)
        outcome = ", ".join(f"{n} {status}" for status, n in Counter(stored.values()).items())
    except TrialCancelled:
        for t in trials:
            if t.trial_id not in stored:
                with transaction(sessions()) as session:
                    crud.stop_trial(session, trial_id=t.trial_id, worker=worker)
        outcome = "cancelled"
    except Exception as e:  # an infrastructure error: FAILED, retried as a new attempt while attempts remain
        log.exception("trial(s) %s failed", [t.trial_id for t in trials if t.trial_id not in stored])
        timed_out = isinstance(e, SoftTimeLimitExceeded)    # it would time out again: no retry
        for t in trials:
            if t.trial_id not in stored:
                with transaction(sessions()) as session:
                    retry_ids.append(crud.fail_trial(session, trial_id=t.trial_id, worker=worker,
                                                     error=f"{type(e).__name__}: {e}",
                                                     max_attempts=0 if timed_out else settings.max_attempts))
                    retry_ids += crud.new_trial_ids(session)     # the last one out may extend the grid
        outcome = "failed"
    retry_ids = [r for r in retry_ids if r is not None]
    if retry_ids:
        enqueue_trials(app, sessions(), settings.queue, retry_ids)
    return outcome


def _train(trials: list[ClaimedTrial], worker: str, beat: Heartbeat, stored: dict[int, str],
           settings: Settings) -> None:
    """Train the claimed trial, or the pack of them (gdn.train.run picks how). Every curve point and every result
    is stored as soon as it is known, a result also taking its trial out of the heartbeat."""
    specs = [packing.trial_spec(t, settings) for t in trials]

    def store_point(i: int, point) -> None:      # a repeated step is ignored: safe to write again
        def write():
            with transaction(sessions()) as session:
                crud.append_point(session, trial_id=trials[i].trial_id, worker=worker, point=vars(point))
        through_outage(write, settings.stale_after_seconds, f"trial {trials[i].trial_id}, step {point.step}")

    def store_result(i: int, result) -> None:    # conditional on RUNNING for this worker: safe to write again
        def write() -> list[int]:
            with transaction(sessions()) as session:
                crud.finish_trial(session, trial_id=trials[i].trial_id, worker=worker, result=result.to_dict())
                return crud.new_trial_ids(session)
        extension = through_outage(write, settings.stale_after_seconds, f"trial {trials[i].trial_id}, result")
        stored[trials[i].trial_id] = result.status
        beat.release(trials[i].trial_id)
        if extension:        # the last trial's result extended the grid past its edge: send the new trials
            log.info("job %s: the best lr is on a grid's edge; %d trial(s) added", trials[i].job_id, len(extension))
            enqueue_trials(app, sessions(), settings.queue, extension)

    if len(trials) > 1:
        log.info("trial %s: training a pack of %d trials %s (job %s, width %s)", trials[0].trial_id, len(trials),
                 [t.trial_id for t in trials], trials[0].job_id, trials[0].width)
    run(specs, progress=store_point, should_stop=beat.should_stop, log_every=trials[0].spec["log_every"],
        on_result=store_result)


@app.task(name="deltamu.reap", ignore_result=True)
def reap() -> int:
    """One reaper pass, for deployments that prefer Celery beat to the worker's reaper thread."""
    return reaper.reap_once(app)


@worker_ready.connect
def _start_reaper(sender=None, **_) -> None:
    reaper.start_thread(app)
