"""The re-drive's parts in service.crud and /readyz, against the real databases (PostgreSQL and SQLite): a stale
RUNNING trial taken over by a redelivered claim (D9), the overdue PENDING trials and the backlog (D1)."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from service import crud
from service.db import transaction
from service.models import Trial, TrialState, utcnow
from helpers import tiny_job

pytestmark = pytest.mark.integration


def new_job(sessions, points=3) -> list[int]:
    with transaction(sessions) as s:
        job = crud.create_job(s, spec={"log_every": 5}, sweep_config={}, spec_sha256="x" * 64, widths=[64],
                              grid=[(64, 1e-3 * (i + 1), 0) for i in range(points)], steps=10, created_by=None)
        return [t.id for t in job.trials]


def test_a_claim_takes_over_a_trial_whose_worker_is_dead(sessions):
    (trial_id,) = new_job(sessions, points=1)
    with transaction(sessions) as s:
        assert crud.claim_trial(s, trial_id=trial_id, worker="dead") is not None
    now = utcnow()
    with transaction(sessions) as s:                        # the live worker's trial is not taken
        assert crud.claim_trial(s, trial_id=trial_id, worker="heir", stale_before=now - dt.timedelta(seconds=20),
                                max_attempts=3) is None
    with transaction(sessions) as s:                        # once its heartbeat is stale, it is
        claimed = crud.claim_trial(s, trial_id=trial_id, worker="heir", stale_before=now + dt.timedelta(seconds=1),
                                   max_attempts=3)
    assert claimed is not None and claimed.trial_id != trial_id and claimed.attempt == 2
    with sessions() as s:
        old, new = s.get(Trial, trial_id), s.get(Trial, claimed.trial_id)
        assert old.state == TrialState.FAILED and old.retried and "worker dead lost" in old.error
        assert new.state == TrialState.RUNNING and new.worker == "heir" and new.retry_of == trial_id
    with transaction(sessions) as s:                        # the same redelivery again: nothing left to take
        assert crud.claim_trial(s, trial_id=trial_id, worker="heir2", stale_before=utcnow(), max_attempts=3) is None


def test_overdue_trials_and_the_backlog(sessions):
    ids = new_job(sessions)
    with transaction(sessions) as s:
        assert crud.backlog(s).sent == 0 and crud.overdue_trials(s, sent_before=utcnow()) == []
        crud.mark_enqueued(s, trial_ids=ids)
    long_ago = utcnow() - dt.timedelta(minutes=10)
    with transaction(sessions) as s:
        s.execute(sa.update(Trial).where(Trial.id.in_(ids[:2])).values(enqueued_at=long_ago))
        s.execute(sa.update(Trial).where(Trial.id == ids[0]).values(enqueued_at=long_ago - dt.timedelta(seconds=1)))
    with transaction(sessions) as s:
        assert crud.overdue_trials(s, sent_before=utcnow() - dt.timedelta(seconds=60)) == ids[:2]   # oldest first
        backlog = crud.backlog(s)
        assert backlog.sent == 3 and backlog.oldest_sent_at < long_ago
    with transaction(sessions) as s:
        assert crud.claim_trial(s, trial_id=ids[0], worker="w") is not None
    with transaction(sessions) as s:
        assert crud.overdue_trials(s, sent_before=utcnow() - dt.timedelta(seconds=60)) == ids[1:2]


def test_readyz_reports_the_backlog_without_turning_not_ready(any_env, make_client, sessions, auth):
    client = make_client(any_env)
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["checks"]["backlog"]["waiting"] == 0
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]
    fresh = client.get("/readyz").json()["checks"]["backlog"]
    assert fresh["waiting"] == 3 and not fresh["beyond_redrive_bound"] and fresh["oldest_unclaimed_seconds"] < 60
    with transaction(sessions) as s:
        s.execute(sa.update(Trial).where(Trial.job_id == job_id).values(enqueued_at=utcnow() - dt.timedelta(hours=1)))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    stuck = r.json()["checks"]["backlog"]
    assert stuck["beyond_redrive_bound"] and stuck["oldest_unclaimed_seconds"] >= 3600, stuck
    assert "beyond the re-drive bound" in stuck["detail"]


def finish(sessions, trial_id: int, loss: float, worker: str = "w") -> tuple[bool, list[int]]:
    result = {"status": "COMPLETED", "final_val_loss": loss}
    with transaction(sessions) as s:
        return crud.finish_trial(s, trial_id=trial_id, worker=worker, result=result), crud.new_trial_ids(s)


def test_an_edge_optimum_extends_the_grid_once_per_round_and_a_redelivery_adds_nothing(sessions):
    """The last result of a sweep whose best lr is its largest adds two lrs above it (the grid's spacing) exactly
    once, under the job lock; its re-delivered write changes nothing; the new trials are left unsent for the
    reaper when the sender dies; after max_extend_rounds the job settles with the count."""
    with transaction(sessions) as s:
        job = crud.create_job(s, spec={"log_every": 5, "max_extend_rounds": 1}, sweep_config={}, spec_sha256="x" * 64,
                              widths=[64], grid=[(64, 1e-3 * 2 ** i, 0) for i in range(3)], steps=10,
                              created_by=None)
        job_id, ids = job.id, [t.id for t in job.trials]
    for i, trial_id in enumerate(ids):
        with transaction(sessions) as s:
            assert crud.claim_trial(s, trial_id=trial_id, worker="w") is not None
        done, new = finish(sessions, trial_id, 3.0 - i)                  # the largest lr is best
        assert done and (new == [] if i < 2 else len(new) == 2)
    assert finish(sessions, ids[-1], 1.0) == (False, [])                  # the same write again: nothing
    with transaction(sessions) as s:
        job = crud.get_job(s, job_id=job_id)
        added = [t for t in job.trials if t.id in new]
        assert job.state.value == "RUNNING" and job.extend_rounds == 1 and job.num_points == 5
        assert sorted(t.lr for t in added) == pytest.approx([8e-3, 1.6e-2]) and {t.point for t in added} == {3, 4}
        assert sorted(crud.unenqueued_trials(s, created_before=utcnow())) == sorted(new)   # the reaper's backstop
        assert crud.trial_summaries(s, job_ids=[job_id])[job_id].planned_steps == 50
    for k, trial_id in enumerate(sorted(new)):
        with transaction(sessions) as s:
            assert crud.claim_trial(s, trial_id=trial_id, worker="w") is not None
        assert finish(sessions, trial_id, 0.5 - k)[1] == []              # still on the edge, but no rounds left
    with transaction(sessions) as s:
        job = crud.get_job(s, job_id=job_id)
        assert job.state.value == "SUCCEEDED" and job.extend_rounds == 1 and len(job.trials) == 5
        assert job.optimum["on_edge"] and job.optimum["lr"] == pytest.approx(1.6e-2)
