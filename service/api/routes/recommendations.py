"""What a job produced: the recommendation for a target width (a pure function, cacheable) and the sweep plot."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service import crud
from service.api.deps import PROBLEMS, Reader, SessionDep, SettingsDep, load_job
from service.plots import horizon_plot_png, job_png
from service.problems import ProblemError
from service.recommendations import NoOptimumYet, WidthNotSupported, job_recommendation
from service.schemas import TOKENS_MAX, RecommendationPublic

router = APIRouter(prefix="/v1/jobs", tags=["results"])


@router.get("/{job_id}/recommendation", response_model=RecommendationPublic,
            responses={**PROBLEMS, 304: {"description": "Not modified"}},
            summary="muP hyperparameters for a target width and, given, token budget (409 until the job has an "
                    "optimum)")
def recommendation(job_id: str, session: SessionDep, settings: SettingsDep, _: Reader, response: Response,
                   width: Annotated[int, Query(ge=1, description="target width")],
                   tokens: Annotated[int | None, Query(ge=1, le=TOKENS_MAX, description=(
                       "the training tokens of the target run: the lr is then the horizon fit's for that budget "
                       "(the job's single horizon: the proxy's, with a warning); default: the job's "
                       "target_tokens"))] = None,
                   if_none_match: Annotated[str | None, Header()] = None) -> RecommendationPublic | Response:
    try:
        job = load_job(session, job_id)
        if tokens is None:
            tokens = (job.spec or {}).get("target_tokens")
        answer = job_recommendation(job, width, settings=settings, if_none_match=if_none_match, tokens=tokens,
                                    sweep_size=lambda: crud.base_sweep_size(session, job))
    except NoOptimumYet as e:
        raise ProblemError(409, "no-optimum-yet", "No optimum yet", str(e)) from None
    except WidthNotSupported as e:
        raise ProblemError(422, "width-not-supported", "Width not supported", str(e)) from None
    if answer.body is None:
        return Response(status_code=304, headers=answer.headers)
    response.headers.update(answer.headers)
    return answer.body


@router.get("/{job_id}/plot.png", response_class=Response, responses={**PROBLEMS, 200: {"content": {"image/png": {}}}},
            summary="Validation loss vs learning rate, the optimum marked, diverged trials shown; a transfer study: "
                    "one line per width, each minus its best")
def plot(job_id: str, session: SessionDep, _: Reader) -> Response:
    job = load_job(session, job_id)
    png = job_png(job, [t for t in crud.list_trials(session, job_id=job_id) if not t.retried])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/{job_id}/horizon.png", response_class=Response,
            responses={**PROBLEMS, 200: {"content": {"image/png": {}}}},
            summary="lr* against training tokens: the base width's horizons, the fitted line and its extrapolation "
                    "to ?tokens=, per width (the job's, and ?width=)")
def horizon_plot(job_id: str, session: SessionDep, settings: SettingsDep, _: Reader,
                 tokens: Annotated[int | None, Query(ge=1, le=TOKENS_MAX, description="extrapolate to this budget")]
                 = None,
                 width: Annotated[int | None, Query(ge=1, description="a target width to draw too")] = None
                 ) -> Response:
    if width is not None and width > settings.max_target_width:
        raise ProblemError(422, "width-not-supported", "Width not supported",
                           f"width {width} exceeds the limit of {settings.max_target_width}")
    png = horizon_plot_png(load_job(session, job_id), tokens, width)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
