"""Liveness, readiness (database at the Alembic head, broker reachable), Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.migrate import current_revision, head_revision
from service.problems import problem_response

router = APIRouter(tags=["health"])
BROKER_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database at the Alembic head and broker reachable (503 otherwise)")
def readyz(request: Request) -> Response:
    state = request.app.state
    checks = {"database": _check_database(state), "broker": _check_broker(state)}
    if all(c["ok"] for c in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"])
    return problem_response(request, 503, "not-ready", "Not ready", failing, checks=checks)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


def _check_database(state) -> dict:
    try:
        current, head = current_revision(state.engine), head_revision()
    except Exception as e:
        return {"ok": False, "detail": f"unreachable ({type(e).__name__}: {e})"}
    if current != head:
        return {"ok": False, "detail": f"schema at {current}, head is {head}: run `alembic upgrade head`",
                "revision": current, "head": head}
    return {"ok": True, "detail": "at head", "revision": current}


def _check_broker(state) -> dict:
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
            # a round trip to the broker's storage (Redis LLEN, or a query of the SQL broker's tables)
            _, depth, _ = conn.default_channel.queue_declare(queue=state.settings.queue, passive=False)
    except Exception as e:
        return {"ok": False, "detail": f"unreachable ({type(e).__name__}: {e})"}
    return {"ok": True, "detail": "reachable", "queue": state.settings.queue, "messages": depth}
