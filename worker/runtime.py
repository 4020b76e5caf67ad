"""Per-process resources of a worker: settings, the session factory (rebuilt after a fork, never shared
between processes), and the heartbeat thread of the trials being trained."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.db import make_engine, make_session_factory, transaction
from service.settings import get_settings

log = logging.getLogger("deltamu.worker")
_factory: tuple[int, sessionmaker[Session]] | None = None
# The database did not answer (down, restarting, connections refused or cut): worth trying again.
DATABASE_DOWN = (OperationalError, InterfaceError)
T = TypeVar("T")


def sessions() -> sessionmaker[Session]:
    global _factory
    if _factory is None or _factory[0] != os.getpid():
        _factory = (os.getpid(), make_session_factory(make_engine(get_settings().db_url)))
    return _factory[1]


def through_outage(write: Callable[[], T], within: float, what: str) -> T:
    """write() (one transaction of an idempotent or conditional write), tried again while the database is down,
    for up to `within` seconds (after that the trial is the reaper's anyway); then the error is raised."""
    deadline, delay = time.monotonic() + within, 0.5
    while True:
        try:
            return write()
        except DATABASE_DOWN as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the database did not answer (%s); trying again in %.1f s", what, type(e).__name__, delay)
            time.sleep(delay)
            delay = min(2 * delay, 4.0)


class Heartbeat:
    """Touches the heartbeat of the trials being trained (one, or a pack of one job's) every `interval` seconds
    from a daemon thread, and turns `should_stop` true once the job is being cancelled or none of the trials is
    ours any more (the reaper gave them to someone else). A trial leaves the beat when its result is stored."""

    def __init__(self, trial_ids: list[int], worker: str, interval: float):
        self.worker, self.interval = worker, interval
        self._trial_ids = list(trial_ids)
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_ids[0]}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def add(self, trial_ids: list[int]) -> None:
        with self._lock:
            self._trial_ids.extend(t for t in trial_ids if t not in self._trial_ids)

    def release(self, trial_id: int) -> None:
        with self._lock:
            if trial_id in self._trial_ids:
                self._trial_ids.remove(trial_id)

    def should_stop(self) -> bool:
        return self._stop_requested.is_set()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            with self._lock:
                trial_ids = list(self._trial_ids)
            if not trial_ids:
                continue
            try:
                with transaction(sessions()) as session:
                    keep_going = crud.heartbeat(session, trial_ids=trial_ids, worker=self.worker)
            except Exception as e:  # a missed beat is not fatal; the reaper's grace covers a few
                log.warning("heartbeat of trial(s) %s failed: %s", trial_ids, e)
                continue
            if not keep_going:
                self._stop_requested.set()
