"""Reading a deployment's database from the worker tests (real PostgreSQL or SQLite rows, no API in between)."""
from __future__ import annotations

import sqlalchemy as sa

from service.models import CurvePoint, Job, JobState, Trial, TrialState
from helpers import TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
JOB_TIMEOUT = 240     # seconds; generous: the CI machine has 2 cores shared with other work


def trials_of(sessions, job_id) -> list[Trial]:
    with sessions() as s:
        return list(s.scalars(sa.select(Trial).where(Trial.job_id == job_id).order_by(Trial.point, Trial.attempt)))


def job_state(sessions, job_id) -> JobState:
    with sessions() as s:
        return s.get(Job, job_id).state


def steps_of(sessions, trial_id) -> list[int]:
    with sessions() as s:
        return list(s.scalars(sa.select(CurvePoint.step).where(CurvePoint.trial_id == trial_id)
                              .order_by(CurvePoint.step)))


def logs(*procs) -> str:
    return "\n".join(f"--- {p.log_path.name}\n{p.log()[-4000:]}" for p in procs)


def assert_every_point_once(sessions, job_id, points: int, steps: int, report: str = "") -> list[Trial]:
    """Every grid point has exactly one result (COMPLETED or DIVERGED), complete, and no curve point of the job is
    stored twice; returns all the job's attempts. `report` leads every failure message."""
    trials = trials_of(sessions, job_id)
    results = [t for t in trials if t.state in (TrialState.COMPLETED, TrialState.DIVERGED)]
    assert sorted(t.point for t in results) == list(range(points)), \
        f"{report}\n{[(t.point, t.attempt, t.state.value) for t in trials]}"
    for t in results:
        got = steps_of(sessions, t.id)
        assert t.state == TrialState.DIVERGED or got[-1:] == [steps], f"{report}: trial {t.id} ends at {got[-1:]}"
    with sessions() as s:
        dupes = s.execute(sa.select(CurvePoint.trial_id, CurvePoint.step).join(Trial, Trial.id == CurvePoint.trial_id)
                          .where(Trial.job_id == job_id).group_by(CurvePoint.trial_id, CurvePoint.step)
                          .having(sa.func.count() > 1)).all()
    assert not dupes, f"{report}: curve points stored twice {dupes}"
    return trials
