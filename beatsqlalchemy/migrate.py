"""Running the packaged Alembic migrations, and checking the schema before use.

Checking needs no Alembic: beat reads the version table itself and compares it with
``HEAD_REVISION``, so a process that finds its schema current never imports Alembic
(about 11 MB and the parsing of every migration script).

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import threading
import weakref
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import Engine, column, inspect, select, table

from .db import begin_write, redact
from .deadlines import unbounded
from .exceptions import SchemaNotReady
from .runids import deployment_id, forget

if TYPE_CHECKING:
    from alembic.config import Config

#: our own version table, so we never collide with the host application's Alembic history
VERSION_TABLE = "beatsqlalchemy_version"
_VERSIONS = table(VERSION_TABLE, column("version_num"))
#: the newest migration in ``migrations/versions`` (a test holds it to the scripts' head)
HEAD_REVISION = "0008"

#: engines whose schema was found current (weak: a freed engine's id may be reused)
_checked: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped with the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("beatsqlalchemy.migrations")))
    return config


def head_revision() -> str:
    """The newest revision of the packaged migration scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        try:
            return connection.execute(select(_VERSIONS.c.version_num)).scalar()
        except Exception:  # no version table (yet), or another error: tell them apart
            connection.rollback()
            if inspect(connection).has_table(VERSION_TABLE):
                raise
            return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes everything)."""
    _run(engine, "downgrade", revision)


def _run(engine: Engine, verb: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    with begin_write(engine) as connection:
        unbounded(connection)
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)
    with _lock:
        _checked.discard(engine)
    forget(engine)


def ensure_schema(engine: Engine, create: bool | None = None) -> None:
    """Check the schema is current; create or upgrade it when ``create`` is true, or
    when it is None and the database is SQLite. Otherwise raise SchemaNotReady. The
    deployment id (part of every run id) is read here, once per engine."""
    with _lock:
        if engine in _checked:
            return
    head = HEAD_REVISION
    current = current_revision(engine)
    if current != head:
        if create is None:
            create = engine.dialect.name == "sqlite"
        if not create:
            url = engine.url.render_as_string(hide_password=False)
            raise SchemaNotReady(redact(url), current, head, redact(url, mask="<password>"))
        upgrade(engine)
    with engine.connect() as connection:
        deployment_id(connection)
    with _lock:
        _checked.add(engine)
