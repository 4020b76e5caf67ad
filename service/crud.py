"""The only code that changes a job's or a trial's state. Keyword-only functions that take a session; the caller
owns the transaction (service.db.transaction) and enqueues Celery tasks only after it has committed.

Concurrency rules, the same on PostgreSQL and SQLite:
- every transaction that moves a trial to a terminal state, or cancels a job, first touches the job row
  (`_lock_job`): a row lock on PostgreSQL, the write lock on SQLite. So "is this the last trial?" is answered by one
  transaction at a time, and the optimum is computed exactly once, by whoever finishes the last trial;
- a trial is claimed by a conditional UPDATE (PENDING -> RUNNING): a duplicate delivery updates nothing; a worker
  that trains a pack claims each further trial of it by the same UPDATE;
- terminal states never change: every transition is conditional on the state it leaves.
"""
from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gdn.summary import TrialOutcome, extension_points, summarize_sweep
from service import floats
from service.models import (JOB_ACTIVE, JOB_TERMINAL, TRIAL_ACTIVE, TRIAL_RESULT, TRIAL_TERMINAL, ApiToken, CurvePoint,
                            IdempotencyKey, Job, JobState, Trial, TrialState, utcnow)
from service.models import SETTINGS_TOKEN_NAME, TokenScope


class JobFinished(Exception):
    """The job is in a terminal state and cannot change."""


# --- jobs ----------------------------------------------------------------------------------------------------

def create_job(session: Session, *, spec: dict, sweep_config: dict, spec_sha256: str, widths: list[int],
               grid: list[tuple], steps: int, created_by: int | None) -> Job:
    """A QUEUED job sweeping `widths` (the base width first) and one PENDING trial per (width, lr, seed) or
    (width, lr, seed, steps) of `grid` (steps None: the job's `steps`), in the caller's transaction."""
    job = Job(id=str(uuid.uuid4()), state=JobState.QUEUED, spec=spec, sweep_config=sweep_config,
              spec_sha256=spec_sha256, widths=list(widths), num_points=len(grid), steps=steps, created_by=created_by)
    job.trials = [Trial(point=i, width=width, lr=lr, seed=seed, steps=rest[0] if rest else None, attempt=1,
                        state=TrialState.PENDING)
                  for i, (width, lr, seed, *rest) in enumerate(grid)]
    session.add(job)
    session.flush()
    return job


def find_reusable_job(session: Session, *, spec_sha256: str) -> Job | None:
    """The newest SUCCEEDED job with this spec hash."""
    return session.scalars(sa.select(Job).where(Job.spec_sha256 == spec_sha256, Job.state == JobState.SUCCEEDED)
                           .order_by(Job.created_at.desc(), Job.id.desc()).limit(1)).first()


def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, *, state: JobState | None, limit: int,
              after: tuple[dt.datetime, str] | None) -> list[Job]:
    """Newest first; `after` is the (created_at, id) of the last job of the previous page."""
    q = sa.select(Job)
    if state is not None:
        q = q.where(Job.state == state)
    if after is not None:
        created, job_id = after
        q = q.where(sa.or_(Job.created_at < created, sa.and_(Job.created_at == created, Job.id < job_id)))
    return list(session.scalars(q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)))


@dataclass
class TrialSummary:
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in TrialState})
    retries: int = 0                  # attempts that failed and were requeued
    running_steps: int = 0            # steps done by the RUNNING trials (for progress)
    trial_seconds: float = 0.0        # training seconds of finished trials
    planned_steps: int = 0            # training steps of every current trial (horizons differ; extensions add)
    finished_steps: int = 0           # of those, the terminal trials' (a diverged one counts whole: it is done)
    tokens_trained: int = 0           # finished attempts' tokens plus the RUNNING trials' last curve point
    best: tuple[int, float, int, float] | None = None   # (width, lr, seed, loss): the base width's lowest final
                                                        # validation loss so far


