"""Per-process resources of a worker: settings, the session factory (rebuilt after a fork, never shared
between processes), and the heartbeat thread of the trial being trained."""
from __future__ import annotations

import logging
import os
import threading

from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.db import make_engine, make_session_factory, transaction
from service.settings import get_settings

log = logging.getLogger("deltamu.worker")
_factory: tuple[int, sessionmaker[Session]] | None = None


def sessions() -> sessionmaker[Session]:
    global _factory
    if _factory is None or _factory[0] != os.getpid():
        _factory = (os.getpid(), make_session_factory(make_engine(get_settings().db_url)))
    return _factory[1]


class Heartbeat:
    """Touches the trial's heartbeat every `interval` seconds from a daemon thread, and turns `should_stop` true
    once the job is being cancelled or the trial is no longer ours (the reaper gave it to someone else)."""

    def __init__(self, trial_id: int, worker: str, interval: float):
        self.trial_id, self.worker, self.interval = trial_id, worker, interval
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def should_stop(self) -> bool:
        return self._stop_requested.is_set()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                with transaction(sessions()) as session:
                    keep_going = crud.heartbeat(session, trial_id=self.trial_id, worker=self.worker)
            except Exception as e:  # a missed beat is not fatal; the reaper's grace covers a few
                log.warning("heartbeat of trial %s failed: %s", self.trial_id, e)
                continue
            if not keep_going:
                self._stop_requested.set()
