"""gdn.summary: what a finished sweep's trials make, against gdn.fit's and gdn.transfer's fits on the same numbers (no database)."""
from __future__ import annotations

import math

from gdn.summary import FAILED, TrialOutcome, final_loss, summarize_sweep
from gdn.fit import fit_optimum, grid_step_log2
from gdn.transfer import transfer_summary

LRS = [1e-3, 2e-3, 4e-3, 8e-3]


def outcomes(losses: list[float], width: int = 64, seed: int = 0) -> list[TrialOutcome]:
    """One trial per lr of LRS: NaN -> DIVERGED, None -> FAILED after 3 attempts, else COMPLETED."""
    def one(lr, loss):
        if loss is None:
            return TrialOutcome(width, lr, seed, FAILED, attempt=3)
        if math.isnan(loss):
            return TrialOutcome(width, lr, seed, "DIVERGED", loss)
        return TrialOutcome(width, lr, seed, "COMPLETED", loss)
    return [one(lr, loss) for lr, loss in zip(LRS, losses)]


def test_one_width_gives_the_fit_of_its_losses_with_diverged_as_nan():
    losses = [3.0, 2.6, 2.7, math.nan]
    summary = summarize_sweep(outcomes(losses), widths=[64])
    assert summary.error is None and summary.transfer is None
    assert summary.optimum == fit_optimum(LRS, losses, [0] * 4)
    assert math.isnan(final_loss(TrialOutcome(64, 1e-3, 0, "DIVERGED", 5.0)))      # a diverged loss is never fitted


def test_failed_trials_are_left_out_of_the_fit_and_named():
    summary = summarize_sweep(outcomes([3.0, None, 2.7, 3.1]), widths=[64])
    assert summary.optimum.lr == fit_optimum([1e-3, 4e-3, 8e-3], [3.0, 2.7, 3.1]).lr
    assert summary.optimum.warnings[-1] == ("1 trial(s) failed after 3 attempt(s) and are left out of the fit: "
                                            "lr 0.002 seed 0")


def test_nothing_to_fit_is_an_error_that_names_the_failed_trials():
    diverged = summarize_sweep(outcomes([math.nan] * 4), widths=[64])
    assert diverged.optimum is None and "every learning rate diverged" in diverged.error
    failed = summarize_sweep(outcomes([None, None, math.nan, math.nan])[:2], widths=[64])
    assert failed.error == ("no trial produced a result; 2 trial(s) failed after 3 attempt(s) and are left out of "
                            "the fit: lr 0.001 seed 0, lr 0.002 seed 0")


def test_a_transfer_study_gives_the_base_optimum_and_the_summary_of_every_width():
    losses = {64: [3.0, 2.6, 2.7, 3.1], 128: [2.9, 2.5, 2.4, math.nan], 32: [3.3, None, 3.2, 3.4]}
    trials = [t for w in (64, 128, 32) for t in outcomes(losses[w], width=w)]
    summary = summarize_sweep(trials, widths=[64, 128, 32])
    base = fit_optimum(LRS, losses[64])
    ran = [t for t in trials if t.state != FAILED]
    expected = transfer_summary([t.width for t in ran], [t.lr for t in ran], [final_loss(t) for t in ran],
                                [t.seed for t in ran], base_width=64, grid_step=grid_step_log2(LRS),
                                swept_widths=[64, 128, 32])
    note = "1 trial(s) failed after 3 attempt(s) and are left out of the fit: width 32 lr 0.002 seed 0"
    expected.warnings.append(note)
    base.warnings.append(note)                       # a failure at any width is named on the base optimum too
    assert summary.transfer == expected and summary.optimum == base


def test_a_transfer_study_without_a_base_result_fails():
    trials = outcomes([None] * 4, width=64) + outcomes([2.0, 1.9, 2.1, 2.2], width=128)
    summary = summarize_sweep(trials, widths=[64, 128])
    assert summary.optimum is None and summary.transfer is None
    assert summary.error.startswith("no trial produced a result at the base width 64; 4 trial(s) failed")