def trial_summaries(session: Session, *, job_ids: list[str]) -> dict[str, TrialSummary]:
    """Per job: trial counts by state over the current attempt of each grid point, and progress inputs."""
    out = {job_id: TrialSummary() for job_id in job_ids}
    if not job_ids:
        return out
    horizon = sa.func.coalesce(Trial.steps, Job.steps)
    rows = session.execute(sa.select(Trial.job_id, Trial.state, Trial.retried, sa.func.count(),
                                     sa.func.coalesce(sa.func.sum(Trial.seconds), 0.0),
                                     sa.func.coalesce(sa.func.sum(Trial.tokens), 0),
                                     sa.func.coalesce(sa.func.sum(horizon), 0))
                           .join(Job, Job.id == Trial.job_id)
                           .where(Trial.job_id.in_(job_ids))
                           .group_by(Trial.job_id, Trial.state, Trial.retried))
    for job_id, state, retried, n, seconds, tokens, steps in rows:
        summary = out[job_id]
        if retried:
            summary.retries += n
        else:
            summary.counts[TrialState(state).value] += n
            summary.planned_steps += int(steps)
            if TrialState(state) in TRIAL_TERMINAL:
                summary.finished_steps += int(steps)
        summary.trial_seconds += float(seconds or 0.0)
        summary.tokens_trained += int(tokens or 0)          # every attempt's, as trained
    # running trials: how far each has got, from its last curve point (steps and tokens)
    last_point = (sa.select(CurvePoint.trial_id, sa.func.max(CurvePoint.step).label("step"),
                            sa.func.max(CurvePoint.tokens).label("tokens"))
                  .group_by(CurvePoint.trial_id).subquery())
    rows = session.execute(sa.select(Trial.job_id, sa.func.sum(last_point.c.step), sa.func.sum(last_point.c.tokens))
                           .join(last_point, last_point.c.trial_id == Trial.id)
                           .where(Trial.job_id.in_(job_ids), Trial.state == TrialState.RUNNING)
                           .group_by(Trial.job_id))
    for job_id, steps, tokens in rows:
        out[job_id].running_steps = int(steps or 0)
        out[job_id].tokens_trained += int(tokens or 0)
    base_width = dict(session.execute(sa.select(Job.id, Job.widths).where(Job.id.in_(job_ids))).all())
    rows = session.execute(sa.select(Trial.job_id, Trial.width, Trial.lr, Trial.seed, Trial.final_val_loss)
                           .where(Trial.job_id.in_(job_ids), Trial.state == TrialState.COMPLETED,
                                  Trial.retried.is_(False), Trial.steps.is_(None)))   # the proxy's horizon
    for job_id, width, lr, seed, loss in rows:
        best = out[job_id].best
        if width == base_width[job_id][0] and loss is not None and math.isfinite(loss) and \
                (best is None or loss < best[3]):
            out[job_id].best = (width, lr, seed, loss)
    return out


def queue_positions(session: Session, *, jobs: list[Job]) -> dict[str, int]:
    """For each QUEUED job of `jobs`: how many unfinished jobs were submitted before it (Celery serves trials in
    the order they were sent, so these run first)."""
    queued = [j for j in jobs if j.state == JobState.QUEUED]
    if not queued:
        return {}
    latest = max(j.created_at for j in queued)
    ahead = session.execute(sa.select(Job.id, Job.created_at)
                            .where(Job.state.in_(JOB_ACTIVE), Job.created_at <= latest)
                            .order_by(Job.created_at, Job.id)).all()
    order = {job_id: i for i, (job_id, _) in enumerate(ahead)}
    return {j.id: order[j.id] for j in queued if j.id in order}


def base_sweep_size(session: Session, job: Job) -> tuple[int, float]:
    """(the base width's grid points, the same counted in proxy trials: a point at k times the job's steps counts
    k), over the current attempt of each point; for the recommendation's cost."""
    horizon = sa.func.coalesce(Trial.steps, job.steps)
    n, steps = session.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(horizon), 0))
                               .where(Trial.job_id == job.id, Trial.width == job.widths[0],
                                      Trial.retried.is_(False))).one()
    return int(n), float(steps) / job.steps


def list_trials(session: Session, *, job_id: str, limit: int | None = None,
                after: tuple[int, int] | None = None) -> list[Trial]:
    """By (point, attempt); `after` is the (point, attempt) of the last trial of the previous page."""
    q = sa.select(Trial).where(Trial.job_id == job_id)
    if after is not None:
        point, attempt = after
        q = q.where(sa.or_(Trial.point > point, sa.and_(Trial.point == point, Trial.attempt > attempt)))
    return list(session.scalars(q.order_by(Trial.point, Trial.attempt).limit(limit)))


