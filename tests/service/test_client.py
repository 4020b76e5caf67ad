"""deltamu.Client, the Python client, against the real app and a real worker: typed answers, problems as ApiError,
retries, the token search named in a 401."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from deltamu import ApiError, Client
from deltamu.client import Job, find_token
from helpers import TEST_TOKEN, start_worker, tiny_job


def test_import_deltamu_loads_no_torch():
    code = "import deltamu, sys; deltamu.Client; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_submit_follow_and_cancel(sqlite_env, make_client):
    api = Client(http=make_client(sqlite_env), token=TEST_TOKEN)
    job = api.submit(tiny_job())
    assert isinstance(job, Job) and job.state == "QUEUED" and job["state"] == "QUEUED"
    assert api.job(job.id).id == job.id and job.queue_position == 0 and job.trials_total == 3
    with pytest.raises(ApiError) as e:                                  # no optimum before the sweep has run
        job.recommendation(128)
    assert e.value.status == 409 and e.value.problem["type"].endswith("no-optimum-yet")
    assert job.cancel().state in ("CANCELLING", "CANCELLED")
    assert job.wait(poll_seconds=0.05, timeout=30).state == "CANCELLED"
    assert [j.id for j in api.jobs()] == [job.id]


def test_problems_are_api_errors_with_one_line_messages(sqlite_env, make_client):
    api = Client(http=make_client(sqlite_env), token=TEST_TOKEN)
    with pytest.raises(ApiError) as e:
        api.submit({"lr_grid": {"values": [0.01]}, "schedule": {"steps": 10, "warmup_steps": 20}})
    assert e.value.status == 422 and "\n" not in str(e.value) and str(e.value).startswith("422 ")
    with pytest.raises(ApiError, match="did you mean 'seeds'"):
        api.submit({**tiny_job(), "seedz": [1]})
    with pytest.raises(ApiError, match="cannot reach .* 2 tries"):
        Client("http://127.0.0.1:9", timeout=2, retries=1, backoff=0.01).job("x")


def test_connection_errors_and_503s_are_retried_with_backoff():
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "Database unavailable"})
        return httpx.Response(202, json={**_job_json(), "state": "QUEUED"})

    api = Client(http=httpx.Client(base_url="http://x", transport=httpx.MockTransport(flaky)), token="t",
                 backoff=0.01)
    assert api.submit(tiny_job()).id == "j1" and len(calls) == 3
    keys = {c.headers["Idempotency-Key"] for c in calls}
    assert len(keys) == 1 and keys != {""}          # one key: a retried POST cannot make a second job

    always = httpx.MockTransport(lambda r: httpx.Response(503, json={"title": "Not ready", "detail": "down"}))
    api = Client(http=httpx.Client(base_url="http://x", transport=always), token="t", retries=2, backoff=0.01)
    with pytest.raises(ApiError, match="^503 Not ready: down"):
        api.job("j1")


def _job_json() -> dict:
    return {"id": "j1", "state": "SUCCEEDED", "progress": 1.0, "widths": [32], "created_at": "2026-01-01T00:00:00Z",
            "trials": {"total": 3, "by_state": {}, "retries": 0}, "optimum": None}


def test_a_401_names_where_the_token_was_looked_for(sqlite_env, make_client, tmp_path, monkeypatch):
    for var in ("DELTAMU_TOKEN", "DELTAMU_API_TOKENS", "DELTAMU_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "project" / "notebooks"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    api = Client(http=make_client(sqlite_env, auth_reads=True))
    with pytest.raises(ApiError) as e:
        api.jobs()
    message = str(e.value)
    assert e.value.status == 401 and "\n" not in message
    for place in ("$DELTAMU_TOKEN", "DELTAMU_API_TOKENS", str(work / ".deltamu" / "token"),
                  str(tmp_path / "project" / ".deltamu" / "token"), str(tmp_path / "home" / ".deltamu" / "token")):
        assert place in message, message

    # `deltamu up` ran in the project folder: its token is found from the notebooks below it
    (tmp_path / "project" / ".deltamu").mkdir()
    (tmp_path / "project" / ".deltamu" / "token").write_text(TEST_TOKEN + "\n")
    found = find_token()
    assert found.token == TEST_TOKEN and found.source == str(tmp_path / "project" / ".deltamu" / "token")
    assert Client(http=make_client(sqlite_env, auth_reads=True)).jobs() == []
    monkeypatch.setenv("DELTAMU_TOKEN", "from-env")
    assert find_token().source == "$DELTAMU_TOKEN" and find_token("given").token == "given"


@pytest.mark.integration
def test_a_tiny_job_through_the_client_and_a_real_worker(pg_env, make_client, tmp_path, capsys):
    worker = start_worker(pg_env, tmp_path / "worker.log")
    try:
        api = Client(http=make_client(pg_env), token=TEST_TOKEN)
        job = api.submit(tiny_job()).wait(progress=True, poll_seconds=0.3, timeout=240)
        assert job.state == "SUCCEEDED", worker.log()[-3000:]
    finally:
        worker.stop()
    bar = capsys.readouterr().err
    assert "SUCCEEDED" in bar and "3/3 trials" in bar and "best " in bar

    trials = job.trials()
    losses = {t.lr: t.final_val_loss for t in trials if t.state == "COMPLETED"}
    assert job.best_so_far.loss == min(losses.values()) and job.best_so_far.lr == min(losses, key=losses.get)
    assert all(t.curve and t.curve[-1]["step"] == 30 for t in trials if t.state == "COMPLETED")
    assert job.tokens_trained == sum(t.tokens for t in trials) and job.tokens_per_second > 0
    assert job.optimum.lr > 0 and job.loss_unit == "nats per byte"
    rec = job.recommendation(256)
    assert rec.target_width == 256 and rec.base_width == 32 and rec.base_lr == job.optimum.lr
    assert {g.role for g in rec.groups} >= {"hidden", "embedding"}
    assert [j.id for j in api.jobs(state="SUCCEEDED")] == [job.id]
