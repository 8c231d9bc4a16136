"""Management functions shared by ``DatabaseScheduler.add``, the CLI and scripts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from .config import BeatConfig
from .db import get_engine, prepare_write, session_factory
from .exceptions import ValidationError
from .migrate import ensure_schema
from .models import PeriodicTask, PeriodicTaskRun

logger = logging.getLogger(__name__)

#: apply_async options that have a column of their own
OPTION_COLUMNS = ("queue", "exchange", "routing_key", "priority", "headers")
CONFIG_SOURCE = "config"


def engine_for(app: Celery) -> Engine:
    """The app's engine, with the schema checked (and created on SQLite)."""
    config = BeatConfig.from_app(app)
    engine = get_engine(config.url, config.engine_options)
    ensure_schema(engine, config.create_schema)
    return engine


def open_session(app: Celery) -> Session:
    """A new session on the app's database."""
    return session_factory(engine_for(app))()


def option_fields(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Task columns for a dict of apply_async options; ``expires`` keeps its kind (a
    number or timedelta stays relative, a datetime stays absolute)."""
    fields: dict[str, Any] = {"expires": None, "expire_seconds": None, "extra_options": None}
    extra: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in OPTION_COLUMNS:
            fields[key] = value
        elif key == "expires":
            if isinstance(value, timedelta):
                fields["expire_seconds"] = int(value.total_seconds())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                fields["expire_seconds"] = int(value)
            elif isinstance(value, (datetime, str)):
                fields["expires"] = value
            elif value is not None:
                raise ValidationError("expires", value, "must be seconds, a timedelta or a datetime")
        else:
            extra[key] = value
    if extra:
        fields["extra_options"] = extra
    return fields


def save_task(
    session: Session, name: str, task: str | None = None, schedule: Any = None,
    args: Any = None, kwargs: Any = None, options: Mapping[str, Any] | None = None,
    enabled: bool | None = None, **fields: Any,
) -> PeriodicTask:
    """Create or update the task ``name`` and commit; nothing is written on error."""
    values: dict[str, Any] = dict(fields)
    if task is not None:
        values["task"] = task
    if schedule is not None:
        values["schedule"] = schedule
    if args is not None:
        values["args"] = args
    if kwargs is not None:
        values["kwargs"] = kwargs
    if options is not None:
        values.update(option_fields(options))
    if enabled is not None:
        values["enabled"] = enabled
    saved, _ = PeriodicTask.update_or_create(session, name=name, **values)
    return saved


def remove_task(session: Session, name: str) -> bool:
    """Delete the task ``name``; False when there was none."""
    prepare_write(session)
    deleted = session.execute(delete(PeriodicTask).where(PeriodicTask.name == name))
    session.commit()
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def install_config_schedule(
    session: Session, entries: Mapping[str, Mapping[str, Any]], remove_missing: bool = False,
) -> tuple[int, int]:
    """Write ``beat_schedule`` entries to the database, marked as coming from
    configuration. The configuration wins for what it defines (task, schedule, args,
    kwargs, options); the database keeps ``enabled`` and run state. Tasks that came
    from configuration and are no longer in it are disabled (deleted when
    ``remove_missing``). Returns (installed, retired). A bad entry is logged and skipped."""
    installed = 0
    for name, entry in entries.items():
        try:
            save_task(
                session, name, task=entry["task"], schedule=entry["schedule"],
                args=entry.get("args") or [], kwargs=entry.get("kwargs") or {},
                options=entry.get("options") or {}, source=CONFIG_SOURCE,
                **({"description": entry["description"]} if "description" in entry else {}),
            )
            installed += 1
        except (ValidationError, KeyError) as exc:
            session.rollback()
            logger.error("beat: beat_schedule entry %r is invalid and was skipped: %s", name, exc)
    prepare_write(session)
    stale = session.scalars(select(PeriodicTask.id).where(
        PeriodicTask.source == CONFIG_SOURCE, PeriodicTask.name.not_in(list(entries) or [""])
    )).all()
    if stale and remove_missing:
        session.execute(delete(PeriodicTask).where(PeriodicTask.id.in_(stale)))
    elif stale:
        session.execute(
            update(PeriodicTask).where(PeriodicTask.id.in_(stale))
            .values(enabled=False, next_run_at=None)
        )
    session.commit()
    return installed, len(stale)


def default_entries(app: Celery) -> dict[str, dict[str, Any]]:
    """The entries Celery's own beat would add (result backend cleanup)."""
    from celery.schedules import crontab

    if app.conf.result_expires and not app.backend.supports_autoexpire:
        return {"celery.backend_cleanup": {
            "task": "celery.backend_cleanup", "schedule": crontab("0", "4", "*"),
            "options": {"expires": 12 * 3600},
        }}
    return {}


def runs(
    session: Session, name: str | None = None, since: datetime | None = None,
    until: datetime | None = None, state: str | None = None, limit: int = 100,
) -> list[PeriodicTaskRun]:
    """The run log, newest slot first: which runs of ``name`` were due between ``since``
    and ``until``, their Celery task ids, whether they were sent, and by which beat."""
    query = select(PeriodicTaskRun).order_by(PeriodicTaskRun.slot.desc()).limit(limit)
    if name is not None:
        query = query.where(PeriodicTaskRun.periodic_task_name == name)
    if since is not None:
        query = query.where(PeriodicTaskRun.slot >= since)
    if until is not None:
        query = query.where(PeriodicTaskRun.slot <= until)
    if state is not None:
        query = query.where(PeriodicTaskRun.state == state)
    return list(session.scalars(query))
