"""/v1/jobs: submit, list, read, trials, cancel."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Annotated, Awaitable, Callable, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import crud
from service.api.deps import (PROBLEMS, IdempotencyKeyDep, Reader, SessionDep, SettingsDep, Writer, load_job,
                              writer)
from service.models import JobState
from service.present import job_public, trial_public
from service.problems import ProblemError
from service.schemas import INT32_MAX, JobCreate, JobList, JobPublic, TrialList
from service.submit import submit_job


class AuthenticateFirst(APIRoute):
    """A route with a body authenticates its writer before the body is read: FastAPI reads and parses a body
    before it solves any dependency, so an anonymous 50 MB body would be parsed only to be answered 401."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def authenticate_then_handle(request: Request) -> Response:
            await run_in_threadpool(_authenticate_writer, request)    # raises the 401 problem
            return await handle(request)
        return authenticate_then_handle


def _authenticate_writer(request: Request) -> None:
    with request.app.state.sessions() as session:
        writer(request, session, request.headers.get("authorization"))


router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=AuthenticateFirst)
SUBMIT_PROBLEMS = {**PROBLEMS, 413: PROBLEMS[422], 503: PROBLEMS[422]}   # a body too large; database or broker down
T = TypeVar("T")


@router.post("", status_code=202, response_model=JobPublic, responses=SUBMIT_PROBLEMS,
             summary="Submit a tuning job (202 + Location; 200 when an identical finished job is reused)")
def create_job(request: Request, body: JobCreate, principal: Writer, key: IdempotencyKeyDep) -> JSONResponse:
    answer = submit_job(request.app.state, principal_key=principal.key, token_id=principal.token_id, key=key,
                        body=body)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=JobList, responses=PROBLEMS, summary="List jobs, newest first (cursor pagination)")
def list_jobs(session: SessionDep, settings: SettingsDep, _: Reader, state: JobState | None = None,
              limit: Annotated[int | None, Query(ge=1)] = None, cursor: str | None = None) -> JobList:
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    jobs = crud.list_jobs(session, state=state, limit=limit + 1,
                          after=decode_cursor(cursor, _job_key) if cursor else None)
    page = jobs[:limit]
    summaries = crud.trial_summaries(session, job_ids=[j.id for j in page])
    next_cursor = encode_cursor([page[-1].created_at.isoformat(), page[-1].id]) if len(jobs) > limit else None
    positions = crud.queue_positions(session, jobs=page)
    return JobList(items=[job_public(j, summaries[j.id], positions.get(j.id)) for j in page],
                   next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=PROBLEMS, summary="A job: state, counts, optimum")
def get_job(job_id: str, session: SessionDep, _: Reader) -> JobPublic:
    job = load_job(session, job_id)
    return job_public(job, crud.trial_summaries(session, job_ids=[job.id])[job.id],
                      crud.queue_positions(session, jobs=[job]).get(job.id))


@router.get("/{job_id}/trials", response_model=TrialList, responses=PROBLEMS,
            summary="Every attempt of every trial with its curve, by grid point (cursor pagination; the points "
                    "after ?after_step=, at most ?curve_limit= per trial)")
def list_trials(job_id: str, session: SessionDep, settings: SettingsDep, _: Reader,
                after_step: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
                limit: Annotated[int | None, Query(ge=1)] = None, cursor: str | None = None,
                curve_limit: Annotated[int | None, Query(ge=1)] = None) -> TrialList:
    load_job(session, job_id)
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    curve_limit = min(curve_limit or settings.curve_page_default, max(settings.max_page_points // limit, 1))
    trials = crud.list_trials(session, job_id=job_id, limit=limit + 1,
                              after=decode_cursor(cursor, _trial_key) if cursor else None)
    page = trials[:limit]
    points = crud.curve_points(session, trial_ids=[t.id for t in page], after_step=after_step,
                               limit_per_trial=curve_limit + 1)
    next_cursor = encode_cursor([page[-1].point, page[-1].attempt]) if len(trials) > limit else None
    return TrialList(job_id=job_id, next_cursor=next_cursor,
                     items=[trial_public(t, points[t.id][:curve_limit], len(points[t.id]) > curve_limit)
                            for t in page])


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


def encode_cursor(values: list) -> str:
    """An opaque page cursor: the sort key of a page's last row."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parse: Callable[[list], T]) -> T:
    """The sort key back, `parse` checking its parts; any failure is a 400 invalid-cursor."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list):
            raise ValueError
        return parse(values)
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise ProblemError(400, "invalid-cursor", "Invalid cursor", "pass the next_cursor of a previous page") \
            from None


def _job_key(values: list) -> tuple[dt.datetime, str]:
    created, job_id = values
    created = dt.datetime.fromisoformat(created)
    if created.tzinfo is None or not isinstance(job_id, str):
        raise ValueError
    return created.astimezone(dt.timezone.utc), job_id     # OverflowError at the ends of the calendar


def _trial_key(values: list) -> tuple[int, int]:
    point, attempt = values
    if not all(type(v) is int and 0 <= v <= INT32_MAX for v in (point, attempt)):
        raise ValueError
    return point, attempt
