"""Shared fixtures: one suite parametrised over SQLite, PostgreSQL and MySQL/MariaDB.

The databases themselves are made by ``harness.servers`` (server URLs from
``BEAT_TEST_POSTGRESQL_URL`` / ``BEAT_TEST_MYSQL_URL``); each test run creates its own and
drops them at the end. A server that cannot be reached skips its tests, except under
``CI=true``, where it fails. ``redis_url`` is the Redis of ``BEAT_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/11``), flushed for each test that uses it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from celery import _state as celery_state
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from beatsqlalchemy import db, migrate
from harness.helpers import assert_no_leaks, clear_tables
from harness.servers import BACKENDS, DATABASES, REDIS_URL, flushed_redis, new_database


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
