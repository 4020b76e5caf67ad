"""Issue #16, D1 and D9: work is never lost. The database re-drives a trial whose message the broker lost, a claim
that meets a database outage is retried instead of acknowledged away, and a redelivered task for a trial of a dead
worker reclaims it. Real worker processes on the real PostgreSQL and Redis, no mocks."""
from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from service.models import Job, JobState, Trial, TrialState
from service.queue import make_celery
from service.settings import Settings
from helpers import delete_redis_queue, refuse_connections, settings_from_env, tiny_job, wait_for
from worker_helpers import AUTH, assert_every_point_once, job_state, logs, trials_of

RECOVERY_TIMEOUT = 120


@contextmanager
def connections_refused(database_url: str):
    refuse_connections(database_url, True)
    try:
        yield
    finally:
        refuse_connections(database_url, False)


def test_default_bounds_notice_a_dead_worker_within_30_seconds():
    s = Settings(_env_file=None)
    assert s.stale_after_seconds + s.reaper_interval_seconds <= 30, (s.stale_after_seconds, s.reaper_interval_seconds)
    assert s.stale_after_seconds > 2 * s.heartbeat_seconds


@pytest.mark.integration
@pytest.mark.slow
def test_trials_whose_messages_the_broker_lost_are_sent_again(deployment, workers):
    """D1: Redis restarted without persistence: the queued messages are gone, the trials PENDING and marked sent."""
    client, sessions, env = deployment
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=AUTH).json()["id"]
    assert all(t.enqueued_at is not None for t in trials_of(sessions, job_id))
    delete_redis_queue(env["DELTAMU_BROKER_URL"], env["DELTAMU_QUEUE"])       # what `shutdown nosave` loses
    worker = workers({**env, "DELTAMU_REDRIVE_AFTER_SECONDS": "2"}, "redrive")
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, RECOVERY_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    trials = assert_every_point_once(sessions, job_id, 3, 30)
    assert [t.attempt for t in trials] == [1, 1, 1]


@pytest.mark.integration
@pytest.mark.slow
def test_a_claim_that_meets_a_database_outage_is_retried(deployment, workers):
    """D1: the worker takes the queued task while the database is down; the claim fails and must be retried, not
    acknowledged away. The re-drive is pushed out of reach, so only the retry can save the trial."""
    client, sessions, env = deployment
    job_id = client.post("/v1/jobs", json=tiny_job(lr_grid={"values": [0.01]}), headers=AUTH).json()["id"]
    env = {**env, "DELTAMU_REDRIVE_AFTER_SECONDS": "3600"}
    with connections_refused(env["DELTAMU_DATABASE_URL"]):
        worker = workers(env, "outage")
        wait_for(lambda: "OperationalError" in worker.log(), 90, what="the claim to meet the outage",
                 on_timeout=lambda: logs(worker))
        time.sleep(2)
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, RECOVERY_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    (trial,) = assert_every_point_once(sessions, job_id, 1, 30)
    assert trial.attempt == 1


@pytest.mark.integration
@pytest.mark.slow
def test_a_redelivered_task_reclaims_the_trial_of_a_dead_worker(deployment, workers):
    """D9: the task of a trial still RUNNING under a worker whose heartbeat went stale is delivered again (Redis
    redelivers it, or someone resends it): it takes the trial over as a new attempt instead of skipping it. The
    reaper is kept out of the way (one pass at start-up, before the heartbeat is stale)."""
    client, sessions, env = deployment
    env = {**env, "DELTAMU_REAPER_INTERVAL_SECONDS": "3600"}
    job_id = client.post("/v1/jobs", json=tiny_job(lr_grid={"values": [0.01]}), headers=AUTH).json()["id"]
    delete_redis_queue(env["DELTAMU_BROKER_URL"], env["DELTAMU_QUEUE"])       # delivered by hand below
    worker = workers(env, "heir")
    wait_for(lambda: " ready." in worker.log(), 90, what="the worker to start", on_timeout=lambda: logs(worker))
    time.sleep(1)                                                              # its first reaper pass is done
    (trial,) = trials_of(sessions, job_id)
    now = dt.datetime.now(dt.timezone.utc)
    with sessions.begin() as s:                                                # a worker took it, then died
        s.execute(sa.update(Trial).where(Trial.id == trial.id).values(
            state=TrialState.RUNNING, worker="ghost@elsewhere:1", started_at=now, heartbeat_at=now))
        s.execute(sa.update(Job).where(Job.id == job_id).values(state=JobState.RUNNING, started_at=now))
    time.sleep(float(env["DELTAMU_STALE_AFTER_SECONDS"]) + 1)                   # its heartbeat is stale now
    make_celery(settings_from_env(env)).send_task("deltamu.run_trial", args=[trial.id], queue=env["DELTAMU_QUEUE"])
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, 90, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    first, retry = assert_every_point_once(sessions, job_id, 1, 30)
    assert first.state == TrialState.FAILED and first.retried and "ghost@elsewhere:1" in first.error
    assert retry.attempt == 2 and retry.retry_of == first.id and retry.state == TrialState.COMPLETED
