"""POST /v1/jobs behind the route: idempotency, opt-in reuse of a finished identical job, create, enqueue.

Idempotency (draft-ietf-httpapi-idempotency-key-header): the key, the request's hash and the first answer are
stored in the transaction that creates the job. Same key + same body -> that answer again; same key + another
body -> 422. Two concurrent requests with one key: the second's insert of the key conflicts, it rolls back (its
job with it) and replays the first's answer.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fastapi.encoders import jsonable_encoder
from sqlalchemy.exc import IntegrityError

from service import crud
from service.db import transaction
from service.jobspec import canonical_sha256, prepare
from service.models import utcnow
from service.present import job_public
from service.problems import RETRY_AFTER_SECONDS, ProblemError
from service.queue import BrokerUnavailable, enqueue_trials, ensure_broker
from service.schemas import JobCreate

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str]


def submit_job(state, *, principal_key: str, token_id: int | None, key: str | None, body: JobCreate) -> Answer:
    settings = state.settings
    request_sha256 = canonical_sha256(body.model_dump(mode="json"))
    since = utcnow() - dt.timedelta(hours=settings.idempotency_ttl_hours)
    if key is not None:
        with transaction(state.sessions) as session:
            replay = _replay(session, principal_key, key, request_sha256, since)
        if replay is not None:
            return replay
    prepared = prepare(body, settings)
    try:     # a send that fails later is resent by the reaper; a broker down now is said now, with nothing stored
        ensure_broker(state.celery)
    except BrokerUnavailable as e:
        raise ProblemError(503, "broker-unavailable", "Broker unavailable",
                           f"the job queue cannot be reached ({e}); retry later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    trial_ids: list[int] = []
    try:
        with transaction(state.sessions) as session:
            existing = crud.find_reusable_job(session, spec_sha256=prepared.spec_sha256) if body.reuse else None
            if existing is not None:
                job, status = existing, 200
            else:
                job = crud.create_job(session, spec=prepared.spec, sweep_config=prepared.sweep_config,
                                      spec_sha256=prepared.spec_sha256, widths=prepared.widths, grid=prepared.grid,
                                      steps=prepared.steps, created_by=token_id)
                trial_ids = [t.id for t in job.trials]
                status = 202
            summary = crud.trial_summaries(session, job_ids=[job.id])[job.id]
            answer = Answer(status, jsonable_encoder(job_public(job, summary,
                                                                crud.queue_positions(session, jobs=[job]).get(job.id))),
                            {"Location": f"/v1/jobs/{job.id}", "Retry-After": "5"} if status == 202
                            else {"Location": f"/v1/jobs/{job.id}"})
            if key is not None:
                crud.save_idempotency_record(session, principal=principal_key, key=key,
                                             request_sha256=request_sha256, job_id=job.id, status_code=answer.status,
                                             response=answer.body, headers=answer.headers)
    except IntegrityError:
        if key is None:
            raise
        with transaction(state.sessions) as session:   # a concurrent request with this key won the insert
            replay = _replay(session, principal_key, key, request_sha256, since)
        if replay is None:
            raise ProblemError(409, "idempotency-key-in-use", "Idempotency-Key in use",
                               "a request with this key is in progress; retry later") from None
        return replay
    if trial_ids:
        enqueue_trials(state.celery, state.sessions, settings.queue, trial_ids)
    return answer


def _replay(session, principal_key: str, key: str, request_sha256: str, since: dt.datetime) -> Answer | None:
    record = crud.get_idempotency_record(session, principal=principal_key, key=key, since=since)
    if record is None:
        return None
    if record.request_sha256 != request_sha256:
        raise ProblemError(422, "idempotency-key-reused", "Idempotency-Key reused",
                           "this Idempotency-Key was already used with a different request body")
    return Answer(record.status_code, record.response, {**record.headers, REPLAYED_HEADER: "true"})
