"""The Celery app both sides use, and sending work to the workers.

make_celery is the one place the app is configured from settings: the API builds a client with it, the worker
(worker.celery_app) the app its tasks run on. Trials are long and must run once: acks_late +
reject_on_worker_lost (a lost worker's message goes back to the queue), prefetch 1 (a worker holds one trial at a
time), and hard time limit < the broker's visibility timeout (settings checks it), so Redis never redelivers a trial
that is still running. The database is the record: results are ignored, the result backend is never read.

Work is sent only after the transaction that created it has committed; a send that fails leaves the trial PENDING
with enqueued_at NULL, and the reaper sends it again. A message the broker loses after the send (a Redis restart
without persistence) is made good by the reaper's re-drive (worker.reaper), the database being the record.
"""
from __future__ import annotations

import logging
from typing import Sequence

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.db import transaction
from service.settings import Settings

RUN_TRIAL = "deltamu.run_trial"
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
BROKER_TIMEOUT_SECONDS = 2.0
log = logging.getLogger("deltamu.queue")


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """The Celery app of these settings; `include`: the modules that define its tasks (the worker's)."""
    app = Celery("deltamu", broker=settings.broker, include=list(include))
    # kombu's SQL transport hands its transport options to create_engine, so it gets none; it polls its tables
    # and never redelivers by timeout (the reaper requeues what a dead worker held).
    sql_broker = settings.broker.startswith("sqla+")
    transport_options = {} if sql_broker else {"visibility_timeout": settings.visibility_timeout_seconds}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_time_limit=settings.trial_time_limit_seconds,
        task_soft_time_limit=settings.trial_soft_time_limit_seconds,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child or None,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


class BrokerUnavailable(Exception):
    """No connection to the broker opens."""


def ensure_broker(celery: Celery) -> None:
    """Open a connection to the broker or raise BrokerUnavailable: a submit checks it before it stores its job."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as e:
        raise BrokerUnavailable(f"{type(e).__name__}: {e}") from None


def queue_depth(celery: Celery, queue: str, timeout: float) -> int:
    """Messages waiting in `queue` (Redis: the list's length; the SQL broker: its visible rows); raises when the
    broker does not answer within `timeout` seconds. Delivered, unacknowledged messages are not counted."""
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        _, depth, _ = conn.default_channel.queue_declare(queue=queue, passive=False)
    return depth


def enqueue_trials(celery: Celery, sessions: sessionmaker[Session], queue: str, trial_ids: list[int]) -> list[int]:
    """Send one run_trial task per id and record which were sent; returns those sent."""
    sent = []
    for trial_id in trial_ids:
        try:
            celery.send_task(RUN_TRIAL, args=[trial_id], queue=queue)
        except Exception as e:  # broker down: the reaper resends what is left unsent
            log.warning("could not enqueue trial %s (%s: %s); the reaper will retry", trial_id, type(e).__name__, e)
            break
        sent.append(trial_id)
    if sent:
        with transaction(sessions) as session:
            crud.mark_enqueued(session, trial_ids=sent)
    return sent
