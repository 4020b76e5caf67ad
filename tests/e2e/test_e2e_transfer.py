"""A transfer-study job (several widths) end to end in the production shape: `deltamu api` and a real Celery
worker on the real PostgreSQL and Redis, driven over HTTP."""
from __future__ import annotations

import httpx
import pytest

from e2e_flow import check_transfer_study, poll_job, submit, transfer_job, wait_until_serving
from helpers import TEST_TOKEN, free_port, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_TIMEOUT = 300


def test_transfer_study_over_http(pg_env, tmp_path):
    port = free_port()
    api = start_api(pg_env, tmp_path / "api.log", port)
    worker = start_worker(pg_env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        diagnostics = lambda: f"--- api\n{api.log()[-3000:]}\n--- worker\n{worker.log()[-3000:]}"  # noqa: E731
        wait_until_serving(base, 60, diagnostics)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30) as c:
            job_spec = transfer_job()
            job = poll_job(c, submit(c, job_spec), JOB_TIMEOUT, diagnostics)
            assert job["state"] == "SUCCEEDED", diagnostics()
            check_transfer_study(c, job["id"], job_spec)
    finally:
        worker.stop()
        api.stop()
