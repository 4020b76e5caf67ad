"""The HTTP API through the real app (TestClient) on real databases; the broker is real too (Redis, or kombu's
SQL transport for the embedded default). Trials are finished through crud, the path a worker takes."""
from __future__ import annotations

import concurrent.futures
import json
import math

import pytest
import sqlalchemy as sa

from gdn.recommend import SweepResult, recommend
from gdn.fit import fit_optimum
from gdn.spec import SweepConfig
from service import floats
from service.db import make_engine, make_session_factory
from service.models import IdempotencyKey, Job, Trial
from helpers import PROBLEM, TEST_TOKEN, assert_problem, run_trials_through_crud, tiny_job

pytestmark = pytest.mark.integration



def count_rows(env, model) -> int:
    engine = make_engine(env["DELTAMU_DATABASE_URL"])
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()
    engine.dispose()
    return n


def test_submit_answers_202_with_location_and_stores_the_trials(any_env, make_client, auth):
    client = make_client(any_env)
    r = client.post("/v1/jobs", json=tiny_job(seeds=[0, 1]), headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "QUEUED" and job["trials"]["total"] == 6 and job["trials"]["by_state"]["PENDING"] == 6
    got = client.get(r.headers["Location"]).json()
    assert got["id"] == job["id"] and got["spec"]["lr_grid"]["values"] == [0.002, 0.01, 0.05]
    trials = client.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert sorted((t["lr"], t["seed"]) for t in trials) == sorted(
        (lr, s) for lr in (0.002, 0.01, 0.05) for s in (0, 1))


def test_min_max_count_grid(any_env, make_client, auth):
    client = make_client(any_env)
    r = client.post("/v1/jobs", json=tiny_job(lr_grid={"min": 1e-3, "max": 1.6e-2, "count": 5}), headers=auth)
    assert r.status_code == 202
    lrs = sorted(t["lr"] for t in client.get(f"/v1/jobs/{r.json()['id']}/trials").json()["items"])
    assert lrs == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])


@pytest.mark.parametrize("body, status, slug", [
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 33}}, 422, "validation-error"),    # width the axis can't take
    ({"lr_grid": {"values": [0.01]}, "schedule": {"steps": 10 ** 7}}, 422, "job-rejected"),  # too long
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 4096, "depth": 64},
      "schedule": {"steps": 200000, "batch_size": 512, "seq_len": 4096}}, 422, "job-rejected"),
    ({"lr_grid": {"min": 1e-4, "max": 1e-1, "count": 500}}, 422, "job-rejected"),        # too many trials
    ({"lr_grid": {"min": 1e-4, "max": 1e-1, "count": 10 ** 9}}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "seeds": [2 ** 40]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "seeds": [1, 1]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 10 ** 12}}, 422, "job-rejected"),
    ({"lr_grid": {"values": [0.01]}, "schedule": {"steps": 10, "warmup_steps": 20}}, 422, "validation-error"),
    ({"lr_grid": {"values": [-1.0]}}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01], "min": 0.1}}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "optimizer": {"name": "lion"}}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "parametrization": "nope"}, 422, "job-rejected"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64, "bogus": 1}}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "unknown_field": 1}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "data": {"source": "/etc/passwd"}}, 422, "job-rejected"),
    ({}, 422, "validation-error"),
    ([1, 2], 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [64, 100]}, 422, "job-rejected"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [32, 64]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [64, 128, 64]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": []}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [64, -8]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [64, 2 ** 40]}, 422, "validation-error"),
    ({"lr_grid": {"values": [0.01]}, "model": {"width": 64}, "widths": [64, 16384]}, 422, "job-rejected"),
    ({"lr_grid": {"min": 1e-4, "max": 1e-1, "count": 20}, "model": {"width": 64}, "widths": [64, 128, 256, 512]},
     422, "job-rejected"),                                                   # 80 trials over the widths
])
def test_bad_bodies_get_4xx_problems(pg_env, make_client, auth, body, status, slug):
    client = make_client(pg_env)
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=auth), status, slug)
    assert problem["detail"]
    assert count_rows(pg_env, Job) == 0


def test_malformed_json_is_400(pg_env, make_client, auth):
    client = make_client(pg_env)
    r = client.post("/v1/jobs", content=b'{"lr_grid": ', headers={**auth, "Content-Type": "application/json"})
    assert_problem(r, 400, "malformed-json")


