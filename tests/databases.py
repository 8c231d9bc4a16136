"""The test databases: server URLs, throw-away databases created per run and dropped at
its end, and the helpers that empty a database and check for leaked connections.

Server URLs come from ``BEAT_TEST_POSTGRESQL_URL`` / ``BEAT_TEST_MYSQL_URL`` (defaults:
the local servers).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from services import unavailable
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url

from beatsqlalchemy import db
from beatsqlalchemy.models import Base
from beatsqlalchemy.runids import DEPLOYMENT_TABLE

SERVER_URLS = {
    "postgresql": os.environ.get("BEAT_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    "mysql": os.environ.get("BEAT_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ("sqlite", "postgresql", "mysql")
RUN_ID = uuid.uuid4().hex[:8]



class ServerDatabases:
    """Creates throw-away databases on a server and drops them at the end of the run."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.admin_url = make_url(SERVER_URLS[backend])
        self.created: list[str] = []
        self._admin: Engine | None = None

    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        return self._admin

    def create(self, label: str) -> str:
        name = f"bsa_{label}_{RUN_ID}_{len(self.created)}"
        with self.admin().connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        self.created.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self._admin is None:
            return
        db.dispose_all()
        with self._admin.connect() as connection:
            for name in self.created:
                if self.backend == "postgresql":
                    connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                else:
                    connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        self._admin.dispose()


_servers: dict[str, ServerDatabases] = {}


def new_database(backend: str, label: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a new, empty database on ``backend``."""
    if backend == "sqlite":
        path: Path = tmp_path_factory.mktemp(label) / "beat.sqlite3"
        return f"sqlite:///{path}"
    server = _servers.setdefault(backend, ServerDatabases(backend))
    try:
        return server.create(label)
    except Exception as exc:  # the server is not there
        unavailable(f"{backend} at {db.redact(str(server.admin_url))} is unavailable: {exc}")
        raise


def drop_all() -> None:
    """Drop every database this run created."""
    for server in _servers.values():
        server.drop_all()


def clear_tables(engine: Engine) -> None:
    """Delete every row of our tables, children first (the deployment id stays)."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != DEPLOYMENT_TABLE:
                connection.execute(delete(table))


def assert_no_leaks(engine: Engine) -> None:
    """Every pooled connection has been returned."""
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    assert checked_out == 0, f"{checked_out} connection(s) were not returned to the pool"
