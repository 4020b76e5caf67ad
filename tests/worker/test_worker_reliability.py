"""A real `celery worker` process on the real PostgreSQL and Redis: duplicate deliveries, a worker killed with
SIGKILL mid-trial, cancellation of a running job. No eager mode, no mocks."""
from __future__ import annotations

import signal

import pytest
from fastapi.testclient import TestClient

from service.db import make_engine, make_session_factory
from service.main import create_app
from service.models import JobState, TrialState
from helpers import settings_from_env, tiny_job, wait_for
from service.queue import make_celery
from worker_helpers import AUTH, JOB_TIMEOUT, job_state, logs, steps_of, trials_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_duplicate_delivery_runs_the_trial_once(deployment, workers):
    client, sessions, env = deployment
    job_id = client.post("/v1/jobs", json=tiny_job(lr_grid={"values": [0.01]}), headers=AUTH).json()["id"]
    (trial,) = trials_of(sessions, job_id)
    make_celery(settings_from_env(env)).send_task("deltamu.run_trial", args=[trial.id], queue=env["DELTAMU_QUEUE"])
    worker = workers(env, "dup")
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    wait_for(lambda: "not claimable" in worker.log(), 60, what="the duplicate to be skipped",
             on_timeout=lambda: logs(worker))
    (trial,) = trials_of(sessions, job_id)
    assert trial.state == TrialState.COMPLETED and trial.attempt == 1
    steps = steps_of(sessions, trial.id)
    assert steps == sorted(set(steps)) and steps[-1] == 30        # one curve, complete, no duplicate points


def test_worker_killed_mid_trial_is_replaced(deployment, workers):
    client, sessions, env = deployment
    job = tiny_job(lr_grid={"values": [0.004, 0.016]}, schedule={"steps": 100, "warmup_steps": 10, "batch_size": 2,
                                                                   "seq_len": 32}, log_every=2)
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    first = workers(env, "doomed")

    def running_with_points():
        running = [t for t in trials_of(sessions, job_id) if t.state == TrialState.RUNNING]
        return running and len(steps_of(sessions, running[0].id)) >= 2 and running[0]

    victim = wait_for(running_with_points, JOB_TIMEOUT, what="a trial in the middle of training",
                      on_timeout=lambda: logs(first))
    first.kill(signal.SIGKILL)                         # the worker and its pool child, no warm shutdown
    assert next(t for t in trials_of(sessions, job_id) if t.id == victim.id).state == TrialState.RUNNING
    second = workers(env, "fresh")
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(first, second))

    trials = trials_of(sessions, job_id)
    results = [t for t in trials if t.state in (TrialState.COMPLETED, TrialState.DIVERGED)]
    assert sorted(t.point for t in results) == [0, 1]                 # every grid point exactly once
    killed = next(t for t in trials if t.id == victim.id)
    assert killed.state == TrialState.FAILED and killed.retried and "lost" in killed.error
    retry = next(t for t in trials if t.retry_of == killed.id)
    assert retry.attempt == 2 and retry.point == killed.point and retry in results
    assert len(trials) == 3
    for t in results:
        steps = steps_of(sessions, t.id)
        assert steps == sorted(set(steps))
        assert t.state == TrialState.DIVERGED or steps[-1] == 100


def test_cancel_stops_a_running_job(deployment, workers):
    client, sessions, env = deployment
    job = tiny_job(schedule={"steps": 5000, "warmup_steps": 10, "batch_size": 2, "seq_len": 32}, log_every=2)
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    worker = workers(env, "busy")
    running = wait_for(lambda: next((t for t in trials_of(sessions, job_id) if t.state == TrialState.RUNNING
                                     and steps_of(sessions, t.id)), None),
                       JOB_TIMEOUT, what="a running trial", on_timeout=lambda: logs(worker))
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] in ("CANCELLING", "CANCELLED")
    wait_for(lambda: job_state(sessions, job_id) == JobState.CANCELLED, 60, what="job CANCELLED",
             on_timeout=lambda: logs(worker))
    trials = trials_of(sessions, job_id)
    assert {t.state for t in trials} == {TrialState.CANCELLED}
    stopped = next(t for t in trials if t.id == running.id)
    assert 0 < steps_of(sessions, stopped.id)[-1] < 5000                # stopped part-way, not run to the end
    assert all(not steps_of(sessions, t.id) for t in trials if t.id != running.id)
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "CANCELLED"


def test_infrastructure_failures_are_retried_then_fail_the_job(sqlite_env, tmp_path, workers):
    """On the embedded backend (SQLite + kombu's SQL transport): a trial whose data vanished after submission
    fails on the worker, is retried as new attempts up to max_attempts, and the job ends FAILED with the reason."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 2000)
    env = {**sqlite_env, "DELTAMU_ALLOWED_DATA_DIRS": str(tmp_path), "DELTAMU_MAX_ATTEMPTS": "2"}
    settings = settings_from_env(env)
    engine = make_engine(settings.db_url)
    sessions = make_session_factory(engine)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/jobs", json=tiny_job(lr_grid={"values": [0.01]}, data={"source": str(corpus)}),
                        headers=AUTH)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        corpus.unlink()
        worker = workers(env, "unlucky")
        wait_for(lambda: job_state(sessions, job_id) == JobState.FAILED, JOB_TIMEOUT, what="job FAILED",
                 on_timeout=lambda: logs(worker))
        trials = trials_of(sessions, job_id)
        assert [(t.attempt, t.state) for t in trials] == [(1, TrialState.FAILED), (2, TrialState.FAILED)]
        assert trials[0].retried and not trials[1].retried and trials[1].retry_of == trials[0].id
        assert "does not exist" in trials[1].error
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "FAILED" and "failed after 2 attempt" in job["error"]
        assert job["trials"]["retries"] == 1 and job["trials"]["by_state"]["FAILED"] == 1
    engine.dispose()
