from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db import make_engine, make_session_factory
from helpers import settings_from_env, start_worker

HERE = Path(__file__).resolve().parent


@pytest.fixture
def deployment(pg_env):
    """The API in-process on PostgreSQL + Redis and a handle on the database; workers are started by each test."""
    settings = settings_from_env(pg_env)
    engine = make_engine(settings.db_url)
    from service.main import create_app
    with TestClient(create_app(settings)) as client:
        yield client, make_session_factory(engine), pg_env
    engine.dispose()


@pytest.fixture
def workers(tmp_path):
    """workers(env, name) starts a real `celery worker` process; all are stopped afterwards. app="a module of this
    folder" runs that Celery app instead of the product's (packing_worker_app)."""
    started = []

    def start(env, name, app=None):
        if app is not None:
            env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
        w = start_worker(env, tmp_path / f"{name}.log", name=name, app=app)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
