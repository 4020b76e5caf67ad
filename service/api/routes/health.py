"""Liveness, readiness (database at the Alembic head, broker reachable; the backlog reported), Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.problems import problem_response
from service.readiness import check_backlog, check_broker, check_database

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database at the Alembic head and broker reachable (503 otherwise)")
def readyz(request: Request) -> Response:
    state = request.app.state
    checks = {"database": check_database(state.engine), "broker": check_broker(state.celery, state.settings.queue),
              "backlog": check_backlog(state.sessions, state.settings)}     # informs; never "not ready"
    if all(c["ok"] for c in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"])
    return problem_response(request, 503, "not-ready", "Not ready", failing, checks=checks)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
