"""Packed trials through a real `celery worker` process (no eager mode, no mocks): the worker runs the product's app
from packing_worker_app, which makes a CPU worker take the path a CUDA worker takes, so one task claims its trial
and its PENDING mates of the same job and width and trains them with gdn.packed.train_packed."""
from __future__ import annotations

import math
import signal
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from gdn.fit import fit_optimum
from gdn.spec import SweepConfig, TrialSpec
from gdn.train import train_trial
from service import floats
from service.db import make_engine, make_session_factory
from service.main import create_app
from service.models import Job, JobState, TrialState
from helpers import settings_from_env, tiny_job, wait_for
from worker_helpers import AUTH, JOB_TIMEOUT, job_state, logs, steps_of, trials_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PACKING = {"DELTAMU_MAX_PACK": "4"}
PACKING_APP = "packing_worker_app"       # a CPU worker that packs
DIVERGING_LR = 1.0       # diverges by step 5 at width 32 (AdamW, muP), while the others train on


def test_a_packed_job_runs_every_trial_once(deployment, workers):
    """Four trials, one pack: every trial exactly once, its own curve, one DIVERGED while the others finish; the
    three other deliveries find their trials taken; the optimum is gdn's fit of the stored losses; a packed
    trial's loss is the one train_trial gives for it."""
    client, sessions, env = deployment
    lrs = [0.002, 0.01, 0.05, DIVERGING_LR]
    job_id = client.post("/v1/jobs", json=tiny_job(lr_grid={"values": lrs}), headers=AUTH).json()["id"]
    worker = workers({**env, **PACKING}, "packer", app=PACKING_APP)
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(worker))
    wait_for(lambda: worker.log().count("not claimable") == 3, 60, what="the other deliveries to be skipped",
             on_timeout=lambda: logs(worker))
    assert "training a pack of 4 trials" in worker.log()

    trials = trials_of(sessions, job_id)
    assert sorted(t.point for t in trials) == [0, 1, 2, 3] and {t.attempt for t in trials} == {1}
    starts = Counter(t.started_at for t in trials)       # the task's own claim, then its three mates' at once
    assert len({t.worker for t in trials}) == 1 and sorted(starts.values()) == [1, 3]
    assert {(t.trainer, t.backend, t.cuda_graphs) for t in trials} == {("pack", "auto", False)}   # recorded as run
    by_lr = {t.lr: t for t in trials}
    diverged = by_lr[DIVERGING_LR]
    assert diverged.state == TrialState.DIVERGED and math.isnan(diverged.final_val_loss)
    assert steps_of(sessions, diverged.id)[-1] == diverged.diverged_step < 30
    for lr in lrs[:3]:
        t = by_lr[lr]
        assert t.state == TrialState.COMPLETED and t.final_val_loss > 0
        assert steps_of(sessions, t.id) == [1, 5, 10, 15, 20, 25, 30]      # its own curve, every point once

    with sessions() as s:
        job = s.get(Job, job_id)
        optimum, config = floats.decode(job.optimum), SweepConfig.from_dict(job.sweep_config)
    assert optimum == fit_optimum([t.lr for t in trials], [t.final_val_loss for t in trials],
                                  [t.seed for t in trials]).to_dict()
    single = train_trial(TrialSpec(config, 0.01, 0, device="cpu"), log_every=5)
    assert by_lr[0.01].final_val_loss == pytest.approx(single.final_val_loss, rel=1e-4)


