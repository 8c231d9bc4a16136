"""Engines and sessions: one pooled engine per URL and process.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .deadlines import Deadlines, registry, set_connect_timeouts
from .exceptions import ValidationError

_lock = threading.Lock()
_engines: dict[tuple[int, str, str, float | None, float | None], Engine] = {}


#: query-string values masked too (``?password=``, ``?sslpassword=``, ``&token=``, ...)
_QUERY_SECRET = re.compile(r"([?&;][^=&#?;]*?(?:pass|pwd|secret|token)[^=&#?;]*=)[^&;]*", re.IGNORECASE)


def database_error(exc: BaseException) -> str:
    """One line about a database error, without SQL text, parameters or secrets: what beat's
    log, the worker's log and the command line say."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def redact(url: str, mask: str = "***") -> str:
    """The URL with its password, and secret-looking query values, replaced by ``mask``.
    Read from the text, not parsed: a password holding characters a URL reserves (an
    unencoded ``@``, ``:``, ``/``, ``#``, ``?``, a space) is masked whole, never in part.
    The password ends at the last ``@`` (a host name has none)."""
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return "<unparsable database URL>"
    masked = _QUERY_SECRET.sub(lambda m: m.group(1) + mask, rest)
    at = masked.rfind("@")
    if at < 0:
        return f"{scheme}://***" if "@" in rest else f"{scheme}://{masked}"
    user, colon, _ = masked[:at].partition(":")
    if not colon or "/" in user:  # no password (a user alone, or an ``@`` in a file path)
        return f"{scheme}://{masked}"
    return f"{scheme}://{user}:{mask}@{masked[at + 1:]}"


def parse_url(url: str) -> URL:
    """``url`` parsed, or a ValidationError showing it redacted: SQLAlchemy's own error
    repeats the URL, password included, and an unencoded ``@`` in a password would
    otherwise reach the driver as part of the host name (and its error messages)."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ValidationError("url", redact(url), "not a database URL (dialect+driver://user:password"
                              "@host:port/database, any of @:/#?% or a space in the password "
                              "percent-encoded: urllib.parse.quote(password, safe=''))") from None
    if "@" in (parsed.host or ""):
        raise ValidationError("url", redact(url), "the user name or password holds an unencoded '@': "
                              "percent-encode it (@ as %40; urllib.parse.quote(password, safe=''))")
    return parsed


def get_engine(
    url: str, options: dict[str, Any] | None = None, idle_transaction_timeout: float | None = None,
    answer_timeout: float | None = None,
) -> Engine:
    """The process-wide engine for ``url``, created on first use. With
    ``idle_transaction_timeout`` (beat's own engine), the server ends a transaction left
    idle that long, so a stalled process never holds row locks for longer. With
    ``answer_timeout`` (beat's and the workers' run-once engines), a database that does
    not answer within that many seconds fails like one that is down (see ``Deadlines``)."""
    options = dict(options or {})
    key = (os.getpid(), url, repr(sorted(options.items())), idle_transaction_timeout, answer_timeout)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, options, answer_timeout)
            if idle_transaction_timeout:
                _limit_idle_transactions(engine, idle_transaction_timeout)
        return engine


def _limit_idle_transactions(engine: Engine, seconds: float) -> None:
    statement = {
        "postgresql": f"SET idle_in_transaction_session_timeout = {max(int(seconds * 1000), 1)}",
        "mysql": f"SET SESSION idle_transaction_timeout = {max(int(seconds), 1)}",  # MariaDB
        "mariadb": f"SET SESSION idle_transaction_timeout = {max(int(seconds), 1)}",
    }.get(engine.dialect.name)
    if statement is None:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        except Exception:  # MySQL has no such setting: rely on short transactions there
            pass
        finally:
            cursor.close()
        dbapi_connection.commit()


def sqlite_in_memory(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (no file other processes share)."""
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _create(url: str, options: dict[str, Any], answer_timeout: float | None = None) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        options.setdefault("pool_pre_ping", True)
        connect_args = options.setdefault("connect_args", {})
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, **options)
        _configure_sqlite(engine, memory=sqlite_in_memory(parsed))
        return engine
    options.setdefault("pool_recycle", 3600)
    ping_idle = "pool_pre_ping" not in options
    if answer_timeout:
        set_connect_timeouts(parsed, options, answer_timeout)
    engine = create_engine(url, **options)
    deadlines = Deadlines(engine, answer_timeout) if answer_timeout else None
    if deadlines is not None:
        registry[engine] = deadlines
    if ping_idle:
        _ping_when_idle(engine, IDLE_BEFORE_PING, deadlines)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        event.listen(engine, "handle_error", _check_violation_is_integrity_error, retval=True)
    if engine.dialect.driver == "psycopg":
        event.listen(engine, "connect", _read_any_timestamp)
    elif engine.dialect.driver == "psycopg2":
        event.listen(engine, "connect", _read_any_timestamp_psycopg2)
    return engine


