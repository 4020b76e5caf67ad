"""A Python client of the deltamu API: submit a tuning job, follow it, fetch the recommendation for a width.

    from deltamu import Client
    with Client("http://127.0.0.1:8000", token="...") as api:
        job = api.submit({"model": {"width": 64, "depth": 2}, "lr_grid": {"min": 1e-3, "max": 1e-1, "count": 5}})
        job = api.wait(job["id"])
        rec = api.recommendation(job["id"], width=1024)      # a gdn.spec.Recommendation
"""
from __future__ import annotations

import time

import httpx

from gdn.recommend import recommendation_from_dict
from gdn.spec import Recommendation

TIMEOUT_SECONDS = 30.0
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")


class ApiError(Exception):
    """The API answered with a problem (RFC 9457), or could not be reached; the message says which and why."""

    def __init__(self, message: str, status: int | None = None, problem: dict | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None,
                 timeout: float = TIMEOUT_SECONDS, http: httpx.Client | None = None):
        """`http`: an httpx.Client to send through instead (e.g. FastAPI's TestClient); `token` is added to it."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if http is None:
            http = httpx.Client(base_url=url, timeout=timeout)
        http.headers.update(headers)
        self.http = http

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One call; a problem answer or an unreachable server raises ApiError with a one-line message."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ApiError(f"cannot reach the deltamu API at {self.http.base_url} ({e}); is `deltamu up` "
                           "running?") from None
        if response.status_code >= 400:
            try:
                problem = response.json()
                message = f"{problem.get('title', 'error')}: {problem.get('detail') or ''}".rstrip(": ")
            except ValueError:
                problem, message = None, response.text.strip()[:200]
            raise ApiError(f"{response.status_code} {message}", response.status_code, problem)
        return response

    def submit(self, job: dict, idempotency_key: str | None = None) -> dict:
        """POST a tuning job (the API's JobCreate); returns the job as the API shows it."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/jobs", json=job, headers=headers).json()

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, poll_seconds: float = 2.0, timeout: float | None = None) -> dict:
        """The job once it has finished (SUCCEEDED, FAILED or CANCELLED); TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll_seconds)

    def recommendation(self, job_id: str, width: int, tokens: int | None = None) -> Recommendation:
        params = {"width": width} | ({"tokens": tokens} if tokens is not None else {})
        body = self.request("GET", f"/v1/jobs/{job_id}/recommendation", params=params).json()
        return recommendation_from_dict(body)

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel").json()
