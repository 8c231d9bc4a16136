"""Internal. The engine and sessions of a Celery app's database (its configuration read,
the schema checked): what the api, beat and ``models.get_session`` open."""

from __future__ import annotations

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .config import BeatConfig
from .db import get_engine, session_factory
from .migrate import ensure_schema


def engine_for(app: Celery) -> Engine:
    """The app's engine, with the schema checked (and created on SQLite)."""
    config = BeatConfig.from_app(app)
    engine = get_engine(config.url, config.engine_options)
    ensure_schema(engine, config.create_schema)
    return engine


def open_session(app: Celery) -> Session:
    """A new session on the app's database."""
    return session_factory(engine_for(app))()
