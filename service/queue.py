"""Sending work to the workers. Called only after the transaction that created the work has committed; a send
that fails leaves the trial PENDING with enqueued_at NULL, and the reaper sends it again."""
from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service import crud
from service.db import transaction

RUN_TRIAL = "deltamu.run_trial"
log = logging.getLogger("deltamu.queue")


def enqueue_trials(celery: Celery, sessions: sessionmaker[Session], queue: str, trial_ids: list[int]) -> list[int]:
    """Send one run_trial task per id and record which were sent; returns those sent."""
    sent = []
    for trial_id in trial_ids:
        try:
            celery.send_task(RUN_TRIAL, args=[trial_id], queue=queue)
        except Exception as e:  # broker down: the reaper resends what is left unsent
            log.warning("could not enqueue trial %s (%s: %s); the reaper will retry", trial_id, type(e).__name__, e)
            break
        sent.append(trial_id)
    if sent:
        with transaction(sessions) as session:
            crud.mark_enqueued(session, trial_ids=sent)
    return sent
