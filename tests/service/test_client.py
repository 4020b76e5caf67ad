"""deltamu.Client, the Python client, against the real app: answers as the API gives them, problems as ApiError."""
from __future__ import annotations

import subprocess
import sys

import pytest

from deltamu import ApiError, Client
from helpers import TEST_TOKEN, tiny_job


def test_import_deltamu_loads_no_torch():
    code = "import deltamu, sys; deltamu.Client; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_submit_follow_and_cancel(sqlite_env, make_client):
    api = Client(http=make_client(sqlite_env), token=TEST_TOKEN)
    job = api.submit(tiny_job())
    assert job["state"] == "QUEUED" and api.job(job["id"])["id"] == job["id"]
    with pytest.raises(ApiError) as e:                                  # no optimum before the sweep has run
        api.recommendation(job["id"], 128)
    assert e.value.status == 409 and e.value.problem["type"].endswith("no-optimum-yet")
    assert api.cancel(job["id"])["state"] in ("CANCELLING", "CANCELLED")
    assert api.wait(job["id"], poll_seconds=0.05, timeout=30)["state"] == "CANCELLED"


def test_problems_are_api_errors_with_one_line_messages(sqlite_env, make_client):
    api = Client(http=make_client(sqlite_env), token=TEST_TOKEN)
    with pytest.raises(ApiError) as e:
        api.submit({"lr_grid": {"values": [0.01]}, "schedule": {"steps": 10, "warmup_steps": 20}})
    assert e.value.status == 422 and "\n" not in str(e.value) and str(e.value).startswith("422 ")
    with pytest.raises(ApiError, match="cannot reach"):
        Client("http://127.0.0.1:9", timeout=2).job("x")
