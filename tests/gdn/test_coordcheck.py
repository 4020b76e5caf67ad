"""The coordinate check tells muP from SP: mup stays flat, sp's outputs (the logits among them) grow."""
import pytest

from gdn.config import GDNConfig
from gdn.coordcheck import coord_check
from gdn.spec import ScheduleSpec, SweepConfig

WIDTHS = [64, 128, 256, 512]


def config(name):
    return SweepConfig(model=GDNConfig(width=64, depth=2), parametrization=name, output_mult=1.0, init_mult=1.0,
                       schedule=ScheduleSpec(steps=6, warmup_steps=0, batch_size=8, seq_len=32))


@pytest.mark.slow
def test_mup_is_flat_and_sp_grows_in_the_logits():
    mup = coord_check(config("mup"), WIDTHS, lr=1e-2, steps=6)
    sp = coord_check(config("sp"), WIDTHS, lr=1e-2, steps=6)
    assert mup.passed, mup.to_dict()
    assert not sp.passed and sp.verdicts["logits"] == "grows", sp.to_dict()
    assert sp.slopes["mlp.out"] > 1.0  # SP's hidden updates grow ~ linearly in width under Adam


def test_update_sizes_show_which_kind_learns_at_which_rate():
    """The check's update sizes: under SGD muP's embedding LR x m offsets its 1/m gradient (flat), SP's does not (its
    rows move ~1/m as fast at width). Every parameter kind gets a size at every width."""
    from gdn.coordcheck import UPDATE_KINDS, format_update_table
    from gdn.spec import OptimizerSpec

    def sgd(name):
        return SweepConfig(model=GDNConfig(width=32, depth=1), parametrization=name, output_mult=1.0, init_mult=1.0,
                           optimizer=OptimizerSpec(name="sgd"),
                           schedule=ScheduleSpec(steps=10, warmup_steps=0, batch_size=8, seq_len=32))
    mup = coord_check(sgd("mup"), [32, 64, 128], lr=0.05, steps=10, seeds=(0,))
    sp = coord_check(sgd("sp"), [32, 64, 128], lr=0.05, steps=10, seeds=(0,))
    assert set(mup.updates) == set(UPDATE_KINDS) and all(len(v) == 3 and min(v) > 0 for v in mup.updates.values())
    assert abs(mup.update_slopes["embedding"]) < 0.35, format_update_table(mup)
    assert sp.update_slopes["embedding"] < -0.6, format_update_table(sp)
