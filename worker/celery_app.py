"""The Celery app, configured from service.settings. `celery -A worker.celery_app worker` runs it.

Trials are long and must run once: acks_late + reject_on_worker_lost (a lost worker's message goes back to the
queue), prefetch 1 (a worker holds one trial at a time), and hard time limit < the broker's visibility timeout
(settings checks it), so Redis never redelivers a trial that is still running. The database is the record:
results are ignored, the result backend is never read.
"""
from __future__ import annotations

from celery import Celery

from service.settings import Settings, get_settings

PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def make_celery(settings: Settings) -> Celery:
    app = Celery("deltamu", broker=settings.broker, include=["worker.tasks"])
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


app = make_celery(get_settings())