def test_writes_need_a_valid_token(pg_env, make_client):
    client = make_client(pg_env)
    assert_problem(client.post("/v1/jobs", json=tiny_job()), 401, "unauthorized")
    r = client.post("/v1/jobs", json=tiny_job(), headers={"Authorization": "Bearer wrong"})
    assert_problem(r, 401, "invalid-token")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.post("/v1/jobs", json=tiny_job(), headers={"Authorization": "Basic abc"}), 401)
    assert_problem(client.post("/v1/jobs/x/cancel"), 401)
    assert count_rows(pg_env, Job) == 0
    # the token is stored hashed, never in clear
    engine = make_engine(pg_env["DELTAMU_DATABASE_URL"])
    with engine.connect() as conn:
        stored = [row[0] for row in conn.execute(sa.text("SELECT token_sha256 FROM api_tokens"))]
    engine.dispose()
    assert stored and TEST_TOKEN not in stored and all(len(h) == 64 for h in stored)


def test_reads_can_require_a_token(pg_env, make_client, auth):
    client = make_client(pg_env, auth_reads=True)
    assert_problem(client.get("/v1/jobs"), 401)
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert make_client(pg_env, auth_reads=False).get("/v1/jobs").status_code == 200     # reads opened


def test_unknown_ids_routes_and_methods(pg_env, make_client, auth):
    client = make_client(pg_env)
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/trials", "/v1/jobs/nope/recommendation?width=64",
                 "/v1/jobs/nope/plot.png"):
        assert_problem(client.get(path), 404, "job-not-found")
    assert_problem(client.post("/v1/jobs/nope/cancel", headers=auth), 404, "job-not-found")
    assert_problem(client.get("/v2/nothing"), 404)
    assert_problem(client.delete("/v1/jobs"), 405)
    assert_problem(client.get("/v1/jobs?limit=0"), 422, "validation-error")
    assert_problem(client.get("/v1/jobs?state=DONE"), 422, "validation-error")
    assert_problem(client.get("/v1/jobs?cursor=!!notacursor"), 400, "invalid-cursor")
    assert_problem(client.post("/v1/jobs", json=tiny_job(), headers={**auth, "Idempotency-Key": "x" * 300}), 400)


