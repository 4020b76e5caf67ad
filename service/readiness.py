"""What /readyz checks: the database is reachable and at the Alembic head, the broker is reachable (a round trip
to its storage). Each check answers {"ok": bool, "detail": str, ...} and never raises."""
from __future__ import annotations

from celery import Celery
from sqlalchemy import Engine

from service.migrate import current_revision, head_revision

BROKER_TIMEOUT_SECONDS = 2.0


def check_database(engine: Engine) -> dict:
    try:
        current, head = current_revision(engine), head_revision()
    except Exception as e:
        return {"ok": False, "detail": f"unreachable ({type(e).__name__}: {e})"}
    if current != head:
        return {"ok": False, "detail": f"schema at {current}, head is {head}: run `alembic upgrade head`",
                "revision": current, "head": head}
    return {"ok": True, "detail": "at head", "revision": current}


def check_broker(celery: Celery, queue: str) -> dict:
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
            # a round trip to the broker's storage (Redis LLEN, or a query of the SQL broker's tables)
            _, depth, _ = conn.default_channel.queue_declare(queue=queue, passive=False)
    except Exception as e:
        return {"ok": False, "detail": f"unreachable ({type(e).__name__}: {e})"}
    return {"ok": True, "detail": "reachable", "queue": queue, "messages": depth}
