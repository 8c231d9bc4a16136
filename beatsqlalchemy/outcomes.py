"""On the workers: record how each beat run ended, in the run log.

Turned on by one setting of the worker's app, ``beat_sqlalchemy_track_outcomes = True``.
The receivers below are connected to Celery's signals whenever the package is imported,
which every ``celery`` command does (our ``celery beatsqlalchemy`` plug-in is an entry
point Celery loads at start), so ``celery -A proj worker`` needs nothing else; a worker
started without the ``celery`` command can list ``beatsqlalchemy.outcomes`` in its app's
``imports``. They act only on messages carrying beat's header (runs sent by beat or by
``run now``), for every task, and only when the setting is on.

Each run costs one short write when it starts and one when it ends, each bounded by
``beat_sqlalchemy_database_timeout``. A worker that cannot reach the database logs one line
per outage, tries again at most every ``RETRY_EVERY`` seconds meanwhile, and runs its tasks
anyway. The error recorded is the exception's type and the first line of its message,
capped: never the task's arguments.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``), but for its module
path, which a worker's ``imports`` may name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import signals, states
from celery.exceptions import Retry
from sqlalchemy.exc import SQLAlchemyError

from . import runlog
from . import schedules as sched
from .config import BeatConfig
from .constants import (
    BEAT_HEADER,
    EXPIRED,
    FAILED,
    FIRST_START,
    IGNORED,
    REJECTED,
    RETRIED,
    REVOKED,
    SUCCEEDED,
    UNKNOWN,
)
from .db import database_error, forget_inherited_engines, redact
from .worker import from_beat, worker_engine

__all__ = ["RETRY_EVERY", "connect", "enabled"]

logger = logging.getLogger(__name__)

#: seconds between attempts to reach the database while it is out of reach
RETRY_EVERY = 5.0
#: the outcome of each Celery state a task ends in (``task_postrun``)
_OUTCOMES = {
    states.SUCCESS: SUCCEEDED, states.FAILURE: FAILED, states.RETRY: RETRIED,
    states.REJECTED: REJECTED, states.IGNORED: IGNORED,
}


@dataclass(slots=True)
class _Attempt:
    """A tracked run this process is running."""

    started: float  # time.monotonic()


class _Outage:
    """The database as this process last found it: one line when it goes out of reach,
    one when it is back; no attempt for ``RETRY_EVERY`` seconds after a failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self._next_try = 0.0

    def skip(self) -> bool:
        with self._lock:
            return self.since is not None and time.monotonic() < self._next_try

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._next_try = time.monotonic() + RETRY_EVERY
            if self.since is not None:
                return
            self.since = time.monotonic()
        logger.warning("beatsqlalchemy: cannot record run outcomes, the database is out of reach (%s); "
                       "tasks run as usual, outcomes are not recorded until it answers", database_error(exc))

    def answered(self) -> None:
        if self.since is None:
            return
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            logger.warning("beatsqlalchemy: the database answers again after %.0fs; recording run "
                           "outcomes", time.monotonic() - since)


_outage = _Outage()
#: the tracked runs of this process, by task id
_running: dict[str, _Attempt] = {}


def enabled(app: Any) -> bool:
    """Whether ``app``'s workers record outcomes (``beat_sqlalchemy_track_outcomes``)."""
    return BeatConfig.from_app(app).track_outcomes


