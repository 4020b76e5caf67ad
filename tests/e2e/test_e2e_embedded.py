"""The embedded default, as a user runs it: `deltamu up` (SQLite file, kombu's SQL transport, one real Celery
worker process; no PostgreSQL, no Redis), then the `deltamu` client commands."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

import httpx

from e2e_flow import check_finished_job, e2e_job, wait_until_serving
from helpers import REPO_ROOT, Process, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_TIMEOUT = 300
SERVER_VARIABLES = ("DELTAMU_DATABASE_URL", "DATABASE_URL", "DELTAMU_BROKER_URL", "CELERY_BROKER_URL",
                    "DELTAMU_API_TOKENS")


def deltamu(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_deltamu_up_runs_the_whole_product(tmp_path):
    port = free_port()
    data_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env.update({"DELTAMU_DATA_DIR": str(data_dir), "DELTAMU_PORT": str(port), "DELTAMU_HEARTBEAT_SECONDS": "0.5",
                "DELTAMU_STALE_AFTER_SECONDS": "4", "DELTAMU_REAPER_INTERVAL_SECONDS": "0.5"})
    up = Process([sys.executable, "-m", "service.cli", "up"], env, tmp_path / "up.log", cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, 90, up.log)
        assert (data_dir / "deltamu.sqlite3").exists() and (data_dir / "broker.sqlite3").exists()
        token = (data_dir / "token").read_text().strip()
        assert oct((data_dir / "token").stat().st_mode & 0o777) == "0o600"
        assert httpx.post(f"{base}/v1/jobs", json=e2e_job()).status_code == 401     # writes need the token

        job_spec = e2e_job()
        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps(job_spec))
        client_env = {**env, "DELTAMU_URL": base}             # the token comes from the data dir's token file
        submitted = deltamu(client_env, "submit", str(job_file), "--watch", "--interval", "0.5",
                            timeout=JOB_TIMEOUT)
        assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{up.log()[-4000:]}"
        job_id = submitted.stdout.split()[0]
        assert "SUCCEEDED" in submitted.stdout

        status = deltamu(client_env, "status", job_id)
        assert status.returncode == 0 and "SUCCEEDED" in status.stdout and "optimum: lr" in status.stdout
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            check_finished_job(c, job_id, job_spec)
            api_answer = c.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 4096}).json()
        rec = deltamu(client_env, "recommendation", job_id, "--width", "4096", "--json")
        assert rec.returncode == 0 and json.loads(rec.stdout) == api_answer
        table = deltamu(client_env, "recommendation", job_id, "--width", "4096")      # as `deltamu recommend`
        assert table.returncode == 0 and table.stdout.splitlines()[1].split()[:3] == ["group", "lr", "x"]
        assert any(line.startswith("hidden ") for line in table.stdout.splitlines())
        assert "SUCCEEDED" in submitted.stderr and "best " in submitted.stderr        # the --watch bar
        jobs = deltamu(client_env, "jobs")
        assert jobs.returncode == 0 and jobs.stdout.splitlines()[0].split()[:2] == ["ID", "STATE"]
        assert jobs.stdout.splitlines()[1].split()[:2] == [job_id, "SUCCEEDED"]

        # bad input: one line on stderr, a non-zero exit
        for args in (("recommendation", job_id, "--width", "1001"), ("status", "no-such-job"),
                     ("submit", str(tmp_path / "missing.json")), ("recommendation", job_id, "--width", "0")):
            bad = deltamu(client_env, *args)
            assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, (args, bad.stderr)
            assert bad.stderr.startswith("deltamu: error:")
    finally:
        up.stop()
    assert up.popen.returncode == 0, up.log()[-3000:]
    assert "Warm shutdown" in up.log() or "worker: Warm shutdown" in up.log()
