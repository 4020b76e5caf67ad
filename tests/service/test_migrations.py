"""`alembic upgrade head` / `downgrade base` / `upgrade head` with the real alembic command, on PostgreSQL and
SQLite; the migrated schema matches the models (`alembic check`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from service.models import Base
from helpers import REPO_ROOT, temporary_postgres_database

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
    assert "0003 (head)" in alembic(url, "current")


def columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    names = {c["name"] for c in sa.inspect(engine).get_columns(table)}
    engine.dispose()
    return names


def test_0002_fills_the_widths_of_existing_jobs_and_keeps_their_rows(empty_database):
    """A job stored at 0001 (one width) gets widths = [its proxy's width] and its trials that width; its trials
    and curve points survive the upgrade (SQLite rebuilds the tables), the downgrade, and a second upgrade."""
    url = empty_database
    alembic(url, "upgrade", "0001")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO jobs (id, state, spec, sweep_config, spec_sha256, num_points, steps, created_at, updated_at) "
            "VALUES ('j1', 'SUCCEEDED', '{}', :config, :sha, 2, 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"config": '{"model": {"width": 48, "depth": 1}}', "sha": "0" * 64})
        for point in (0, 1):
            conn.execute(sa.text(
                "INSERT INTO trials (job_id, point, lr, seed, attempt, retried, state, created_at) "
                "VALUES ('j1', :point, 0.01, 0, 1, false, 'COMPLETED', CURRENT_TIMESTAMP)"), {"point": point})
        trial_ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM trials ORDER BY point"))]
        conn.execute(sa.text("INSERT INTO curve_points (trial_id, step, tokens, loss, lr, grad_norm, seconds) "
                             "VALUES (:t, 1, 64, 3.0, 0.01, 1.0, 0.1)"), {"t": trial_ids[0]})
    engine.dispose()
    assert "width" not in columns(url, "trials") and "widths" not in columns(url, "jobs")

    def stored() -> tuple:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            widths = conn.execute(sa.text("SELECT widths FROM jobs WHERE id = 'j1'")).scalar_one()
            trial_widths = [r[0] for r in conn.execute(sa.text("SELECT width FROM trials ORDER BY point"))]
            points = conn.execute(sa.text("SELECT count(*) FROM curve_points")).scalar_one()
        engine.dispose()
        return json.loads(widths) if isinstance(widths, str) else widths, trial_widths, points

    alembic(url, "upgrade", "head")
    assert stored() == ([48], [48, 48], 1)
    assert {"widths", "transfer"} <= columns(url, "jobs") and "width" in columns(url, "trials")
    assert "No new upgrade operations detected" in alembic(url, "check")
    alembic(url, "downgrade", "0001")
    assert "width" not in columns(url, "trials") and not {"widths", "transfer"} & columns(url, "jobs")
    alembic(url, "upgrade", "head")
    assert stored() == ([48], [48, 48], 1)
