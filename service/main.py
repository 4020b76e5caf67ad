"""Assembles the app: settings, database, Celery client, routers, problem+json handlers, metrics."""
from __future__ import annotations

from contextlib import asynccontextmanager

import logging

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from service import problems
from service.api.routes import dashboard, health, jobs, recommendations
from service.auth import sync_settings_tokens
from service.bodylimit import BodyLimit
from service.db import make_engine, make_session_factory
from service.jobspec import JobRejected
from service.metrics import make_registry
from service.queue import make_celery
from service.settings import Settings, get_settings

log = logging.getLogger("deltamu.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            sync_settings_tokens(app.state)
        except SQLAlchemyError as e:  # e.g. schema not migrated yet: /readyz says so; auth retries the sync
            log.warning("could not store the settings' API tokens yet: %s", e)
        yield
        app.state.engine.dispose()

    # docs_url, redoc_url: None, as the defaults load their assets from a CDN; dashboard.py serves them locally
    app = FastAPI(title="deltamu", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Learning-rate transfer for Gated Delta Networks: tune a small proxy, get muP "
                              "hyperparameters for any width. Errors are RFC 9457 problem+json.")
    app.state.settings = settings
    app.state.tokens_synced = False
    app.state.engine = make_engine(settings.db_url)
    app.state.sessions = make_session_factory(app.state.engine)
    app.state.celery = make_celery(settings)
    app.state.registry, http_metrics = make_registry(app.state.sessions)
    # inside the metrics middleware (a BaseHTTPMiddleware, whose task group would wrap BodyTooLarge), before the
    # routes read a body
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.middleware("http")(http_metrics.middleware)
    problems.install(app)

    @app.exception_handler(JobRejected)
    async def _rejected(request, exc: JobRejected):
        return problems.problem_response(request, 422, "job-rejected", "Job rejected", str(exc))

    for router in (jobs.router, recommendations.router, health.router, dashboard.router):
        app.include_router(router)
    app.mount(dashboard.STATIC_URL, StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    app.mount(dashboard.DOCS_ASSETS_URL, StaticFiles(directory=dashboard.DOCS_ASSETS_DIR), name="static-docs")
    return app
