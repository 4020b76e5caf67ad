"""The chaos suite (issue #16, Done-means 1): real Celery worker processes, a private redis-server and a private
PostgreSQL cluster started here, and three faults in the middle of a tiny job:
(a) the training worker SIGKILLed mid-trial, three times in one job;
(b) Redis restarted without persistence (`shutdown nosave`, then started again) with trials queued and in flight;
(c) PostgreSQL stopped for 10 s mid-job (`pg_ctl stop -m fast`, then started again).
Each time the job must reach SUCCEEDED with every grid point done exactly once (one COMPLETED or DIVERGED attempt
per point, no duplicate curve points), and the time to recover is printed (pytest -s) and put in the assertion
message. The workers run with the product's default heartbeat, stale and reaper bounds.

Where initdb is not at hand the suite uses a private database on the test server instead, and (c) is an outage
of that database: ALLOW_CONNECTIONS false and its sessions terminated, for 10 s."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import make_engine, make_session_factory
from service.models import CurvePoint, JobState, Trial, TrialState
from helpers import (Process, fast_settings_env, free_port, refuse_connections, settings_from_env, start_worker,
                     temporary_postgres_database, tiny_job, truncate_all, unavailable, wait_for)
from worker_helpers import AUTH, JOB_TIMEOUT, assert_every_point_once, job_state, logs, trials_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 10
DEFAULT_BOUNDS = ("DELTAMU_HEARTBEAT_SECONDS", "DELTAMU_STALE_AFTER_SECONDS", "DELTAMU_REAPER_INTERVAL_SECONDS")


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


class PrivateRedis:
    """A redis-server of this test on a free port, without persistence."""

    def __init__(self, workdir: Path):
        self.binary = _binary("redis-server") or unavailable("redis-server not found")
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Process | None = None
        self.start()

    def start(self) -> None:
        self.proc = Process([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(self.workdir)], {}, self.workdir / f"redis-{time.time()}.log")
        wait_for(self.ping, 30, what="redis-server to start", on_timeout=self.proc.log)

    def ping(self) -> bool:
        import redis
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
        except Exception:
            return False

    def restart_nosave(self) -> None:
        """`shutdown nosave`: whatever the queues held is gone; then a fresh server on the same port."""
        import redis
        try:
            redis.Redis(port=self.port).shutdown(nosave=True)
        except Exception:       # the connection closes as the server exits
            pass
        self.proc.popen.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of this test (initdb in a temporary folder; as the postgres user when run as root,
    which initdb refuses), with a database `deltamu` at the Alembic head."""

    def __init__(self):
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="deltamu-chaos-pg-"))
        os.chmod(self.root, 0o755)
        self.prefix = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.root / "data"
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        admin = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE deltamu"))
        admin.dispose()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/deltamu"
        self.kind = "a private PostgreSQL cluster (initdb), stopped with pg_ctl stop -m fast"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    down, up = stop, start

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def available(cls) -> bool:
        return _binary("initdb") is not None and _binary("pg_ctl") is not None


class SharedPostgresDatabase:
    """The fallback: a database of this test on the shared server; an outage refuses its connections."""

    def __init__(self):
        self._db = temporary_postgres_database()
        self.url = self._db.__enter__()
        self.kind = "a private database on the test server, its connections refused (ALLOW_CONNECTIONS false)"

    def down(self) -> None:
        refuse_connections(self.url, True)

    def up(self) -> None:
        refuse_connections(self.url, False)

    def close(self) -> None:
        self.up()
        self._db.__exit__(None, None, None)


@pytest.fixture(scope="module")
def private_postgres():
    db = PrivatePostgres() if PrivatePostgres.available() else SharedPostgresDatabase()
    print(f"\nchaos: the database is {db.kind}")
    yield db
    db.close()


@pytest.fixture
def chaos(private_postgres, tmp_path):
    """A deployment on the private servers: the API in-process, workers started by the test (all stopped after)."""
    from service import migrate
    migrate.upgrade(private_postgres.url)
    truncate_all(private_postgres.url)
    redis_server = PrivateRedis(tmp_path)
    env = fast_settings_env(database_url=private_postgres.url, broker_url=redis_server.url, queue="deltamu",
                            data_dir=tmp_path)
    env = {k: v for k, v in env.items() if k not in DEFAULT_BOUNDS}       # the product's bounds, not the tests'
    settings = settings_from_env(env)
    engine = make_engine(settings.db_url)
    started: list[Process] = []

    def start(name: str, extra: dict[str, str] | None = None) -> Process:
        w = start_worker({**env, **(extra or {})}, tmp_path / f"{name}.log", name=name)
        started.append(w)
        return w

    from service.main import create_app
    with TestClient(create_app(settings)) as client:
        yield client, make_session_factory(engine), start, redis_server, private_postgres, started
    for w in started:
        w.stop()
    redis_server.stop()
    engine.dispose()


def safely(read):
    """A reading of the database that may meet the outage: None then."""
    def attempt():
        try:
            return read()
        except sa.exc.DBAPIError:
            return None
    return attempt


def state_of(sessions, job_id):
    return safely(lambda: trials_of(sessions, job_id))()


def job_succeeded(sessions, job_id) -> bool:
    return safely(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED)() or False


def report(name: str, lines: list[str]) -> str:
    text = f"chaos {name}: " + "; ".join(lines)
    print("\n" + text)
    return text