def curve_points(session: Session, *, trial_ids: list[int], after_step: int | None,
                 limit_per_trial: int | None = None) -> dict[int, list[CurvePoint]]:
    """Each trial's points after `after_step`, by step; at most `limit_per_trial` of them per trial."""
    out: dict[int, list[CurvePoint]] = {t: [] for t in trial_ids}
    if not trial_ids:
        return out
    where = [CurvePoint.trial_id.in_(trial_ids)]
    if after_step is not None:
        where.append(CurvePoint.step > after_step)
    q = sa.select(CurvePoint).where(*where)
    if limit_per_trial is not None:
        rank = sa.func.row_number().over(partition_by=CurvePoint.trial_id, order_by=CurvePoint.step)
        ranked = sa.select(CurvePoint.id, rank.label("rank")).where(*where).subquery()
        q = (sa.select(CurvePoint).join(ranked, CurvePoint.id == ranked.c.id)
             .where(ranked.c.rank <= limit_per_trial))
    for point in session.scalars(q.order_by(CurvePoint.trial_id, CurvePoint.step)):
        out[point.trial_id].append(point)
    return out


def mark_enqueued(session: Session, *, trial_ids: list[int]) -> None:
    if trial_ids:
        session.execute(sa.update(Trial).where(Trial.id.in_(trial_ids)).values(enqueued_at=utcnow()))


def unenqueued_trials(session: Session, *, created_before: dt.datetime) -> list[int]:
    """PENDING trials whose task was never sent (the sender died between commit and enqueue)."""
    return list(session.scalars(sa.select(Trial.id).where(Trial.state == TrialState.PENDING,
                                                          Trial.enqueued_at.is_(None),
                                                          Trial.created_at < created_before)))


def overdue_trials(session: Session, *, sent_before: dt.datetime) -> list[int]:
    """PENDING trials sent before `sent_before` and not claimed since, the longest waiting first: queued behind
    other work, or their message was lost (a broker restarted without persistence)."""
    return list(session.scalars(sa.select(Trial.id).where(Trial.state == TrialState.PENDING,
                                                          Trial.enqueued_at < sent_before)
                                .order_by(Trial.enqueued_at, Trial.id)))


@dataclass
class Backlog:
    sent: int                             # PENDING trials whose task was sent, not claimed yet
    oldest_sent_at: dt.datetime | None    # the longest-unclaimed one's last send
    oldest_created_at: dt.datetime | None # the oldest PENDING trial's creation (sent or not)


def backlog(session: Session) -> Backlog:
    """What waits for a worker: the PENDING trials, how many were sent and since when."""
    sent, oldest_sent, oldest_created = session.execute(sa.select(
        sa.func.count(Trial.enqueued_at), sa.func.min(Trial.enqueued_at), sa.func.min(Trial.created_at))
        .where(Trial.state == TrialState.PENDING)).one()
    return Backlog(sent=sent, oldest_sent_at=_aware(oldest_sent), oldest_created_at=_aware(oldest_created))


def cancel_job(session: Session, *, job_id: str) -> Job | None:
    """Cancel: PENDING trials are CANCELLED at once; a job with RUNNING trials is CANCELLING until its workers
    stop them (they see it at their next heartbeat), else CANCELLED. None for an unknown job;
    JobFinished for a terminal one. Cancelling a CANCELLING job changes nothing."""
    if not _lock_job(session, job_id):
        return None
    job = session.get(Job, job_id, populate_existing=True)
    if job.state in JOB_TERMINAL:
        raise JobFinished(f"job {job_id} is already {job.state.value}")
    now = utcnow()
    session.execute(sa.update(Trial).where(Trial.job_id == job_id, Trial.state == TrialState.PENDING)
                    .values(state=TrialState.CANCELLED, finished_at=now))
    job.state = JobState.CANCELLING
    _settle(session, job_id)
    session.flush()
    return job


# --- trials, from the worker -------------------------------------------------------------------------------

@dataclass
class ClaimedTrial:
    trial_id: int
    job_id: str
    width: int
    lr: float
    seed: int
    attempt: int
    sweep_config: dict
    spec: dict
    steps: int | None = None      # its horizon (None: the sweep config's schedule.steps)


