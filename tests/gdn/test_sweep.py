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
from gdn.spec import OptimizerSpec, ScheduleSpec, SweepConfig
from gdn.parametrization import Role, get_parametrization
from gdn.fit import Optimum, fit_optimum, grid_step_log2, lr_grid, lr_grid_around
from gdn.recommend import SweepResult, param_groups, recommend
from gdn.transfer import TransferSummary, transfer_summary


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
        a, c = rng.uniform(0.2, 0.5), rng.uniform(1, 3)   # curved enough that one seed resolves it (flatter:
                                                           # test_a_flat_top_is_reported_as_unresolved)
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


# The default GPU job's two product runs on 2026-11-27 (docs/benchmarks.md), losses read off their plots: a pack of 8,
# and the same job as two packs of 4, whose top came out flat.
PRODUCT_GRID = [2.0 ** e for e in range(-12, -4)]
ONE_PACK = [0.781, 0.726, 0.661, 0.632, 0.611, 0.595, 0.620, 0.609]
TWO_PACKS = [0.787, 0.720, 0.662, 0.637, 0.619, 0.620, 0.630, 0.615]


def test_a_flat_top_is_reported_as_unresolved():
    sharp = fit_optimum(PRODUCT_GRID, ONE_PACK)
    assert sharp.near_best_lr_min == sharp.near_best_lr_max == 2.0 ** -7 and not sharp.warnings
    flat = fit_optimum(PRODUCT_GRID, TWO_PACKS)
    assert (flat.near_best_lr_min, flat.near_best_lr_max) == (2.0 ** -8, 2.0 ** -5)
    assert flat.on_edge and any("3 grid steps" in w and "add seeds" in w for w in flat.warnings)


def test_more_seeds_narrow_the_near_best_range():
    grid = lr_grid(2 ** -9, 2 ** -5, 5)
    per_lr = [1.10, 1.015, 1.0, 1.012, 1.2]                  # neighbours 1.2-1.5 % above the best
    one = fit_optimum(grid, per_lr)
    assert (one.near_best_lr_min, one.near_best_lr_max) == (grid[1], grid[3]) and one.warnings
    four = fit_optimum(grid * 4, per_lr * 4, [s for s in range(4) for _ in grid])
    assert four.near_best_lr_min == four.near_best_lr_max == grid[2] and not four.warnings


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


def _result(parametrization="mup", optimizer="adamw", lr=3e-3, width=256, vocab_size=256, **kw):
    config = SweepConfig(model=GDNConfig(width=width, depth=4, vocab_size=vocab_size), parametrization=parametrization,
                         optimizer=OptimizerSpec(name=optimizer), **kw)
    return SweepResult(config, Optimum(lr=lr, log2_lr=math.log2(lr), loss=2.0, log2_lr_std=0.1, on_edge=False),
                       num_trials=8)


@pytest.mark.parametrize("parametrization,optimizer", [("mup", "adamw"), ("mup", "sgd"), ("sp", "adamw"),
                                                       ("mup-original", "sgd"), ("mup-paper-code", "adamw")])
def test_recommend_matches_the_table(parametrization, optimizer):
    result = _result(parametrization, optimizer)
    rec = recommend(result, 1024).to_dict()
    json.dumps(rec, allow_nan=False)
    p = get_parametrization(parametrization, optimizer=optimizer)
    groups = {g["role"]: g for g in rec["groups"]}
    for role in Role:
        if role is Role.READOUT:
            continue
        assert groups[role.value]["lr"] == pytest.approx(3e-3 * p.lr_multiplier(role, optimizer, 4.0))
        assert groups[role.value]["init_std"] == p.init_std(role, 4.0)
        assert groups[role.value]["clip_weight"] == p.clip_weight(role, optimizer, 4.0)
    if (parametrization, optimizer) == ("mup", "sgd"):        # the width-consistent clip: m^1/2 on vector-likes
        assert groups["embedding"]["clip_weight"] == pytest.approx(2.0) and groups["hidden"]["clip_weight"] == 1.0
    assert rec["width_mult"] == 4.0 and rec["target_model"]["width"] == 1024
    assert rec["target_model"]["head_k_dim"] == 128
    assert rec["parametrization_version"]
    assert 0 < rec["cost"]["trial_share"] < 1
    assert rec["cost"]["sweep_share"] == pytest.approx(8 * rec["cost"]["trial_share"])


