"""Change watches: whether the database may have changed since beat last read it,
told without a query.

PostgreSQL: the migrations install a trigger that sends ``NOTIFY beatsqlalchemy_changed``
with every statement that writes ``celery_periodic_task`` (plain SQL included); beat
listens on a connection of its own and checks for notifications without a round trip.
A SQLite file: ``PRAGMA data_version`` on a connection of beat's own changes whenever
another connection commits. Elsewhere (MySQL/MariaDB, an in-memory SQLite database, other
PostgreSQL drivers) there is no watch and beat reads at every sync interval.

A watch errs on one side only: "changed" may be said of nothing, never the reverse.
Whatever goes wrong with its connection is "changed", and the watch is re-armed at the
next read.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy import Engine

from .db import sqlite_in_memory

logger = logging.getLogger(__name__)

#: the channel the ``celery_periodic_task`` trigger notifies (migration 0003)
CHANNEL = "beatsqlalchemy_changed"
_LISTEN = "LISTEN beatsqlalchemy_changed"


class ChangeWatch:
    """A connection of the scheduler's own that tells whether anything was committed
    since :meth:`arm`. Not thread-safe: the scheduler's main thread uses it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None  # the driver's connection, detached from the pool
        self._armed = False

    @property
    def armed(self) -> bool:
        """Whether :meth:`changed` can be trusted (it was armed, and has seen nothing wrong)."""
        return self._armed

    def arm(self) -> bool:
        """Start watching from now, before a read: whatever is committed after this
        counts as a change. False when the watch could not be set up."""
        try:
            if self._connection is None:
                raw = self.engine.raw_connection()
                driver_connection = raw.driver_connection
                raw.detach()  # this connection is the watch's, never handed back to the pool
                self._connection = driver_connection
                self._open(driver_connection)
            self._reset(self._connection)
        except Exception as exc:  # down, or refused: read at every sync until re-armed
            logger.debug("beat: change watch unavailable (%s); reading at every sync", exc)
            self._drop()
            return False
        self._armed = True
        return True

    def changed(self) -> bool:
        """Whether anything may have been committed since :meth:`arm` (True when unarmed)."""
        if not self._armed:
            return True
        try:
            if not self._changed(self._connection):
                return False
        except Exception as exc:  # a broken connection: a change may have been missed
            logger.debug("beat: change watch lost its connection (%s)", exc)
            self._drop()
        self._armed = False
        return True

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        self._armed = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already gone
                connection.close()

    # -- per database --------------------------------------------------------------

    def _open(self, driver_connection: Any) -> None:
        """Prepare a new connection for watching."""

    def _reset(self, driver_connection: Any) -> None:
        """Forget what was seen so far."""
        raise NotImplementedError

    def _changed(self, driver_connection: Any) -> bool:
        raise NotImplementedError


class SQLiteWatch(ChangeWatch):
    """``PRAGMA data_version``: another connection's commit changes it."""

    _version: int = 0

    def _reset(self, driver_connection: Any) -> None:
        self._version = self._read(driver_connection)

    def _changed(self, driver_connection: Any) -> bool:
        return self._read(driver_connection) != self._version

    @staticmethod
    def _read(driver_connection: Any) -> int:
        return int(driver_connection.execute("PRAGMA data_version").fetchone()[0])


class _ListenWatch(ChangeWatch):
    """``LISTEN`` on an autocommit connection; a driver reads the notifications."""

    def _open(self, driver_connection: Any) -> None:
        driver_connection.autocommit = True
        with driver_connection.cursor() as cursor:
            cursor.execute(_LISTEN)

    def _reset(self, driver_connection: Any) -> None:
        self._changed(driver_connection)  # drop the notifications received so far


class PsycopgWatch(_ListenWatch):
    """psycopg 3: notifications are read off the socket without a query."""

    def _changed(self, driver_connection: Any) -> bool:
        pgconn = driver_connection.pgconn
        pgconn.consume_input()  # raises on a closed connection
        if pgconn.status != 0:  # CONNECTION_OK
            raise ConnectionError("the watch connection is no longer open")
        got = False
        while pgconn.notifies() is not None:
            got = True
        return got


class Psycopg2Watch(_ListenWatch):
    """psycopg2: ``poll()`` reads the socket, notifications pile up."""

    def _changed(self, driver_connection: Any) -> bool:
        driver_connection.poll()  # raises on a closed connection
        got = bool(driver_connection.notifies)
        driver_connection.notifies.clear()
        return got


def watch_for(engine: Engine) -> ChangeWatch | None:
    """The change watch this engine's database allows, or None."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return None if sqlite_in_memory(url) else SQLiteWatch(engine)
    if url.get_backend_name() == "postgresql":
        driver = engine.dialect.driver
        if driver == "psycopg":
            return PsycopgWatch(engine)
        if driver == "psycopg2":
            return Psycopg2Watch(engine)
    return None
