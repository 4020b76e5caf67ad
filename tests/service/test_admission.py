"""What the API admits (issue #16): a bounded body read only after authentication, finite floats, a job's
validation and curve sizes, paged trials, and 4xx/503 instead of 500 for strange input or a database outage."""
from __future__ import annotations

import base64
import json
import math

import pytest

from service import crud
from service.db import make_engine, make_session_factory, transaction
from helpers import assert_problem, tiny_job

pytestmark = pytest.mark.integration

def count_jobs(env) -> int:
    engine = make_engine(env["DELTAMU_DATABASE_URL"])
    with make_session_factory(engine)() as s:
        n = len(crud.list_jobs(s, state=None, limit=1000, after=None))
    engine.dispose()
    return n


# --- D2: the body ----------------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413_before_it_is_parsed(pg_env, make_client, auth):
    client = make_client(pg_env, max_body_bytes=2048)
    big = json.dumps(tiny_job(seeds=list(range(1000)))).encode()
    assert len(big) > 2048
    headers = {**auth, "Content-Type": "application/json"}
    body = assert_problem(client.post("/v1/jobs", content=big, headers=headers), 413, "body-too-large")
    assert "2048" in body["detail"]
    # no Content-Length (chunked): the bytes are counted as they arrive
    chunks = (big[i:i + 512] for i in range(0, len(big), 512))
    assert_problem(client.post("/v1/jobs", content=chunks, headers=headers), 413, "body-too-large")
    assert client.post("/v1/jobs", json=tiny_job(), headers=auth).status_code == 202   # small bodies still pass
    assert count_jobs(pg_env) == 1


def test_writes_authenticate_before_the_body_is_parsed(pg_env, make_client, auth):
    client = make_client(pg_env)
    malformed = b'{"lr_grid": ' + b"[" * 10_000
    headers = {"Content-Type": "application/json"}
    assert_problem(client.post("/v1/jobs", content=malformed, headers=headers), 401, "unauthorized")
    r = client.post("/v1/jobs", content=malformed, headers={**headers, "Authorization": "Bearer wrong"})
    assert_problem(r, 401, "invalid-token")
    r = client.post("/v1/jobs", content=malformed, headers={**headers, **auth})
    assert_problem(r, 400, "malformed-json")          # with a valid token it is parsed, and found malformed


# --- D3: floats ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, field, value", [
    ("model", "expand_v", 1e308), ("model", "expand_v", math.inf), ("model", "key_ratio", 1e308),
    ("model", "key_ratio", math.nan), ("model", "mlp_ratio", 1e308), ("model", "mlp_ratio", math.inf),
    ("model", "norm_eps", math.inf), ("model", "norm_eps", math.nan), ("model", "norm_eps", 10.0),
    ("optimizer", "eps", math.inf), ("optimizer", "weight_decay", math.nan), ("optimizer", "weight_decay", math.inf),
    ("optimizer", "grad_clip", math.nan), ("optimizer", "grad_clip", math.inf), ("optimizer", "momentum", math.nan),
    ("optimizer", "betas", [math.nan, 0.9]), ("schedule", "min_lr", math.nan), ("schedule", "min_lr", math.inf),
    (None, "output_mult", math.inf), (None, "init_mult", math.inf), (None, "init_mult", 1e300),
    ("lr_grid", "max", math.inf), ("lr_grid", "min", math.nan), ("lr_grid", "values", [1e308]),
])
def test_non_finite_and_absurd_floats_are_422(pg_env, make_client, auth, section, field, value):
    job = tiny_job()
    job["lr_grid"] = {"min": 1e-3, "max": 1e-2, "count": 2} if section == "lr_grid" and field != "values" \
        else job["lr_grid"]
    target = job if section is None else job.setdefault(section, {})
    target[field] = value
    r = make_client(pg_env).post("/v1/jobs", content=json.dumps(job), headers={**auth,
                                                                                "Content-Type": "application/json"})
    assert_problem(r, 422)
    assert field in r.json()["detail"], r.json()["detail"]
    assert count_jobs(pg_env) == 0


# --- D4: the sizes of a job ------------------------------------------------------------------------------------

def test_validation_tokens_curve_rows_and_memory_are_limited(pg_env, make_client, auth):
    client = make_client(pg_env)
    huge_eval = tiny_job(eval_batches=10_000, schedule={"steps": 2, "warmup_steps": 0, "batch_size": 512,
                                                        "seq_len": 4096})
    detail = assert_problem(client.post("/v1/jobs", json=huge_eval, headers=auth), 422, "job-rejected")["detail"]
    assert "validation tokens" in detail
    every_step = tiny_job(log_every=1, schedule={"steps": 200_000, "warmup_steps": 0, "batch_size": 1,
                                                 "seq_len": 8})
    detail = assert_problem(client.post("/v1/jobs", json=every_step, headers=auth), 422, "job-rejected")["detail"]
    assert "curve points" in detail
    small = make_client(pg_env, max_trial_memory_gib=0.0001)
    detail = assert_problem(small.post("/v1/jobs", json=tiny_job(), headers=auth), 422, "job-rejected")["detail"]
    assert "memory" in detail
    assert count_jobs(pg_env) == 0