def _read_any_timestamp_psycopg2(dbapi_connection: Any, _record: Any) -> None:
    """``_read_any_timestamp`` for psycopg2 (a year past 9999 or BC; it reads infinity
    as datetime.max and -infinity as datetime.min)."""
    from psycopg2 import extensions  # type: ignore[import-untyped]

    def cast(value: str | None, cursor: Any) -> Any:
        try:
            return extensions.PYDATETIME(value, cursor)
        except ValueError:
            return value

    extensions.register_type(extensions.new_type(extensions.PYDATETIME.values, "TIMESTAMP_ANY", cast),
                             dbapi_connection)


def _read_any_timestamp(dbapi_connection: Any, _record: Any) -> None:
    """Have psycopg give a ``timestamp`` it cannot convert (``infinity``, a year past
    9999 or BC) as its text instead of failing the whole result: the column type reads
    it as unreadable, and only its row is broken."""
    from psycopg import DataError, adapters, postgres
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    oid = postgres.types["timestamp"].oid
    fast: Any = adapters.get_loader(oid, Format.TEXT)

    class AnyTimestampLoader(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._load = fast(oid, context).load

        def load(self, data: Any) -> Any:
            try:
                return self._load(data)
            except DataError:
                return bytes(data).decode("utf-8", "replace")

    dbapi_connection.adapters.register_loader(oid, AnyTimestampLoader)


#: a pooled connection unused for longer than this is checked before it is handed out
IDLE_BEFORE_PING = 0.25


def _ping_when_idle(engine: Engine, seconds: float, deadlines: Deadlines | None = None) -> None:
    """Like ``pool_pre_ping``, but a connection given back less than ``seconds`` ago is
    handed out unchecked: the several transactions of one sync or burst cost no extra
    round trip, while one the server may have dropped meanwhile (``wait_timeout``) is
    checked and, if dead, replaced without a word."""
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.pop("checked_in", None)
        if checked_in is None or time.monotonic() - checked_in < seconds:
            return  # new, or just used
        started = time.monotonic()
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces it (and raises if it cannot)
            if deadlines is not None and (deadlines.was_cut(dbapi_connection)
                                          or time.monotonic() - started >= deadlines.seconds):
                raise deadlines.error(None, None) from exc  # no second wait for a new one
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the connection did not answer a ping")


def _check_violation_is_integrity_error(context: Any) -> Exception | None:
    """A failed CHECK constraint on MySQL (3819) or MariaDB (4025) is an IntegrityError,
    as on the other databases; some drivers (PyMySQL) report it as an OperationalError."""
    original = context.original_exception
    code = original.args[0] if getattr(original, "args", None) else None
    if code in (3819, 4025) and not isinstance(context.sqlalchemy_exception, IntegrityError):
        return IntegrityError(context.statement, context.parameters, original)
    return None


#: execution option: how a transaction starts on SQLite
SQLITE_BEGIN = "sqlite_begin"
#: execution options of a transaction that reads, then writes
WRITE_OPTIONS = {SQLITE_BEGIN: "IMMEDIATE"}


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads, then writes: on SQLite it takes the write lock at once
    (``BEGIN IMMEDIATE``), so it never fails on a stale snapshot; elsewhere a plain one."""
    with engine.connect() as connection:
        connection.execution_options(**WRITE_OPTIONS)
        with connection.begin():
            yield connection


@contextmanager
def outside_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in autocommit mode: a read there takes no lock, not even on SQLite.
    A connection found dead while being switched (some drivers send a statement for it)
    is invalidated and the error raised as SQLAlchemy's, like any other database error."""
    dbapi_error = engine.dialect.loaded_dbapi.Error
    with engine.connect() as connection:
        try:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        except dbapi_error as exc:  # not wrapped by SQLAlchemy on this path
            connection.invalidate(exc)
            raise DBAPIError.instance(None, None, exc, dbapi_error, connection_invalidated=True) from exc
        yield connection


def prepare_write(session: Session) -> None:
    """Make a session's next transaction a read-then-write one (see ``begin_write``).
    A transaction that already holds its connection goes on as it is (its options can no
    longer change, and ending it here could commit half of the caller's work): callers
    that know a read is all it did end it first (``api._end_read``)."""
    if not _holds_connection(session):
        session.connection(execution_options=WRITE_OPTIONS)


def _holds_connection(session: Session) -> bool:
    """Whether the session's transaction has acquired a connection (its execution
    options can no longer change)."""
    transaction = session.get_transaction()
    # ``SessionTransaction.connections`` is public from SQLAlchemy 2.1.7 on
    return transaction is not None and bool(getattr(transaction, "_connections", None))


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    """WAL and enforced foreign keys; transactions begin in Python so that readers stay
    out of writers' way and writers can ask for ``BEGIN IMMEDIATE``."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") != "AUTOCOMMIT":
            immediate = options.get(SQLITE_BEGIN) == "IMMEDIATE"
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (tasks stay readable)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def forget_inherited_engines() -> None:
    """In a forked process: drop the parent's engines without closing their connections
    (the parent still uses them); this process opens its own on first use."""
    with _lock:
        for key in [key for key in _engines if key[0] != os.getpid()]:
            _engines.pop(key).dispose(close=False)


def dispose_all() -> None:
    """Close every pooled connection of this process (tests and shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
