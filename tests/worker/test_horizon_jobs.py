"""Over HTTP with a real `celery worker` on PostgreSQL and Redis: a sweep whose grid starts off to one side extends
itself past the edge, and a horizon sweep answers the recommendation for a token budget. Tiny CPU jobs."""
from __future__ import annotations

import argparse
import json

import pytest

from deltamu import Client
from service import cli
from service.models import JobState
from helpers import TEST_TOKEN, assert_problem, tiny_job, wait_for
from worker_helpers import AUTH, JOB_TIMEOUT, job_state, logs, trials_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHORT = {"steps": 10, "warmup_steps": 1, "batch_size": 2, "seq_len": 32}


def test_a_grid_of_too_small_lrs_extends_upward_and_says_how_many_rounds(deployment, workers):
    client, sessions, env = deployment
    job = tiny_job(lr_grid={"values": [1e-4, 2e-4, 4e-4]}, max_extend_rounds=1, schedule=SHORT)   # far too small
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    worker = workers(env, "extend")
    wait_for(lambda: job_state(sessions, job_id) in (JobState.SUCCEEDED, JobState.FAILED), JOB_TIMEOUT,
             what="job finished", on_timeout=lambda: logs(worker))
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert body["state"] == "SUCCEEDED" and body["extend_rounds"] == 1
    lrs = sorted(t.lr for t in trials_of(sessions, job_id))
    assert lrs == pytest.approx([1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3])       # two more above, at the grid's spacing
    assert body["trials"]["total"] == 5 and body["trials"]["by_state"]["COMPLETED"] == 5 and body["progress"] == 1
    assert body["optimum"]["lr"] == pytest.approx(1.6e-3) and body["optimum"]["on_edge"]   # no round left
    # one horizon: the lr for a token budget is the proxy's, with the warning that says why that is likely high
    rec = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 64, "tokens": 10 ** 9},
                     headers=AUTH).json()
    assert rec["tokens"] == 10 ** 9 and rec["base_lr"] == rec["proxy_lr"] == body["optimum"]["lr"]
    assert rec["horizon"]["lr_factor"] == 1 and rec["horizon"]["exponent"] is None
    assert any("single horizon" in w and "falls as the token budget grows" in w for w in rec["warnings"])


def test_a_horizon_sweep_fits_lr_against_tokens_and_recommends_for_a_budget(deployment, workers, monkeypatch, capsys):
    client, sessions, env = deployment
    job = tiny_job(lr_grid={"values": [0.005, 0.01, 0.02]}, horizons=[5, 10, 20], schedule=SHORT,   # the proxy's: 10
                   max_extend_rounds=1)
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    worker = workers(env, "horizons")
    wait_for(lambda: job_state(sessions, job_id) in (JobState.SUCCEEDED, JobState.FAILED), JOB_TIMEOUT,
             what="job finished", on_timeout=lambda: logs(worker))
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert body["state"] == "SUCCEEDED", body["error"]
    trials = trials_of(sessions, job_id)
    assert sorted({t.steps for t in trials}, key=lambda s: s or 10) == [5, None, 20]
    added = len(trials) - 9                  # 3 lrs x 3 horizons, and two per horizon whose best was an edge
    assert body["trials"]["total"] == len(trials) and added % 2 == 0 and (added > 0) == (body["extend_rounds"] == 1)
    assert all(t.tokens == (t.steps or 10) * 2 * 32 for t in trials)          # each trained its own horizon
    fit = body["horizon"]
    assert [p["steps"] for p in fit["points"]] == [5, 10, 20] and fit["proxy_tokens"] == 10 * 64
    assert [p["tokens"] for p in fit["points"]] == [320, 640, 1280]

    tokens = 16 * 1280
    r = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 64, "tokens": tokens}, headers=AUTH)
    assert r.status_code == 200, r.text
    rec, h = r.json(), r.json()["horizon"]
    assert h["extrapolation_ratio"] == pytest.approx(16) and h["tokens"] == tokens
    assert rec["proxy_lr"] == pytest.approx(body["optimum"]["lr"])
    assert rec["base_lr"] == pytest.approx(rec["proxy_lr"] * h["lr_factor"])
    hidden = next(g for g in rec["groups"] if g["role"] == "hidden")
    assert hidden["lr"] == pytest.approx(rec["base_lr"] * hidden["lr_multiplier"])   # muP's transfer on top
    # the cost counts each base-width trial by its horizon (a 20-step trial is two of the proxy's 10)
    base = [t for t in trials if t.width == body["widths"][0] and not t.retried]
    assert rec["cost"]["num_trials"] == len(base)
    assert rec["cost"]["trial_equivalents"] == pytest.approx(sum((t.steps or 10) / 10 for t in base))
    assert rec["cost"]["trial_equivalents"] > len(base)      # the 20-step trials outweigh the 5-step ones
    assert rec["cost"]["sweep_share"] == pytest.approx(rec["cost"]["trial_equivalents"] * rec["cost"]["trial_share"])
    assert any(f"beyond the {h['validated_ratio']:g}x the horizon study validated" in w for w in rec["warnings"])
    if fit["exponent"] is not None:
        assert h["exponent"] == fit["exponent"] and h["error_steps"] > 0
        assert h["extrapolated"] == fit["slope_resolved"]
        assert h["extrapolated"] or any("not distinguishable from 0" in w for w in rec["warnings"])
    # a token budget that is no number of tokens is a 422, and the width-only answer is what it was
    assert_problem(client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 64, "tokens": 0},
                              headers=AUTH), 422)
    plain = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": 64}, headers=AUTH).json()
    assert plain["horizon"] is None and plain["base_lr"] == pytest.approx(rec["proxy_lr"])
    png = client.get(f"/v1/jobs/{job_id}/horizon.png", params={"tokens": tokens, "width": 256}, headers=AUTH)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

    # the Python client and the CLI give the same answer (the CLI's connection pointed at this app; last: it closes it)
    assert Client(http=client, token=TEST_TOKEN).recommendation(job_id, 64, tokens=tokens).base_lr == rec["base_lr"]
    monkeypatch.setattr(cli, "_client", lambda args: Client(http=client, token=TEST_TOKEN))
    args = argparse.Namespace(id=job_id, width=64, tokens=tokens, json=True, url=None, token=None)
    assert cli.cmd_recommendation(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == rec and f"for {tokens:,} tokens" in err and "16x the longest proxy horizon" in err

