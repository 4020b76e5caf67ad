"""The tables: jobs -> trials (one row per attempt of one (width, lr, seed)) -> curve points; idempotency keys; API
tokens.

The schema changes only through Alembic revisions in migrations/. States are Enums shared by the DB and the API.
"""
from __future__ import annotations

import datetime as dt
import enum
import math

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TokenScope(str, enum.Enum):
    """What a token may do; each scope includes the ones before it."""
    READ = "read"                # GET the jobs, trials, recommendations, plots
    WRITE = "write"              # and submit and cancel jobs
    ADMIN = "admin"              # and whatever is added for managing the service

    def allows(self, needed: "TokenScope") -> bool:
        order = list(TokenScope)
        return order.index(self) >= order.index(needed)


SETTINGS_TOKEN_NAME = "settings"


class TrialState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"      # a final validation loss
    DIVERGED = "DIVERGED"        # a result (the LR is too high), never retried
    FAILED = "FAILED"            # an infrastructure error (lost worker, exception); retried as a new attempt
    CANCELLED = "CANCELLED"


JOB_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
JOB_ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
TRIAL_TERMINAL = frozenset({TrialState.COMPLETED, TrialState.DIVERGED, TrialState.FAILED, TrialState.CANCELLED})
TRIAL_ACTIVE = frozenset({TrialState.PENDING, TrialState.RUNNING})
TRIAL_RESULT = frozenset({TrialState.COMPLETED, TrialState.DIVERGED})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive ISO strings)."""
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        return value.astimezone(dt.timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value


class FaithfulFloat(sa.TypeDecorator):
    """A double that keeps NaN and +-inf. PostgreSQL stores them natively; SQLite turns a bound NaN into NULL,
    so there it is stored as the text 'NaN' (a REAL column keeps text that is not a number as text)."""
    impl = sa.Double
    cache_ok = True

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # Bypasses Double's own processor on SQLite, which would turn the text back into a float NaN.
        def process(value):
            return "NaN" if isinstance(value, float) and math.isnan(value) else value
        return process

    def process_result_value(self, value, dialect):
        return float(value) if value is not None else None


def _enum(cls: type[enum.Enum]) -> sa.Enum:
    # VARCHAR + CHECK on every backend: no PostgreSQL enum type to create and drop in migrations.
    return sa.Enum(cls, native_enum=False, create_constraint=True, length=16, validate_strings=True,
                   name=f"{cls.__name__.lower()}_check", values_callable=lambda c: [m.value for m in c])


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")   # SQLite autoincrements INTEGER PRIMARY KEY only


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s"})


class ApiToken(Base):
    """A bearer token, stored as its SHA-256. Those named in DELTAMU_API_TOKENS are named SETTINGS_TOKEN_NAME (a name
    `deltamu token create` refuses), so the API's start can revoke the ones the settings no longer name."""
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scope: Mapped[TokenScope] = mapped_column(_enum(TokenScope), default=TokenScope.WRITE)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)   # set once, never cleared


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    spec: Mapped[dict] = mapped_column(sa.JSON)                # the request body, normalised (defaults filled)
    sweep_config: Mapped[dict] = mapped_column(sa.JSON)        # gdn SweepConfig.to_dict()
    spec_sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    widths: Mapped[list] = mapped_column(sa.JSON)              # widths swept, the base (proxy) width first
    num_points: Mapped[int] = mapped_column(sa.Integer)        # widths x learning rates x seeds
    steps: Mapped[int] = mapped_column(sa.Integer)             # training steps of one trial, for progress
    optimum: Mapped[dict | None] = mapped_column(sa.JSON)      # the base width's gdn Optimum.to_dict(), non-finite
                                                               # floats encoded
    transfer: Mapped[dict | None] = mapped_column(sa.JSON)     # gdn TransferSummary.to_dict() of a multi-width job
    horizon: Mapped[dict | None] = mapped_column(sa.JSON)      # gdn HorizonFit.to_dict() of a job of several horizons
    extend_rounds: Mapped[int | None] = mapped_column(sa.Integer)   # rounds of lrs added past a grid's edge (NULL: 0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("api_tokens.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    trials: Mapped[list["Trial"]] = relationship(back_populates="job", order_by="Trial.id",
                                                 cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (sa.Index("ix_jobs_state_created", "state", "created_at", "id"),
                      sa.Index("ix_jobs_created", "created_at", "id"))


class Trial(Base):
    """One attempt at one grid point (width, lr, seed, and horizon when the job sweeps several). A retry after an infrastructure failure is a new row with
    attempt + 1 and retry_of pointing at the failed one, whose `retried` turns true."""
    __tablename__ = "trials"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    point: Mapped[int] = mapped_column(sa.Integer)                 # index of (width, lr, seed) in the job's grid
    width: Mapped[int] = mapped_column(sa.Integer)                 # the proxy's width in this trial
    lr: Mapped[float] = mapped_column(sa.Double)
    seed: Mapped[int] = mapped_column(sa.Integer)
    steps: Mapped[int | None] = mapped_column(sa.Integer)          # its horizon; NULL: the job's steps
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    retry_of: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("trials.id", ondelete="SET NULL"))
    retried: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    state: Mapped[TrialState] = mapped_column(_enum(TrialState), default=TrialState.PENDING)
    worker: Mapped[str | None] = mapped_column(sa.String(255))
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    final_val_loss: Mapped[float | None] = mapped_column(FaithfulFloat)
    diverged_step: Mapped[int | None] = mapped_column(sa.Integer)
    reason: Mapped[str | None] = mapped_column(sa.Text)            # why it diverged
    error: Mapped[str | None] = mapped_column(sa.Text)             # why it failed
    tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    seconds: Mapped[float | None] = mapped_column(sa.Double)
    num_params: Mapped[int | None] = mapped_column(sa.BigInteger)
    device: Mapped[str | None] = mapped_column(sa.String(64))
    data_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    backend: Mapped[str | None] = mapped_column(sa.String(16))     # how it ran (gdn.spec.TrialResult)
    trainer: Mapped[str | None] = mapped_column(sa.String(16))
    cuda_graphs: Mapped[bool | None] = mapped_column(sa.Boolean)

    job: Mapped[Job] = relationship(back_populates="trials")

    __table_args__ = (sa.UniqueConstraint("job_id", "point", "attempt", name="uq_trials_job_point_attempt"),
                      sa.Index("ix_trials_state_heartbeat", "state", "heartbeat_at"))


class CurvePoint(Base):
    __tablename__ = "curve_points"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("trials.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(sa.Integer)
    tokens: Mapped[int] = mapped_column(sa.BigInteger)
    loss: Mapped[float] = mapped_column(FaithfulFloat)
    lr: Mapped[float] = mapped_column(sa.Double)
    grad_norm: Mapped[float] = mapped_column(FaithfulFloat)
    seconds: Mapped[float] = mapped_column(sa.Double)

    # A repeated write of the same step can never duplicate a row.
    __table_args__ = (sa.UniqueConstraint("trial_id", "step", name="uq_curve_points_trial_step"),)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    principal: Mapped[str] = mapped_column(sa.String(64), primary_key=True)   # who sent it (token id)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[str | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    status_code: Mapped[int] = mapped_column(sa.Integer)
    response: Mapped[dict] = mapped_column(sa.JSON)
    headers: Mapped[dict] = mapped_column(sa.JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
