"""Alembic environment: our own version table, the URL from -x url=, the
BEAT_SQLALCHEMY_URL environment variable, alembic.ini, or the SQLite default."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, MetaData, Table, create_engine, inspect, pool

from beatsqlalchemy.config import DEFAULT_URL, URL_ENV
from beatsqlalchemy.db import parse_url
from beatsqlalchemy.migrate import VERSION_TABLE
from beatsqlalchemy.models import Base

config = context.config
if config.config_file_name is not None:
    # the alembic command with alembic.ini: its logging (what each migration does). Not when
    # run from beatsqlalchemy's code, which must leave the host application's logging alone.
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    import os

    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get(URL_ENV)
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def _drop_version_table_at_base(ctx: Any, heads: set[str], **_kw: Any) -> None:
    """Offline (``--sql``): a downgrade that reaches base also drops the version table."""
    if not heads:
        ctx.impl.drop_table(Table(VERSION_TABLE, MetaData()))


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url=parse_url(_url()), literal_binds=True, on_version_apply=[_drop_version_table_at_base])
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    """Run the migrations; at base (``downgrade base``) no table of ours is left, not even
    the version table (Alembic itself keeps it, empty)."""
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
        if not context.get_context().get_current_heads() and inspect(connection).has_table(VERSION_TABLE):
            Table(VERSION_TABLE, MetaData()).drop(connection)


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(parse_url(_url()), poolclass=pool.NullPool)  # errors show the URL redacted
    with engine.connect() as connection:
        _migrate(connection)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
