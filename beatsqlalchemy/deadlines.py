"""A bound on how long beat waits for its database: a database that does not answer in
time (a network partition, a frozen host: nothing refused, nothing answered) fails like
one that is down, so beat logs an outage and retries instead of freezing in silence.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

#: connection arguments bounding how long each driver waits for the server, in seconds
#: (the MySQL drivers' read and write timeouts bound an open connection too; libpq has none)
_DRIVER_TIMEOUTS: dict[str, tuple[str, ...]] = {
    "psycopg": ("connect_timeout",),
    "psycopg2": ("connect_timeout",),
    "pymysql": ("connect_timeout", "read_timeout", "write_timeout"),
    "mysqldb": ("connect_timeout", "read_timeout", "write_timeout"),
    "mariadbconnector": ("connect_timeout", "read_timeout", "write_timeout"),
}


def set_connect_timeouts(url: URL, options: dict[str, Any], seconds: float) -> None:
    """The driver's own timeouts, where the user set none (engine options or URL)."""
    names = _DRIVER_TIMEOUTS.get(url.get_driver_name(), ())
    if not names:
        return
    connect_args = options["connect_args"] = dict(options.get("connect_args") or {})
    whole = max(math.ceil(seconds), 2)  # whole seconds; libpq takes 2 s at least
    for name in names:
        if name not in url.query:
            connect_args.setdefault(name, whole)


class DatabaseTimeout(TimeoutError):
    """The database did not answer within the bound (raised wrapped in SQLAlchemy's
    OperationalError, like any other database error)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the database did not answer within {seconds:g}s")


class Deadlines:
    """Each connection of ``engine`` is handed back within ``seconds`` of being taken
    from the pool, or a watchdog thread shuts its socket down: the call waiting on it,
    in any thread, then fails at once with a ``DatabaseTimeout`` and the connection is
    discarded. This bounds waits no driver option does (a PostgreSQL server that stops
    answering an open connection: libpq has no read timeout, and TCP keepalives and
    ``tcp_user_timeout`` see nothing wrong while a proxy or a stalled host keeps the
    connection acknowledged). Beat's transactions last milliseconds."""

    def __init__(self, engine: Engine, seconds: float) -> None:
        self.seconds = seconds
        self._running: dict[int, tuple[float, Any]] = {}  # id -> (deadline, driver connection)
        self._cut: set[int] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        # a detached connection (the change watch's) is its owner's, and may stay idle
        event.listen(engine, "detach", self._on_checkin)
        event.listen(engine, "invalidate", self._on_invalidate)
        event.listen(engine, "handle_error", self._on_error, retval=True)

    def error(self, statement: str | None, parameters: Any) -> OperationalError:
        return OperationalError(statement, parameters, DatabaseTimeout(self.seconds))

    def was_cut(self, dbapi_connection: Any) -> bool:
        with self._wake:
            return id(dbapi_connection) in self._cut

    def release(self, dbapi_connection: Any) -> None:
        """No bound for this checkout (a migration may take long)."""
        with self._wake:
            self._running.pop(id(dbapi_connection), None)

    def _on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        with self._wake:
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._watch, name="beat-database-deadlines",
                                                daemon=True)
                self._thread.start()
            self._cut.discard(id(dbapi_connection))
            self._running[id(dbapi_connection)] = (time.monotonic() + self.seconds, dbapi_connection)

    def _on_checkin(self, dbapi_connection: Any, _record: Any) -> None:
        with self._wake:
            self._running.pop(id(dbapi_connection), None)

    def _on_invalidate(self, dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        with self._wake:
            self._running.pop(id(dbapi_connection), None)
            self._cut.discard(id(dbapi_connection))

    def _on_error(self, context: Any) -> Exception | None:
        """A call failed because its connection was cut: say so, and discard it."""
        connection = context.connection
        fairy = getattr(connection, "connection", None) if connection is not None else None
        dbapi_connection = getattr(fairy, "dbapi_connection", None)
        if dbapi_connection is None or not self.was_cut(dbapi_connection):
            return None
        context.is_disconnect = True
        return self.error(context.statement, context.parameters)

    def _watch(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                late = [key for key, (deadline, _) in self._running.items() if deadline <= now]
                for key in late:
                    _, dbapi_connection = self._running.pop(key)
                    self._cut.add(key)
                    _shut_down(dbapi_connection)
                # not woken by a checkout (that would cost each one a thread switch): with
                # nothing to watch it looks again a quarter of the bound later
                upcoming = [deadline for deadline, _ in self._running.values()]
                self._wake.wait(min(upcoming) - now if upcoming else self.seconds / 4)


registry: weakref.WeakKeyDictionary[Engine, Deadlines] = weakref.WeakKeyDictionary()


def unbounded(connection: Connection) -> None:
    """Lift the engine's answer bound, if any, for this connection until it is handed
    back (migrations may take long)."""
    deadlines = registry.get(connection.engine)
    if deadlines is not None:
        deadlines.release(connection.connection.dbapi_connection)


def _shut_down(dbapi_connection: Any) -> None:
    """Shut the connection's socket down (never close it: the driver owns the number),
    so that whatever waits on it returns with an error."""
    fd: int | None = None
    owners: tuple[Any, ...] = (dbapi_connection, getattr(dbapi_connection, "_sock", None))
    for owner in owners:  # psycopg(2), PyMySQL
        with contextlib.suppress(Exception):
            fd = int(owner.fileno())
            break
    if fd is None or fd < 0:
        return
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
