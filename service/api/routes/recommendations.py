"""What a job produced: the recommendation for a target width (a pure function, cacheable) and the sweep plot."""
from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse

from gdn.parametrization import PARAMETRIZATION_VERSION
from gdn.fit import Optimum
from gdn.recommend import SweepResult, recommend
from gdn.spec import SweepConfig
from service import crud, floats
from service.api.deps import Reader, SessionDep, SettingsDep
from service.api.routes.jobs import PROBLEMS, load_job
from service.plots import job_png
from service.problems import ProblemError

router = APIRouter(prefix="/v1/jobs", tags=["results"])
CACHE_SECONDS = 86400


@router.get("/{job_id}/recommendation", responses={**PROBLEMS, 304: {"description": "Not modified"}},
            summary="muP hyperparameters for a target width (409 until the job has an optimum)")
def recommendation(job_id: str, session: SessionDep, settings: SettingsDep, _: Reader,
                   width: Annotated[int, Query(ge=1, description="target width")],
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
    job = load_job(session, job_id)
    if job.optimum is None:
        raise ProblemError(409, "no-optimum-yet", "No optimum yet",
                           f"job {job_id} is {job.state.value}; a recommendation needs a SUCCEEDED job"
                           + (f": {job.error}" if job.error else ""))
    if width > settings.max_target_width:
        raise ProblemError(422, "width-not-supported", "Width not supported",
                           f"width {width} exceeds the limit of {settings.max_target_width}")
    etag = '"' + hashlib.sha256(json.dumps([job.id, job.optimum, width, PARAMETRIZATION_VERSION],
                                           sort_keys=True).encode()).hexdigest()[:32] + '"'
    cache = {"ETag": etag, "Cache-Control": f"{'private' if settings.auth_reads else 'public'}, "
                                           f"max-age={CACHE_SECONDS}"}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=cache)
    # the base width's sweep: its optimum and its trials (a transfer study's other widths do not change either)
    result = SweepResult(config=SweepConfig.from_dict(job.sweep_config),
                         optimum=Optimum.from_dict(floats.decode(job.optimum)),
                         num_trials=job.num_points // len(job.widths))
    try:
        body = recommend(result, width).to_dict()
    except ValueError as e:
        raise ProblemError(422, "width-not-supported", "Width not supported", str(e)) from None
    return JSONResponse(floats.encode({"job_id": job.id, **body}), headers=cache)


@router.get("/{job_id}/plot.png", response_class=Response, responses={**PROBLEMS, 200: {"content": {"image/png": {}}}},
            summary="Validation loss vs learning rate, the optimum marked, diverged trials shown; a transfer study: "
                    "one line per width, each minus its best")
def plot(job_id: str, session: SessionDep, _: Reader) -> Response:
    job = load_job(session, job_id)
    png = job_png(job, [t for t in crud.list_trials(session, job_id=job_id) if not t.retried])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