def test_idempotency_key(pg_env, make_client, auth):
    client = make_client(pg_env)
    headers = {**auth, "Idempotency-Key": "key-1"}
    first = client.post("/v1/jobs", json=tiny_job(), headers=headers)
    again = client.post("/v1/jobs", json=tiny_job(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_rows(pg_env, Job) == 1
    other = client.post("/v1/jobs", json=tiny_job(seeds=[7]), headers=headers)
    assert_problem(other, 422, "idempotency-key-reused")
    assert count_rows(pg_env, Job) == 1
    assert client.post("/v1/jobs", json=tiny_job(), headers={**auth, "Idempotency-Key": "key-2"}).status_code == 202
    assert count_rows(pg_env, Job) == 2


def test_concurrent_posts_with_one_key_make_one_job(pg_env, make_client, auth):
    client = make_client(pg_env)
    headers = {**auth, "Idempotency-Key": "concurrent"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/jobs", json=tiny_job(), headers=headers), range(8)))
    assert {a.status_code for a in answers} <= {202, 409}
    ids = {a.json()["id"] for a in answers if a.status_code == 202}
    assert len(ids) == 1
    assert count_rows(pg_env, Job) == 1 and count_rows(pg_env, IdempotencyKey) == 1
    assert count_rows(pg_env, Trial) == 3


def test_pagination_and_state_filter(any_env, make_client, auth):
    client = make_client(any_env)
    created = [client.post("/v1/jobs", json=tiny_job(seeds=[i]), headers=auth).json()["id"] for i in range(5)]
    client.post(f"/v1/jobs/{created[0]}/cancel", headers=auth)
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]                                   # newest first, each exactly once
    cancelled = client.get("/v1/jobs", params={"state": "CANCELLED"}).json()["items"]
    assert [j["id"] for j in cancelled] == [created[0]]


def test_recommendation_plot_and_reuse(any_env, make_client, auth):
    client = make_client(any_env)
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/recommendation?width=4096"), 409, "no-optimum-yet")
    losses = [3.1, 2.7, float("nan")]
    run_trials_through_crud(any_env, job_id, losses)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "SUCCEEDED" and job["progress"] == 1.0
    trials = client.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    diverged = [t for t in trials if t["state"] == "DIVERGED"]
    assert len(diverged) == 1 and diverged[0]["final_val_loss"] is None
    assert diverged[0]["nonfinite"] == {"final_val_loss": "nan"}

    r = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 4096})
    assert r.status_code == 200
    assert "max-age" in r.headers["Cache-Control"] and r.headers["ETag"]
    config = SweepConfig.from_dict(_sweep_config(any_env, job_id))
    optimum = fit_optimum([0.002, 0.01, 0.05], losses, [0, 0, 0])
    expected = recommend(SweepResult(config=config, optimum=optimum, num_trials=3), 4096).to_dict()
    body = r.json()
    assert body.pop("job_id") == job_id
    assert body == json.loads(json.dumps(floats.encode(expected)))    # exactly gdn's answer, through JSON
    assert client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 4096},
                      headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    other = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 2048})
    assert other.headers["ETag"] != r.headers["ETag"]
    for width in ("1001", "0", "-5", "abc", str(10 ** 9)):
        assert_problem(client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": width}), 422)
    assert_problem(client.get(f"/v1/jobs/{job_id}/recommendation"), 422)

    png = client.get(f"/v1/jobs/{job_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 5000

    reused = client.post("/v1/jobs", json={**tiny_job(), "reuse": True}, headers=auth)
    assert reused.status_code == 200 and reused.json()["id"] == job_id
    fresh = client.post("/v1/jobs", json=tiny_job(), headers=auth)      # without reuse: a new job
    assert fresh.status_code == 202 and fresh.json()["id"] != job_id
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel", headers=auth), 409, "job-finished")


def _sweep_config(env, job_id) -> dict:
    engine = make_engine(env["DELTAMU_DATABASE_URL"])
    with make_session_factory(engine)() as s:
        config = s.get(Job, job_id).sweep_config
    engine.dispose()
    return config


def test_cancel_a_queued_job(any_env, make_client, auth):
    client = make_client(any_env)
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert r.status_code == 202 and r.json()["state"] == "CANCELLED"
    assert r.json()["trials"]["by_state"]["CANCELLED"] == 3


def test_health_readiness_metrics(any_env, make_client, auth):
    client = make_client(any_env)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] and ready.json()["checks"]["broker"]["ok"]
    client.post("/v1/jobs", json=tiny_job(), headers=auth)
    text = client.get("/metrics").text
    assert 'deltamu_jobs{state="QUEUED"} 1.0' in text
    assert 'deltamu_trials{state="PENDING"} 3.0' in text
    assert "deltamu_queue_depth 3.0" in text
    assert "deltamu_trial_seconds_count" in text
    assert 'deltamu_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text


def test_readiness_fails_when_the_schema_is_behind_or_the_broker_is_down(tmp_path, make_client, sqlite_env):
    from service import migrate
    behind = {**sqlite_env, "DELTAMU_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    r = make_client(behind).get("/readyz")
    body = assert_problem(r, 503, "not-ready")
    assert not body["checks"]["database"]["ok"] and "alembic upgrade head" in body["detail"]
    migrate.upgrade(behind["DELTAMU_DATABASE_URL"])
    assert make_client(behind).get("/readyz").status_code == 200
    down = {**sqlite_env, "DELTAMU_BROKER_URL": "redis://127.0.0.1:1/0"}
    body = assert_problem(make_client(down).get("/readyz"), 503, "not-ready")
    assert not body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]


def test_openapi_documents_the_routes(pg_env, make_client):
    spec = make_client(pg_env).get("/openapi.json").json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/trials", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/recommendation", "/v1/jobs/{job_id}/plot.png", "/healthz", "/readyz",
                 "/metrics"):
        assert path in spec["paths"], path
    assert "JobCreate" in spec["components"]["schemas"]
    answer = spec["paths"]["/v1/jobs/{job_id}/recommendation"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RecommendationPublic"}


def test_no_mutated_body_gets_a_500(sqlite_env, make_client, auth):
    """Every leaf of a valid job replaced by values of the wrong kind or range: a 2xx or a 4xx, never a 5xx."""
    import copy
    import random
    client = make_client(sqlite_env)
    base = tiny_job(lr_grid={"min": 1e-3, "max": 1e-2, "count": 2})
    strange = [None, "", "x", -1, 0, 2 ** 63, -2 ** 63, 1e308, -0.0, True, [], {}, [1, "a"], {"a": 1}, 1.5]

    def leaves(obj, path=()):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, path + (k,))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from leaves(v, path + (i,))
        else:
            yield path

    rng = random.Random(0)
    paths = list(leaves(base))
    for _ in range(120):
        body = copy.deepcopy(base)
        path = rng.choice(paths)
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = rng.choice(strange)
        r = client.post("/v1/jobs", json=body, headers=auth)
        assert r.status_code < 500, (path, target[path[-1]], r.text)
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith(PROBLEM)


