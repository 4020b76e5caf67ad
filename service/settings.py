"""One settings object for the API, the worker and the CLI, read from DELTAMU_* environment variables (and .env).

The embedded default needs nothing set: a SQLite file and a server-less broker under `data_dir`. Setting
DELTAMU_DATABASE_URL / DELTAMU_BROKER_URL (or the conventional DATABASE_URL / CELERY_BROKER_URL) switches to
PostgreSQL and Redis.
"""
from __future__ import annotations

import functools
from pathlib import Path

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gdn.spec import BACKENDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DELTAMU_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    # --- where things live ---------------------------------------------------------------------
    data_dir: Path = Path(".deltamu")               # embedded default: SQLite files, token, beat schedule
    database_url: str | None = Field(None, validation_alias=AliasChoices("DELTAMU_DATABASE_URL", "DATABASE_URL"))
    broker_url: str | None = Field(None, validation_alias=AliasChoices("DELTAMU_BROKER_URL", "CELERY_BROKER_URL"))
    queue: str = "deltamu"                          # the Celery queue trials go through

    # --- the API -------------------------------------------------------------------------------
    host: str = "127.0.0.1"                         # the embedded default is reachable from this machine only
    port: int = 8000
    # Write tokens (comma-separated), stored hashed in api_tokens when the API starts; a settings token no longer
    # named here is revoked then. `deltamu token create` makes tokens of any scope (read, write, admin).
    api_tokens: Annotated[list[str], NoDecode] = []
    auth_reads: bool = True                         # GETs of jobs need a read token (false: open to anyone)
    idempotency_ttl_hours: float = 24.0
    page_size_default: int = 20
    page_size_max: int = 200
    max_target_width: int = 1 << 20                 # largest width a recommendation is computed for
    allowed_data_dirs: Annotated[list[Path], NoDecode] = []   # a job's data source must lie under one of these

    # --- job limits: a job beyond them is refused with the reason -----------------------------
    max_trials: int = 64                            # learning rates x seeds
    max_steps: int = 200_000
    max_proxy_width: int = 8192
    max_depth: int = 64
    max_tokens_per_step: int = 1 << 21             # batch_size x seq_len
    max_proxy_params: float = 2e9
    max_job_flops: float = 1e19                     # about a day of one H100 at a realistic throughput
    max_eval_tokens: int = 1 << 26                  # eval_batches x batch_size x seq_len of one trial
    max_curve_points: int = 10_000                  # curve rows of one trial: steps / log_every
    max_trial_memory_gib: float = 64.0              # one trial's estimated memory: weights, gradients, optimizer
                                                    # state and one step's activations (service.jobspec)
    max_body_bytes: int = 1 << 20                   # a request body beyond this is refused (413) unread
    curve_page_default: int = 1000                  # /trials: curve points per trial on a page, by default
    max_page_points: int = 100_000                  # /trials: curve points on one page (limit x curve_limit)

    # --- the worker ----------------------------------------------------------------------------
    device: str = "auto"                            # "auto": CUDA when the worker sees a GPU, else CPU
    # How trials run, recorded in each trial's result: the gated delta rule's backend (auto | chunk | naive |
    # triton; auto: the Triton kernels on CUDA where validated) and whether a CUDA pack replays its steps from a
    # CUDA graph (DELTAMU_CUDA_GRAPHS=0 runs them op by op).
    gdn_backend: str = "auto"
    cuda_graphs: bool = True
    # A dead worker's trials are requeued within stale_after + reaper_interval seconds (25 s by default). The cost:
    # one UPDATE per busy worker per heartbeat, and per worker one reaper pass (two indexed queries) per interval.
    heartbeat_seconds: float = 5.0                  # a running trial touches its heartbeat this often
    stale_after_seconds: float = 20.0               # a RUNNING trial silent this long belongs to a dead worker
    reaper_interval_seconds: float = 5.0
    # A PENDING trial sent this long ago and still unclaimed is sent again when the broker holds fewer messages
    # than trials waiting (it lost some: a restart without persistence); a duplicate is skipped by the claim.
    redrive_after_seconds: float = 60.0
    # A claim that meets a database error is retried this many times, 1, 2, 4 ... up to claim_retry_max_delay
    # seconds apart (about 3 minutes in all by default); after that the re-drive sends the trial again.
    claim_retries: int = Field(10, ge=0)
    claim_retry_max_delay_seconds: float = 30.0
    max_attempts: int = 3                           # infrastructure failures of one (lr, seed) before it is FAILED
    trial_time_limit_seconds: int = 6 * 3600        # hard limit of one trial (Celery task_time_limit)
    trial_soft_time_limit_margin_seconds: int = 60  # soft limit = hard limit - margin: the task records FAILED
    visibility_timeout_seconds: int = 7 * 3600      # Redis redelivers unacked tasks after this: above the limit
    worker_max_tasks_per_child: int = 0             # 0: no limit; 1 frees a CUDA context after every trial
    # A CUDA worker trains up to this many PENDING trials of one job and width as one pack (gdn.packed), as many
    # as fit the GPU; 1 disables packing. CPU workers train one trial per task (a pack does not pay on a CPU).
    max_pack: int = Field(16, ge=1)
    # How many GPU workers split one job: a pack takes at most ceil(trials of its job and width / pack_share), so
    # that N workers (one per GPU) each train a share instead of the first taking the whole grid. Unset: what
    # `deltamu worker` / `deltamu up` launch together (one per visible GPU); 1 for a worker started alone. Set it
    # to the number of GPU workers when they are separate containers.
    pack_share: int | None = Field(None, ge=1)

    @field_validator("gdn_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"must be one of {BACKENDS}, got {v!r}")
        return v

    @field_validator("api_tokens", "allowed_data_dirs", mode="before")
    @classmethod
    def _split_commas(cls, v):
        if isinstance(v, str):
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, v: str | None) -> str | None:
        """postgres:// and postgresql:// (what most platforms hand out) -> the psycopg 3 driver."""
        if v is None:
            return v
        for prefix in ("postgres://", "postgresql://"):
            if v.startswith(prefix):
                return "postgresql+psycopg://" + v[len(prefix):]
        return v

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> "Settings":
        if self.visibility_timeout_seconds <= self.trial_time_limit_seconds:
            raise ValueError("visibility_timeout_seconds must exceed trial_time_limit_seconds, or the broker "
                             "redelivers a trial that is still running")
        if not 0 <= self.trial_soft_time_limit_margin_seconds < self.trial_time_limit_seconds:
            raise ValueError("trial_soft_time_limit_margin_seconds must lie in [0, trial_time_limit_seconds)")
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must exceed two heartbeats, or live trials get reaped")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        return self

    # --- derived ---------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'deltamu.sqlite3').as_posix()}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite3').as_posix()}"

    @property
    def embedded(self) -> bool:
        """True when the database is a SQLite file (the one-machine default)."""
        return self.db_url.startswith("sqlite")

    @property
    def trial_soft_time_limit_seconds(self) -> int:
        return self.trial_time_limit_seconds - self.trial_soft_time_limit_margin_seconds

    @property
    def token_file(self) -> Path:
        """Where `deltamu up` keeps the token it generated, and where the CLI client looks for one."""
        return self.data_dir / "token"

    def as_environment(self) -> dict[str, str]:
        """These settings as DELTAMU_* variables, in the form they are read: what a child process (a worker that
        `deltamu up` or `deltamu worker` starts) is given so that its own Settings() equals these. Unset (None)
        fields are left out."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"{self.model_config['env_prefix']}{name.upper()}"] = str(value)
        return env


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()
