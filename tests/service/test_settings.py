"""The one settings object: DELTAMU_* variables, the conventional aliases, and refused inconsistent limits."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_embedded_default_needs_no_server(monkeypatch, tmp_path):
    for name in ("DELTAMU_DATABASE_URL", "DATABASE_URL", "DELTAMU_BROKER_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(data_dir=tmp_path)
    assert s.embedded and s.db_url == f"sqlite:///{tmp_path}/deltamu.sqlite3"
    assert s.broker == f"sqla+sqlite:///{tmp_path}/broker.sqlite3"
    assert s.host == "127.0.0.1"


def test_conventional_variables_switch_to_postgres_and_redis(monkeypatch):
    monkeypatch.delenv("DELTAMU_DATABASE_URL", raising=False)
    monkeypatch.delenv("DELTAMU_BROKER_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/x")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://r:6379/0")
    s = Settings()
    assert s.db_url == "postgresql+psycopg://u:p@db:5432/x" and not s.embedded
    assert s.broker == "redis://r:6379/0"
    monkeypatch.setenv("DELTAMU_API_TOKENS", "a, b,")
    assert Settings().api_tokens == ["a", "b"]


def test_a_child_given_the_settings_environment_reads_the_same_settings(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "DELTAMU_BROKER_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(data_dir=tmp_path, database_url="postgres://u@db/x", api_tokens=["a", "b"], auth_reads=True,
                 allowed_data_dirs=[tmp_path / "d1", tmp_path / "d2"], heartbeat_seconds=0.5, pack_share=2,
                 max_job_flops=2.5e18)
    env = s.as_environment()
    assert "DELTAMU_BROKER_URL" not in env and env["DELTAMU_API_TOKENS"] == "a,b"     # unset: left out
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == s


@pytest.mark.parametrize("bad", [
    {"trial_time_limit_seconds": 3600, "visibility_timeout_seconds": 3600},   # Redis would redeliver a live trial
    {"heartbeat_seconds": 10, "stale_after_seconds": 15},                       # live trials would be reaped
    {"max_attempts": 0},
])
def test_inconsistent_limits_are_refused(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)
