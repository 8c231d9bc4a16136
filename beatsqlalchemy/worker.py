"""On the workers: start each beat run at most once, however often it was published.

Beat publishes a run again, with the same task id, when the beat that claimed it never
recorded it as sent (it was killed or frozen between the broker's accept and that record;
no sender can tell this from a run never published), or a beat frozen inside its publish
call resumes after another beat took the run over. On Redis the broker refuses such a copy
(``beatsqlalchemy.broker``); for other brokers, and past the dedup period, a task whose
base is :class:`RunOnceTask` records its start in the run log, so a second copy is
dropped, and beat does not publish again a run a worker has already started.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import runlog
from . import schedules as sched
from .config import BeatConfig
from .constants import BEAT_HEADER, FIRST_START
from .db import database_error, get_engine

__all__ = [
    "RunOnceTask",
    "first_start",
    "from_beat",
    "is_first_delivery",
    "worker_engine",
]


logger = logging.getLogger(__name__)


def first_start(engine: Engine, task_id: str, worker: str) -> bool:
    """Whether this is the first start of the beat run ``task_id`` (recorded as such). If
    the database cannot say, the run goes ahead: a duplicate beats a lost run."""
    try:
        return runlog.start(engine, task_id, worker, sched.utcnow())
    except SQLAlchemyError as exc:
        logger.warning("beatsqlalchemy: could not check whether run %s started already (%s); "
                       "running it", task_id, database_error(exc))
        return True


def from_beat(request: Any) -> bool:
    """Whether the message of ``request`` carries beat's header (a run beat or run-now sent)."""
    headers = getattr(request, "headers", None) or {}
    return bool(getattr(request, BEAT_HEADER, None) or headers.get(BEAT_HEADER))


def is_first_delivery(request: Any) -> bool:
    """A beat run delivered for the first time: not a retry, not a broker redelivery
    (which the worker that took it first did not finish), not a call from elsewhere."""
    redelivered = (getattr(request, "delivery_info", None) or {}).get("redelivered")
    return from_beat(request) and not request.retries and not redelivered


def worker_engine(app: Any) -> Engine:
    """The engine a worker records beat runs with: every wait bounded by
    ``beat_sqlalchemy_database_timeout``, so a database out of reach never holds a task up
    for longer."""
    config = BeatConfig.from_app(app)
    return get_engine(config.url, config.engine_options, answer_timeout=config.database_timeout or None)


class RunOnceTask(Task):
    """A task base (``@app.task(base=RunOnceTask)``, or ``Celery(task_cls=...)`` for all)
    under which a beat run starts at most once; calls not from beat are untouched."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        request = self.request
        if not is_first_delivery(request):
            return
        first = getattr(request, FIRST_START, None)  # recorded already by the outcome tracker
        if first is None:
            first = first_start(worker_engine(self.app), task_id, request.hostname or "worker")
        if not first:
            logger.warning("beatsqlalchemy: dropping a second copy of beat run %s (%s): "
                           "a worker started it already", task_id, self.name)
            raise Ignore()
