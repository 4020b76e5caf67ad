"""The end-to-end flow over real HTTP, shared by the PostgreSQL + Redis test and the embedded-default test."""
from __future__ import annotations

import json
import math
import time

import httpx

from gdn.recommend import SweepResult, recommend, recommendation_from_dict
from gdn.fit import fit_optimum
from service import floats
from service.jobspec import prepare
from service.schemas import JobCreate
from service.settings import Settings
from helpers import tiny_job

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
    """Trials stored with curves; the recommendation equals gdn.recommend.recommend on the stored optimum; the plot
    is a PNG."""
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "SUCCEEDED", job
    steps = job_spec["schedule"]["steps"]
    trials = [t for t in client.get(f"/v1/jobs/{job_id}/trials").json()["items"] if not t["retried"]]
    assert len(trials) == len(job_spec["lr_grid"]["values"]) * len(job_spec["seeds"])
    for t in trials:
        assert t["state"] in ("COMPLETED", "DIVERGED"), t
        assert t["trainer"] in ("lone", "pack") and t["backend"] == "auto", t              # how it ran, recorded
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
    assert (job["optimum"]["near_best_lr_min"], job["optimum"]["near_best_lr_max"]) == \
        (optimum.near_best_lr_min, optimum.near_best_lr_max)
    assert job["optimum"]["near_best_lr_min"] <= job["optimum"]["grid_lr"] <= job["optimum"]["near_best_lr_max"]
    config = prepare(JobCreate.model_validate(job["spec"]), Settings()).sweep_config
    from gdn.spec import SweepConfig
    expected = recommend(SweepResult(config=SweepConfig.from_dict(config), optimum=optimum,
                                     num_trials=len(trials)), TARGET_WIDTH).to_dict()
    r = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": TARGET_WIDTH})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.pop("job_id") == job_id
    assert body == json.loads(json.dumps(floats.encode(expected)))
    assert body["target_width"] == TARGET_WIDTH
    from deltamu import Client                      # the Python client reads the same answer, typed
    assert Client(http=client).recommendation(job_id, TARGET_WIDTH) == recommendation_from_dict(expected)

    png = client.get(f"/v1/jobs/{job_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def e2e_job() -> dict:
    return tiny_job()


def transfer_job() -> dict:
    """A transfer study of a few seconds a trial: widths 32 and 64, the tiny job's three learning rates."""
    return tiny_job(widths=[32, 64])


def check_transfer_study(client: httpx.Client, job_id: str, job_spec: dict) -> None:
    """Every (width, lr, seed) trial stored once with its curve; the base width's optimum and the transfer summary
    are gdn's on the stored losses; the recommendation uses the base width's optimum; the plot is a PNG."""
    from gdn.fit import grid_step_log2
    from gdn.transfer import transfer_summary
    from gdn.spec import SweepConfig

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "SUCCEEDED", job
    widths, lrs, steps = job_spec["widths"], job_spec["lr_grid"]["values"], job_spec["schedule"]["steps"]
    assert job["widths"] == widths and job["trials"]["total"] == len(widths) * len(lrs) * len(job_spec["seeds"])
    trials = sorted((t for t in client.get(f"/v1/jobs/{job_id}/trials").json()["items"] if not t["retried"]),
                    key=lambda t: t["point"])
    assert sorted((t["width"], t["lr"], t["seed"]) for t in trials) == sorted(
        (w, lr, s) for w in widths for lr in lrs for s in job_spec["seeds"])
    for t in trials:
        assert t["state"] in ("COMPLETED", "DIVERGED"), t
        curve_steps = [p["step"] for p in t["curve"]]
        assert curve_steps == sorted(set(curve_steps)) and (t["state"] == "DIVERGED" or curve_steps[-1] == steps)
    num_params = {t["width"]: t["num_params"] for t in trials}
    assert num_params[widths[0]] < num_params[widths[1]]              # each width trained at its own size

    losses = [t["final_val_loss"] if t["final_val_loss"] is not None else math.nan for t in trials]
    base = [k for k, t in enumerate(trials) if t["width"] == widths[0]]
    optimum = fit_optimum([trials[k]["lr"] for k in base], [losses[k] for k in base],
                          [trials[k]["seed"] for k in base])
    assert job["optimum"]["lr"] == optimum.lr
    expected = transfer_summary([t["width"] for t in trials], [t["lr"] for t in trials], losses,
                                [t["seed"] for t in trials], base_width=widths[0], grid_step=grid_step_log2(lrs),
                                swept_widths=widths)
    transfer = job["transfer"]
    assert transfer["base_lr"] == optimum.lr and transfer["regret_is_interpolated"] is True
    assert [w["width"] for w in transfer["widths"]] == sorted(widths)
    for got, want in zip(transfer["widths"], expected.widths):
        assert (got["optimum"] or {}).get("lr") == (want.optimum.lr if want.optimum else None)
        assert (got["shift_steps"], got["regret"]) == (want.shift_steps, want.regret)
    assert transfer["argmin_within_one_step"] == expected.argmin_within_one_step
    assert transfer["loss_falls_with_width"] == expected.loss_falls_with_width

    config = SweepConfig.from_dict(prepare(JobCreate.model_validate(job["spec"]), Settings()).sweep_config)
    body = client.get(f"/v1/jobs/{job_id}/recommendation", params={"width": TARGET_WIDTH}).json()
    body.pop("job_id")
    assert body == json.loads(json.dumps(floats.encode(recommend(
        SweepResult(config=config, optimum=optimum, num_trials=len(base)), TARGET_WIDTH).to_dict())))

    png = client.get(f"/v1/jobs/{job_id}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