def test_recommend_refuses_a_width_the_axis_cannot_take():
    with pytest.raises(ValueError, match="head_dim axis"):
        recommend(_result(), 1000 + 4)
    heads = SweepResult(SweepConfig(model=GDNConfig(width=256, width_axis="heads")), _result().optimum)
    assert recommend(heads, 1024).to_dict()["target_model"]["num_heads"] == 24
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


# --- transfer_summary: a study of one LR grid at several widths ----------------------------------------------

def _study(centres: dict, curvature=0.3, grid=None, seeds=(0,)):
    """Trials whose loss is an exact parabola in log2 lr per width: width -> (x0, floor)."""
    grid = grid or lr_grid(2 ** -11, 2 ** -5, 7)
    widths, lrs, losses, seed_of = [], [], [], []
    for w, (x0, floor) in centres.items():
        for lr in grid:
            for s in seeds:
                widths.append(w), lrs.append(lr), seed_of.append(s)
                losses.append(curvature * (math.log2(lr) - x0) ** 2 + floor)
    return widths, lrs, losses, seed_of


def test_grid_step_of_ranged_and_explicit_grids():
    assert grid_step_log2(lr_grid(1e-3, 1.6e-2, 5)) == pytest.approx(1.0)
    assert grid_step_log2(lr_grid_around(1e-2, 6, step_log2=0.5)) == pytest.approx(0.5)
    assert grid_step_log2([1e-3, 2e-3, 4e-3, 3.2e-2]) == pytest.approx(1.0)     # median of 1, 1, 3
    assert grid_step_log2([1e-3, 1e-3]) is None


def test_transfer_summary_of_known_parabolas():
    """Shifts, losses at the base lr* and regrets equal their closed forms; the base width's regret is 0."""
    rng = random.Random()
    for _ in range(10):
        centres = {64: (rng.uniform(-8.4, -7.6), 3.0), 128: (rng.uniform(-8.4, -7.6), 2.8),
                   256: (rng.uniform(-8.4, -7.6), 2.6)}
        a = rng.uniform(0.05, 0.5)
        s = transfer_summary(*_study(centres, a), base_width=64)
        x_base = centres[64][0]
        assert s.base_width == 64 and s.grid_step_log2 == pytest.approx(1.0)
        assert math.log2(s.base_lr) == pytest.approx(x_base, abs=1e-9)
        assert [r.width for r in s.widths] == [64, 128, 256]
        for r in s.widths:
            x0, floor = centres[r.width]
            assert r.optimum.log2_lr == pytest.approx(x0, abs=1e-9)
            assert r.shift_steps == pytest.approx(x0 - x_base, abs=1e-9)
            assert r.transfer_loss == pytest.approx(a * (x_base - x0) ** 2 + floor, abs=1e-9)
            assert r.regret == pytest.approx(a * (x_base - x0) ** 2, abs=1e-9) and r.regret >= 0
            assert r.regret_method == "parabola" and r.num_trials == 7
        assert s.widths[0].regret == 0.0
        shifts = [centres[w][0] - x_base for w in centres]
        assert s.argmin_range_steps == pytest.approx(max(shifts) - min(shifts), abs=1e-9)
        assert s.max_abs_shift_steps == pytest.approx(max(map(abs, shifts)), abs=1e-9)
        assert s.argmin_within_one_step is True                     # centres lie within 0.8 of each other
        assert s.loss_falls_with_width is (
            a * (x_base - centres[128][0]) ** 2 + 2.8 < 3.0 and
            a * (x_base - centres[256][0]) ** 2 + 2.6 < a * (x_base - centres[128][0]) ** 2 + 2.8)
        assert not s.warnings and "interpolated" in s.regret_note
        json.dumps(s.to_dict(), allow_nan=False)
        assert TransferSummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_transfer_summary_flags_a_drifting_argmin_and_rising_loss():
    """An argmin that moves 2.5 grid steps (a half-step grid): not within one step; the loss at the base lr* is
    read between grid points when it lies outside the width's own bracket; the loss rose with width."""
    grid = lr_grid_around(2 ** -8, 9, step_log2=0.5)
    s = transfer_summary(*_study({32: (-8.0, 3.0), 64: (-6.75, 3.5)}, 0.2, grid), base_width=32)
    wide = s.widths[1]
    assert wide.shift_steps == pytest.approx(2.5, abs=1e-9) and s.grid_step_log2 == pytest.approx(0.5)
    assert s.argmin_within_one_step is False and s.loss_falls_with_width is False
    assert wide.regret_method == "grid-point"                  # lr* = 2^-8 is a grid point of width 64
    assert wide.transfer_loss == pytest.approx(0.2 * 1.25 ** 2 + 3.5, abs=1e-12)
    off_grid = transfer_summary(*_study({32: (-8.1, 3.0), 64: (-6.75, 3.5)}, 0.2, grid), base_width=32)
    x, (lo, hi) = -8.1, (-8.5, -8.0)
    t = (x - lo) / (hi - lo)
    expected = (1 - t) * (0.2 * (lo + 6.75) ** 2 + 3.5) + t * (0.2 * (hi + 6.75) ** 2 + 3.5)
    assert off_grid.widths[1].regret_method == "grid-linear"
    assert off_grid.widths[1].transfer_loss == pytest.approx(expected, abs=1e-12)
    assert off_grid.widths[1].regret == pytest.approx(expected - 3.5, abs=1e-9)


