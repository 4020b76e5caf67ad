"""A finished job's recommendation for a target width (and a token budget): gdn.recommend.recommend on the base
width's stored optimum (and the job's horizon fit).

It is a pure function of (job, optimum, width, parametrization version), so it is cached: an ETag of those four,
Cache-Control for a day (private when reads need a token), and a matching If-None-Match answers "not modified"
before anything is computed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from gdn.parametrization import PARAMETRIZATION_VERSION
from gdn.fit import Optimum
from gdn.horizon import HorizonFit
from gdn.recommend import SweepResult, horizon_evidence, recommend
from service import floats
from service.models import Job
from service.present import data_regime
from service.schemas import RecommendationPublic
from service.settings import Settings

CACHE_SECONDS = 86400


class NoOptimumYet(Exception):
    """The job has not (or not yet) produced an optimum."""


class WidthNotSupported(ValueError):
    """The target width is beyond the deployment's limit, or one the model's width axis cannot take."""


@dataclass
class RecommendationAnswer:
    headers: dict[str, str]                 # ETag and Cache-Control, on the answer and on "not modified"
    body: RecommendationPublic | None       # None: the client's copy (If-None-Match) is current


def job_recommendation(job: Job, width: int, *, settings: Settings, if_none_match: str | None,
                       tokens: int | None = None,
                       sweep_size: Callable[[], tuple[int, float]] | None = None) -> RecommendationAnswer:
    """The recommendation for `width` (and the token budget `tokens`); sweep_size: counts (trials of the base width's
    sweep, the same in proxy-trial units), e.g. crud.base_sweep_size, for the cost, called only when a body is made
    (not for a 409 or a 304); default: the job's grid points a width."""
    if job.optimum is None:
        raise NoOptimumYet(f"job {job.id} is {job.state.value}; a recommendation needs a SUCCEEDED job"
                           + (f": {job.error}" if job.error else ""))
    if width > settings.max_target_width:
        raise WidthNotSupported(f"width {width} exceeds the limit of {settings.max_target_width}")
    key = [job.id, job.optimum, width, PARAMETRIZATION_VERSION]
    if tokens is not None:      # only then: the ETag of a width-only answer is what it was
        key += [tokens, job.horizon, horizon_evidence()]
    etag = '"' + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag,
               "Cache-Control": f"{'private' if settings.auth_reads else 'public'}, max-age={CACHE_SECONDS}"}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return RecommendationAnswer(headers, None)
    # the base width's sweep: its optimum and its trials (a transfer study's other widths do not change either)
    config, train_tokens, target_vocab = data_regime(job)
    num_trials, equivalents = sweep_size() if sweep_size else (job.num_points // len(job.widths), None)
    result = SweepResult(config=config,
                         optimum=Optimum.from_dict(floats.decode(job.optimum)),
                         num_trials=num_trials, trial_equivalents=equivalents,
                         horizon=HorizonFit.from_dict(floats.decode(job.horizon)) if job.horizon else None)
    try:
        body = recommend(result, width, tokens, train_tokens=train_tokens, target_vocab=target_vocab).to_dict()
    except ValueError as e:                  # a width the model's width axis cannot take
        raise WidthNotSupported(str(e)) from None
    return RecommendationAnswer(headers, RecommendationPublic(job_id=job.id, **body))