def claim_trial(session: Session, *, trial_id: int, worker: str, stale_before: dt.datetime | None = None,
                max_attempts: int = 1) -> ClaimedTrial | None:
    """PENDING -> RUNNING for `worker`, if the trial is still PENDING and its job active; None otherwise
    (a duplicate delivery, a cancelled job, a trial someone else claimed).

    With `stale_before`, a trial RUNNING under a worker whose heartbeat is older (a dead worker: its task came
    back) is taken over as the reaper would: FAILED, and its new attempt (while attempts remain) claimed here;
    the ClaimedTrial is then that attempt's."""
    job_id = session.scalar(sa.select(Trial.job_id).where(Trial.id == trial_id))
    if job_id is None or not _lock_job(session, job_id):
        return None
    now = utcnow()
    if not _claim_locked(session, job_id=job_id, trial_id=trial_id, worker=worker, now=now):
        retry_id = (None if stale_before is None else
                    _reap_locked(session, job_id=job_id, trial_id=trial_id, stale_before=stale_before,
                                 max_attempts=max_attempts))
        if retry_id is None or not _claim_locked(session, job_id=job_id, trial_id=retry_id, worker=worker, now=now):
            return None
        trial_id = retry_id
    session.execute(sa.update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED)
                    .values(state=JobState.RUNNING, started_at=now))
    return _claimed(session, job_id, [trial_id])[0]


def _same_pack(lead: Trial) -> tuple:
    """The trials that may share a pack with `lead`: of its job, at its width and horizon."""
    return Trial.job_id == lead.job_id, Trial.width == lead.width, Trial.steps.is_not_distinct_from(lead.steps)


def _count_at_width(session: Session, trial_id: int, what, *where) -> int:
    """sa.select(what) over the trials of the job of `trial_id` at its width and horizon (and `where`); 0 for no
    such trial."""
    lead = session.get(Trial, trial_id)
    if lead is None:
        return 0
    return session.scalar(sa.select(what).where(*_same_pack(lead), *where)) or 0


def count_pack_mates(session: Session, *, trial_id: int) -> int:
    """PENDING trials that could share a pack with `trial_id`: of its job, at its width and horizon."""
    return _count_at_width(session, trial_id, sa.func.count(), Trial.state == TrialState.PENDING)


def count_width_points(session: Session, *, trial_id: int) -> int:
    """Grid points of the job of `trial_id` at its width and horizon, whatever their state (a retry is the same
    point)."""
    return _count_at_width(session, trial_id, sa.func.count(sa.distinct(Trial.point)))


def claim_pack_mates(session: Session, *, trial_id: int, worker: str, limit: int) -> list[ClaimedTrial]:
    """Up to `limit` PENDING trials of the job of `trial_id` (RUNNING for `worker`) at its width and horizon, in
    grid order, each claimed by the conditional UPDATE claim_trial uses, so the later delivery of their own tasks
    finds them taken and does nothing. Empty when the lead trial is no longer this worker's or the job is not active."""
    lead = session.get(Trial, trial_id)
    if lead is None or limit < 1 or not _lock_job(session, lead.job_id):
        return []
    session.refresh(lead)
    if lead.state != TrialState.RUNNING or lead.worker != worker:
        return []
    candidates = session.scalars(sa.select(Trial.id).where(*_same_pack(lead), Trial.state == TrialState.PENDING)
        .order_by(Trial.point, Trial.attempt).limit(limit)).all()
    now = utcnow()
    claimed = [t for t in candidates if _claim_locked(session, job_id=lead.job_id, trial_id=t, worker=worker, now=now)]
    return _claimed(session, lead.job_id, claimed)


def heartbeat(session: Session, *, trial_ids: list[int], worker: str) -> bool:
    """Touch the heartbeat of the trials (one job's) this worker trains. False when the worker should stop: none
    of them is RUNNING for this worker any more (reaped), or their job is being cancelled."""
    if not trial_ids:
        return False
    touched = session.execute(
        sa.update(Trial).where(Trial.id.in_(trial_ids), Trial.state == TrialState.RUNNING, Trial.worker == worker)
        .values(heartbeat_at=utcnow())).rowcount
    if touched < 1:
        return False
    job_state = session.scalar(sa.select(Job.state).join(Trial, Trial.job_id == Job.id)
                               .where(Trial.id == trial_ids[0]))
    return job_state in JOB_ACTIVE


def append_point(session: Session, *, trial_id: int, worker: str, point: dict) -> bool:
    """Store one curve point of a RUNNING trial of this worker; a repeated step is ignored."""
    owner = session.scalar(sa.select(Trial.worker).where(Trial.id == trial_id, Trial.state == TrialState.RUNNING))
    if owner != worker:
        return False
    values = {k: point[k] for k in ("step", "tokens", "loss", "lr", "grad_norm", "seconds")}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(CurvePoint).values(trial_id=trial_id, **values)
                    .on_conflict_do_nothing(index_elements=["trial_id", "step"]))
    return True


