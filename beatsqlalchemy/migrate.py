"""Running the packaged Alembic migrations, and checking the schema before use."""

from __future__ import annotations

import threading
import weakref
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .db import begin_write, redact
from .exceptions import SchemaNotReady

#: our own version table, so we never collide with the host application's Alembic history
VERSION_TABLE = "beatsqlalchemy_version"

#: engines whose schema was found current (weak: a freed engine's id may be reused)
_checked: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped with the package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("beatsqlalchemy.migrations")))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes everything)."""
    _run(engine, "downgrade", revision)


def _run(engine: Engine, verb: str, revision: str) -> None:
    config = alembic_config()
    with begin_write(engine) as connection:
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)
    with _lock:
        _checked.discard(engine)


def ensure_schema(engine: Engine, create: bool | None = None) -> None:
    """Check the schema is current; create or upgrade it when ``create`` is true, or
    when it is None and the database is SQLite. Otherwise raise SchemaNotReady."""
    with _lock:
        if engine in _checked:
            return
    head = head_revision()
    current = current_revision(engine)
    if current != head:
        if create is None:
            create = engine.dialect.name == "sqlite"
        if not create:
            raise SchemaNotReady(redact(engine.url.render_as_string(hide_password=False)), current, head)
        upgrade(engine)
    with _lock:
        _checked.add(engine)
