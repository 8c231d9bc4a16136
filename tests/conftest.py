"""Shared fixtures: one suite parametrised over SQLite, PostgreSQL and MySQL/MariaDB.

The databases themselves are made by ``harness.servers`` (server URLs from
``BEAT_TEST_POSTGRESQL_URL`` / ``BEAT_TEST_MYSQL_URL``); each test run creates its own and
drops them at the end. A server that cannot be reached skips its tests, except under
``CI=true``, where it fails. ``redis_url`` is the Redis of ``BEAT_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/11``), flushed for each test that uses it. On a failure, the logs
of every Celery process a test started (``processes``, ``keep_processes``) are added to the
report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from celery import Celery
from celery import _state as celery_state
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from beatsqlalchemy import db, migrate
from harness.helpers import assert_no_leaks, clear_tables
from harness.processes import Processes
from harness.servers import BACKENDS, DATABASES, REDIS_URL, flushed_redis, new_database

#: lines of each process log shown in the report of a failed test
LOG_TAIL = 300
PROCESSES_KEY = pytest.StashKey[Processes]()
P = TypeVar("P", bound=Processes)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    DATABASES.drop_all()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A brand-new database with no tables (for migration tests)."""
    return new_database(backend, "empty", tmp_path_factory)


_migrated: dict[str, str] = {}


@pytest.fixture
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database (shared per backend, emptied before each test)."""
    url = _migrated.get(backend)
    if url is None:
        url = new_database(backend, "suite", tmp_path_factory)
        migrate.upgrade(db.get_engine(url))
        _migrated[backend] = url
    engine = db.get_engine(url)
    clear_tables(engine)
    yield url
    assert_no_leaks(engine)


@pytest.fixture
def engine(db_url: str) -> Engine:
    return db.get_engine(db_url)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with db.session_factory(engine)() as session:
        yield session


@pytest.fixture
def app(db_url: str) -> Iterator[Celery]:
    """A Celery app on the test database, with an in-memory broker; the app that was
    current before is current again afterwards (its timezone must not leak)."""
    previous = celery_state.get_current_app()
    celery_app = Celery("tests", broker="memory://", backend="cache+memory://", set_as_current=True)
    celery_app.conf.beat_sqlalchemy_url = db_url
    celery_app.conf.beat_sqlalchemy_sync_interval = 0.2
    yield celery_app
    celery_app.close()
    celery_state._set_current_app(previous)


@pytest.fixture
def redis_url() -> str:
    """The Redis broker URL, its database flushed."""
    return flushed_redis(REDIS_URL)


@pytest.fixture
def keep_processes(request: pytest.FixtureRequest) -> Callable[[P], P]:
    """Makes a group of processes the test's own: stopped at teardown, their logs added to
    the report when the test fails."""

    def keep(group: P) -> P:
        request.node.stash[PROCESSES_KEY] = group
        request.addfinalizer(group.stop_all)
        return group

    return keep


@pytest.fixture
def processes(keep_processes: Callable[[Processes], Processes], tmp_path: Path) -> Processes:
    """Celery processes of any app, stopped at teardown, their logs reported on failure."""
    return keep_processes(Processes(tmp_path))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    group = item.stash.get(PROCESSES_KEY, None)
    if report.failed and group is not None:
        for title, text in group.logs():
            lines = text.splitlines()
            shown = "\n".join(lines[-LOG_TAIL:])
            cut = f"[... {len(lines) - LOG_TAIL} earlier lines]\n" if len(lines) > LOG_TAIL else ""
            report.sections.append((f"log of {title}", cut + shown))