def finish_trial(session: Session, *, trial_id: int, worker: str, result: dict) -> bool:
    """RUNNING -> COMPLETED | DIVERGED with the result of gdn.train (TrialResult.to_dict()). False if the trial was
    no longer this worker's (reaped meanwhile): then nothing changes."""
    status = TrialState(result["status"])
    if status not in TRIAL_RESULT:
        raise ValueError(f"a training result is COMPLETED or DIVERGED, got {status}")
    return _finish(session, trial_id=trial_id, worker=worker, state=status, values=dict(
        final_val_loss=result["final_val_loss"], diverged_step=result.get("diverged_step"),
        reason=result.get("reason"), tokens=result.get("tokens"), seconds=result.get("seconds"),
        num_params=result.get("num_params"), device=result.get("device"), data_sha256=result.get("data_sha256"),
        backend=result.get("backend"), trainer=result.get("trainer"), cuda_graphs=result.get("cuda_graphs")))


def stop_trial(session: Session, *, trial_id: int, worker: str, seconds: float | None = None) -> bool:
    """RUNNING -> CANCELLED after the worker stopped training because the job is being cancelled."""
    return _finish(session, trial_id=trial_id, worker=worker, state=TrialState.CANCELLED,
                   values=dict(seconds=seconds))


def fail_trial(session: Session, *, trial_id: int, worker: str | None, error: str, max_attempts: int) -> int | None:
    """RUNNING -> FAILED (an infrastructure error). While attempts remain, a new PENDING attempt is created and
    its id returned, for the caller to enqueue after commit. `worker=None` fails it whoever holds it (the reaper)."""
    job_id = session.scalar(sa.select(Trial.job_id).where(Trial.id == trial_id))
    if job_id is None or not _lock_job(session, job_id):
        return None
    return _fail_locked(session, job_id=job_id, trial_id=trial_id, worker=worker, error=error,
                        max_attempts=max_attempts)


def reap(session: Session, *, stale_before: dt.datetime, max_attempts: int) -> list[int]:
    """RUNNING trials whose heartbeat is older than `stale_before` belong to a dead worker: FAILED, requeued as a
    new attempt while attempts remain (or CANCELLED if their job is being cancelled). Returns the ids to enqueue."""
    stale = session.execute(sa.select(Trial.id, Trial.job_id)
                            .where(Trial.state == TrialState.RUNNING, Trial.heartbeat_at < stale_before)).all()
    retries = []
    for trial_id, job_id in stale:
        if not _lock_job(session, job_id):
            continue
        new_id = _reap_locked(session, job_id=job_id, trial_id=trial_id, stale_before=stale_before,
                              max_attempts=max_attempts)
        if new_id is not None:
            retries.append(new_id)
    return retries


# --- internals ---------------------------------------------------------------------------------------------

def _lock_job(session: Session, job_id: str) -> bool:
    """Serialise state changes of one job: an UPDATE of its row takes the row lock (PostgreSQL) or the database
    write lock (SQLite) until commit. False for an unknown job."""
    return session.execute(sa.update(Job).where(Job.id == job_id).values(updated_at=utcnow())
                           .execution_options(synchronize_session=False)).rowcount == 1


def _claim_locked(session: Session, *, job_id: str, trial_id: int, worker: str, now: dt.datetime) -> bool:
    """The conditional UPDATE that claims a trial: PENDING -> RUNNING, only while its job is active."""
    active_job = sa.select(Job.id).where(Job.id == job_id, Job.state.in_(JOB_ACTIVE))
    return session.execute(
        sa.update(Trial).where(Trial.id == trial_id, Trial.state == TrialState.PENDING, Trial.job_id.in_(active_job))
        .values(state=TrialState.RUNNING, worker=worker, started_at=now, heartbeat_at=now)).rowcount == 1


def _reap_locked(session: Session, *, job_id: str, trial_id: int, stale_before: dt.datetime,
                 max_attempts: int) -> int | None:
    """Under the job lock: if the trial is RUNNING with a heartbeat older than `stale_before`, FAIL it as lost
    (CANCELLED in a cancelling job) and return its new PENDING attempt's id, if attempts remain."""
    stale = session.execute(sa.select(Trial.worker, Trial.heartbeat_at).where(
        Trial.id == trial_id, Trial.state == TrialState.RUNNING, Trial.heartbeat_at < stale_before)).first()
    if stale is None:
        return None
    error = f"worker {stale.worker} lost: no heartbeat since {_aware(stale.heartbeat_at).isoformat()}"
    return _fail_locked(session, job_id=job_id, trial_id=trial_id, worker=None, error=error,
                        max_attempts=max_attempts)


