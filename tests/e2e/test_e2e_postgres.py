"""The product in its production shape on this machine: `deltamu migrate`, `deltamu api` and a real Celery worker
(the commands docker-compose.yml runs) on the real PostgreSQL and Redis, driven over HTTP."""
from __future__ import annotations

import pytest

import os
import subprocess
import sys

import httpx

from e2e_flow import check_finished_job, e2e_job, poll_job, submit, wait_until_serving
from helpers import REPO_ROOT, TEST_TOKEN, free_port, start_api, start_worker, temporary_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_TIMEOUT = 300


def test_tiny_job_over_http(redis_broker, pg_env, tmp_path):
    with temporary_postgres_database() as url:          # empty: `deltamu migrate` creates the schema
        env = {**pg_env, "DELTAMU_DATABASE_URL": url}
        migrate = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=REPO_ROOT,
                                 env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert migrate.returncode == 0, migrate.stderr
        port = free_port()
        api = start_api(env, tmp_path / "api.log", port)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            base = f"http://127.0.0.1:{port}"
            diagnostics = lambda: f"--- api\n{api.log()[-3000:]}\n--- worker\n{worker.log()[-3000:]}"  # noqa: E731
            wait_until_serving(base, 60, diagnostics)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30) as c:
                job_spec = e2e_job()
                location = submit(c, job_spec)
                job = poll_job(c, location, JOB_TIMEOUT, diagnostics)
                assert job["state"] == "SUCCEEDED", diagnostics()
                check_finished_job(c, job["id"], job_spec)
                metrics = c.get("/metrics").text
                assert 'deltamu_jobs{state="SUCCEEDED"} 1.0' in metrics
                assert "deltamu_trial_seconds_count 3.0" in metrics
        finally:
            worker.stop()
            api.stop()
