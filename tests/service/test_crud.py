"""The state machine in service.crud against the real databases (PostgreSQL and SQLite), rows asserted."""
from __future__ import annotations

import datetime as dt
import math
import threading

import pytest
import sqlalchemy as sa

from gdn.sweep import fit_optimum
from service import crud, floats
from service.db import transaction
from service.models import CurvePoint, Job, JobState, Trial, TrialState, utcnow

pytestmark = pytest.mark.integration

GRID = [(1e-3, 0), (4e-3, 0), (1.6e-2, 0)]


def new_job(sessions, grid=GRID) -> tuple[str, list[int]]:
    with transaction(sessions) as s:
        job = crud.create_job(s, spec={"log_every": 5}, sweep_config={}, spec_sha256="x" * 64, grid=grid,
                              steps=10, created_by=None)
        return job.id, [t.id for t in job.trials]


def result(loss: float, status: str = "COMPLETED") -> dict:
    return {"status": status, "final_val_loss": loss, "diverged_step": 3 if status == "DIVERGED" else None,
            "reason": "non-finite" if status == "DIVERGED" else None, "tokens": 100, "seconds": 1.5,
            "num_params": 1000, "device": "cpu", "data_sha256": "d" * 64}


def claim(sessions, trial_id, worker="w1"):
    with transaction(sessions) as s:
        return crud.claim_trial(s, trial_id=trial_id, worker=worker)


def finish(sessions, trial_id, loss, status="COMPLETED", worker="w1"):
    with transaction(sessions) as s:
        return crud.finish_trial(s, trial_id=trial_id, worker=worker, result=result(loss, status))


def job_row(sessions, job_id) -> Job:
    with sessions() as s:
        return s.get(Job, job_id)


def test_claim_is_conditional(sessions):
    job_id, (t1, *_) = new_job(sessions)
    first = claim(sessions, t1, "w1")
    assert first is not None and first.lr == GRID[0][0]
    assert claim(sessions, t1, "w2") is None                  # a duplicate delivery does nothing
    with sessions() as s:
        trial = s.get(Trial, t1)
        assert trial.state == TrialState.RUNNING and trial.worker == "w1"
        assert s.get(Job, job_id).state == JobState.RUNNING
    with transaction(sessions) as s:
        assert crud.heartbeat(s, trial_id=t1, worker="w2") is False   # not the owner
        assert crud.heartbeat(s, trial_id=t1, worker="w1") is True


def test_last_trial_fits_the_optimum(sessions):
    grid = GRID + [(6.4e-2, 0)]
    job_id, ids = new_job(sessions, grid)
    losses = [3.0, 2.5, 2.8, float("nan")]
    for i, trial_id in enumerate(ids):
        claim(sessions, trial_id)
        status = "DIVERGED" if math.isnan(losses[i]) else "COMPLETED"
        assert finish(sessions, trial_id, losses[i], status)
        expected_state = JobState.SUCCEEDED if i == len(ids) - 1 else JobState.RUNNING
        assert job_row(sessions, job_id).state == expected_state
    job = job_row(sessions, job_id)
    expected = fit_optimum([lr for lr, _ in grid], losses, [s for _, s in grid]).to_dict()
    assert floats.decode(job.optimum) == expected           # fitted once, stored exactly
    assert 4e-3 < expected["lr"] < 1.6e-2                  # a real parabola fit, inside the bracket
    assert job.finished_at is not None
    # terminal states never change: a late write is a no-op
    assert finish(sessions, ids[0], 1.0) is False
    with sessions() as s:
        assert s.get(Trial, ids[0]).final_val_loss == 3.0


def test_nonfinite_values_round_trip(sessions):
    job_id, (t1, *_) = new_job(sessions)
    claim(sessions, t1)
    points = [{"step": 1, "tokens": 64, "loss": float("nan"), "lr": 1e-3, "grad_norm": float("inf"), "seconds": .1},
              {"step": 2, "tokens": 128, "loss": float("-inf"), "lr": 1e-3, "grad_norm": 2.0, "seconds": .2}]
    with transaction(sessions) as s:
        for p in points + points[:1]:                       # the repeated step is ignored
            assert crud.append_point(s, trial_id=t1, worker="w1", point=p)
    finish(sessions, t1, float("nan"), "DIVERGED")
    with sessions() as s:
        stored = s.scalars(sa.select(CurvePoint).where(CurvePoint.trial_id == t1).order_by(CurvePoint.step)).all()
        assert len(stored) == 2
        assert math.isnan(stored[0].loss) and stored[0].grad_norm == math.inf
        assert stored[1].loss == -math.inf
        trial = s.get(Trial, t1)
        assert trial.state == TrialState.DIVERGED and math.isnan(trial.final_val_loss)


