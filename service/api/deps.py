"""Request dependencies: settings, a session, the caller (bearer token), the Idempotency-Key header; and what the
routers share: a job by its id (or 404) and the problem responses they document."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Iterator

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from service import crud
from service.auth import match_token, sync_settings_tokens
from service.models import Job, TokenScope
from service.problems import ProblemError
from service.schemas import Problem
from service.settings import Settings

IDEMPOTENCY_KEY_MAX = 255
PROBLEMS = {code: {"model": Problem, "content": {"application/problem+json": {}}}
            for code in (400, 401, 403, 404, 409, 422)}


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    token_id: int | None          # None: an anonymous reader
    scope: TokenScope | None = None

    @property
    def key(self) -> str:
        return "anonymous" if self.token_id is None else f"token:{self.token_id}"


def _authenticate(request: Request, session: Session, authorization: str | None, needed: TokenScope) -> Principal:
    unauthorized = {"WWW-Authenticate": 'Bearer realm="deltamu"'}
    if not authorization:
        raise ProblemError(401, "unauthorized", "Authentication required",
                           "send 'Authorization: Bearer <token>'", headers=unauthorized)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(401, "unauthorized", "Authentication required",
                           "the Authorization header must be 'Bearer <token>'", headers=unauthorized)
    sync_settings_tokens(request.app.state)
    match = match_token(token.strip(), crud.active_tokens(session))
    if match is None:
        raise ProblemError(401, "invalid-token", "Invalid token", "the bearer token is not valid (or revoked)",
                           headers={"WWW-Authenticate": 'Bearer realm="deltamu", error="invalid_token"'})
    token_id, scope = match
    if not scope.allows(needed):
        raise ProblemError(403, "insufficient-scope", "Insufficient scope",
                           f"this needs a {needed.value} token; this token's scope is {scope.value}",
                           headers={"WWW-Authenticate": f'Bearer realm="deltamu", error="insufficient_scope", '
                                                        f'scope="{needed.value}"'})
    return Principal(token_id, scope)


def writer(request: Request, session: SessionDep,
           authorization: Annotated[str | None, Header()] = None) -> Principal:
    return _authenticate(request, session, authorization, TokenScope.WRITE)


def reader(request: Request, session: SessionDep, settings: SettingsDep,
           authorization: Annotated[str | None, Header()] = None) -> Principal:
    if settings.auth_reads or authorization:
        return _authenticate(request, session, authorization, TokenScope.READ)
    return Principal(None)


def idempotency_key(idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> str | None:
    if idempotency_key is None:
        return None
    key = idempotency_key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise ProblemError(400, "invalid-idempotency-key", "Invalid Idempotency-Key",
                           f"the key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters")
    return key


Writer = Annotated[Principal, Depends(writer)]
Reader = Annotated[Principal, Depends(reader)]
IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]


def load_job(session: Session, job_id: str) -> Job:
    job = crud.get_job(session, job_id=job_id)
    if job is None:
        raise ProblemError(404, "job-not-found", "Job not found", f"no job with id {job_id!r}")
    return job
