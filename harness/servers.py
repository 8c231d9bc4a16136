"""The real services tests and benchmarks run against: server URLs, throw-away databases
on PostgreSQL and MariaDB, Redis and RabbitMQ, and what to do when one is missing (skip a
test, or fail it under ``CI=true``).

Server URLs come from ``BEAT_TEST_POSTGRESQL_URL`` / ``BEAT_TEST_MYSQL_URL`` for the tests
and ``BEAT_BENCH_POSTGRESQL_URL`` / ``BEAT_BENCH_MYSQL_URL`` for the benchmarks (default:
the local servers); Redis from ``BEAT_TEST_REDIS_URL`` (default database 11, flushed by the
tests that use it), ``BEAT_BENCH_REDIS_URL`` (14) and ``BEAT_BENCH_REDBEAT_URL`` (15);
RabbitMQ from ``BEAT_TEST_AMQP_URL``.

At load this module imports only the standard library; SQLAlchemy, redis, kombu and pytest
are imported by the functions that use them: a benchmark runs without pytest, and a child
process of ``benchmarks/bench_alternatives.py`` holds in memory only what the scheduler it
measures imports.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from sqlalchemy import Engine

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql", "mysql")
#: the administrative database of each server, which the throw-away databases are made from
DEFAULT_SERVER_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/mysql",
}
#: purpose -> (environment variable, default URL) of the Redis database it uses
REDIS_URLS = {
    "test": ("BEAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
    "bench": ("BEAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    "redbeat": ("BEAT_BENCH_REDBEAT_URL", "redis://127.0.0.1:6379/15"),
}
AMQP_URL = os.environ.get("BEAT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def server_url(backend: str, purpose: str = "test") -> str:
    """The administrative URL of ``backend``'s server (``BEAT_TEST_<BACKEND>_URL`` or,
    for ``purpose="bench"``, ``BEAT_BENCH_<BACKEND>_URL``)."""
    return os.environ.get(f"BEAT_{purpose.upper()}_{backend.upper()}_URL", DEFAULT_SERVER_URLS[backend])


def redis_url(purpose: str = "test") -> str:
    """The Redis URL of ``purpose`` (see :data:`REDIS_URLS`)."""
    variable, default = REDIS_URLS[purpose]
    return os.environ.get(variable, default)


REDIS_URL = redis_url()


def unavailable(reason: str) -> None:
    """Skip a test whose service is missing, or fail it in CI."""
    import pytest

    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def flushed_redis(url: str) -> str:
    """``url``, its Redis database flushed; unavailable() when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url} is unavailable: {exc}")
    finally:
        client.close()
    return url


def reachable_amqp(url: str) -> str:
    """``url``; unavailable() when RabbitMQ does not answer."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        unavailable(f"RabbitMQ at {url} is unavailable: {exc}")
    return url


# -- databases on the servers -------------------------------------------------------------------

def admin_engine(backend: str, purpose: str = "test") -> Engine:
    """An AUTOCOMMIT engine on the server's administrative database."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(server_url(backend, purpose)), isolation_level="AUTOCOMMIT")


def _on_server(backend: str, purpose: str, statement: str) -> None:
    """Run one statement on the server's administrative database."""
    from sqlalchemy import text

    admin = admin_engine(backend, purpose)
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def create_database(backend: str, name: str, purpose: str = "test", *, replace: bool = False) -> str:
    """Create database ``name`` on ``backend``'s server (dropping one of that name first
    when ``replace``); returns its URL, as the server's administrative user."""
    from sqlalchemy.engine import make_url

    if replace:
        drop_database(backend, name, purpose)
    _on_server(backend, purpose, f"CREATE DATABASE {name}")
    return make_url(server_url(backend, purpose)).set(database=name).render_as_string(hide_password=False)


def drop_database(backend: str, name: str, purpose: str = "test") -> None:
    """Drop database ``name`` if it exists, closing this process's connections to it first
    (and, on PostgreSQL, every other session's)."""
    from beatsqlalchemy import db

    db.dispose_all()
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    _on_server(backend, purpose, f"DROP DATABASE IF EXISTS {name}{force}")


class Databases:
    """Throw-away databases, ``bsa_<label>_<run>_<n>``, dropped together by :meth:`drop_all`;
    on SQLite, files in a directory given by the caller."""

    def __init__(self, purpose: str = "test") -> None:
        self.purpose = purpose
        self.run = uuid.uuid4().hex[:8]
        self.created: list[tuple[str, str]] = []

    def new(self, backend: str, label: str, directory: Path | None = None) -> str:
        """The URL of a new, empty database on ``backend`` (unavailable() when its server
        does not answer); on SQLite a file in ``directory``."""
        if backend == "sqlite":
            assert directory is not None, "a SQLite database needs a directory"
            return f"sqlite:///{directory / 'beat.sqlite3'}"
        name = f"bsa_{label}_{self.run}_{len(self.created)}"
        try:
            url = create_database(backend, name, self.purpose)
        except Exception as exc:  # the server is not there
            from beatsqlalchemy import db

            unavailable(f"{backend} at {db.redact(server_url(backend, self.purpose))} is unavailable: {exc}")
            raise
        self.created.append((backend, name))
        return url

    def drop_all(self) -> None:
        """Drop every database made so far."""
        while self.created:
            drop_database(*self.created.pop(), self.purpose)


#: the throw-away databases of this process (a test run drops them at its end)
DATABASES = Databases()


def new_database(backend: str, label: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a new, empty database on ``backend`` (SQLite: in a new temporary directory),
    dropped with :data:`DATABASES`."""
    directory = tmp_path_factory.mktemp(label) if backend == "sqlite" else None
    return DATABASES.new(backend, label, directory)