# --- transfer studies ------------------------------------------------------------------------------------------

def transfer_job(**overrides) -> dict:
    return tiny_job(widths=[32, 64], **overrides)


def test_a_width_the_axis_cannot_take_is_named(pg_env, make_client, auth):
    client = make_client(pg_env)
    problem = assert_problem(client.post("/v1/jobs", json=tiny_job(widths=[32, 64, 100]), headers=auth), 422,
                             "job-rejected")
    assert "width 100" in problem["detail"] and "head_dim axis" in problem["detail"]
    problem = assert_problem(client.post("/v1/jobs", json=tiny_job(widths=[64, 32]), headers=auth), 422,
                             "validation-error")
    assert "widths[0] must be the base width" in problem["detail"] and "32" in problem["detail"]
    assert count_rows(pg_env, Job) == 0


def test_limits_count_every_width(pg_env, make_client, auth):
    """A transfer study is refused when its widths together exceed the trial or FLOP limit, though its base
    width alone fits."""
    from gdn.config import train_flops_per_token
    job = transfer_job()
    config = SweepConfig.from_dict(prepare_config(job))
    tokens = job["schedule"]["steps"] * job["schedule"]["batch_size"] * job["schedule"]["seq_len"]
    per_width = {w: 3 * tokens * train_flops_per_token(config.model_at(w)) for w in (32, 64)}
    limit = (per_width[32] + per_width[64]) * 0.99
    assert per_width[32] < limit
    client = make_client(pg_env, max_job_flops=limit)
    assert client.post("/v1/jobs", json=tiny_job(), headers=auth).status_code == 202
    assert "FLOPs" in assert_problem(client.post("/v1/jobs", json=job, headers=auth), 422, "job-rejected")["detail"]
    client = make_client(pg_env, max_trials=5)
    assert client.post("/v1/jobs", json=tiny_job(), headers=auth).status_code == 202      # 3 trials
    detail = assert_problem(client.post("/v1/jobs", json=job, headers=auth), 422, "job-rejected")["detail"]
    assert "6 trials (widths x learning rates x seeds)" in detail


def prepare_config(job: dict) -> dict:
    from service.jobspec import prepare
    from service.schemas import JobCreate
    from service.settings import Settings
    return prepare(JobCreate.model_validate(job), Settings()).sweep_config


