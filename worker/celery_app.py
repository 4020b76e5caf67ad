"""The worker's Celery app: service.queue.make_celery (the one configuration, shared with the API's client) with
this package's tasks. `celery -A worker.celery_app worker` runs it."""
from __future__ import annotations

from service.queue import make_celery
from service.settings import get_settings

app = make_celery(get_settings(), include=["worker.tasks"])