def test_transfer_summary_with_seeds_fits_the_seed_means():
    widths, lrs, losses, seeds = _study({64: (-8.0, 3.0), 128: (-7.5, 2.9)}, seeds=(0, 1))
    noisy = [loss + (0.01 if s == 1 else -0.01) * (1 + k % 3) for k, (loss, s) in enumerate(zip(losses, seeds))]
    s = transfer_summary(widths, lrs, noisy, seeds, base_width=64)
    for r in s.widths:
        own = [k for k, w in enumerate(widths) if w == r.width]
        expected = fit_optimum([lrs[k] for k in own], [noisy[k] for k in own], [seeds[k] for k in own])
        assert r.optimum == expected and sorted(r.optimum.per_seed_lr) == [0, 1]


def test_transfer_summary_without_an_optimum_at_a_width():
    """A width where every LR diverged has no optimum: the criteria are unknown (None), a warning says why; a
    base LR next to a diverged LR of another width gives no loss there."""
    widths, lrs, losses, seeds = _study({64: (-8.0, 3.0), 128: (-8.0, 2.9)})
    losses = [math.nan if w == 128 else x for w, x in zip(widths, losses)]
    s = transfer_summary(widths, lrs, losses, seeds, base_width=64)
    wide = s.widths[1]
    assert wide.optimum is None and "diverged" in wide.error and wide.regret is None
    assert s.argmin_within_one_step is None and s.loss_falls_with_width is None
    assert any("width 128" in w for w in s.warnings)
    json.dumps(s.to_dict(), allow_nan=False)

    widths, lrs, losses, seeds = _study({64: (-8.3, 3.0), 128: (-9.0, 2.9)})
    losses = [math.inf if w == 128 and math.log2(lr) >= -8 else x for w, lr, x in zip(widths, lrs, losses)]
    s = transfer_summary(widths, lrs, losses, seeds, base_width=64)
    assert s.widths[1].optimum is not None and s.widths[1].transfer_loss is None
    assert s.widths[1].regret_method is None and s.loss_falls_with_width is None
    assert any("no loss at the base width's lr*" in w for w in s.warnings)


def test_transfer_summary_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        transfer_summary([64], [1e-3, 2e-3], [1.0, 2.0], base_width=64)
    with pytest.raises(ValueError, match="base width 32"):
        transfer_summary([64, 64], [1e-3, 2e-3], [1.0, 2.0], base_width=32)


def test_transfer_summary_reports_a_swept_width_without_trials():
    widths, lrs, losses, seeds = _study({64: (-8.0, 3.0), 128: (-8.0, 2.9)})
    s = transfer_summary(widths, lrs, losses, seeds, base_width=64, swept_widths=[64, 128, 256])
    assert [r.width for r in s.widths] == [64, 128, 256]
    assert s.widths[2].num_trials == 0 and s.widths[2].optimum is None and s.widths[2].error
    assert s.argmin_within_one_step is None and s.loss_falls_with_width is None