def test_two_workers_split_a_job_into_two_packs(deployment, workers):
    """As `deltamu up` starts one worker per GPU with DELTAMU_PACK_SHARE = the number of GPUs: two real workers,
    four trials, each worker trains a pack of two at once (not the first worker all four)."""
    client, sessions, env = deployment
    split = {**env, **PACKING, "DELTAMU_PACK_SHARE": "2"}
    pair = [workers(split, "gpu0", app=PACKING_APP), workers(split, "gpu1", app=PACKING_APP)]
    wait_for(lambda: all(" ready." in w.log() for w in pair), 60, what="both workers ready",
             on_timeout=lambda: logs(*pair))
    job = tiny_job(lr_grid={"values": [0.002, 0.004, 0.008, 0.016]},
                   schedule={"steps": 150, "warmup_steps": 10, "batch_size": 2, "seq_len": 32})
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(*pair))
    trials = trials_of(sessions, job_id)
    assert sorted(t.point for t in trials) == [0, 1, 2, 3] and {t.state for t in trials} == {TrialState.COMPLETED}
    assert sorted(Counter(t.worker for t in trials).values()) == [2, 2]
    assert all("training a pack of 2 trials" in w.log() for w in pair)


def test_a_killed_packed_worker_has_all_its_trials_requeued(sqlite_env, workers):
    """On the embedded backend (SQLite + kombu's SQL transport): SIGKILL in the middle of a pack; the reaper
    requeues every trial of the pack as a new attempt and a fresh worker packs and finishes them."""
    env = {**sqlite_env, **PACKING}
    settings = settings_from_env(env)
    engine = make_engine(settings.db_url)
    sessions = make_session_factory(engine)
    job = tiny_job(lr_grid={"values": [0.004, 0.008, 0.016]}, log_every=2,
                   schedule={"steps": 100, "warmup_steps": 10, "batch_size": 2, "seq_len": 32})
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    first = workers(env, "doomed", app=PACKING_APP)

    def pack_in_training():
        trials = trials_of(sessions, job_id)
        return (all(t.state == TrialState.RUNNING for t in trials)
                and all(len(steps_of(sessions, t.id)) >= 2 for t in trials) and trials)

    victims = wait_for(pack_in_training, JOB_TIMEOUT, what="a pack in the middle of training",
                       on_timeout=lambda: logs(first))
    first.kill(signal.SIGKILL)
    second = workers(env, "fresh", app=PACKING_APP)
    wait_for(lambda: job_state(sessions, job_id) == JobState.SUCCEEDED, JOB_TIMEOUT, what="job SUCCEEDED",
             on_timeout=lambda: logs(first, second))

    trials = trials_of(sessions, job_id)
    assert len(trials) == 6
    for victim in victims:
        killed = next(t for t in trials if t.id == victim.id)
        assert killed.state == TrialState.FAILED and killed.retried and "lost" in killed.error
        retry = next(t for t in trials if t.retry_of == killed.id)
        assert (retry.attempt, retry.point, retry.width) == (2, killed.point, killed.width)
        assert retry.state == TrialState.COMPLETED and steps_of(sessions, retry.id)[-1] == 100
    retries = [t for t in trials if t.attempt == 2]
    assert sorted(t.point for t in retries) == [0, 1, 2]                 # every grid point exactly once
    assert sorted(Counter(t.started_at for t in retries).values()) == [1, 2]   # repacked: a claim + 2 mates
    assert "training a pack of 3 trials" in second.log()
    engine.dispose()


def test_cancel_stops_every_trial_of_a_pack(deployment, workers):
    client, sessions, env = deployment
    job = tiny_job(schedule={"steps": 5000, "warmup_steps": 10, "batch_size": 2, "seq_len": 32}, log_every=2)
    job_id = client.post("/v1/jobs", json=job, headers=AUTH).json()["id"]
    worker = workers({**env, **PACKING}, "busy", app=PACKING_APP)
    wait_for(lambda: all(t.state == TrialState.RUNNING and steps_of(sessions, t.id)
                         for t in trials_of(sessions, job_id)),
             JOB_TIMEOUT, what="a pack in training", on_timeout=lambda: logs(worker))
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH).json()["state"] == "CANCELLING"
    wait_for(lambda: job_state(sessions, job_id) == JobState.CANCELLED, 60, what="job CANCELLED",
             on_timeout=lambda: logs(worker))
    trials = trials_of(sessions, job_id)
    assert len(trials) == 3 and {t.state for t in trials} == {TrialState.CANCELLED}
    assert all(0 < steps_of(sessions, t.id)[-1] < 5000 for t in trials)      # stopped part-way, all of them