def mid_trial(sessions, job_id, exclude=()) -> Trial | None:
    """A RUNNING trial with at least two curve points (in the middle of training), not among `exclude`."""
    trials = state_of(sessions, job_id) or []
    with sessions() as s:
        for t in trials:
            if t.state == TrialState.RUNNING and t.id not in exclude and s.scalar(
                    sa.select(sa.func.count()).where(CurvePoint.trial_id == t.id)) >= 2:
                return t
    return None


JOB = tiny_job(lr_grid={"values": [0.002, 0.008, 0.032]}, log_every=2,
               schedule={"steps": 80, "warmup_steps": 8, "batch_size": 2, "seq_len": 32})
STEPS = 80


def test_a_worker_killed_three_times_mid_trial(chaos):
    client, sessions, start, _, _, started = chaos
    job_id = client.post("/v1/jobs", json=JOB, headers=AUTH).json()["id"]
    t0 = time.monotonic()
    lines, victims = [], []
    worker = start("a0", {"DELTAMU_MAX_ATTEMPTS": "4"})
    for k in range(3):
        victim = wait_for(lambda: mid_trial(sessions, job_id, victims), JOB_TIMEOUT, 0.1,
                          what=f"a trial mid-training (kill {k + 1})", on_timeout=lambda: logs(*started))
        worker.kill(signal.SIGKILL)                         # the worker and its pool child, no warm shutdown
        killed_at = time.monotonic()
        victims.append(victim.id)
        worker = start(f"a{k + 1}", {"DELTAMU_MAX_ATTEMPTS": "4"})

        def reaped():
            trials = state_of(sessions, job_id) or []
            return any(t.retry_of == victim.id for t in trials) or any(
                t.id == victim.id and t.state != TrialState.RUNNING for t in trials)
        wait_for(reaped, 120, 0.1, what=f"the killed trial {victim.id} to be requeued",
                 on_timeout=lambda: logs(*started))
        lines.append(f"kill {k + 1} (trial {victim.id}, point {victim.point}): requeued "
                     f"{time.monotonic() - killed_at:.1f} s later")
    wait_for(lambda: job_succeeded(sessions, job_id), JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(*started))
    lines.append(f"job SUCCEEDED {time.monotonic() - t0:.1f} s after submission")
    text = report("(a) SIGKILL x3", lines)
    trials = assert_every_point_once(sessions, job_id, 3, STEPS, text)
    for victim_id in victims:
        killed = next(t for t in trials if t.id == victim_id)
        assert killed.state == TrialState.FAILED and killed.retried and "lost" in killed.error, text
    recoveries = [float(line.split("requeued ")[1].split(" s")[0]) for line in lines if "requeued" in line]
    assert max(recoveries) <= 30, f"a dead worker must be noticed within 30 s: {text}"


def test_redis_restarted_with_trials_queued_and_in_flight(chaos):
    client, sessions, start, redis_server, _, started = chaos
    job_id = client.post("/v1/jobs", json=JOB, headers=AUTH).json()["id"]
    worker = start("b", {"DELTAMU_REDRIVE_AFTER_SECONDS": "10"})
    in_flight = wait_for(lambda: mid_trial(sessions, job_id), JOB_TIMEOUT, 0.1, what="a trial mid-training",
                         on_timeout=lambda: logs(worker))
    queued = [t.id for t in trials_of(sessions, job_id) if t.state == TrialState.PENDING]
    assert queued, "the fault needs trials waiting in the queue"
    redis_server.restart_nosave()
    restarted = time.monotonic()

    def claimed_again():
        trials = state_of(sessions, job_id) or []
        return any(t.id in queued and t.state != TrialState.PENDING for t in trials)
    wait_for(claimed_again, 180, 0.2, what="a trial queued before the restart to be claimed",
             on_timeout=lambda: logs(worker))
    recovered = time.monotonic() - restarted
    wait_for(lambda: job_succeeded(sessions, job_id), JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    text = report("(b) Redis shutdown nosave + start", [
        f"trial {in_flight.id} in flight, {len(queued)} queued", f"the first lost trial claimed again "
        f"{recovered:.1f} s after the restart (re-drive bound 10 s)",
        f"job SUCCEEDED {time.monotonic() - restarted:.1f} s after the restart"])
    trials = assert_every_point_once(sessions, job_id, 3, STEPS, text)
    assert all(t.attempt == 1 for t in trials), text       # nothing failed: the lost messages were sent again


def test_postgres_stopped_for_ten_seconds_mid_job(chaos):
    client, sessions, start, _, database, started = chaos
    job_id = client.post("/v1/jobs", json=JOB, headers=AUTH).json()["id"]
    worker = start("c")
    wait_for(lambda: mid_trial(sessions, job_id), JOB_TIMEOUT, 0.1, what="a trial mid-training",
             on_timeout=lambda: logs(worker))
    with sessions() as s:
        points_before = s.scalar(sa.select(sa.func.count()).select_from(CurvePoint))
    database.down()
    time.sleep(OUTAGE_SECONDS)
    database.up()
    back = time.monotonic()

    def progress():
        with sessions() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(CurvePoint)) > points_before + 1
    wait_for(safely(progress), 120, 0.2, what="training to go on after the outage", on_timeout=lambda: logs(worker))
    resumed = time.monotonic() - back
    wait_for(lambda: job_succeeded(sessions, job_id), JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    text = report(f"(c) PostgreSQL down {OUTAGE_SECONDS} s ({database.kind})", [
        f"training went on {resumed:.1f} s after the database came back",
        f"job SUCCEEDED {time.monotonic() - back:.1f} s after it came back"])
    trials = assert_every_point_once(sessions, job_id, 3, STEPS, text)
    assert all(t.attempt == 1 for t in trials), text       # the trial in flight waited out the outage
