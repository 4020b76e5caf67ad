"""The coordinate check tells muP from SP: mup stays flat, sp's outputs (the logits among them) grow."""
import pytest

from gdn.config import GDNConfig
from gdn.coordcheck import coord_check
from gdn.train import ScheduleSpec, SweepConfig

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
