"""Alembic environment: our own version table, the URL from -x url=, the
BEAT_SQLALCHEMY_URL environment variable, alembic.ini, or the SQLite default."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from beatsqlalchemy.config import DEFAULT_URL, URL_ENV
from beatsqlalchemy.db import parse_url
from beatsqlalchemy.migrate import VERSION_TABLE
from beatsqlalchemy.models import Base

config = context.config


def _url() -> str:
    import os

    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get(URL_ENV)
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url=parse_url(_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(parse_url(_url()), poolclass=pool.NullPool)  # errors show the URL redacted
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