# --- D5: paged trials ------------------------------------------------------------------------------------------

def test_trials_are_paged_and_curves_bounded(pg_env, make_client, auth):
    client = make_client(pg_env)
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]
    engine = make_engine(pg_env["DELTAMU_DATABASE_URL"])
    sessions = make_session_factory(engine)
    with sessions() as s:
        first = crud.list_trials(s, job_id=job_id)[0].id
    with transaction(sessions) as s:
        assert crud.claim_trial(s, trial_id=first, worker="w")
    for step in range(5, 30, 5):
        with transaction(sessions) as s:
            crud.append_point(s, trial_id=first, worker="w", point={
                "step": step, "tokens": step * 64, "loss": 5.0, "lr": 0.01, "grad_norm": 1.0, "seconds": 0.1})
    engine.dispose()

    page = client.get(f"/v1/jobs/{job_id}/trials?limit=2").json()
    assert [t["point"] for t in page["items"]] == [0, 1] and page["next_cursor"]
    rest = client.get(f"/v1/jobs/{job_id}/trials?limit=2&cursor={page['next_cursor']}").json()
    assert [t["point"] for t in rest["items"]] == [2] and rest["next_cursor"] is None

    got = client.get(f"/v1/jobs/{job_id}/trials?curve_limit=2").json()["items"][0]
    assert [p["step"] for p in got["curve"]] == [5, 10] and got["curve_truncated"]
    got = client.get(f"/v1/jobs/{job_id}/trials?curve_limit=2&after_step=10").json()["items"][0]
    assert [p["step"] for p in got["curve"]] == [15, 20] and got["curve_truncated"]
    got = client.get(f"/v1/jobs/{job_id}/trials?curve_limit=3&after_step=15").json()["items"][0]
    assert [p["step"] for p in got["curve"]] == [20, 25] and not got["curve_truncated"]
    assert len(client.get(f"/v1/jobs/{job_id}/trials?limit=100000").json()["items"]) == 3   # clamped to the max
    assert_problem(client.get(f"/v1/jobs/{job_id}/trials?curve_limit=0"), 422, "validation-error")
    assert_problem(client.get(f"/v1/jobs/{job_id}/trials?cursor=nope"), 400, "invalid-cursor")


# --- D6: strange input and outages -----------------------------------------------------------------------------

def test_strange_queries_and_paths_are_4xx(pg_env, make_client, auth):
    client = make_client(pg_env)
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]
    for after_step in (2 ** 31, 2 ** 63, 2 ** 64):                # steps are 32-bit
        assert_problem(client.get(f"/v1/jobs/{job_id}/trials?after_step={after_step}"), 422, "validation-error")
    assert client.get(f"/v1/jobs/{job_id}/trials?after_step={2 ** 31 - 1}").status_code == 200
    for source in ("/data/a\x00b.txt", "x" * 5000, "/" + "y/" * 3000):
        r = client.post("/v1/jobs", json=tiny_job(data={"source": source}), headers=auth)
        assert 400 <= r.status_code < 500, (source[:20], r.text)
    for created in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+00:00",
                    "9999-12-31T23:59:59+00:00"):
        cursor = base64.urlsafe_b64encode(json.dumps([created, "x"]).encode()).decode().rstrip("=")
        r = client.get(f"/v1/jobs?cursor={cursor}")
        assert r.status_code in (200, 400), (created, r.text)


def test_a_database_outage_is_503_with_retry_after(pg_env, make_client, auth):
    client = make_client(pg_env, database_url="postgresql+psycopg://postgres@127.0.0.1:9/down")
    for r in (client.get("/v1/jobs"), client.post("/v1/jobs", json=tiny_job(), headers=auth)):
        assert_problem(r, 503, "database-unavailable")
        assert int(r.headers["Retry-After"]) > 0


def test_a_broker_outage_on_submit_is_503_and_stores_nothing(pg_env, make_client, auth):
    client = make_client(pg_env, broker_url="redis://127.0.0.1:9/0")
    r = client.post("/v1/jobs", json=tiny_job(), headers=auth)
    assert_problem(r, 503, "broker-unavailable")
    assert int(r.headers["Retry-After"]) > 0
    assert count_jobs(pg_env) == 0
