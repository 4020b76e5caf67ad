"""A Python client of the deltamu API: submit a tuning job, follow it, fetch the recommendation for a width.

    import deltamu
    api = deltamu.Client("http://127.0.0.1:8000")     # the token: found as the `deltamu` CLI finds it (find_token)
    job = api.submit({"model": {"width": 64, "depth": 2}, "lr_grid": {"min": 1e-3, "max": 1e-1, "count": 5}})
    job.wait(progress=True)                            # a progress bar: best loss so far, measured ETA
    rec = job.recommendation(1024)                     # a gdn.spec.Recommendation
    groups = deltamu.apply(model, rec)

Connection errors and 503s are retried (a bounded number of times, with exponential backoff, honouring
Retry-After); a submit carries an Idempotency-Key, so a retried POST never makes a second job. Importing this module
loads no torch.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gdn.recommend import recommendation_from_dict
from gdn.spec import Recommendation

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 30.0
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
RETRIES = 5                   # after the first try: about 15 s of backoff in all, more if the server asks
BACKOFF_SECONDS = 0.5         # the first wait; doubled each time
MAX_WAIT_SECONDS = 30.0       # the longest one wait, Retry-After included


class ApiError(Exception):
    """The API answered with a problem (RFC 9457), or could not be reached; the message says which and why."""

    def __init__(self, message: str, status: int | None = None, problem: dict | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


# --- the token: where the CLI and the client look for it ---------------------------------------------------------

@dataclass
class TokenSearch:
    token: str | None
    source: str | None                                   # where the token came from
    looked: list[str] = field(default_factory=list)      # every place looked at, in order, with what was there

    def describe(self) -> str:
        if self.token is not None:
            return f"the token came from {self.source}"
        return "no token found; looked in " + ", ".join(self.looked)


def token_files(data_dir: str | Path | None = None, cwd: Path | None = None) -> list[Path]:
    """Where `deltamu up` may have written its token: <data dir>/token, a relative data dir (.deltamu by default,
    DELTAMU_DATA_DIR) searched from the working directory up to the root, as git finds .git; then ~/.deltamu/token."""
    data_dir = Path(data_dir if data_dir is not None else os.environ.get("DELTAMU_DATA_DIR", ".deltamu"))
    if data_dir.is_absolute():
        candidates = [data_dir / "token"]
    else:
        here = (cwd or Path.cwd()).resolve()
        candidates = [d / data_dir / "token" for d in (here, *here.parents)]
    home = Path.home() / ".deltamu" / "token"
    return candidates + ([home] if home not in candidates else [])


def find_token(token: str | None = None, *, data_dir: str | Path | None = None,
               settings_tokens: list[str] | None = None) -> TokenSearch:
    """The bearer token to send, first found of: `token`; $DELTAMU_TOKEN; the first of DELTAMU_API_TOKENS (the
    server's own tokens, `settings_tokens` where the caller has read its settings); a token file (token_files)."""
    if token:
        return TokenSearch(token, "the token argument (--token)")
    looked = ["--token / token= (not given)"]
    env = os.environ.get("DELTAMU_TOKEN", "").strip()
    if env:
        return TokenSearch(env, "$DELTAMU_TOKEN", looked)
    looked.append("$DELTAMU_TOKEN (unset)")
    if settings_tokens is None:
        settings_tokens = [t.strip() for t in os.environ.get("DELTAMU_API_TOKENS", "").split(",") if t.strip()]
    if settings_tokens:
        return TokenSearch(settings_tokens[0], "DELTAMU_API_TOKENS", looked)
    looked.append("DELTAMU_API_TOKENS (unset)")
    files = token_files(data_dir)
    for path in files:
        try:
            secret = path.read_text().strip()
        except OSError:
            continue
        if secret:
            return TokenSearch(secret, str(path), looked)
    looked.append("the token files " + ", ".join(str(p) for p in files) + " (absent or empty)")
    return TokenSearch(None, None, looked)


# --- typed answers ------------------------------------------------------------------------------------------------

@dataclass
class Optimum:
    """The fitted optimum of the base width's sweep (the API's OptimumPublic)."""
    lr: float | None
    loss: float | None
    on_edge: bool
    warnings: list[str]
    log2_lr_std: float | None = None
    grid_lr: float | None = None
    near_best_lr_min: float | None = None
    near_best_lr_max: float | None = None


@dataclass
class BestSoFar:
    width: int
    lr: float
    seed: int
    loss: float


@dataclass
class Trial:
    """One attempt at one grid point, with its curve as far as it was asked for (the API's TrialPublic)."""
    id: int
    point: int
    width: int
    lr: float
    seed: int
    attempt: int
    state: str
    retried: bool
    final_val_loss: float | None
    tokens: int | None
    seconds: float | None
    curve: list[dict]                                     # {step, tokens, loss, lr, grad_norm, seconds}
    reason: str | None = None
    error: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: dict) -> "Trial":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k != "raw"}, raw=d)


