"""`alembic upgrade head` / `downgrade base` / `upgrade head` with the real alembic command, on PostgreSQL and
SQLite; the migrated schema matches the models (`alembic check`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from service.models import Base
from service.testing import REPO_ROOT, temporary_postgres_database

pytestmark = pytest.mark.integration

TABLES = {t.name for t in Base.metadata.sorted_tables}


def alembic(url: str, *args: str) -> str:
    env = {**os.environ, "DELTAMU_DATABASE_URL": url}
    r = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"alembic {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
    else:
        with temporary_postgres_database() as url:
            yield url


def test_upgrade_downgrade_upgrade(empty_database):
    url = empty_database
    alembic(url, "upgrade", "head")
    assert TABLES <= tables(url)
    assert "No new upgrade operations detected" in alembic(url, "check")   # models == migrations
    # data survives being there during a downgrade/upgrade cycle without errors; rows go with their tables
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO api_tokens (name, token_sha256, created_at) "
                             "VALUES ('t', :h, CURRENT_TIMESTAMP)"), {"h": "0" * 64})
    engine.dispose()
    alembic(url, "downgrade", "base")
    assert not (TABLES & tables(url))
    alembic(url, "upgrade", "head")
    assert TABLES <= tables(url)
    assert "0001 (head)" in alembic(url, "current")
