"""`alembic upgrade head` / `downgrade base` / `upgrade head` with the real alembic command, on PostgreSQL and
SQLite; the migrated schema matches the models (`alembic check`)."""
from __future__ import annotations

import datetime as dt
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


def run_alembic(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DELTAMU_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def alembic(url: str, *args: str) -> str:
    r = run_alembic(url, *args)
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
        conn.execute(sa.text("INSERT INTO api_tokens (name, token_sha256, scope, created_at) "
                             "VALUES ('t', :h, 'write', CURRENT_TIMESTAMP)"), {"h": "0" * 64})
    engine.dispose()
    alembic(url, "downgrade", "base")
    assert not (TABLES & tables(url))
    alembic(url, "upgrade", "head")
    assert TABLES <= tables(url)
    assert "0005 (head)" in alembic(url, "current")


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


def alembic_fails(url: str, *args: str) -> str:
    r = run_alembic(url, *args)
    assert r.returncode != 0, f"alembic {' '.join(args)} should have refused:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def snapshot(url: str) -> dict[str, list[dict]]:
    """Every row of every table, JSON decoded (SQLite hands back text), ordered by primary key."""
    engine = sa.create_engine(url)
    rows = {}
    with engine.connect() as conn:
        for table in ("api_tokens", "jobs", "trials", "curve_points", "idempotency_keys"):
            key = "principal, key" if table == "idempotency_keys" else "id"
            rows[table] = [{k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
                            for k, v in r._mapping.items()}
                           for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {key}"))]
    engine.dispose()
    return rows


def insert_job(url: str, job_id: str, widths: list[int], transfer: dict | None) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO jobs (id, state, spec, sweep_config, spec_sha256, widths, transfer, num_points, steps, "
            "created_at, updated_at) VALUES (:id, 'SUCCEEDED', '{}', :config, :sha, :widths, :transfer, :n, 10, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"id": job_id, "config": json.dumps({"model": {"width": widths[0], "depth": 1}}), "sha": "0" * 64,
             "widths": json.dumps(widths), "transfer": None if transfer is None else json.dumps(transfer),
             "n": len(widths)})
        for point, width in enumerate(widths):
            conn.execute(sa.text(
                "INSERT INTO trials (job_id, point, width, lr, seed, attempt, retried, state, created_at) "
                "VALUES (:job, :point, :width, 0.01, 0, 1, false, 'COMPLETED', CURRENT_TIMESTAMP)"),
                {"job": job_id, "point": point, "width": width})
        trial_id = conn.execute(sa.text("SELECT min(id) FROM trials WHERE job_id = :job"), {"job": job_id}).scalar()
        conn.execute(sa.text("INSERT INTO curve_points (trial_id, step, tokens, loss, lr, grad_norm, seconds) "
                             "VALUES (:t, 1, 64, 3.0, 0.01, 1.0, 0.1)"), {"t": trial_id})
    engine.dispose()


def test_a_transfer_study_survives_a_downgrade_round_trip_or_stops_it(empty_database):
    """down then up gives the same rows: a downgrade that would drop what its upgrade cannot rebuild (a transfer
    study's widths, its trials' widths) refuses with the reason and changes nothing; one that loses nothing goes
    through and the upgrade gives back every row."""
    url = empty_database
    alembic(url, "upgrade", "head")
    insert_job(url, "one-width", [48], None)
    insert_token(url, "settings", "write", revoked=True)
    insert_token(url, "ci", "write", revoked=False)
    before = snapshot(url)
    alembic(url, "downgrade", "0001")
    alembic(url, "upgrade", "head")
    assert snapshot(url) == before

    insert_job(url, "study", [32, 64, 128], {"base_width": 32, "widths": []})
    before = snapshot(url)
    refused = alembic_fails(url, "downgrade", "0001")
    assert "0002" in refused and "study" in refused and "widths" in refused
    assert snapshot(url) == before                       # nothing changed: not even the later revisions' downgrades
    head = alembic(url, "heads").split()[0]
    assert f"{head} (head)" in alembic(url, "current")
    assert not {t for t in tables(url) if t.startswith("_alembic_tmp")}


def insert_token(url: str, name: str, scope: str, *, revoked: bool) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO api_tokens (name, token_sha256, scope, created_at, revoked_at) "
                             "VALUES (:name, :sha, :scope, CURRENT_TIMESTAMP, :revoked)"),
                     {"name": name, "sha": name.ljust(64, "0"), "scope": scope,
                      "revoked": dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc) if revoked else None})
    engine.dispose()


def test_0004_downgrade_refuses_while_a_token_is_not_a_write_token(empty_database):
    """At 0003 every token may write: a read token kept there would gain writes."""
    url = empty_database
    alembic(url, "upgrade", "head")
    insert_token(url, "dashboard", "read", revoked=False)
    before = snapshot(url)
    refused = alembic_fails(url, "downgrade", "0003")
    assert "0004" in refused and "dashboard" in refused
    assert snapshot(url) == before and "scope" in columns(url, "api_tokens")
