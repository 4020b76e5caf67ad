"""/v1/jobs: submit, list, read, trials, cancel."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service import crud
from service.api.deps import PROBLEMS, IdempotencyKeyDep, Reader, SessionDep, SettingsDep, Writer, load_job
from service.models import Job, JobState
from service.present import job_public, trial_public
from service.problems import ProblemError
from service.schemas import JobCreate, JobList, JobPublic, TrialList
from service.submit import submit_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, response_model=JobPublic, responses=PROBLEMS,
             summary="Submit a tuning job (202 + Location; 200 when an identical finished job is reused)")
def create_job(request: Request, body: JobCreate, principal: Writer, key: IdempotencyKeyDep) -> JSONResponse:
    answer = submit_job(request.app.state, principal_key=principal.key, token_id=principal.token_id, key=key,
                        body=body)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=JobList, responses=PROBLEMS, summary="List jobs, newest first (cursor pagination)")
def list_jobs(session: SessionDep, settings: SettingsDep, _: Reader, state: JobState | None = None,
              limit: Annotated[int | None, Query(ge=1)] = None, cursor: str | None = None) -> JobList:
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    jobs = crud.list_jobs(session, state=state, limit=limit + 1, after=decode_cursor(cursor) if cursor else None)
    page = jobs[:limit]
    summaries = crud.trial_summaries(session, job_ids=[j.id for j in page])
    next_cursor = encode_cursor(page[-1]) if len(jobs) > limit else None
    return JobList(items=[job_public(j, summaries[j.id]) for j in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=PROBLEMS, summary="A job: state, counts, optimum")
def get_job(job_id: str, session: SessionDep, _: Reader) -> JobPublic:
    job = load_job(session, job_id)
    return job_public(job, crud.trial_summaries(session, job_ids=[job.id])[job.id])


@router.get("/{job_id}/trials", response_model=TrialList, responses=PROBLEMS,
            summary="Every attempt of every trial with its curve (or the points after ?after_step=)")
def list_trials(job_id: str, session: SessionDep, _: Reader,
                after_step: Annotated[int | None, Query(ge=0)] = None) -> TrialList:
    load_job(session, job_id)
    trials = crud.list_trials(session, job_id=job_id)
    points = crud.curve_points(session, trial_ids=[t.id for t in trials], after_step=after_step)
    return TrialList(job_id=job_id, items=[trial_public(t, points[t.id]) for t in trials])


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=PROBLEMS,
             summary="Cancel: pending trials at once, running ones at their next heartbeat")
def cancel_job(job_id: str, session: SessionDep, _: Writer) -> JobPublic:
    try:
        job = crud.cancel_job(session, job_id=job_id)
    except crud.JobFinished as e:
        raise ProblemError(409, "job-finished", "Job already finished", str(e)) from None
    if job is None:
        raise ProblemError(404, "job-not-found", "Job not found", f"no job with id {job_id!r}")
    session.commit()
    return job_public(job, crud.trial_summaries(session, job_ids=[job.id])[job.id])


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created = dt.datetime.fromisoformat(created)
        if created.tzinfo is None or not isinstance(job_id, str):
            raise ValueError
        return created, job_id
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ProblemError(400, "invalid-cursor", "Invalid cursor", "pass the next_cursor of a previous page") \
            from None
