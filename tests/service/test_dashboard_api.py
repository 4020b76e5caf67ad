"""The dashboard and the API docs are served by the API from the package's own files: no CDN, no build step."""
from __future__ import annotations

import re

import pytest

from service.api.routes.dashboard import STATIC_DIR
from helpers import assert_problem, run_trials_through_crud, tiny_job

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/", "/docs", "/redoc"])
def test_pages_load_only_local_assets(sqlite_env, make_client, page):
    client = make_client(sqlite_env)
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assets = [a for a in ASSET.findall(r.text) if not a.startswith("#")]
    assert assets, r.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        assert client.get(asset).status_code == 200, asset
    assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_allow_images_only_from_the_api(sqlite_env, make_client, page):
    """ReDoc's bundle asks its vendor's CDN for a badge image whatever its options; the docs pages' policy keeps the
    browser from asking (tests/e2e/test_dashboard_browser.py shows a browser obeying it and the page still drawn)."""
    policy = make_client(sqlite_env).get(page).headers["content-security-policy"]
    assert policy.split()[:2] == ["img-src", "'self'"] and "http" not in policy and "*" not in policy


def test_the_default_docs_routes_are_these(sqlite_env, make_client):
    client = make_client(sqlite_env)
    assert "/static-docs/swagger-ui-bundle.js" in client.get("/docs").text
    assert "/static-docs/redoc.standalone.js" in client.get("/redoc").text
    assert client.get("/openapi.json").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/docs" not in paths


def test_the_vendored_files_are_the_ones_documented():
    vendor = STATIC_DIR / "vendor"
    readme = (vendor / "README.md").read_text()
    assert (vendor / "uPlot.iife.min.js").stat().st_size > 10_000 and "uPlot.iife.min.js" in readme
    assert (vendor / "uPlot.LICENSE").read_text().strip()
    assert sorted(p.name for p in vendor.iterdir()) == ["README.md", "uPlot.LICENSE", "uPlot.iife.min.js",
                                                       "uPlot.min.css"]


def test_jobs_show_queue_position_best_so_far_tokens_and_unit(sqlite_env, make_client, auth):
    client = make_client(sqlite_env)
    first = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()
    second = client.post("/v1/jobs", json=tiny_job(seeds=[1]), headers=auth).json()
    assert (first["queue_position"], second["queue_position"]) == (0, 1)
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["items"]}
    assert listed[second["id"]]["queue_position"] == 1
    assert first["best_so_far"] is None and first["eta_seconds"] is None and first["tokens_trained"] == 0
    assert first["tokens_total"] == 3 * 30 * 2 * 32                  # trials x steps x batch x seq_len
    assert first["loss_unit"] == "nats per byte"                      # the byte-level tokenizer

    run_trials_through_crud(sqlite_env, first["id"], [3.1, 2.7, float("nan")])
    done = client.get(f"/v1/jobs/{first['id']}").json()
    assert done["best_so_far"] == {"width": 32, "lr": 0.01, "seed": 0, "loss": 2.7}
    assert done["tokens_trained"] == 30 and done["queue_position"] is None   # 10 tokens per finished trial
    assert client.get(f"/v1/jobs/{second['id']}").json()["queue_position"] == 0     # the first one finished


def test_unknown_fields_say_did_you_mean(sqlite_env, make_client, auth):
    client = make_client(sqlite_env)
    body = {**tiny_job(), "seedz": [0], "schedule": {**tiny_job()["schedule"], "stepz": 3}}
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=auth), 422, "validation-error")
    assert "seedz: Extra inputs are not permitted (did you mean 'seeds'?)" in problem["detail"]
    assert "schedule.stepz" in problem["detail"] and "did you mean 'steps'?" in problem["detail"]
    hints = {tuple(e["loc"]): e.get("did_you_mean") for e in problem["errors"]}
    assert hints[("body", "seedz")] == ["seeds"] and hints[("body", "schedule", "stepz")] == ["steps"]
    nothing_close = {**tiny_job(), "zzzzzz": 1}
    problem = assert_problem(client.post("/v1/jobs", json=nothing_close, headers=auth), 422)
    assert "did you mean" not in problem["detail"]


def test_every_static_file_ships_in_the_package():
    # a non-editable install has only what pyproject's package-data names
    tomllib = pytest.importorskip("tomllib")
    from fnmatch import fnmatch
    globs = tomllib.loads((STATIC_DIR.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["service"]
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            name = path.relative_to(STATIC_DIR.parent).as_posix()
            assert any(fnmatch(name, g) and name.count("/") == g.count("/") for g in globs), name


def test_a_running_job_measures_its_throughput_and_eta(sqlite_env, make_client, auth):
    from service import crud
    from service.db import make_engine, make_session_factory, transaction

    client = make_client(sqlite_env)
    job_id = client.post("/v1/jobs", json=tiny_job(), headers=auth).json()["id"]    # 3 trials of 30 steps
    engine = make_engine(sqlite_env["DELTAMU_DATABASE_URL"])
    sessions = make_session_factory(engine)
    with sessions() as s:
        first, second, _ = [t.id for t in crud.list_trials(s, job_id=job_id)]
    with transaction(sessions) as s:                              # one trial done: 30 steps x 2 x 32 tokens
        assert crud.claim_trial(s, trial_id=first, worker="w")
    with transaction(sessions) as s:
        crud.finish_trial(s, trial_id=first, worker="w", result={
            "status": "COMPLETED", "final_val_loss": 2.9, "tokens": 1920, "seconds": 1.0})
    with transaction(sessions) as s:                              # one halfway
        assert crud.claim_trial(s, trial_id=second, worker="w")
    with transaction(sessions) as s:
        assert crud.append_point(s, trial_id=second, worker="w", point={
            "step": 15, "tokens": 960, "loss": 3.5, "lr": 0.01, "grad_norm": 1.0, "seconds": 0.5})
    engine.dispose()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "RUNNING" and job["progress"] == pytest.approx(0.5)
    assert job["tokens_trained"] == 1920 + 960 and job["tokens_total"] == 5760
    assert job["tokens_per_second"] == pytest.approx(2880 / job["elapsed_seconds"])
    # half the grid's tokens remain, and half took elapsed_seconds: that long again
    assert job["eta_seconds"] == pytest.approx(job["elapsed_seconds"])
    assert job["best_so_far"] == {"width": 32, "lr": 0.002, "seed": 0, "loss": 2.9}
