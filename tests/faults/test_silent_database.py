"""A database that stops answering (a partition: nothing refused, nothing answered) fails
within ``beat_sqlalchemy_database_timeout`` on beat's engine, like one that is down.

The engine-level tests put PostgreSQL and MariaDB behind the proxy of ``harness/proxy.py`` in its
partition mode; the test with a real beat is in ``test_outages.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from beatsqlalchemy import db, migrate
from beatsqlalchemy.config import BeatConfig
from beatsqlalchemy.deadlines import DatabaseTimeout
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.watch import watch_for
from harness.proxy import Proxy

BACKENDS = ("postgresql", "mysql")
BOUND = 1.0


def _timed(engine: Any) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_open_connection_and_a_new_one_fail_within_the_bound_and_work_again_after(
    backend: str, make_database: Callable[..., str], make_proxy: Callable[[str], Proxy],
) -> None:
    url = make_database(backend)
    proxy = make_proxy(url)
    engine = db.get_engine(proxy.url(url), answer_timeout=BOUND)
    assert _timed(engine)[1] is None
    proxy.partition()
    try:
        # the pooled connection (just used: no ping) waits for an answer that never comes
        took, error = _timed(engine)
        assert error is not None and took < BOUND + 1, (took, error)
        assert isinstance(error.orig, DatabaseTimeout), repr(error)
        assert "did not answer within 1s" in str(error.orig)
        # a pooled connection idle long enough to be pinged first, then a new one
        time.sleep(db.IDLE_BEFORE_PING + 0.1)
        for _ in range(2):
            took, error = _timed(engine)
            assert error is not None and took < 2 + 1, (took, error)  # drivers: 2 s at least
    finally:
        resumed = time.monotonic()
        proxy.resume()
    took, error = _timed(engine)
    assert error is None and time.monotonic() - resumed < 2, (took, error)


def test_the_change_watch_connection_is_not_cut_while_it_waits(make_database: Callable[..., str]) -> None:
    """The watch's LISTEN connection (detached from the pool) stays open for as long as
    nothing changes: it is not a call waiting for an answer."""
    engine = db.get_engine(make_database("postgresql"), answer_timeout=BOUND)
    watch = watch_for(engine)
    assert watch is not None and watch.arm()
    try:
        time.sleep(BOUND * 2.5)
        assert watch.changed() is False and watch.armed
    finally:
        watch.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_migration_is_not_bounded(backend: str, make_database: Callable[..., str]) -> None:
    """Migrations may take long on big tables: the bound is lifted for them."""
    url = make_database(backend, migrated=False)
    engine = db.get_engine(url, answer_timeout=0.05)
    migrate.upgrade(engine)  # several seconds of DDL on MariaDB
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION


@pytest.mark.parametrize(("backend", "driver_args"), [
    ("postgresql", {"connect_timeout": 5}),
    ("mysql", {"connect_timeout": 5, "read_timeout": 5, "write_timeout": 5}),
])
def test_the_driver_timeouts_are_set_unless_the_user_set_them(
    backend: str, driver_args: dict[str, int], make_database: Callable[..., str],
) -> None:
    url = make_database(backend)
    seen: list[dict[str, Any]] = []

    def capture(engine: Any) -> None:
        engine.dispose()  # connect anew
        event.listen(engine, "do_connect", lambda _d, _r, _a, kwargs: seen.append(dict(kwargs)))
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    capture(db.get_engine(url, answer_timeout=5))
    assert {k: seen[-1].get(k) for k in driver_args} == driver_args
    mine = {name: 11 for name in driver_args}
    capture(db.get_engine(url, {"connect_args": mine}, answer_timeout=5))
    assert {k: seen[-1].get(k) for k in driver_args} == mine
    query = "&".join(f"{name}=12" for name in driver_args)
    capture(db.get_engine(f"{url}?{query}", answer_timeout=5))  # set in the URL: not overridden
    assert {k: int(seen[-1].get(k)) for k in driver_args} == {name: 12 for name in driver_args}
    capture(db.get_engine(url))  # users' engines: untouched
    assert not set(driver_args) & set(seen[-1])


@pytest.mark.parametrize("value", [-1, "x", float("nan")])
def test_the_timeout_setting_is_validated(value: Any) -> None:
    from celery import Celery

    app = Celery(set_as_current=False)
    app.conf.beat_sqlalchemy_database_timeout = value
    with pytest.raises(ValidationError, match="beat_sqlalchemy_database_timeout"):
        BeatConfig.from_app(app)


def test_the_timeout_defaults_to_5s_and_0_turns_it_off() -> None:
    from celery import Celery

    assert BeatConfig.from_app(Celery(set_as_current=False)).database_timeout == 5.0
    app = Celery(set_as_current=False)
    app.conf.beat_sqlalchemy_database_timeout = 0
    assert BeatConfig.from_app(app).database_timeout == 0