def _write(app: Any, write: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``write(engine, *args, **kwargs)`` unless the database is known to be out of
    reach; a database error is an outage (logged once), never the task's failure."""
    if _outage.skip():
        return None
    try:
        result = write(worker_engine(app), *args, **kwargs)
    except SQLAlchemyError as exc:
        _outage.failed(exc)
        return None
    _outage.answered()
    return result


def _hostname(request: Any) -> str:
    return str(getattr(request, "hostname", None) or f"worker:{os.getpid()}")[:255]


def _error(state: str, retval: Any) -> str | None:
    if state == states.RETRY and isinstance(retval, Retry):
        reason = retval.exc if isinstance(retval.exc, BaseException) else retval
        return runlog.error_text(reason)
    return runlog.error_text(retval) if isinstance(retval, BaseException) else None


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    task = task or sender
    if task is None or task_id is None or not enabled(task.app):
        return
    request = task.request
    if not from_beat(request):
        return
    retries = int(request.retries or 0)
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    first = not retries and not redelivered
    verdict = _write(task.app, runlog.start, task_id, _hostname(request), sched.utcnow(),
                     first=first, track=True, retries=retries)
    if first and verdict is not None:
        setattr(request, FIRST_START, verdict)  # RunOnceTask needs no second write
    if verdict is not False:  # a second copy of a started run keeps the first one's outcome
        _running[task_id] = _Attempt(time.monotonic())


def _on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, state: str | None = None,
                retval: Any = None, **_: Any) -> None:
    attempt = _running.pop(task_id, None) if task_id is not None else None
    task = task or sender
    if attempt is None or task is None or task_id is None or state is None:
        return  # no state: the process was stopped mid-run, which its main process reports
    outcome = _OUTCOMES.get(state, FAILED)
    _write(task.app, runlog.finish, task_id, outcome, _hostname(task.request), sched.utcnow(),
           runtime=time.monotonic() - attempt.started, error=_error(state, retval))


def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """A run revoked or expired before it started (or terminated): in the worker's main
    process, where the run never reached ``task_prerun``."""
    if sender is None or request is None or not enabled(sender.app) or not from_beat(request):
        return
    task_id = getattr(request, "id", None)
    if task_id:
        _running.pop(task_id, None)
        _write(sender.app, runlog.finish, task_id, EXPIRED if expired else REVOKED, _hostname(request),
               sched.utcnow())


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    """A failure the worker's main process reports (a hard time limit, a pool process lost):
    the run's own process never got to ``task_postrun``. Failures inside a run are left to
    ``task_postrun``; a task id that is no beat run matches no row."""
    if sender is None or not task_id or task_id in _running or not enabled(sender.app):
        return
    if getattr(sender.request, "id", None) == task_id:  # inside the run: task_postrun records it
        return
    error = runlog.error_text(exception) if isinstance(exception, BaseException) else None
    _write(sender.app, runlog.finish, task_id, FAILED, f"worker:{os.getpid()}", sched.utcnow(), error=error)


def _on_unknown(sender: Any = None, message: Any = None, name: str | None = None, id: str | None = None,
                **_: Any) -> None:
    """A run of a task no worker of this app knows (a typo in the task's ``task``)."""
    app = getattr(sender, "app", None)
    headers = getattr(message, "headers", None) or {}
    if app is None or not id or not headers.get(BEAT_HEADER) or not enabled(app):
        return
    _write(app, runlog.finish, id, UNKNOWN, str(getattr(sender, "hostname", None) or "worker")[:255],
           sched.utcnow(), error=runlog.error_text(LookupError(f"no task named {name!r} on this worker")))


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and enabled(app):
        logger.info("beatsqlalchemy: recording the outcomes of beat runs in %s",
                    redact(BeatConfig.from_app(app).url))


def _on_process_init(**_: Any) -> None:
    """A forked pool process: the engines it inherited are its parent's (never shared)."""
    forget_inherited_engines()


def connect() -> None:
    """Connect the receivers (once: Celery keys them by ``dispatch_uid``)."""
    for signal, receiver in (
        (signals.task_prerun, _on_prerun), (signals.task_postrun, _on_postrun),
        (signals.task_revoked, _on_revoked), (signals.task_unknown, _on_unknown),
        (signals.task_failure, _on_failure),
        (signals.worker_ready, _on_worker_ready), (signals.worker_process_init, _on_process_init),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"beatsqlalchemy.outcomes.{receiver.__name__}")


connect()
