"""The job's types (gdn.spec) and what reads the table without torch: importable where torch is absent, and the
table turned into numbers in one place, so a recommendation equals what training used."""
import json
import subprocess
import sys

import pytest

from gdn.config import GDNConfig
from gdn.fit import Optimum
from gdn.optim import build_optimizer
from gdn.recommend import SweepResult, recommend
from gdn.spec import OptimizerSpec, ScheduleSpec, SweepConfig
from gdn.trial import build_model


@pytest.mark.parametrize("module", ["gdn.spec", "gdn.recommend", "gdn.fit", "gdn.transfer", "gdn.parametrization"])
def test_imports_without_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("parametrization,optimizer,readout", [("mup", "adamw", None), ("mup", "sgd", None),
                                                               ("sp", "sgd", None), ("mup", "adamw", "untied-zero")])
def test_the_recommendation_is_what_training_used(parametrization, optimizer, readout):
    """Training at width 256 from a base of 64 and the recommendation for 256 read the same Parametrization.groups:
    every group's lr, weight decay and clip weight agree, and so do the forward multipliers."""
    config = SweepConfig(model=GDNConfig(width=64, depth=1), parametrization=parametrization, readout=readout,
                         optimizer=OptimizerSpec(name=optimizer), schedule=ScheduleSpec(steps=10, warmup_steps=1))
    lr = 3e-3
    rec = recommend(SweepResult(config, Optimum(lr=lr, log2_lr=0, loss=1.0, log2_lr_std=None, on_edge=False)), 256)
    model, p, m = build_model(config, 256, seed=0)
    trained = {g["role"]: g for g in build_optimizer(model, p, config.optimizer, lr, m).param_groups}
    assert set(trained) == {g.role for g in rec.groups}
    for g in rec.groups:
        assert trained[g.role]["lr"] == g.lr and trained[g.role]["weight_decay"] == g.weight_decay
        assert trained[g.role]["clip_weight"] == g.clip_weight
    assert rec.forward_multipliers == {"logits": model.mult.logits, "gdn_scale": model.mult.o}


def test_a_recommendation_round_trips_through_json():
    from gdn.recommend import recommendation_from_dict
    config = SweepConfig(model=GDNConfig(width=64, depth=1))
    rec = recommend(SweepResult(config, Optimum(lr=1e-3, log2_lr=0, loss=1.0, log2_lr_std=None, on_edge=False)), 128)
    assert recommendation_from_dict(rec.to_dict()) == rec
    assert rec.transfer_evidence is not None                 # JSON has lists where the dataclasses hold tuples
    assert recommendation_from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
