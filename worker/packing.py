"""Packing a job's trials: a CUDA worker whose run_trial task claimed a trial also claims up to K - 1 more PENDING
trials of the same job and width (one gdn.packed.pack_key) and trains them together with gdn.packed.train_packed.

K is what fits the GPU (gdn.pack_plan.fit_pack_size: estimated from the shapes, then measured on the device,
cached per (job, width) in this process), at most settings.max_pack, and at most this worker's share of the
(job, width)'s trials when settings.pack_share workers split jobs (one per GPU). CPU workers train one trial per
task (a pack of one is slower than train_trial there, and a CPU gains nothing from batching trials) unless
PACK_ON_CPU. On CUDA even a lone trial trains as a pack (of one): the pack replays its steps from a CUDA graph
(gdn.train.run decides).
"""
from __future__ import annotations

from gdn.horizon import config_at_horizon
from gdn.pack_plan import fit_pack_size
from gdn.spec import SweepConfig, TrialSpec
from gdn.trial import resolve_device
from service import crud
from service.crud import ClaimedTrial
from service.db import transaction
from service.settings import Settings
from worker.runtime import log, sessions

PACK_SIZE_CACHE_ENTRIES = 256
# Not a setting: True only in the tests' worker app (tests/worker/packing_worker_app.py), so that a CPU worker takes
# the CUDA worker's packed path and the tests drive it without a GPU.
PACK_ON_CPU = False
# (job id, width, horizon) -> (trials that fit, how many were tried): a size below what was tried is the device's
# limit
_pack_sizes: dict[tuple[str, int, int | None], tuple[int, int]] = {}


def trial_spec(claimed: ClaimedTrial, settings: Settings) -> TrialSpec:
    config = config_at_horizon(SweepConfig.from_dict(claimed.sweep_config), claimed.steps)
    return TrialSpec(config=config, lr=claimed.lr, seed=claimed.seed,
                     width=claimed.width, device=settings.device, backend=settings.gdn_backend,
                     cuda_graphs=settings.cuda_graphs)


def packs_here(settings: Settings) -> bool:
    return settings.max_pack > 1 and (resolve_device(settings.device).type == "cuda" or PACK_ON_CPU)


def pack_size(claimed: ClaimedTrial, settings: Settings, available: int) -> int:
    """How many trials to train as one pack, the claimed one included: what fits the device, at most max_pack
    and at most `available`."""
    wanted = min(settings.max_pack, available)
    key = (claimed.job_id, claimed.width, claimed.steps)
    cached = _pack_sizes.get(key)
    if cached is None or cached[0] == cached[1] < wanted:     # never measured, or only smaller packs were
        if len(_pack_sizes) >= PACK_SIZE_CACHE_ENTRIES:
            _pack_sizes.pop(next(iter(_pack_sizes)))
        fits = fit_pack_size([trial_spec(claimed, settings)] * wanted)
        cached = _pack_sizes[key] = (fits, wanted)
        log.info("job %s, width %s: packs of up to %d trial(s) fit (%d tried)", *key, fits, wanted)
    return min(wanted, cached[0])


def share_of(points: int, settings: Settings) -> int:
    """The most trials one pack may take of a (job, width) with `points` grid points: an equal share among the
    settings.pack_share workers that split jobs, so each GPU trains its part at once."""
    share = settings.pack_share or 1
    return max(1, -(-points // share))


def claim_mates(claimed: ClaimedTrial, worker: str, settings: Settings) -> list[ClaimedTrial]:
    """The further trials of `claimed`'s pack, claimed for `worker`; none where this worker does not pack."""
    if not packs_here(settings):
        return []
    with sessions()() as session:
        available = crud.count_pack_mates(session, trial_id=claimed.trial_id)
        points = crud.count_width_points(session, trial_id=claimed.trial_id)
    if available == 0:
        return []
    size = pack_size(claimed, settings, min(1 + available, share_of(points, settings)))
    if size < 2:
        return []
    with transaction(sessions()) as session:
        return crud.claim_pack_mates(session, trial_id=claimed.trial_id, worker=worker, limit=size - 1)
