"""Reading a deployment's database from the worker tests (real PostgreSQL or SQLite rows, no API in between)."""
from __future__ import annotations

import sqlalchemy as sa

from service.models import CurvePoint, Job, JobState, Trial
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
