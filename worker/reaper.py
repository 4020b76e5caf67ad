"""The reaper: the database re-drives the work, the way Optuna's storage does. Each pass
- FAILs the RUNNING trials whose heartbeat went stale (their worker is dead) and requeues each as a new attempt
  (bounded by max_attempts);
- sends the PENDING trials whose task was never sent (the sender died between commit and enqueue);
- re-drives lost messages: PENDING trials sent more than redrive_after_seconds ago and still unclaimed are sent
  again, the longest waiting first, as many as the broker holds fewer messages than trials wait (a broker that
  restarted without persistence holds none). A duplicate is harmless: the claim skips it;
- drops expired idempotency keys.
Every worker's main process runs it in a thread; passes are idempotent, so several workers reaping at once only
repeat each other."""
from __future__ import annotations

import datetime as dt
import logging
import threading

from celery import Celery

from service import crud
from service.db import transaction
from service.models import utcnow
from service.queue import enqueue_trials, queue_depth
from service.settings import get_settings
from worker.runtime import sessions

log = logging.getLogger("deltamu.reaper")
BROKER_TIMEOUT_SECONDS = 5.0


def reap_once(app: Celery) -> int:
    """One pass; returns how many tasks it sent."""
    settings = get_settings()
    now = utcnow()
    with transaction(sessions()) as session:
        retries = crud.reap(session, stale_before=now - dt.timedelta(seconds=settings.stale_after_seconds),
                            max_attempts=settings.max_attempts)
        retries += crud.new_trial_ids(session)     # a grid extended when a reaped trial settled its job
        unsent = crud.unenqueued_trials(session, created_before=now - dt.timedelta(seconds=settings.heartbeat_seconds))
        overdue = crud.overdue_trials(session, sent_before=now - dt.timedelta(seconds=settings.redrive_after_seconds))
        waiting = crud.backlog(session).sent if overdue else 0
        crud.delete_expired_idempotency(session, before=now - dt.timedelta(hours=settings.idempotency_ttl_hours))
    if retries:
        log.warning("requeued %d trial(s) of dead workers as new attempts: %s", len(retries), retries)
    lost = _lost(app, settings.queue, overdue, waiting)
    if lost:
        log.warning("re-driving %d trial(s) sent over %.0f s ago and still unclaimed, the broker holding fewer "
                    "messages than trials wait: %s", len(lost), settings.redrive_after_seconds, lost)
    to_send = sorted(set(retries) | set(unsent) | set(lost))
    return len(enqueue_trials(app, sessions(), settings.queue, to_send)) if to_send else 0


def _lost(app: Celery, queue: str, overdue: list[int], waiting: int) -> list[int]:
    """Of the overdue trials (longest waiting first), those whose message the broker may have lost: as many as
    the queue holds fewer messages than `waiting` trials were sent. A queue that is merely long holds all of
    theirs, so nothing is sent twice while work only waits its turn."""
    if not overdue:
        return []
    try:
        depth = queue_depth(app, queue, BROKER_TIMEOUT_SECONDS)
    except Exception as e:  # broker down: nothing can be sent now anyway
        log.warning("re-drive skipped: the broker did not answer (%s: %s)", type(e).__name__, e)
        return []
    return overdue[:max(0, waiting - depth)]


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
