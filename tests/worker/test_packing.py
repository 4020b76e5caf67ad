"""How a worker decides to pack (no worker process, no database): where it packs, and the per-(job, width) cache
of what fits the device. The device's answer is stood in for by a function with a known limit."""
from __future__ import annotations

from service.crud import ClaimedTrial
from service.jobspec import prepare
from service.schemas import JobCreate
from service.settings import Settings
from helpers import tiny_job
from worker import packing


def claimed(job_id: str, width: int = 32) -> ClaimedTrial:
    config = prepare(JobCreate.model_validate(tiny_job()), Settings()).sweep_config
    return ClaimedTrial(trial_id=1, job_id=job_id, width=width, lr=0.01, seed=0, attempt=1, sweep_config=config,
                        spec={"log_every": 5})


def test_cpu_workers_pack_only_when_told(monkeypatch):
    assert not packing.packs_here(Settings(device="cpu"))
    monkeypatch.setattr(packing, "PACK_ON_CPU", True)          # as the tests' worker app (packing_worker_app) does
    assert packing.packs_here(Settings(device="cpu"))
    assert not packing.packs_here(Settings(device="cpu", max_pack=1))


def test_pack_size_is_measured_once_per_job_and_width(monkeypatch):
    measured = []

    def device_fits_five(specs):
        assert len({(s.width, s.lr, s.seed) for s in specs}) == 1       # copies of the claimed trial's spec
        measured.append(len(specs) if specs[0].width == 32 else (len(specs), specs[0].width))
        return min(len(specs), 5)

    monkeypatch.setattr(packing, "fit_pack_size", device_fits_five)
    monkeypatch.setattr(packing, "_pack_sizes", {})
    settings = Settings(device="cpu", max_pack=8)
    assert packing.pack_size(claimed("a"), settings, available=20) == 5 and measured == [8]
    assert packing.pack_size(claimed("a"), settings, available=20) == 5 and measured == [8]   # the device's limit
    assert packing.pack_size(claimed("a"), settings, available=3) == 3 and measured == [8]
    assert packing.pack_size(claimed("b"), settings, available=3) == 3 and measured == [8, 3]
    assert packing.pack_size(claimed("b"), settings, available=7) == 5 and measured == [8, 3, 7]  # 3 was not a limit
    assert packing.pack_size(claimed("b", width=64), settings, available=2) == 2 and measured == [8, 3, 7, (2, 64)]


def test_workers_that_split_jobs_each_take_an_equal_share():
    assert packing.share_of(8, Settings()) == 8                      # a worker alone may take the whole grid
    assert packing.share_of(8, Settings(pack_share=2)) == 4
    assert packing.share_of(7, Settings(pack_share=2)) == 4          # the first pack takes the odd one
    assert packing.share_of(3, Settings(pack_share=4)) == 1          # more workers than trials: one each