def _aware(value: dt.datetime | str | None) -> dt.datetime | None:
    """A UTC datetime from a column read outside the ORM's type (an aggregate; SQLite gives text)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _claimed(session: Session, job_id: str, trial_ids: list[int]) -> list[ClaimedTrial]:
    job = session.get(Job, job_id, populate_existing=True)
    trials = [session.get(Trial, t, populate_existing=True) for t in trial_ids]
    return [ClaimedTrial(trial_id=t.id, job_id=job.id, width=t.width, lr=t.lr, seed=t.seed, attempt=t.attempt,
                         sweep_config=job.sweep_config, spec=job.spec, steps=t.steps) for t in trials]


def _finish(session: Session, *, trial_id: int, worker: str, state: TrialState, values: dict) -> bool:
    job_id = session.scalar(sa.select(Trial.job_id).where(Trial.id == trial_id))
    if job_id is None or not _lock_job(session, job_id):
        return False
    done = session.execute(
        sa.update(Trial).where(Trial.id == trial_id, Trial.state == TrialState.RUNNING, Trial.worker == worker)
        .values(state=state, finished_at=utcnow(), **values)).rowcount
    if done != 1:
        return False
    _settle(session, job_id)
    return True


def _fail_locked(session: Session, *, job_id: str, trial_id: int, worker: str | None, error: str,
                 max_attempts: int) -> int | None:
    where = [Trial.id == trial_id, Trial.state == TrialState.RUNNING]
    if worker is not None:
        where.append(Trial.worker == worker)
    job_state = session.scalar(sa.select(Job.state).where(Job.id == job_id))
    cancelling = job_state == JobState.CANCELLING
    state = TrialState.CANCELLED if cancelling else TrialState.FAILED
    if session.execute(sa.update(Trial).where(*where)
                       .values(state=state, finished_at=utcnow(), error=error)).rowcount != 1:
        return None
    new_id = None
    trial = session.get(Trial, trial_id, populate_existing=True)
    if not cancelling and job_state in JOB_ACTIVE and trial.attempt < max_attempts:
        retry = Trial(job_id=job_id, point=trial.point, width=trial.width, lr=trial.lr, seed=trial.seed, steps=trial.steps,
                      attempt=trial.attempt + 1, retry_of=trial.id, state=TrialState.PENDING)
        session.add(retry)
        trial.retried = True
        session.flush()
        new_id = retry.id
    _settle(session, job_id)
    return new_id


NEW_TRIALS = "deltamu.new_trial_ids"     # session.info key: trials created in this transaction, to enqueue after it


def new_trial_ids(session: Session) -> list[int]:
    """The trials a settle created in this session's transaction (a grid extended past its edge): the caller sends
    them once it has committed. A send lost here is made by the reaper (they stay unenqueued until sent)."""
    return list(session.info.get(NEW_TRIALS, []))


def _settle(session: Session, job_id: str) -> None:
    """If no current trial is PENDING or RUNNING, either extend a grid whose best point is on its edge (new PENDING
    trials, while the job's max_extend_rounds allows) or move the job to its terminal state: CANCELLED when
    cancelling, else SUCCEEDED with what gdn.summary makes of its trials (stored once, here), or FAILED when there
    is nothing to fit. Runs under the job lock, so exactly one transaction sees the job settle or extend; a
    duplicate delivery of the last trial finds it terminal and changes nothing."""
    session.flush()                        # pending changes first: the reload below must not discard them
    job = session.get(Job, job_id, populate_existing=True)
    if job.state in JOB_TERMINAL:
        return
    current = list(session.scalars(sa.select(Trial).where(Trial.job_id == job_id, Trial.retried.is_(False))
                                   .order_by(Trial.point).execution_options(populate_existing=True)))
    if any(t.state in TRIAL_ACTIVE for t in current):
        return
    if job.state == JobState.CANCELLING:
        job.finished_at = utcnow()
        job.state = JobState.CANCELLED
        return
    outcomes = [TrialOutcome(width=t.width, lr=t.lr, seed=t.seed, state=t.state.value,
                             final_val_loss=t.final_val_loss, attempt=t.attempt, steps=t.steps) for t in current]
    if (job.extend_rounds or 0) < job.spec.get("max_extend_rounds", 0):
        points = extension_points(outcomes)
        if points:
            first = max(t.point for t in current) + 1
            trials = [Trial(job_id=job_id, point=first + i, width=width, lr=lr, seed=seed, steps=steps, attempt=1,
                            state=TrialState.PENDING) for i, (width, steps, lr, seed) in enumerate(points)]
            session.add_all(trials)
            job.num_points += len(trials)
            job.extend_rounds = (job.extend_rounds or 0) + 1
            session.flush()
            session.info.setdefault(NEW_TRIALS, []).extend(t.id for t in trials)
            return
    job.finished_at = utcnow()
    schedule = job.sweep_config.get("schedule", {})
    summary = summarize_sweep(outcomes, widths=job.widths, proxy_steps=job.steps,
                              tokens_per_step=schedule.get("batch_size", 1) * schedule.get("seq_len", 1))
    if summary.error is not None:
        job.state, job.error = JobState.FAILED, summary.error
        return
    job.optimum = floats.encode(summary.optimum.to_dict())
    if summary.transfer is not None:
        job.transfer = floats.encode(summary.transfer.to_dict())
    if summary.horizon is not None:
        job.horizon = floats.encode(summary.horizon.to_dict())
    job.state = JobState.SUCCEEDED


# --- idempotency keys --------------------------------------------------------------------------------------

def get_idempotency_record(session: Session, *, principal: str, key: str,
                           since: dt.datetime) -> IdempotencyKey | None:
    record = session.get(IdempotencyKey, (principal, key))
    if record is not None and record.created_at < since:
        session.delete(record)     # expired: the key may be used afresh
        session.flush()
        return None
    return record


def save_idempotency_record(session: Session, *, principal: str, key: str, request_sha256: str,
                            job_id: str | None, status_code: int, response: dict, headers: dict) -> None:
    session.add(IdempotencyKey(principal=principal, key=key, request_sha256=request_sha256, job_id=job_id,
                               status_code=status_code, response=response, headers=headers))
    session.flush()


def delete_expired_idempotency(session: Session, *, before: dt.datetime) -> int:
    return session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < before)).rowcount


# --- API tokens ----------------------------------------------------------------------------------------------
# A token is created (from the settings at the API's start, or by `deltamu token create`), then maybe revoked;
# revoked_at is set once and never cleared, so a revoked secret can never authenticate again.

def sync_settings_tokens(session: Session, *, hashes: set[str]) -> int:
    """Make the settings' tokens (their SHA-256s) the live settings tokens: store each one not stored yet (a write
    token named SETTINGS_TOKEN_NAME), and revoke every live settings token the settings no longer name. A hash
    revoked earlier stays revoked. Returns how many were revoked now."""
    known = set(session.scalars(sa.select(ApiToken.token_sha256).where(ApiToken.token_sha256.in_(list(hashes)))))
    for sha in hashes - known:
        session.add(ApiToken(name=SETTINGS_TOKEN_NAME, scope=TokenScope.WRITE, token_sha256=sha))
    dropped = (sa.update(ApiToken)
               .where(ApiToken.name == SETTINGS_TOKEN_NAME, ApiToken.revoked_at.is_(None),
                      ApiToken.token_sha256.not_in(list(hashes)))
               .values(revoked_at=utcnow()))
    revoked = session.execute(dropped).rowcount
    session.flush()
    return revoked


def create_token(session: Session, *, name: str, scope: TokenScope, token_sha256: str) -> ApiToken:
    token = ApiToken(name=name, scope=scope, token_sha256=token_sha256)
    session.add(token)
    session.flush()
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))


def get_token(session: Session, *, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def revoke_token(session: Session, *, token_id: int) -> bool:
    """Revoke a live token; False when there is no live token with that id (none, or revoked already)."""
    return session.execute(sa.update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount == 1


def active_tokens(session: Session) -> list[tuple[int, str, TokenScope]]:
    """(id, sha256, scope) of every token not revoked."""
    return [tuple(row) for row in session.execute(sa.select(ApiToken.id, ApiToken.token_sha256, ApiToken.scope)
                                                  .where(ApiToken.revoked_at.is_(None)))]