@dataclass
class Job:
    """A job as the API showed it when it was fetched (refresh() fetches it again). Its JSON fields are also
    readable by name: job["id"], job["trials"]."""
    id: str
    state: str
    progress: float
    widths: list[int]
    trials_total: int
    trials_by_state: dict[str, int]
    optimum: Optimum | None
    best_so_far: BestSoFar | None
    queue_position: int | None
    tokens_trained: int
    tokens_total: int
    tokens_per_second: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None
    loss_unit: str
    error: str | None
    transfer: dict | None
    spec: dict
    created_at: str
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    client: "Client | None" = field(default=None, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: dict, client: "Client | None" = None) -> "Job":
        opt = d.get("optimum")
        best = d.get("best_so_far")
        return cls(
            id=d["id"], state=d["state"], progress=d["progress"], widths=d["widths"],
            trials_total=d["trials"]["total"], trials_by_state=d["trials"]["by_state"],
            optimum=Optimum(**{k: opt.get(k) for k in Optimum.__dataclass_fields__}) if opt else None,
            best_so_far=BestSoFar(**best) if best else None, queue_position=d.get("queue_position"),
            tokens_trained=d.get("tokens_trained", 0), tokens_total=d.get("tokens_total", 0),
            tokens_per_second=d.get("tokens_per_second"), eta_seconds=d.get("eta_seconds"),
            elapsed_seconds=d.get("elapsed_seconds"), loss_unit=d.get("loss_unit", "nats per token"),
            error=d.get("error"), transfer=d.get("transfer"), spec=d.get("spec", {}), created_at=d["created_at"],
            raw=d, client=client)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def trials_done(self) -> int:
        return sum(self.trials_by_state.get(s, 0) for s in ("COMPLETED", "DIVERGED", "FAILED", "CANCELLED"))

    def _api(self) -> "Client":
        if self.client is None:
            raise RuntimeError("this Job has no client: get it from Client.submit / Client.job")
        return self.client

    def refresh(self) -> "Job":
        return self._api().job(self.id)

    def wait(self, progress: bool = False, poll_seconds: float = 2.0, timeout: float | None = None) -> "Job":
        """The job once it has finished; progress=True draws a progress bar on stderr (best loss so far, the ETA
        from the measured tokens per second)."""
        return self._api().wait(self.id, poll_seconds=poll_seconds, timeout=timeout, progress=progress)

    def recommendation(self, width: int, tokens: int | None = None) -> Recommendation:
        return self._api().recommendation(self.id, width, tokens=tokens)

    def trials(self) -> list[Trial]:
        return self._api().trials(self.id)

    def cancel(self) -> "Job":
        return self._api().cancel(self.id)


def status_line(job: Job) -> str:
    """One line on a job: trials done, best loss so far, throughput and ETA (the CLI's --watch and Job.wait)."""
    parts = [f"{job.trials_done}/{job.trials_total} trials"]
    if job.queue_position is not None:
        parts.append(f"queued, {job.queue_position} job(s) ahead")
    if job.best_so_far is not None:
        parts.append(f"best {job.best_so_far.loss:.4f} at lr {job.best_so_far.lr:.3g}")
    if job.tokens_per_second:
        parts.append(f"{_count(job.tokens_per_second)} tok/s")
    if job.eta_seconds is not None:
        parts.append(f"ETA {_duration(job.eta_seconds)}")
    return " · ".join(parts)


