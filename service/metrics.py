"""Prometheus: job and trial counts by state, trial seconds and queue depth, read from the database (the record)
at scrape time, plus HTTP request counts and latencies observed by a middleware."""
from __future__ import annotations

import time

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy.orm import Session, sessionmaker

from service.models import TRIAL_RESULT, Job, JobState, Trial, TrialState

TRIAL_SECONDS_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600)


class DatabaseCollector:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def collect(self):
        with self.sessions() as session:
            jobs = dict(session.execute(sa.select(Job.state, sa.func.count()).group_by(Job.state)).all())
            trials = dict(session.execute(sa.select(Trial.state, sa.func.count()).where(Trial.retried.is_(False))
                                          .group_by(Trial.state)).all())
            retries = session.scalar(sa.select(sa.func.count()).where(Trial.retried.is_(True))) or 0
            finished = sa.and_(Trial.state.in_(TRIAL_RESULT), Trial.seconds.is_not(None))
            bucket_counts = session.execute(sa.select(
                *[sa.func.count().filter(Trial.seconds <= b) for b in TRIAL_SECONDS_BUCKETS],
                sa.func.count(), sa.func.coalesce(sa.func.sum(Trial.seconds), 0.0)).where(finished)).one()
        g = GaugeMetricFamily("deltamu_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            g.add_metric([state.value], jobs.get(state, 0))
        yield g
        g = GaugeMetricFamily("deltamu_trials", "Trials (current attempt of each grid point) by state",
                              labels=["state"])
        for state in TrialState:
            g.add_metric([state.value], trials.get(state, 0))
        yield g
        yield GaugeMetricFamily("deltamu_trial_retries", "Attempts that failed and were requeued", value=retries)
        yield GaugeMetricFamily("deltamu_queue_depth", "Trials waiting for a worker (PENDING)",
                                value=trials.get(TrialState.PENDING, 0))
        *cumulative, total, seconds_sum = bucket_counts
        buckets = [(str(float(b)), n) for b, n in zip(TRIAL_SECONDS_BUCKETS, cumulative)] + [("+Inf", total)]
        h = HistogramMetricFamily("deltamu_trial_seconds", "Training seconds of finished trials")
        h.add_metric([], buckets, float(seconds_sum))
        yield h


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("deltamu_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("deltamu_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=registry)

    async def middleware(self, request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.requests.labels(request.method, path, str(response.status_code)).inc()
        self.latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response


def make_registry(sessions: sessionmaker[Session]) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions))
    return registry, HttpMetrics(registry)
