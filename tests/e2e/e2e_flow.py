"""The end-to-end flow over real HTTP, shared by the PostgreSQL + Redis test and the embedded-default test."""
from __future__ import annotations

import json
import math
import time

import httpx

from gdn.sweep import SweepResult, fit_optimum, recommend
from service import floats
from service.jobspec import prepare
from service.schemas import JobCreate
from service.settings import Settings
from service.testing import tiny_job

TARGET_WIDTH = 4096


def wait_until_serving(base_url: str, timeout: float, diagnostics) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the API at {base_url} never became ready\n{diagnostics()}")


def poll_job(client: httpx.Client, location: str, timeout: float, diagnostics) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(location).json()
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['state']} after {timeout} s: {job}\n{diagnostics()}")
        time.sleep(0.5)


def submit(client: httpx.Client, job: dict) -> str:
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    assert location == f"/v1/jobs/{r.json()['id']}"
    return location


def check_finished_job(client: httpx.Client, job_id: str, job_spec: dict) -> None:
    """Trials stored with curves; the recommendation equals gdn.sweep.recommend on the stored optimum; the plot
    is a PNG."""
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "SUCCEEDED", job
    steps = job_spec["schedule"]["steps"]
    trials = [t for t in client.get(f"/v1/jobs/{job_id}/trials").json()["items"] if not t["retried"]]
    assert len(trials) == len(job_spec["lr_grid"]["values"]) * len(job_spec["seeds"])
    for t in trials:
        assert t["state"] in ("COMPLETED", "DIVERGED"), t
        curve_steps = [p["step"] for p in t["curve"]]
        assert curve_steps and curve_steps == sorted(set(curve_steps))
        if t["state"] == "COMPLETED":
            assert curve_steps[-1] == steps and t["final_val_loss"] > 0
    tail = client.get(f"/v1/jobs/{job_id}/trials", params={"after_step": steps - 1}).json()["items"]
    assert all(p["step"] > steps - 1 for t in tail for p in t["curve"])

    # the optimum the service stored is gdn's fit of the stored losses; the recommendation is gdn's for it
    losses = [t["final_val_loss"] if t["final_val_loss"] is not None else math.nan for t in trials]
    optimum = fit_optimum([t["lr"] for t in trials], losses, [t["seed"] for t in trials])
    assert job["optimum"]["lr"] == optimum.lr
    config = prepare(JobCreate.model_validate(job["spec"]), Settings()).sweep_config
    from gdn.train import SweepConfig
    expected = recommend(SweepResult(config=SweepConfig.from_dict(config), optimum=optimum,
                                     num_trials=len(trials)), TARGET_WIDTH)
    r = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": TARGET_WIDTH})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.pop("job_id") == job_id
    assert body == json.loads(json.dumps(floats.encode(expected)))
    assert body["target_width"] == TARGET_WIDTH

    png = client.get(f"/v1/jobs/{job_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def e2e_job() -> dict:
    return tiny_job()
