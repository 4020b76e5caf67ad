"""The product's Celery app in a worker that packs on the CPU as a CUDA worker does (worker.packing.PACK_ON_CPU),
so the tests drive the packed path without a GPU: `celery -A packing_worker_app worker`, this folder on the
PYTHONPATH (helpers.start_worker(..., app=...))."""
from worker import packing
from worker.celery_app import app  # noqa: F401  (what `celery -A` runs)

packing.PACK_ON_CPU = True