def test_a_transfer_study_reports_its_summary_plot_and_base_recommendation(any_env, make_client, auth):
    from gdn.fit import grid_step_log2
    from gdn.transfer import transfer_summary
    client = make_client(any_env)
    r = client.post("/v1/jobs", json=transfer_job(seeds=[0, 1]), headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["widths"] == [32, 64] and job["spec"]["widths"] == [32, 64] and job["trials"]["total"] == 12
    assert job["transfer"] is None
    trials = client.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert sorted((t["width"], t["lr"], t["seed"]) for t in trials) == sorted(
        (w, lr, s) for w in (32, 64) for lr in (0.002, 0.01, 0.05) for s in (0, 1))
    by_trial = {(32, 0.002): 3.2, (32, 0.01): 2.9, (32, 0.05): 3.0, (64, 0.002): 3.0, (64, 0.01): 2.7,
                (64, 0.05): 2.95}
    losses = [by_trial[t["width"], t["lr"]] + 0.01 * t["seed"] for t in sorted(trials, key=lambda t: t["point"])]
    run_trials_through_crud(any_env, job["id"], losses)

    job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["state"] == "SUCCEEDED"
    ordered = sorted(trials, key=lambda t: t["point"])
    base = [(t["lr"], loss, t["seed"]) for t, loss in zip(ordered, losses) if t["width"] == 32]
    optimum = fit_optimum(*zip(*base))
    assert job["optimum"]["lr"] == optimum.lr                           # the base width's optimum
    expected = transfer_summary([t["width"] for t in ordered], [t["lr"] for t in ordered], losses,
                                [t["seed"] for t in ordered], base_width=32,
                                grid_step=grid_step_log2([0.002, 0.01, 0.05]), swept_widths=[32, 64])
    transfer = job["transfer"]
    assert transfer["base_width"] == 32 and transfer["base_lr"] == optimum.lr
    assert transfer["grid_step_log2"] == pytest.approx(math.log2(5))
    assert transfer["regret_is_interpolated"] is True and "interpolated" in transfer["regret_note"]
    for got, want in zip(transfer["widths"], expected.widths):
        assert got["width"] == want.width and got["optimum"]["lr"] == want.optimum.lr
        assert got["shift_steps"] == want.shift_steps and got["regret"] == want.regret
        assert got["transfer_loss"] == want.transfer_loss and got["regret_method"] == want.regret_method
    assert transfer["widths"][0]["regret"] == 0.0
    assert transfer["argmin_within_one_step"] == expected.argmin_within_one_step
    assert transfer["loss_falls_with_width"] == expected.loss_falls_with_width is True

    rec = client.get(f"/v1/jobs/{job['id']}/recommendation", params={"width": 1024})
    assert rec.status_code == 200
    config = SweepConfig.from_dict(_sweep_config(any_env, job["id"]))
    body = rec.json()
    body.pop("job_id")
    assert body == json.loads(json.dumps(floats.encode(recommend(SweepResult(config, optimum, num_trials=6), 1024).to_dict())))

    png = client.get(f"/v1/jobs/{job['id']}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 5000
    single = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()
    assert single["widths"] == [32] and single["transfer"] is None      # widths absent: just the base


def test_horizons_count_in_the_trial_and_flop_limits(pg_env, make_client, auth):
    """A horizon sweep's further horizons are trials and FLOPs of their own: refused when they together exceed the
    limits though each horizon alone fits; horizons without the proxy's are a 422."""
    from gdn.config import train_flops_per_token
    job = tiny_job(horizons=[15, 30, 60])               # 3 lrs at 15 + 30 + 60 steps
    client = make_client(pg_env, max_trials=8)
    detail = assert_problem(client.post("/v1/jobs", json=job, headers=auth), 422, "job-rejected")["detail"]
    assert "9 trials ((widths + further horizons) x learning rates x seeds)" in detail
    per_token = train_flops_per_token(SweepConfig.from_dict(prepare_config(tiny_job())).model_at(32))
    limit = 3 * 64 * 100 * per_token                  # 105 steps in all: the 60-step horizon alone fits, all do not
    client = make_client(pg_env, max_job_flops=limit)
    assert "widths and horizons" in assert_problem(client.post("/v1/jobs", json=job, headers=auth), 422,
                                                   "job-rejected")["detail"]
    r = client.post("/v1/jobs", json=tiny_job(horizons=[15, 30]), headers=auth)
    assert r.status_code == 202, r.text
    assert "must include schedule.steps" in assert_problem(
        client.post("/v1/jobs", json=tiny_job(horizons=[15, 60]), headers=auth), 422)["errors"][0]["msg"]


def test_a_jobs_target_tokens_is_its_recommendations_budget(any_env, make_client, auth):
    client = make_client(any_env)
    budget = 10 ** 9
    job_id = client.post("/v1/jobs", json=tiny_job(target_tokens=budget), headers=auth).json()["id"]
    run_trials_through_crud(any_env, job_id, [3.1, 2.7, 2.9])
    assert client.get(f"/v1/jobs/{job_id}").json()["spec"]["target_tokens"] == budget
    default = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 256}).json()
    asked = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 256, "tokens": budget}).json()
    assert default["horizon"]["tokens"] == budget and default == asked        # no ?tokens=: the job's budget
    other = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 256, "tokens": 10 ** 6}).json()
    assert other["horizon"]["tokens"] == 10 ** 6                               # ?tokens= wins
    # one horizon: the proxy's lr, and the warning that the budget is far past the proxy's tokens
    assert default["base_lr"] == default["proxy_lr"] and any("horizon" in w for w in default["warnings"])
    # the budget is part of the job's identity: a reuse with another budget runs its own job
    again = client.post("/v1/jobs", json={**tiny_job(target_tokens=budget), "reuse": True}, headers=auth)
    assert again.status_code == 200 and again.json()["id"] == job_id
    fresh = client.post("/v1/jobs", json={**tiny_job(target_tokens=2 * budget), "reuse": True}, headers=auth)
    assert fresh.status_code == 202 and fresh.json()["id"] != job_id
    for bad in (0, -1, 10 ** 17, "many"):
        assert_problem(client.post("/v1/jobs", json=tiny_job(target_tokens=bad), headers=auth), 422)
