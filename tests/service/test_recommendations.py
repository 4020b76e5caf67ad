"""service.recommendations without a database: the answer is gdn's recommend on the stored optimum, typed by
RecommendationPublic without a value changed; the ETag answers "not modified"; the refusals say why."""
from __future__ import annotations

import json
import math

import pytest

from gdn.recommend import SweepResult, recommend
from gdn.fit import fit_optimum
from gdn.spec import SweepConfig
from helpers import tiny_job
from service import floats
from service.jobspec import prepare
from service.models import Job, JobState
from service.recommendations import NoOptimumYet, WidthNotSupported, job_recommendation
from service.schemas import JobCreate
from service.settings import Settings

LRS, LOSSES = [0.002, 0.01, 0.05], [3.1, 2.7, 2.9]


def finished_job(optimum: dict | None = None) -> Job:
    config = prepare(JobCreate.model_validate(tiny_job()), Settings()).sweep_config
    stored = floats.encode(optimum if optimum is not None else fit_optimum(LRS, LOSSES).to_dict())
    return Job(id="job-1", state=JobState.SUCCEEDED, sweep_config=config, optimum=stored, widths=[32], num_points=3)


def test_the_answer_is_gdns_recommendation_as_json():
    job = finished_job()
    answer = job_recommendation(job, 4096, settings=Settings(auth_reads=False), if_none_match=None)   # open reads
    expected = recommend(SweepResult(SweepConfig.from_dict(job.sweep_config), fit_optimum(LRS, LOSSES), 3),
                         4096).to_dict()
    assert json.loads(answer.body.model_dump_json()) == {"job_id": "job-1", **json.loads(json.dumps(expected))}
    assert answer.headers["Cache-Control"] == "public, max-age=86400" and answer.headers["ETag"].startswith('"')


def test_nonfinite_floats_are_written_as_floats_encode_writes_them():
    optimum = {**fit_optimum(LRS, LOSSES).to_dict(), "log2_lr_std": math.nan}
    answer = job_recommendation(finished_job(optimum), 64, settings=Settings(), if_none_match=None)
    assert json.loads(answer.body.model_dump_json())["base_lr_log2_std"] == "NaN"


def test_a_current_copy_is_not_modified_and_reads_behind_auth_are_private():
    job, settings = finished_job(), Settings(auth_reads=True)
    first = job_recommendation(job, 4096, settings=settings, if_none_match=None)
    again = job_recommendation(job, 4096, settings=settings, if_none_match=f'"other", {first.headers["ETag"]}')
    assert again.body is None and again.headers == first.headers
    assert first.headers["Cache-Control"].startswith("private")
    other = job_recommendation(job, 2048, settings=settings, if_none_match=first.headers["ETag"])
    assert other.body is not None and other.headers["ETag"] != first.headers["ETag"]


def test_refusals_say_why():
    job = finished_job()
    with pytest.raises(WidthNotSupported, match="exceeds the limit of 1024"):
        job_recommendation(job, 4096, settings=Settings(max_target_width=1024), if_none_match=None)
    with pytest.raises(WidthNotSupported):                     # the head_dim axis cannot take it
        job_recommendation(job, 1001, settings=Settings(), if_none_match=None)
    job.optimum, job.state, job.error = None, JobState.FAILED, "every learning rate diverged"
    with pytest.raises(NoOptimumYet, match="job-1 is FAILED.*: every learning rate diverged"):
        job_recommendation(job, 4096, settings=Settings(), if_none_match=None)


def test_public_types_keep_the_fields_of_gdns_types():
    """OptimumPublic and the transfer types write gdn's dataclasses in the API's non-finite form (null plus a
    `nonfinite` map), field for field; the recommendation's parts are gdn.spec's dataclasses themselves."""
    import dataclasses

    from gdn.fit import Optimum
    from gdn.spec import OptimizerSpec, RecommendedGroup, ScheduleSpec, TransferEvidence
    from gdn.transfer import TransferSummary, WidthTransfer
    from service.schemas import OptimumPublic, RecommendationPublic, TransferPublic, WidthTransferPublic

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}
    assert set(OptimumPublic.model_fields) == names(Optimum) | {"nonfinite"}
    assert set(WidthTransferPublic.model_fields) == names(WidthTransfer)
    assert set(TransferPublic.model_fields) == names(TransferSummary) | {"regret_is_interpolated"}
    fields = RecommendationPublic.model_fields
    assert (fields["optimizer"].annotation, fields["schedule"].annotation) == (OptimizerSpec, ScheduleSpec)
    assert fields["groups"].annotation == list[RecommendedGroup]
    assert fields["transfer_evidence"].annotation == TransferEvidence | None
    from gdn.spec import Recommendation
    assert set(fields) == names(Recommendation) | {"job_id"}