def test_recommend_says_where_the_transfer_study_stands():
    ok = recommend(_result("mup", "adamw"), 1024).to_dict()                          # 4x: measured, held
    assert not any("transfer" in w for w in ok["warnings"]) and ok["transfer_evidence"]["holds"]
    far = recommend(_result("mup", "adamw"), 8192).to_dict()                          # 32x: beyond what was measured
    assert any("beyond the 16x" in w for w in far["warnings"])
    sp = recommend(_result("sp", "adamw"), 1024).to_dict()
    assert any("did not transfer" in w for w in sp["warnings"]) and not sp["transfer_evidence"]["holds"]
    untested = recommend(_result("mup-original", "adamw"), 1024).to_dict()
    assert untested["transfer_evidence"] is None and any("has not measured" in w for w in untested["warnings"])
    assert not recommend(_result("sp", "adamw"), 256).warnings          # the base width itself: nothing to say
    measured = recommend(_result("mup", "adamw", vocab_size=32768), 1024).to_dict()  # the 32k BPE study's vocab
    assert not measured["warnings"] and list(measured["transfer_evidence"]["vocab_sizes"]) == [256, 32768]
    assert not recommend(_result("mup", "adamw", vocab_size=8192), 1024).warnings    # between two measured
    assert not recommend(_result("mup", "adamw", vocab_size=32768), 2048).warnings   # 8x: measured at 32k
    wide = recommend(_result("mup", "adamw", vocab_size=32768), 4096).warnings       # 16x: only at 256
    assert [w for w in wide if "beyond the 8x the transfer study measured at vocabulary 32,768" in w]
    assert not recommend(_result("mup", "adamw"), 4096).warnings                     # 16x at 256: measured
    beyond = recommend(_result("mup", "adamw", vocab_size=131072), 1024).to_dict()    # Llama-3's: never measured
    assert [w for w in beyond["warnings"] if "vocabulary 256 and 32,768, not at this proxy's 131,072" in w]


def test_sgd_recommendations_follow_the_sgd_study():
    """Under SGD, mup-sgd transferred at 1000 steps (no warning there), not at 250 (a warning for a short sweep);
    mup did not, and its warning points at mup-sgd."""
    def sgd(parametrization, steps):
        return recommend(_result(parametrization, "sgd", schedule=ScheduleSpec(steps=steps, warmup_steps=10)),
                         2048).warnings                                                       # 8x
    assert sgd("mup-sgd", 1000) == [] and sgd("mup-sgd", 4000) == []
    assert any("at 1000 steps and more" in w and "ran 250" in w for w in sgd("mup-sgd", 250))
    assert any("did not transfer" in w and "'mup-sgd'" in w for w in sgd("mup", 1000))


def test_the_sweep_plot_shades_the_near_best_range():
    import io

    import numpy as np
    from matplotlib.image import imread

    from gdn.plots import sweep_png
    flat = fit_optimum(PRODUCT_GRID, TWO_PACKS)

    def band_pixels(near_best) -> int:
        png = sweep_png(title="t", completed=[(lr, 0, y) for lr, y in zip(PRODUCT_GRID, TWO_PACKS)], diverged=[],
                        optimum_lr=flat.lr, optimum_loss=flat.loss, on_edge=flat.on_edge, near_best=near_best)
        rgb = imread(io.BytesIO(png))[..., :3]
        return int((np.abs(rgb - 0.85) < 0.01).all(axis=-1).sum())    # the band's grey

    assert band_pixels((flat.near_best_lr_min, flat.near_best_lr_max)) > 20 * band_pixels(None) + 1000
    assert band_pixels((2.0 ** -7, 2.0 ** -7)) == band_pixels(None)        # one grid point: nothing to shade


def test_edge_extension_adds_points_beyond_the_best_edge_at_the_grid_spacing():
    from gdn.fit import edge_extension
    grid = lr_grid(1e-3, 4e-3, 3)                       # spacing 2
    assert edge_extension(grid, [3.0, 2.0, 1.0]) == pytest.approx([8e-3, 1.6e-2])
    assert edge_extension(grid, [1.0, 2.0, 3.0]) == pytest.approx([5e-4, 2.5e-4])
    assert edge_extension(grid, [2.0, 1.0, 3.0]) == []                          # interior
    assert edge_extension(grid, [math.nan] * 3) == []                           # nothing finite
    assert edge_extension(grid, [1.0, math.nan, math.inf]) == pytest.approx([5e-4, 2.5e-4])
    # per-lr means over seeds decide: seed 1 alone would put the best on the top edge
    assert edge_extension(grid * 2, [2.0, 1.0, 3.0, 2.0, 1.5, 1.4], [0, 0, 0, 1, 1, 1]) == []
    assert edge_extension(grid, [3.0, 2.0, 1.0], points=1, step_log2=0.5) == pytest.approx([4e-3 * 2 ** 0.5])
