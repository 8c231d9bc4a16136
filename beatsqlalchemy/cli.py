"""The ``beatsqlalchemy`` command: schema migrations for installs without alembic.ini."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import migrate
from .config import BeatConfig, resolve_url
from .db import get_engine, redact


class Context:
    """What the group options resolve to: the database URL and engine options."""

    def __init__(self, url: str | None, app: str | None) -> None:
        self._url = url
        self._app = app

    def engine(self) -> Engine:
        if self._url:
            return get_engine(self._url)
        if self._app:
            from celery.utils.imports import symbol_by_name

            celery_app: Any = symbol_by_name(self._app)
            if not hasattr(celery_app, "conf"):  # a module: use its `app`/`celery`
                celery_app = getattr(celery_app, "app", None) or celery_app.celery
            config = BeatConfig.from_app(celery_app)
            return get_engine(config.url, config.engine_options)
        return get_engine(resolve_url())


@click.group()
@click.option("--url", envvar="BEAT_SQLALCHEMY_URL", help="Database URL (default: the "
              "BEAT_SQLALCHEMY_URL environment variable, else the app's config, else "
              "sqlite:///celerybeat-schedule.sqlite3).")
@click.option("-A", "--app", help="A Celery app (module:attribute) whose config names the database.")
@click.pass_context
def main(ctx: click.Context, url: str | None, app: str | None) -> None:
    """Manage the beatsqlalchemy schema.

    \b
    Examples:
      beatsqlalchemy --url postgresql+psycopg://beat@db/celery upgrade
      beatsqlalchemy -A proj.celery:app current
    """
    ctx.obj = Context(url, app)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@main.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(obj: Context, revision: str) -> None:
    """Create or upgrade the tables (to REVISION, default head)."""
    try:
        engine = obj.engine()
        migrate.upgrade(engine, revision)
        click.echo(f"{redact(str(engine.url))} is at revision {migrate.current_revision(engine)}")
    except SQLAlchemyError as exc:
        _fail(exc)


@main.command()
@click.argument("revision")
@click.pass_obj
def downgrade(obj: Context, revision: str) -> None:
    """Downgrade the tables to REVISION (``base`` removes them all)."""
    try:
        engine = obj.engine()
        migrate.downgrade(engine, revision)
        click.echo(f"{redact(str(engine.url))} is at revision {migrate.current_revision(engine)}")
    except SQLAlchemyError as exc:
        _fail(exc)


@main.command()
@click.pass_obj
def current(obj: Context) -> None:
    """Show the schema revision of the database and the newest one available."""
    try:
        engine = obj.engine()
        click.echo(f"current: {migrate.current_revision(engine) or 'none'}")
        click.echo(f"head:    {migrate.head_revision()}")
    except SQLAlchemyError as exc:
        _fail(exc)
