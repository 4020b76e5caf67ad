"""RFC 9457 problem+json for every error: our own (ProblemError), HTTP errors raised by Starlette (unknown route,
wrong method, a body too large), request validation (422; 400 for a body that is not JSON), the database out of
reach (503 with Retry-After), and anything unexpected (500)."""
from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://deltamu.dev/problems/"   # stable identifiers, documented in docs/api.md
log = logging.getLogger("deltamu.api")
RETRY_AFTER_SECONDS = 5       # what a 503 asks the client to wait
# Errors that say the database is down or out of connections (not that a query is wrong): 503, not 500.
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
_HTTP_PROBLEMS = {400: ("malformed-json", "Malformed JSON body"),     # FastAPI: a body it could not parse at all
                  404: (None, "Not Found"), 405: (None, "Method Not Allowed"),
                  413: ("body-too-large", "Content Too Large")}


UNKNOWN_FIELD = ("extra_forbidden", "unexpected_keyword_argument")   # pydantic models; the gdn.spec dataclasses


def field_names(tp, path: list) -> list[str]:
    """The field names a request body of type `tp` accepts at `path` (keys and list indices), for "did you mean";
    [] where the path leads to no model or dataclass."""
    for key in [*path, None]:
        while typing.get_origin(tp) in (typing.Union, types.UnionType, list, dict):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if not args:
                return []
            tp = args[-1]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {name: f.annotation for name, f in tp.model_fields.items()}
        elif dataclasses.is_dataclass(tp):
            fields = typing.get_type_hints(tp)
        else:
            return []
        if key is None:
            return list(fields)
        if not isinstance(key, int):
            if key not in fields:
                return []
            tp = fields[key]
    return []


class ProblemError(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers, self.extra = headers or {}, extra


def problem_response(request: Request, status: int, slug: str | None, title: str, detail: str | None = None,
                     headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    body = {"type": TYPE_BASE + slug if slug else "about:blank", "title": title, "status": status,
            "detail": detail, "instance": request.url.path, **extra}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def http_problem(request: Request, status: int, detail: str | None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """A Starlette HTTP error (unknown route, wrong method, a body too large) as a problem."""
    slug, title = _HTTP_PROBLEMS.get(status, (None, "HTTP error"))
    return problem_response(request, status, slug, title, detail, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else None
        return http_problem(request, exc.status_code, detail, getattr(exc, "headers", None))

    async def _database_down(request: Request, exc: Exception):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(request, 503, "database-unavailable", "Database unavailable",
                                "the database cannot be reached; retry later",
                                {"Retry-After": str(RETRY_AFTER_SECONDS)})

    for error in DATABASE_DOWN:
        app.exception_handler(error)(_database_down)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(request, 400, "malformed-json", "Malformed JSON body",
                                    "the request body is not valid JSON", errors=errors)
        body_field = getattr(request.scope.get("route"), "body_field", None)
        body_type = body_field.field_info.annotation if body_field is not None else None
        for e in errors:
            if e["type"] in UNKNOWN_FIELD and e["loc"][:1] == ["body"] and body_type is not None:
                close = difflib.get_close_matches(str(e["loc"][-1]), field_names(body_type, e["loc"][1:-1]), n=3)
                if close:
                    e["did_you_mean"] = close
                    e["msg"] += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "validation-error", "Invalid request", detail, errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal-error", "Internal server error",
                                "an unexpected error occurred; it has been logged")
