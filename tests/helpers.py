"""Helpers for the integration tests (tests/service, tests/worker, tests/e2e): real servers, real processes.
tests/conftest.py puts this folder on sys.path (`from helpers import ...`) and holds the shared fixtures.

A test that needs PostgreSQL or Redis skips with the reason when the server is absent, unless
DELTAMU_REQUIRE_SERVICES=1 (CI), which turns that skip into a failure. Every test session works in a PostgreSQL
database of its own (created and dropped here) and a Celery queue of its own.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_TOKEN = "test-token-" + uuid.uuid4().hex


def services_required() -> bool:
    return os.environ.get("DELTAMU_REQUIRE_SERVICES", "") not in ("", "0", "false")


def unavailable(reason: str) -> None:
    """Skip (or, where services are required, fail) the calling test."""
    if services_required():
        pytest.fail(f"{reason} (DELTAMU_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


def postgres_admin_url() -> str:
    url = os.environ.get("DELTAMU_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def redis_url() -> str:
    return os.environ.get("DELTAMU_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A fresh database on the test server; yields its URL and drops it afterwards."""
    admin_url = postgres_admin_url()
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as e:
        unavailable(f"PostgreSQL not reachable at {admin_url}: {type(e).__name__}: {e}")
    name = f"deltamu_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def refuse_connections(database_url: str, refuse: bool) -> None:
    """An outage of one database of the test server as its clients see it, the server staying up: it refuses
    every connection (ALLOW_CONNECTIONS false, superusers included) and its open sessions are terminated; or it
    accepts them again."""
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    name = sa.make_url(database_url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}'))
        if refuse:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
    admin.dispose()


def truncate_all(url: str) -> None:
    """Empty every table of the session's database: each test starts from no rows."""
    from service.models import Base
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def check_redis() -> str:
    import redis
    url = redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as e:
        unavailable(f"Redis not reachable at {url}: {type(e).__name__}: {e}")
    return url


def delete_redis_queue(url: str, queue: str) -> None:
    import redis
    client = redis.Redis.from_url(url)
    client.delete(queue)


def fast_settings_env(*, database_url: str, broker_url: str, queue: str, data_dir: Path) -> dict[str, str]:
    """Environment for a test deployment: short heartbeats and grace periods so a dead worker is noticed in
    seconds; one token."""
    return {
        "DELTAMU_DATABASE_URL": database_url,
        "DELTAMU_BROKER_URL": broker_url,
        "DELTAMU_QUEUE": queue,
        "DELTAMU_DATA_DIR": str(data_dir),
        "DELTAMU_API_TOKENS": TEST_TOKEN,
        "DELTAMU_AUTH_READS": "false",      # the tests read without a token; test_auth checks the default
        "DELTAMU_HEARTBEAT_SECONDS": "0.5",
        "DELTAMU_STALE_AFTER_SECONDS": "4",
        "DELTAMU_REAPER_INTERVAL_SECONDS": "0.5",
        "DELTAMU_MAX_ATTEMPTS": "3",
        "DELTAMU_TRIAL_TIME_LIMIT_SECONDS": "600",
        "DELTAMU_VISIBILITY_TIMEOUT_SECONDS": "900",
        "DELTAMU_DEVICE": "cpu",
    }


def settings_from_env(env: dict[str, str]):
    """Settings from such an environment, without touching os.environ."""
    from service.settings import Settings
    return Settings(**{k.removeprefix("DELTAMU_").lower(): v for k, v in env.items()})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = REPO_ROOT):
        self.log_path = log
        self._log = open(log, "wb")
        child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(argv, env=child_env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a Celery worker is a parent and its pool children)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(env: dict[str, str], log: Path, name: str | None = None, app: str | None = None) -> Process:
    """A real `celery worker`, as `deltamu worker` starts it (one process, concurrency 1, CPU); `app`: another
    Celery app module to run instead of worker.celery_app (on the PYTHONPATH that `env` gives)."""
    from service.launch import worker_commands
    argv, extra = worker_commands(settings_from_env(env), name=name or f"test-{uuid.uuid4().hex[:6]}", gpus=[])[0]
    if app is not None:
        argv[argv.index("-A") + 1] = app
    return Process(argv, {**env, **extra}, log)


def start_api(env: dict[str, str], log: Path, port: int) -> Process:
    return Process([sys.executable, "-m", "service.cli", "api", "--port", str(port)], env, log)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition",
             on_timeout: Callable[[], str] | None = None):
    """Poll until predicate() is truthy; return its value. Fails with `what` (and a diagnostic) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{extra}")
        time.sleep(interval)


def tiny_job(**overrides) -> dict:
    """A CPU job of a few seconds: width 32, depth 1, 3 learning rates, 30 steps of 2 x 32 tokens; its grid as given
    (no extension past an edge: the tests of that set max_extend_rounds)."""
    job = {"model": {"width": 32, "depth": 1},
           "schedule": {"steps": 30, "warmup_steps": 3, "batch_size": 2, "seq_len": 32},
           "lr_grid": {"values": [0.002, 0.01, 0.05]}, "seeds": [0], "eval_batches": 2, "log_every": 5,
           "max_extend_rounds": 0}
    job.update(overrides)
    return job


PROBLEM = "application/problem+json"


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    """An RFC 9457 answer of this status (and problem type slug); returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and "instance" in body
    if slug:
        assert body["type"].endswith("/" + slug), body
    return body


def run_trials_through_crud(env, job_id: str, losses: list[float]) -> None:
    """Finish every trial the way a worker does: claim, then finish (DIVERGED for a NaN loss)."""
    from service import crud
    from service.db import make_engine, make_session_factory, transaction
    engine = make_engine(env["DELTAMU_DATABASE_URL"])
    sessions = make_session_factory(engine)
    with sessions() as s:
        ids = [t.id for t in crud.list_trials(s, job_id=job_id)]
    for trial_id, loss in zip(ids, losses):
        with transaction(sessions) as s:
            assert crud.claim_trial(s, trial_id=trial_id, worker="test")
        diverged = math.isnan(loss)
        with transaction(sessions) as s:
            crud.finish_trial(s, trial_id=trial_id, worker="test", result={
                "status": "DIVERGED" if diverged else "COMPLETED", "final_val_loss": loss, "tokens": 10,
                "seconds": 0.5, "diverged_step": 5 if diverged else None, "reason": "nan" if diverged else None})
    engine.dispose()