def _count(x: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


# --- the client ---------------------------------------------------------------------------------------------------

class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = TIMEOUT_SECONDS,
                 http: httpx.Client | None = None, retries: int = RETRIES, backoff: float = BACKOFF_SECONDS,
                 token_search: TokenSearch | None = None):
        """url: default $DELTAMU_URL, else http://127.0.0.1:8000. token: default found by find_token (the CLI passes
        its own search as token_search). http: an httpx.Client to send through instead (e.g. FastAPI's TestClient);
        the token is added to it unless it has an Authorization header already."""
        if http is None:
            http = httpx.Client(base_url=url or os.environ.get("DELTAMU_URL") or DEFAULT_URL, timeout=timeout)
        self.token_search = token_search or find_token(token)
        if self.token_search.token and "authorization" not in http.headers:
            http.headers["Authorization"] = f"Bearer {self.token_search.token}"
        self.http = http
        self.retries, self.backoff = retries, backoff

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One call, retried on a connection error or a 503; a problem answer or an unreachable server raises
        ApiError with a one-line message."""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2 ** attempt
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise ApiError(f"cannot reach the deltamu API at {self.url} ({type(e).__name__}: {e}; "
                                   f"{attempt + 1} tries); is `deltamu up` running?") from None
            else:
                if response.status_code != 503 or attempt == self.retries:
                    break
                wait = _retry_after(response) or wait
            time.sleep(min(wait, MAX_WAIT_SECONDS))
        if response.status_code >= 400:
            try:
                problem = response.json()
                message = f"{problem.get('title', 'error')}: {problem.get('detail') or ''}".rstrip(": ")
            except ValueError:
                problem, message = None, response.text.strip()[:200]
            if response.status_code == 401:
                message += f" ({self.token_search.describe()})"
            raise ApiError(f"{response.status_code} {message}", response.status_code, problem)
        return response

    def submit(self, job: dict, idempotency_key: str | None = None) -> Job:
        """POST a tuning job (the API's JobCreate). The Idempotency-Key (a new one unless given) makes a retry of
        a POST whose answer was lost return the same job."""
        headers = {"Idempotency-Key": idempotency_key or f"client-{uuid.uuid4()}"}
        return Job.from_api(self.request("POST", "/v1/jobs", json=job, headers=headers).json(), self)

    def job(self, job_id: str) -> Job:
        return Job.from_api(self.request("GET", f"/v1/jobs/{job_id}").json(), self)

    def jobs(self, state: str | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first: every page, or the first `limit` jobs."""
        out: list[Job] = []
        cursor = None
        while True:
            params = {k: v for k, v in (("state", state), ("cursor", cursor)) if v is not None}
            if limit is not None:
                params["limit"] = limit - len(out)
            page = self.request("GET", "/v1/jobs", params=params).json()
            out += [Job.from_api(d, self) for d in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None or (limit is not None and len(out) >= limit):
                return out

    def trials(self, job_id: str) -> list[Trial]:
        """Every attempt of every trial, with its whole curve (following every page)."""
        out: dict[int, Trial] = {}
        cursor, after_step = None, None
        while True:
            params = {k: v for k, v in (("cursor", cursor), ("after_step", after_step)) if v is not None}
            page = self.request("GET", f"/v1/jobs/{job_id}/trials", params=params).json()
            for d in page["items"]:
                if d["id"] in out:          # the same page again, for the rest of a long curve
                    last = out[d["id"]].curve[-1]["step"] if out[d["id"]].curve else -1
                    out[d["id"]].curve += [p for p in d["curve"] if p["step"] > last]
                else:
                    out[d["id"]] = Trial.from_api(d)
            truncated = [d for d in page["items"] if d["curve_truncated"] and d["curve"]]
            if truncated:                   # ask for this page again from its shortest truncated curve's end
                after_step = min(d["curve"][-1]["step"] for d in truncated)
                continue
            cursor, after_step = page["next_cursor"], None
            if cursor is None:
                return list(out.values())

    def wait(self, job_id: str, poll_seconds: float = 2.0, timeout: float | None = None,
             progress: bool = False) -> Job:
        """The job once it has finished (SUCCEEDED, FAILED or CANCELLED); TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                job = self.job(job_id)
                if progress:
                    bar = bar or _progress_bar()
                    line = status_line(job).replace("{", "{{").replace("}", "}}")
                    bar.bar_format = f"{job.state} {{percentage:3.0f}}%|{{bar:20}}| {line}"
                    bar.n = round(100 * job.progress)
                    bar.refresh()                         # one line per poll where stderr is not a terminal
                if job.finished:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
                time.sleep(poll_seconds)
        finally:
            if bar is not None:
                bar.close()

    def recommendation(self, job_id: str, width: int, tokens: int | None = None) -> Recommendation:
        """The muP hyperparameters for a target width (and, where the API takes it, a token budget)."""
        params = {"width": width} if tokens is None else {"width": width, "tokens": tokens}
        return recommendation_from_dict(self.request("GET", f"/v1/jobs/{job_id}/recommendation",
                                                     params=params).json())

    def cancel(self, job_id: str) -> Job:
        return Job.from_api(self.request("POST", f"/v1/jobs/{job_id}/cancel").json(), self)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers["Retry-After"]), 0.0)
    except (KeyError, ValueError):
        return None                 # absent, or an HTTP date: the backoff decides


def _progress_bar():
    from tqdm import tqdm
    return tqdm(total=100, file=sys.stderr, bar_format="{percentage:3.0f}%|{bar:20}|")
