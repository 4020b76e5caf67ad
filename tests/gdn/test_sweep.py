"""The optimum fit, the grid, and the recommendation (a pure function of the table)."""
import json
import math
import random
import statistics

import pytest
import torch
from torch import nn

from gdn.config import GDNConfig
from gdn.model import GDNModel
from gdn.optim import OptimizerSpec
from gdn.parametrization import Role, get_parametrization
from gdn.sweep import Optimum, SweepResult, fit_optimum, lr_grid, lr_grid_around, param_groups, recommend
from gdn.train import SweepConfig


def test_lr_grid_is_log_spaced_and_inclusive():
    grid = lr_grid(1e-3, 1.6e-2, 5)
    assert grid[0] == pytest.approx(1e-3) and grid[-1] == pytest.approx(1.6e-2)
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(r == pytest.approx(2.0) for r in ratios)
    around = lr_grid_around(1e-2, 5, step_log2=0.5)
    assert around[2] == pytest.approx(1e-2) and around[3] / around[2] == pytest.approx(2 ** 0.5)
    with pytest.raises(ValueError):
        lr_grid(0, 1, 3)


def test_fit_recovers_the_minimum_of_a_known_parabola():
    rng = random.Random()
    for _ in range(20):
        grid = lr_grid(2 ** -12, 2 ** -4, 9)
        x0 = rng.uniform(-10.5, -5.5)          # strictly inside the grid's interior brackets
        a, c = rng.uniform(0.01, 0.5), rng.uniform(1, 3)
        losses = [a * (math.log2(lr) - x0) ** 2 + c for lr in grid]
        opt = fit_optimum(grid, losses)
        assert opt.log2_lr == pytest.approx(x0, abs=1e-9)
        assert opt.loss == pytest.approx(c, abs=1e-9)
        assert not opt.on_edge and not opt.warnings


def test_edge_optimum_warns():
    grid = lr_grid(1e-3, 1.6e-2, 5)
    opt = fit_optimum(grid, [1.0, 1.1, 1.2, 1.3, 1.4])
    assert opt.on_edge and opt.lr == pytest.approx(1e-3)
    assert "smallest" in opt.warnings[0]
    opt = fit_optimum(grid, [1.4, 1.3, 1.2, 1.1, 1.0])
    assert opt.on_edge and "largest" in opt.warnings[0]


def test_diverged_trials_bound_the_fit():
    grid = lr_grid(1e-3, 1.6e-2, 5)
    opt = fit_optimum(grid, [1.3, 1.1, 1.0, math.nan, math.inf])
    assert opt.lr == pytest.approx(grid[2]) and not opt.on_edge and "diverged" in opt.warnings[0]
    with pytest.raises(ValueError, match="diverged"):
        fit_optimum(grid, [math.nan] * 5)


def test_seeds_give_an_uncertainty():
    grid = lr_grid(2 ** -12, 2 ** -4, 9)
    lrs, losses, seeds = [], [], []
    centres = {0: -8.2, 1: -7.6, 2: -8.0}
    for seed, x0 in centres.items():
        for lr in grid:
            lrs.append(lr), seeds.append(seed), losses.append(0.2 * (math.log2(lr) - x0) ** 2 + 2.0)
    opt = fit_optimum(lrs, losses, seeds)
    assert sorted(opt.per_seed_lr) == [0, 1, 2]
    for seed, x0 in centres.items():
        assert math.log2(opt.per_seed_lr[seed]) == pytest.approx(x0, abs=1e-9)
    assert opt.log2_lr_std == pytest.approx(statistics.stdev(centres.values()), abs=1e-9)
    assert fit_optimum(grid, [0.2 * (math.log2(lr) + 8) ** 2 for lr in grid]).log2_lr_std is None


def _result(parametrization="mup", optimizer="adamw", lr=3e-3, width=256, **kw):
    config = SweepConfig(model=GDNConfig(width=width, depth=4), parametrization=parametrization,
                         optimizer=OptimizerSpec(name=optimizer), **kw)
    return SweepResult(config, Optimum(lr=lr, log2_lr=math.log2(lr), loss=2.0, log2_lr_std=0.1, on_edge=False),
                       num_trials=8)


@pytest.mark.parametrize("parametrization,optimizer", [("mup", "adamw"), ("mup", "sgd"), ("sp", "adamw"),
                                                       ("mup-original", "sgd"), ("mup-paper-code", "adamw")])
def test_recommend_matches_the_table(parametrization, optimizer):
    result = _result(parametrization, optimizer)
    rec = recommend(result, 1024)
    json.dumps(rec, allow_nan=False)
    p = get_parametrization(parametrization)
    groups = {g["role"]: g for g in rec["groups"]}
    for role in Role:
        if role is Role.READOUT:
            continue
        assert groups[role.value]["lr"] == pytest.approx(3e-3 * p.lr_multiplier(role, optimizer, 4.0))
        assert groups[role.value]["init_std"] == p.init_std(role, 4.0)
    assert rec["width_mult"] == 4.0 and rec["target_model"]["width"] == 1024
    assert rec["target_model"]["head_k_dim"] == 128
    assert rec["parametrization_version"]
    assert 0 < rec["cost"]["trial_share"] < 1
    assert rec["cost"]["sweep_share"] == pytest.approx(8 * rec["cost"]["trial_share"])


def test_recommend_refuses_a_width_the_axis_cannot_take():
    with pytest.raises(ValueError, match="head_dim axis"):
        recommend(_result(), 1000 + 4)
    heads = SweepResult(SweepConfig(model=GDNConfig(width=256, width_axis="heads")), _result().optimum)
    assert recommend(heads, 1024)["target_model"]["num_heads"] == 24
    with pytest.raises(ValueError, match="heads axis"):
        recommend(heads, 300)


def test_param_groups_for_our_model_and_an_fla_named_one():
    rec = recommend(_result(readout="untied-zero"), 512)

    class FlaLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = GDNModel(GDNConfig(width=512, depth=2, tie_embeddings=False))
            self.lm_head = nn.Linear(512, 256, bias=False)

    for model in (GDNModel(GDNConfig(width=512, depth=2, tie_embeddings=False)), FlaLike()):
        groups = param_groups(model, rec)
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
        by_name = {g["name"]: g for g in groups}
        assert by_name["hidden"]["lr"] == pytest.approx(3e-3 / 2)
        assert by_name["readout"]["lr"] == pytest.approx(3e-3 / 2)
        torch.optim.AdamW(groups)  # torch accepts them as they are
    stray = GDNModel(GDNConfig(width=512, depth=1))
    stray.bonus = nn.Parameter(torch.zeros(2))
    with pytest.raises(KeyError, match="bonus"):
        param_groups(stray, rec)
