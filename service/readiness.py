"""What /readyz checks: the database is reachable and at the Alembic head, the broker is reachable (a round trip
to its storage). Each check answers {"ok": bool, "detail": str, ...} and never raises. It also reports the
backlog (the work waiting for a worker), which informs but never makes the service "not ready": a long queue is
normal, and only workers can drain it."""
from __future__ import annotations

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.db import transaction
from service.migrate import current_revision, head_revision
from service.models import utcnow
from service.queue import queue_depth
from service.settings import Settings

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
    try:     # a round trip to the broker's storage (Redis LLEN, or a query of the SQL broker's tables)
        depth = queue_depth(celery, queue, BROKER_TIMEOUT_SECONDS)
    except Exception as e:
        return {"ok": False, "detail": f"unreachable ({type(e).__name__}: {e})"}
    return {"ok": True, "detail": "reachable", "queue": queue, "messages": depth}


def check_backlog(sessions: sessionmaker[Session], settings: Settings) -> dict:
    """The PENDING trials that were sent and not claimed yet, and how long the oldest has waited since its last
    send; beyond redrive_after_seconds the workers' reaper sends it again if the broker lost its message. Always
    ok (where the database answers): waiting is how a queue works."""
    try:
        with transaction(sessions) as session:
            backlog = crud.backlog(session)
    except Exception as e:
        return {"ok": True, "detail": f"unknown ({type(e).__name__}: {e})"}
    now, bound = utcnow(), settings.redrive_after_seconds
    waited = None if backlog.oldest_sent_at is None else round((now - backlog.oldest_sent_at).total_seconds(), 1)
    oldest = (None if backlog.oldest_created_at is None
              else round((now - backlog.oldest_created_at).total_seconds(), 1))
    overdue = waited is not None and waited > bound
    detail = ("nothing waiting" if waited is None else
              f"{backlog.sent} trial(s) waiting, the oldest unclaimed for {waited:.0f} s since sent"
              + (f": beyond the re-drive bound ({bound:.0f} s); workers resend it if the broker lost it"
                 if overdue else ""))
    return {"ok": True, "detail": detail, "waiting": backlog.sent, "oldest_unclaimed_seconds": waited,
            "oldest_pending_seconds": oldest, "redrive_after_seconds": bound, "beyond_redrive_bound": overdue}