def test_point_of_a_trial_not_ours_is_refused(sessions):
    _, (t1, *_) = new_job(sessions)
    claim(sessions, t1, "w1")
    with transaction(sessions) as s:
        assert not crud.append_point(s, trial_id=t1, worker="w2", point={
            "step": 1, "tokens": 1, "loss": 1.0, "lr": 1.0, "grad_norm": 1.0, "seconds": 1.0})


def test_reaper_requeues_a_dead_workers_trial_as_a_new_attempt(sessions):
    job_id, (t1, t2, t3) = new_job(sessions)
    claim(sessions, t1, "dead")
    future = utcnow() + dt.timedelta(seconds=1)
    with transaction(sessions) as s:
        retries = crud.reap(s, stale_before=future, max_attempts=2)
    assert len(retries) == 1
    with sessions() as s:
        old, new = s.get(Trial, t1), s.get(Trial, retries[0])
        assert old.state == TrialState.FAILED and old.retried and "dead" in old.error
        assert (new.state, new.attempt, new.retry_of, new.point) == (TrialState.PENDING, 2, t1, old.point)
    # the second attempt dies too: no attempts left, the grid point stays FAILED
    claim(sessions, retries[0], "dead-again")
    with transaction(sessions) as s:
        assert crud.reap(s, stale_before=utcnow() + dt.timedelta(seconds=1), max_attempts=2) == []
    for trial_id, loss in ((t2, 2.0), (t3, 2.5)):
        claim(sessions, trial_id)
        finish(sessions, trial_id, loss)
    job = job_row(sessions, job_id)
    assert job.state == JobState.SUCCEEDED          # the fit runs on what finished, with a warning
    assert any("failed after 2 attempt" in w for w in job.optimum["warnings"])
    with sessions() as s:
        summary = crud.trial_summaries(s, job_ids=[job_id])[job_id]
    assert summary.counts["FAILED"] == 1 and summary.counts["COMPLETED"] == 2 and summary.retries == 1


def test_fresh_heartbeat_is_not_reaped(sessions):
    _, (t1, *_) = new_job(sessions)
    claim(sessions, t1)
    with transaction(sessions) as s:
        assert crud.reap(s, stale_before=utcnow() - dt.timedelta(seconds=60), max_attempts=3) == []


def test_every_trial_diverged_fails_the_job(sessions):
    job_id, ids = new_job(sessions, grid=[(1.0, 0), (2.0, 0)])
    for trial_id in ids:
        claim(sessions, trial_id)
        finish(sessions, trial_id, float("nan"), "DIVERGED")
    job = job_row(sessions, job_id)
    assert job.state == JobState.FAILED and "diverged" in job.error and job.optimum is None


def test_cancel(sessions):
    job_id, (t1, t2, t3) = new_job(sessions)
    claim(sessions, t1)
    with transaction(sessions) as s:
        job = crud.cancel_job(s, job_id=job_id)
        assert job.state == JobState.CANCELLING            # t1 is still running
    with transaction(sessions) as s:
        assert crud.heartbeat(s, trial_id=t1, worker="w1") is False   # the worker is told to stop
    assert claim(sessions, t2) is None                      # cancelled trials cannot be claimed
    with transaction(sessions) as s:
        assert crud.stop_trial(s, trial_id=t1, worker="w1")
    with sessions() as s:
        assert s.get(Job, job_id).state == JobState.CANCELLED
        assert {t.state for t in s.scalars(sa.select(Trial).where(Trial.job_id == job_id))} == {TrialState.CANCELLED}
    with transaction(sessions) as s, pytest.raises(crud.JobFinished):
        crud.cancel_job(s, job_id=job_id)


def test_concurrent_finishes_settle_the_job_exactly_once(sessions, any_env):
    """Two workers finish the last two trials at the same moment, many times over: the job always ends
    SUCCEEDED (never stuck RUNNING because each thought the other was still running)."""
    for _ in range(5):
        job_id, ids = new_job(sessions, grid=[(1e-3, 0), (4e-3, 0), (1.6e-2, 0)])
        for i, trial_id in enumerate(ids):
            claim(sessions, trial_id, f"w{i}")
        finish(sessions, ids[0], 3.0, worker="w0")
        barrier = threading.Barrier(2)
        errors = []

        def run(trial_id, loss, worker):
            try:
                barrier.wait()
                finish(sessions, trial_id, loss, worker=worker)
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(ids[1], 2.0, "w1")),
                   threading.Thread(target=run, args=(ids[2], 2.5, "w2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        job = job_row(sessions, job_id)
        assert job.state == JobState.SUCCEEDED and job.optimum is not None
