"""The horizon fit (gdn.horizon) on synthetic data whose true exponent is known."""
import math

import numpy as np
import pytest

from gdn.fit import fit_optimum
from gdn.horizon import fit_horizons, scaled_warmup, weighted_line

STEP = 0.5                       # grid spacing in log2 units (sqrt 2)


def test_weighted_line_recovers_the_exponent_and_its_error_bar_covers_it_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    a_true, b_true = -8.0, -0.3
    xs = np.arange(4.0)                        # T, 2T, 4T, 8T in log2 of tokens over the proxy's
    errs = np.array([0.15, 0.1, 0.2, 0.1])
    covered_b = covered_pred = 0
    draws = 2000
    for _ in range(draws):
        ys = a_true + b_true * xs + rng.normal(0, errs)
        a, b, cov, _, _ = weighted_line(xs, ys, errs)
        covered_b += abs(b - b_true) <= 1.96 * math.sqrt(cov[1, 1])
        x0 = 7.0                               # 16x beyond the longest fitted horizon
        pred_sd = math.sqrt(cov[0, 0] + 2 * x0 * cov[0, 1] + x0 * x0 * cov[1, 1])
        covered_pred += abs(a + b * x0 - (a_true + b_true * x0)) <= 1.96 * pred_sd
    # nominal 95 %; the Birge scaling (errors inflated when chi2/dof > 1) only widens the bar
    assert 0.94 <= covered_b / draws <= 0.995
    assert 0.94 <= covered_pred / draws <= 0.995
    a, b, cov, chi2, dof = weighted_line(xs, a_true + b_true * xs, errs)     # noise-free: exact
    assert (a, b) == pytest.approx((a_true, b_true)) and chi2 == pytest.approx(0, abs=1e-12) and dof == 2


def _sweep_losses(rng, x_star, grid_log2, seeds, noise):
    """Loss vs log2 lr: a parabola around x_star, each seed's curve shifted and jittered by its noise."""
    return {s: [0.4 * (x - x_star) ** 2 + 2.0 + rng.normal(0, noise) for x in grid_log2] for s in seeds}


def test_the_fit_through_sweep_optima_recovers_a_known_exponent_and_predicts_longer_horizons():
    rng = np.random.default_rng(1)
    beta, x0, tokens_per_step = -0.25, -8.0, 1000
    horizons = [250, 500, 1000, 2000]
    hits = 0
    for trial in range(40):
        optima, seeds = {}, {}
        for steps in horizons:
            x_star = x0 + beta * math.log2(steps / 250)
            grid = np.arange(-10.5, -5.0 + 1e-9, STEP)
            by_seed = _sweep_losses(rng, x_star, grid, (0, 1), noise=0.003)
            lrs = [2.0 ** x for _ in by_seed for x in grid]
            optima[steps] = fit_optimum(lrs, [y for s in by_seed for y in by_seed[s]],
                                        [s for s in by_seed for _ in grid])
            seeds[steps] = 2
        fit = fit_horizons(optima, seeds, tokens_per_step=tokens_per_step, proxy_steps=250, grid_step_log2=STEP)
        assert fit.exponent == pytest.approx(beta, abs=0.1) and fit.slope_resolved
        pred = fit.predict(8000 * tokens_per_step)                      # 16T: 4x beyond 2000 steps
        true = beta * math.log2(8000 / 250)
        hits += abs(pred.log2_factor - true) <= 2 * pred.error_steps * STEP
        assert pred.extrapolation_ratio == pytest.approx(4.0) and pred.extrapolated
    assert hits >= 36             # a 2-sigma bar covers about 95 % of the time


def test_a_flat_optimum_is_not_extrapolated_and_a_single_horizon_says_so():
    from gdn.fit import Optimum
    def opt(x):
        return Optimum(lr=2 ** x, log2_lr=x, loss=2.0, log2_lr_std=0.1, on_edge=False)
    flat = fit_horizons({250: opt(-8.0), 500: opt(-8.02), 1000: opt(-7.98)}, {250: 2, 500: 2, 1000: 2},
                        tokens_per_step=100, proxy_steps=250, grid_step_log2=STEP)
    assert not flat.slope_resolved
    pred = flat.predict(10 ** 7, validated_ratio=4, validated_note="CPU only")
    assert pred.factor == 1.0 and not pred.extrapolated and pred.error_steps > 0
    assert any("not distinguishable from 0" in w for w in pred.warnings)
    assert any("beyond the 4x the horizon study validated (CPU only)" in w for w in pred.warnings)
    one = fit_horizons({250: opt(-8.0)}, {250: 1}, tokens_per_step=100, proxy_steps=250, grid_step_log2=STEP)
    pred = one.predict(10 ** 6)
    assert one.exponent is None and pred.factor == 1.0 and pred.error_steps is None
    assert "single horizon" in pred.warnings[0] and "falls as the token budget grows" in pred.warnings[0]
    edge = Optimum(lr=2 ** -6, log2_lr=-6, loss=2.0, log2_lr_std=None, on_edge=True)
    fit = fit_horizons({250: opt(-8.0), 500: edge}, {250: 1, 500: 1}, tokens_per_step=100, proxy_steps=250,
                       grid_step_log2=STEP)
    assert fit.exponent is None and not fit.points[1].in_fit and "edge" in fit.warnings[0]
    with pytest.raises(ValueError, match="positive integer"):
        one.predict(0)


def test_warmup_keeps_its_share_of_the_run():
    assert scaled_warmup(20, 200, 800) == 80 and scaled_warmup(20, 200, 50) == 5
    assert scaled_warmup(1, 200, 20) == 1 and scaled_warmup(0, 200, 800) == 0
