"""The state machine in service.crud against the real databases (PostgreSQL and SQLite), rows asserted."""
from __future__ import annotations

import datetime as dt
import math
import threading

import pytest
import sqlalchemy as sa

from gdn.fit import fit_optimum
from service import crud, floats
from service.db import transaction
from service.models import CurvePoint, Job, JobState, Trial, TrialState, utcnow

pytestmark = pytest.mark.integration

GRID = [(1e-3, 0), (4e-3, 0), (1.6e-2, 0)]


WIDTH = 64


def new_job(sessions, grid=GRID, widths=(WIDTH,)) -> tuple[str, list[int]]:
    """A job of `grid` (lr, seed) at every width of `widths`."""
    with transaction(sessions) as s:
        job = crud.create_job(s, spec={"log_every": 5}, sweep_config={}, spec_sha256="x" * 64, widths=list(widths),
                              grid=[(w, lr, seed) for w in widths for lr, seed in grid], steps=10, created_by=None)
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
        assert crud.heartbeat(s, trial_ids=[t1], worker="w2") is False   # not the owner
        assert crud.heartbeat(s, trial_ids=[t1], worker="w1") is True


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
        assert crud.heartbeat(s, trial_ids=[t1], worker="w1") is False   # the worker is told to stop
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


# --- packs and transfer studies ------------------------------------------------------------------------------

def test_pack_mates_are_claimed_by_the_same_conditional_update(sessions):
    """A worker that holds a trial claims more PENDING trials of its job at its width, in grid order, all with
    one start time; their own deliveries then find them taken. Other widths, other workers: nothing."""
    grid = [(1e-3, 0), (2e-3, 0), (4e-3, 0), (8e-3, 0)]
    job_id, ids = new_job(sessions, grid, widths=(64, 128))
    narrow, wide = ids[:4], ids[4:]
    assert claim(sessions, narrow[1], "w1")
    with sessions() as s:
        assert crud.count_pack_mates(s, trial_id=narrow[1]) == 3
        assert crud.count_width_points(s, trial_id=narrow[1]) == 4 == crud.count_width_points(s, trial_id=wide[0])
    with transaction(sessions) as s:
        assert crud.claim_pack_mates(s, trial_id=narrow[1], worker="w2", limit=3) == []   # not w2's trial
    with transaction(sessions) as s:
        mates = crud.claim_pack_mates(s, trial_id=narrow[1], worker="w1", limit=2)
    assert [m.trial_id for m in mates] == [narrow[0], narrow[2]] and {m.width for m in mates} == {64}
    assert [m.lr for m in mates] == [1e-3, 4e-3] and all(m.job_id == job_id for m in mates)
    assert claim(sessions, narrow[0], "w3") is None                    # the mate's own delivery does nothing
    with sessions() as s:
        rows = {t.id: t for t in s.scalars(sa.select(Trial).where(Trial.job_id == job_id))}
        assert crud.count_pack_mates(s, trial_id=narrow[1]) == 1
    assert {rows[t].state for t in narrow[:3]} == {TrialState.RUNNING}
    assert {rows[t].worker for t in narrow[:3]} == {"w1"} and rows[narrow[0]].started_at == rows[narrow[2]].started_at
    assert rows[narrow[3]].state == TrialState.PENDING
    assert {rows[t].state for t in wide} == {TrialState.PENDING}
    with transaction(sessions) as s:                                   # a cancelled job gives out nothing
        crud.cancel_job(s, job_id=job_id)
    with transaction(sessions) as s:
        assert crud.claim_pack_mates(s, trial_id=narrow[1], worker="w1", limit=3) == []


def test_one_heartbeat_covers_a_pack_and_the_reaper_requeues_all_of_a_dead_one(sessions):
    job_id, ids = new_job(sessions)
    claim(sessions, ids[0], "w1")
    with transaction(sessions) as s:
        crud.claim_pack_mates(s, trial_id=ids[0], worker="w1", limit=2)
    with transaction(sessions) as s:
        assert crud.heartbeat(s, trial_ids=ids, worker="w1") is True
        assert crud.heartbeat(s, trial_ids=ids, worker="w2") is False
    assert finish(sessions, ids[0], 3.0, worker="w1")                  # one result lands, the others go on
    with transaction(sessions) as s:
        assert crud.heartbeat(s, trial_ids=ids[1:], worker="w1") is True
    with transaction(sessions) as s:                                   # the worker dies
        retries = crud.reap(s, stale_before=utcnow() + dt.timedelta(seconds=1), max_attempts=3)
    assert len(retries) == 2
    with sessions() as s:
        new = [s.get(Trial, r) for r in retries]
        assert sorted((t.retry_of, t.attempt, t.state) for t in new) == [
            (ids[1], 2, TrialState.PENDING), (ids[2], 2, TrialState.PENDING)]
        assert {t.width for t in new} == {WIDTH}
        assert s.get(Trial, ids[0]).state == TrialState.COMPLETED
    with transaction(sessions) as s:
        assert crud.heartbeat(s, trial_ids=ids[1:], worker="w1") is False   # a late beat: told to stop


def test_a_transfer_study_settles_with_the_base_optimum_and_its_summary(sessions):
    from gdn.fit import grid_step_log2
    from gdn.transfer import transfer_summary
    grid = [(1e-3, 0), (2e-3, 0), (4e-3, 0), (8e-3, 0)]
    job_id, ids = new_job(sessions, grid, widths=(64, 128, 32))
    losses = {64: [3.0, 2.6, 2.7, 3.1], 128: [2.9, 2.5, 2.4, float("nan")], 32: [3.3, 3.0, 3.2, 3.4]}
    flat = [loss for w in (64, 128, 32) for loss in losses[w]]
    for trial_id, loss in zip(ids, flat):
        claim(sessions, trial_id)
        finish(sessions, trial_id, loss, "DIVERGED" if math.isnan(loss) else "COMPLETED")
    job = job_row(sessions, job_id)
    assert job.state == JobState.SUCCEEDED and job.widths == [64, 128, 32]
    lrs = [lr for lr, _ in grid]
    assert floats.decode(job.optimum) == fit_optimum(lrs, losses[64]).to_dict()     # the base width's own fit
    widths = [w for w in (64, 128, 32) for _ in grid]
    expected = transfer_summary(widths, lrs * 3, flat, [0] * 12, base_width=64, grid_step=grid_step_log2(lrs),
                                swept_widths=[64, 128, 32])
    assert floats.decode(job.transfer) == expected.to_dict()
    assert [w["width"] for w in job.transfer["widths"]] == [32, 64, 128]
    assert job.transfer["grid_step_log2"] == 1.0


def test_a_transfer_study_without_a_base_optimum_fails(sessions):
    job_id, ids = new_job(sessions, widths=(64, 128))
    for trial_id, loss in zip(ids, [math.nan] * 3 + [2.0, 1.9, 2.1]):
        claim(sessions, trial_id)
        finish(sessions, trial_id, loss, "DIVERGED" if math.isnan(loss) else "COMPLETED")
    job = job_row(sessions, job_id)
    assert job.state == JobState.FAILED and "diverged" in job.error and job.transfer is None
