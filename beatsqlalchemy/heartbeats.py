"""Beat's heartbeat: who this beat is, how many runs it sent and its database outages,
upserted into ``beatsqlalchemy_beat`` every ``beat_sqlalchemy_heartbeat_interval`` seconds
from the database thread, so that ``beatsqlalchemy status`` and ``health`` can tell a
live beat from a dead one. A heartbeat never holds up a tick and never fails beat.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .constants import BEAT_RETENTION, OUTAGE_REASON_LENGTH
from .db import database_error
from .schedules import utcnow

logger = logging.getLogger(__name__)

#: how often (seconds) a beat deletes the rows of beats gone for ``BEAT_RETENTION``
PRUNE_EVERY = 3600.0


def package_version() -> str:
    """The installed version of beatsqlalchemy (``unknown`` when it is not installed)."""
    try:
        return metadata.version("beatsqlalchemy")
    except metadata.PackageNotFoundError:
        return "unknown"


class Heartbeat:
    """This beat's row of ``beatsqlalchemy_beat``, kept in memory and written when due.

    An outage is kept here while it lasts (the database cannot take the row then) and
    written by the first heartbeat after it: ``outage_since`` with ``outage_ended``."""

    def __init__(self, identity: str, interval: float) -> None:
        self.identity = identity
        self.interval = interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.version = package_version()[:32]
        self.started_at = utcnow()
        self.runs_sent = 0
        self.outage_since: datetime | None = None
        self.outage_ended: datetime | None = None
        self.outage_reason: str | None = None
        self._next = 0.0
        self._next_prune = 0.0
        self._pending: Future[int] | None = None
        self._started = False
        self._failure: str | None = None
        #: the reason of the last failed heartbeat outside an outage, not said yet
        self._suspect: str | None = None

    def sent(self, count: int) -> None:
        self.runs_sent += count

    def outage_began(self, exc: BaseException) -> None:
        self.outage_since = utcnow()
        self.outage_ended = None
        self.outage_reason = database_error(exc)[:OUTAGE_REASON_LENGTH]

    def outage_over(self) -> None:
        if self.outage_since is not None and self.outage_ended is None:
            self.outage_ended = utcnow()

    def values(self) -> dict[str, Any]:
        """The row's columns as of now."""
        return {
            "identity": self.identity, "host": self.host, "pid": self.pid, "version": self.version,
            "started_at": self.started_at, "last_seen": utcnow(), "runs_sent": self.runs_sent,
            "outage_since": self.outage_since, "outage_ended": self.outage_ended,
            "outage_reason": self.outage_reason,
        }

    def beat(self, submit: Callable[..., Future[int]], write: Callable[..., int],
             inline: Callable[..., Future[int]]) -> None:
        """When one is due, the last one is done and beat is not in a database outage (the
        first heartbeat after it records it): hand ``write(values, prune_before)``
        to ``submit`` (the database thread) without waiting for it. The first one, at
        start, runs through ``inline``: beat is reading the database then anyway."""
        if not self.interval or (self.outage_since is not None and self.outage_ended is None):
            return  # in an outage beat's back-off alone decides when to try the database
        at = time.monotonic()
        if at < self._next or (self._pending is not None and not self._pending.done()):
            return
        self._check(self._pending)
        self._next = at + self.interval
        prune_before = None
        if at >= self._next_prune:
            prune_before = utcnow() - timedelta(seconds=BEAT_RETENTION)
            self._next_prune = at + PRUNE_EVERY
        run, self._started = (submit if self._started else inline), True
        self._pending = run(write, self.values(), prune_before)

    def close(self) -> None:
        """Check the last heartbeat, if any (the database thread has closed)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._check(pending)

    def _check(self, done: Future[int] | None) -> None:
        """Log a failed heartbeat once per reason (a missing grant on the table, say), once
        it has failed twice in a row for it; outages of the whole database are beat's own
        to log."""
        if done is None:
            return
        try:
            pruned = done.result()
        except Exception as exc:  # never fails beat
            reason = (database_error(exc) if isinstance(exc, SQLAlchemyError)
                      else f"{type(exc).__name__}: {exc}")
            in_outage = self.outage_since is not None and self.outage_ended is None
            # said at its second time in a row outside an outage: the first failure of a
            # database that stopped answering may come before beat's own read finds the
            # outage, which beat logs once itself
            suspected, self._suspect = self._suspect, (None if in_outage else reason)
            if reason != self._failure and not in_outage and reason == suspected:
                logger.warning("beat: could not record its heartbeat in beatsqlalchemy_beat (%s); "
                               "status and health do not see this beat until it can", reason)
                self._failure = reason
            self._next_prune = 0.0
            return
        self._suspect = None
        if self._failure is not None:
            logger.info("beat: heartbeat recorded again")
            self._failure = None
        if pruned:
            logger.info("beat: deleted %d beat(s) not seen for %ds", pruned, BEAT_RETENTION)
