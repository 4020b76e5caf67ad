"""The reaper: RUNNING trials whose heartbeat went stale belong to a dead worker; they are FAILED and requeued as
a new attempt (bounded by max_attempts). It also resends PENDING trials whose task was never sent and drops
expired idempotency keys. Every worker's main process runs it in a thread; passes are idempotent, so several
workers reaping at once only repeat each other."""
from __future__ import annotations

import datetime as dt
import logging
import threading

from celery import Celery

from service import crud
from service.db import transaction
from service.models import utcnow
from service.queue import enqueue_trials
from service.settings import get_settings
from worker.runtime import sessions

log = logging.getLogger("deltamu.reaper")


def reap_once(app: Celery) -> int:
    """One pass; returns how many tasks it sent."""
    settings = get_settings()
    now = utcnow()
    with transaction(sessions()) as session:
        retries = crud.reap(session, stale_before=now - dt.timedelta(seconds=settings.stale_after_seconds),
                            max_attempts=settings.max_attempts)
        unsent = crud.unenqueued_trials(session, created_before=now - dt.timedelta(seconds=settings.heartbeat_seconds))
        crud.delete_expired_idempotency(session, before=now - dt.timedelta(hours=settings.idempotency_ttl_hours))
    if retries:
        log.warning("requeued %d trial(s) of dead workers as new attempts: %s", len(retries), retries)
    to_send = sorted(set(retries) | set(unsent))
    return len(enqueue_trials(app, sessions(), settings.queue, to_send)) if to_send else 0


def start_thread(app: Celery) -> threading.Thread:
    interval = get_settings().reaper_interval_seconds

    def loop() -> None:
        while True:
            try:
                reap_once(app)
            except Exception:
                log.exception("reaper pass failed; trying again in %.0f s", interval)
            threading.Event().wait(interval)

    thread = threading.Thread(target=loop, name="deltamu-reaper", daemon=True)
    thread.start()
    return thread
