"""Training one trial: it learns, it is deterministic, it reports divergence as a result, it can be stopped."""
import json
import math

import pytest

from gdn.config import GDNConfig
from gdn.spec import OptimizerSpec, COMPLETED, DIVERGED, ScheduleSpec, SweepConfig, TrialCancelled, TrialSpec
from gdn.optim import lr_at
from gdn.train import train_trial


def tiny(steps=30, optimizer="adamw", **kw):
    return SweepConfig(model=GDNConfig(width=32, depth=1), optimizer=OptimizerSpec(name=optimizer),
                       schedule=ScheduleSpec(steps=steps, warmup_steps=3, batch_size=4, seq_len=32),
                       eval_batches=2, **kw)


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100, min_lr=0.1) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, min_lr=0.1) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 10, 100, min_lr=0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("optimizer,lr", [("adamw", 1e-2), ("sgd", 0.3)])
def test_a_trial_learns_and_is_deterministic(optimizer, lr):
    points = []
    spec = TrialSpec(tiny(optimizer=optimizer), lr=lr, seed=1)
    r = train_trial(spec, progress=points.append, log_every=5)
    assert r.status == COMPLETED and math.isfinite(r.final_val_loss)
    assert r.curve[-1].loss < r.curve[0].loss - 0.5, [p.loss for p in r.curve]
    assert [p.step for p in r.curve] == [1, 5, 10, 15, 20, 25, 30] and points == r.curve
    assert r.tokens == 30 * 4 * 32 and len(r.data_sha256) == 64
    json.dumps(r.to_dict())
    again = train_trial(spec, log_every=5)
    assert [p.loss for p in again.curve] == [p.loss for p in r.curve]
    assert again.final_val_loss == r.final_val_loss


def test_divergence_is_a_result():
    r = train_trial(TrialSpec(tiny(steps=40, optimizer="sgd"), lr=500.0), log_every=1)
    assert r.status == DIVERGED and math.isnan(r.final_val_loss)
    assert r.diverged_step is not None and r.diverged_step <= 40 and r.reason


def test_should_stop_cancels():
    calls = []
    with pytest.raises(TrialCancelled):
        train_trial(TrialSpec(tiny(), lr=1e-2), should_stop=lambda: calls.append(1) or len(calls) >= 2,
                    log_every=5)
    assert len(calls) == 2


def test_sweep_config_round_trips_and_rejects_bad_fields():
    config = tiny(parametrization="sp")
    assert SweepConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        SweepConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="warmup"):
        SweepConfig.from_dict({**config.to_dict(), "schedule": {"steps": 5, "warmup_steps": 9}})
    with pytest.raises(ValueError, match="lr"):
        TrialSpec(config, lr=-1)


def test_run_trains_a_lone_trial_alone_and_several_as_a_pack():
    """gdn.train.run is the one entry: on the CPU one trial goes through train_trial, several through one pack,
    and each result says which trainer made it; the curves agree."""
    from gdn.train import run

    specs = [TrialSpec(tiny(steps=6), lr=lr, seed=0, device="cpu", dtype="float64") for lr in (1e-2, 2e-2)]
    seen, results = [], {}
    lone = run(specs[:1], progress=lambda i, p: seen.append((i, p.step)), log_every=3,
               on_result=lambda i, r: results.setdefault(("lone", i), r))
    pack = run(specs, log_every=3, on_result=lambda i, r: results.setdefault(("pack", i), r))
    assert lone[0].trainer == "lone" and [r.trainer for r in pack] == ["pack", "pack"]
    assert seen == [(0, 1), (0, 3), (0, 6)] and results[("lone", 0)] is lone[0] and results[("pack", 1)] is pack[1]
    assert [p.loss for p in pack[0].curve] == pytest.approx([p.loss for p in lone[0].curve], rel=1e-9)
    assert not lone[0].cuda_graphs and lone[0].backend == "auto"
