"""RFC 9457 problem+json for every error: our own (ProblemError), HTTP errors raised by Starlette (unknown route,
wrong method), request validation (422; 400 for a body that is not JSON), and anything unexpected (500)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://deltamu.dev/problems/"   # stable identifiers, documented in docs/api.md
log = logging.getLogger("deltamu.api")


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


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(request, exc.status_code, None, title, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(request, 400, "malformed-json", "Malformed JSON body",
                                    "the request body is not valid JSON", errors=errors)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "validation-error", "Invalid request", detail, errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal-error", "Internal server error",
                                "an unexpected error occurred; it has been logged")
