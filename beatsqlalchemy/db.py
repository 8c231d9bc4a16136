"""Engines and sessions: one pooled engine per URL and process."""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[int, str, str], Engine] = {}


def redact(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing that may be secret
        return "<unparsable database URL>"


def get_engine(url: str, options: dict[str, Any] | None = None) -> Engine:
    """The process-wide engine for ``url``, created on first use."""
    options = dict(options or {})
    key = (os.getpid(), url, repr(sorted(options.items())))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(url, options)
        return engine


def _create(url: str, options: dict[str, Any]) -> Engine:
    options.setdefault("pool_pre_ping", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = options.setdefault("connect_args", {})
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, **options)
        _configure_sqlite(engine, memory=parsed.database in (None, "", ":memory:"))
        return engine
    options.setdefault("pool_recycle", 3600)
    engine = create_engine(url, **options)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        event.listen(engine, "handle_error", _check_violation_is_integrity_error, retval=True)
    return engine


def _check_violation_is_integrity_error(context: Any) -> Exception | None:
    """A failed CHECK constraint on MySQL (3819) or MariaDB (4025) is an IntegrityError,
    as on the other databases; some drivers (PyMySQL) report it as an OperationalError."""
    from sqlalchemy.exc import IntegrityError

    original = context.original_exception
    code = original.args[0] if getattr(original, "args", None) else None
    if code in (3819, 4025) and not isinstance(context.sqlalchemy_exception, IntegrityError):
        return IntegrityError(context.statement, context.parameters, original)
    return None


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    """WAL, enforced foreign keys and ``BEGIN IMMEDIATE`` so that a transaction that
    reads and then writes never fails on a stale snapshot."""

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
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (tasks stay readable)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def dispose_all() -> None:
    """Close every pooled connection of this process (tests and shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
