"""Fixtures shared by the integration tests: a migrated PostgreSQL database per session, Redis, a deployment's
environment on either backend, and the test token. The helpers they use live in helpers.py beside this file."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))     # `from helpers import ...` in every test folder

from helpers import (TEST_TOKEN, check_redis, delete_redis_queue, fast_settings_env,  # noqa: E402
                     temporary_postgres_database, truncate_all)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test session."""
    from service import migrate
    with temporary_postgres_database() as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def redis_broker() -> str:
    return check_redis()


@pytest.fixture
def pg_env(postgres_url, redis_broker, tmp_path) -> Iterator[dict[str, str]]:
    """A deployment on PostgreSQL + Redis, with a queue of its own."""
    queue = f"deltamu-test-{uuid.uuid4().hex[:8]}"
    truncate_all(postgres_url)
    yield fast_settings_env(database_url=postgres_url, broker_url=redis_broker, queue=queue, data_dir=tmp_path)
    delete_redis_queue(redis_broker, queue)


@pytest.fixture
def sqlite_env(tmp_path) -> dict[str, str]:
    """The embedded default: a SQLite file and kombu's SQL transport on another SQLite file."""
    from service import migrate
    url = f"sqlite:///{tmp_path / 'deltamu.sqlite3'}"
    migrate.upgrade(url)
    return fast_settings_env(database_url=url, broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
                             queue="deltamu", data_dir=tmp_path)


@pytest.fixture(params=["postgresql", "sqlite"])
def any_env(request) -> dict[str, str]:
    """Both backends, one after the other."""
    return request.getfixturevalue("pg_env" if request.param == "postgresql" else "sqlite_env")


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}"}
