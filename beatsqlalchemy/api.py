"""The one write path: every creation, change, enabling, disabling, deletion, run-now,
import and export of a task goes through these functions. The other doors are thin:
``PeriodicTask.update_or_create`` (the seed's, through ``models.WRITE_PATH``, where this
module registers ``upsert`` on import), ``DatabaseScheduler.add``/``remove``, the command
line, scripts.

Transactions: each function says who commits. A function that writes commits its own
work and only its own: given a session holding the caller's ORM changes it raises
``PendingChanges`` and leaves them alone; a read-only transaction the caller left open is
ended first. A function that reads leaves the caller's transaction open.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from celery import Celery
from celery.schedules import crontab
from sqlalchemy import delete, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from . import describe, health
from . import schedules as sched
from .broker import publish
from .constants import CLAIMED, OUTCOME_COLUMNS, SCHEDULE_KINDS, SENT
from .constants import CONFIG_SOURCE as CONFIG_SOURCE  # re-exported: part of the api
from .constants import DATABASE_SOURCE as DATABASE_SOURCE
from .converters import option_fields as option_fields  # re-exported: part of the api
from .converters import schedule_fields, schedule_kind
from .db import prepare_write
from .exceptions import PendingChanges, TaskNotFound, ValidationError
from .message_options import OPTION_COLUMNS as OPTION_COLUMNS  # re-exported
from .message_options import build_options
from .models import SCHEDULE_MODELS, WRITE_PATH, WRITTEN_IN, PeriodicTask, PeriodicTaskRun, ScheduleMixin
from .runids import deployment_id, run_task_id
from .sessions import engine_for as engine_for  # re-exported: part of the api
from .sessions import open_session as open_session
from .validators import as_bool, as_id, as_int, as_json, as_name

__all__ = [
    "CONFIG_SOURCE",
    "DATABASE_SOURCE",
    "DEFAULT_PAGE_SIZE",
    "DEFINITION_FIELDS",
    "OPTION_COLUMNS",
    "RUN_FIELDS",
    "STATE_FIELDS",
    "count_tasks",
    "create_task",
    "default_entries",
    "default_sender",
    "delete_task",
    "delete_tasks",
    "disable_task",
    "disable_tasks",
    "enable_task",
    "enable_tasks",
    "engine_for",
    "export_tasks",
    "failing_tasks",
    "get_task",
    "get_tasks",
    "import_tasks",
    "install_config_schedule",
    "list_tasks",
    "next_run_at",
    "next_run_or_error",
    "open_session",
    "option_fields",
    "remove_task",
    "run_now",
    "run_to_dict",
    "runs",
    "save_task",
    "schedule_to_dict",
    "send_options",
    "status",
    "task_to_dict",
    "upcoming",
    "update_task",
    "upsert",
]


logger = logging.getLogger(__name__)



# -- the write core: every door that creates or changes a task ends here -----------------

def upsert(session: Session, name: str | None, values: dict[str, Any], commit: bool = True,
           ) -> tuple[PeriodicTask, bool]:
    """Create the task ``name`` or update it with ``values``; returns ``(task, created)``.
    Another writer creating the same name meanwhile is an update of that row. Commits when
    ``commit`` (else flushes, in the caller's transaction); on error, rolls back."""
    values = dict(values)
    name = as_name("name", name if name is not None else values.pop("name", None))
    values.pop("name", None)
    for attempt in (1, 2):
        try:
            prepare_write(session)
            task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).one_or_none()
            created = task is None
            if task is None:
                given = values.get("task")  # the task defaults to the name
                task = PeriodicTask(name=name, task=name if given is None else given)
            apply_fields(session, task, dict(values, task=task.task) if created else values)
            session.add(task)
            if commit:
                session.commit()
            else:
                session.flush()
            return task, created
        except IntegrityError:
            session.rollback()
            if attempt == 2 or not created:
                raise
            # another writer created the same name meanwhile: update that row instead
        except BaseException:
            session.rollback()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


WRITE_PATH.upsert = upsert  # PeriodicTask.update_or_create is a door onto it


def apply_fields(session: Session, task: PeriodicTask, values: dict[str, Any]) -> None:
    """Set ``values`` on ``task``; schedule keywords replace its schedule."""
    given = [kind for kind in SCHEDULE_KINDS if values.get(kind) is not None]
    if "schedule" in values:
        value = values.pop("schedule")
        if value is not None:
            kind = schedule_kind(value)
            values[kind] = value
            given = [kind]
    if len(given) > 1:
        raise ValidationError("schedule", given, "give only one of interval, crontab, solar, clocked")
    if given:
        ids = [f"{kind}_id" for kind in SCHEDULE_KINDS if f"{kind}_id" in values]
        if ids:
            value = as_id(ids[0], values[ids[0]])
            raise ValidationError(ids[0], value, "give a schedule or a schedule id, not both")
    rows = {kind: resolve_schedule(session, kind, values[kind]) for kind in given}
    for kind in SCHEDULE_KINDS:
        values.pop(kind, None)
        if given:
            setattr(task, kind, rows.get(kind))
    if given == ["clocked"] and "one_off" not in values:
        values["one_off"] = True
    for key, value in values.items():
        if key not in PeriodicTask.__mapper__.columns or key in ("id", "needs_recompute", "run_key"):
            raise ValidationError(key, value, "not a field of a periodic task")
        setattr(task, key, value)


def resolve_schedule(session: Session, kind: str, value: Any) -> ScheduleMixin:
    """The schedule row for ``value``: an equal existing row, or a new one."""
    model = SCHEDULE_MODELS[kind]
    if isinstance(value, model):
        state = sa_inspect(value)
        if state.has_identity or state.pending:  # a stored row, or one already added
            return value
        candidate: ScheduleMixin = value  # a new instance: reuse an equal row if any
    else:
        candidate = model(**schedule_fields(kind, value))  # validates every field
    candidate.check()
    key = dict(zip(model.identity, candidate.key(), strict=True))
    with session.no_autoflush:
        found = session.scalars(select(model).filter_by(**key)).first()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            session.add(candidate)
    except IntegrityError:  # created meanwhile by another writer
        found = session.scalars(select(model).filter_by(**key)).first()
        if found is None:
            raise
        return found
    return candidate


def _end_read(session: Session) -> None:
    """End the session's open transaction when it only read, so that the next one can start
    as a write transaction (``BEGIN IMMEDIATE`` on SQLite). A transaction holding the
    caller's ORM changes (pending, or flushed and not committed) is left alone and
    ``PendingChanges`` raised: the api function would otherwise commit work it did not
    start. (Seen: any ORM change not flushed, and rows of our tables flushed; not writes
    made with plain SQL statements.)"""
    transaction = session.get_transaction()
    if transaction is None:
        return
    changes = len(session.new) + len(session.dirty) + len(session.deleted)
    changes += session.info.get(WRITTEN_IN) is transaction  # rows of ours flushed, not committed
    if changes:
        raise PendingChanges(changes)
    session.commit()


def save_task(
    session: Session, name: str, task: str | None = None, schedule: Any = None,
    args: Any = None, kwargs: Any = None, options: Mapping[str, Any] | None = None,
    enabled: bool | None = None, **fields: Any,
) -> PeriodicTask:
    """Create or update the task ``name`` and commit; nothing is written on error.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
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
    _end_read(session)
    saved, _ = upsert(session, name, values)
    return saved


def remove_task(session: Session, name: str) -> bool:
    """Delete the task ``name``; False when there was none (the redisbeat-style door:
    ``delete_task`` raises TaskNotFound instead). Commits its own work; a session holding
    the caller's changes raises PendingChanges."""
    _end_read(session)
    prepare_write(session)
    deleted = session.execute(delete(PeriodicTask).where(PeriodicTask.name == name))
    session.commit()
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def install_config_schedule(
    session: Session, entries: Mapping[str, Mapping[str, Any]], remove_missing: bool = False,
    errors: list[str] | None = None,
) -> tuple[int, int]:
    """Write ``beat_schedule`` entries to the database, marked as coming from
    configuration. The configuration wins for what it defines (task, schedule, args,
    kwargs, options); the database keeps ``enabled`` and run state. Tasks that came
    from configuration and are no longer in it are disabled (deleted when
    ``remove_missing``). Returns (installed, retired). A bad entry is skipped and logged
    (or, when ``errors`` is given, added to it for the caller to report). Commits each
    entry and the retirement (the caller's session must hold no changes of its own)."""
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
            message = f"beat_schedule entry {name!r} is invalid and was skipped: {exc}"
            if errors is None:
                logger.error("beat: %s", message)
            else:
                errors.append(message)
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
    """The entries Celery's own beat would add (result backend cleanup).
    Reads only (the caller's transaction stays open)."""
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
    and ``until``, their Celery task ids, whether they were sent, and by which beat; with
    ``beat_sqlalchemy_track_outcomes`` on the workers, how each ended (``outcome``, ``worker``,
    ``finished_at``, ``runtime``, ``retries``, ``error``).
    Reads only (the caller's transaction stays open)."""
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


def failing_tasks(session: Session, min_failures: int = 1, limit: int = 100) -> list[PeriodicTask]:
    """Tasks whose latest ``min_failures`` runs or more all failed on the workers (as the
    workers recorded them), most failures first, then the most recent.
    Reads only (the caller's transaction stays open)."""
    min_failures = as_int("min_failures", min_failures, 1, sched.INT32_MAX) or 1
    limit = as_int("limit", limit, 1, sched.INT32_MAX) or 1
    return list(session.scalars(health.failing_query(PeriodicTask, min_failures).limit(limit)))


#: the columns of a run-log row ``run_to_dict`` gives, in order
RUN_FIELDS = ("slot", "task_id", "state", "sent_by", "sent_at", "started_at", "worker", "outcome",
              "finished_at", "runtime", "retries", "error")


def run_to_dict(run: PeriodicTaskRun) -> dict[str, Any]:
    """A run-log row as JSON values: when it was due, its task id, whether it was sent and
    by whom, and what the workers recorded of it (outcome, runtime, error)."""
    data: dict[str, Any] = {}
    for key in RUN_FIELDS:
        value = getattr(run, key)
        data[key] = _iso(value) if isinstance(value, datetime) else value
    return data


# -- managing tasks by name ---------------------------------------------------------------

#: what ``export_tasks`` writes for each task: its definition, not its run state
DEFINITION_FIELDS = (
    "args", "kwargs", "queue", "exchange", "routing_key", "headers", "priority", "expires",
    "expire_seconds", "one_off", "start_time", "extra_options", "misfire_policy",
)
#: run state, shown by ``task_to_dict(state=True)``; ``import_tasks`` ignores it
STATE_FIELDS = ("last_run_at", "next_run_at", "total_run_count", "schedule_error", *OUTCOME_COLUMNS)
DEFAULT_PAGE_SIZE = 50


def get_task(session: Session, name: str) -> PeriodicTask:
    """The task called ``name``; raises TaskNotFound.
    Reads only (the caller's transaction stays open)."""
    name = as_name("name", name) or ""
    found = session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).one_or_none()
    if found is None:
        raise TaskNotFound(name)
    return found


def get_tasks(session: Session, names: Iterable[str]) -> list[PeriodicTask]:
    """The tasks with these names that exist, in the order given. Reads only."""
    wanted = list(dict.fromkeys(as_name("name", n) or "" for n in names))
    found = {t.name: t for t in session.scalars(select(PeriodicTask).where(PeriodicTask.name.in_(wanted)))}
    return [found[n] for n in wanted if n in found]


def create_task(session: Session, name: str, task: str, schedule: Any = None, **fields: Any) -> PeriodicTask:
    """Create the task ``name``; a ValidationError when one already has that name.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    as_name("name", name)
    as_name("task", task)  # required here (save_task reads None as "the name")
    exists = session.scalar(select(func.count()).select_from(PeriodicTask).where(PeriodicTask.name == name))
    _end_read(session)  # save_task starts a write transaction
    if exists:
        raise ValidationError("name", name, "a task with this name exists")
    try:
        return save_task(session, name, task=task, schedule=schedule, **fields)
    except IntegrityError as exc:  # created meanwhile by another writer
        if session.scalar(select(func.count()).select_from(PeriodicTask).where(PeriodicTask.name == name)):
            session.rollback()
            raise ValidationError("name", name, "a task with this name exists") from exc
        raise


def update_task(session: Session, name: str, **fields: Any) -> PeriodicTask:
    """Change the existing task ``name`` (same keywords as ``save_task``); raises
    TaskNotFound when there is none, ValidationError on a bad value (nothing is written).
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    get_task(session, name)
    _end_read(session)
    return save_task(session, name, **fields)


def _name_pattern(pattern: str) -> str:
    """A shell-style pattern (``*``, ``?``) as a LIKE pattern escaped with ``!``."""
    escaped = pattern.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%").replace("?", "_")


def _filters(enabled: bool | None, task: str | None, name: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if enabled is not None:
        conditions.append(PeriodicTask.enabled == as_bool("enabled", enabled))
    if task is not None:
        conditions.append(PeriodicTask.task == as_name("task", task))
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ValidationError("name", name, "must be a non-empty pattern")
        conditions.append(PeriodicTask.name.ilike(_name_pattern(name), escape="!"))
    return conditions


def list_tasks(
    session: Session, *, enabled: bool | None = None, task: str | None = None,
    name: str | None = None, limit: int | None = None, offset: int = 0,
    page: int | None = None, size: int | None = None,
) -> list[PeriodicTask]:
    """Tasks sorted by name, filtered by ``enabled``, by ``task`` (the Celery task name)
    and by ``name``, a case-insensitive shell-style pattern (``report-*``). Paginated
    with ``limit``/``offset`` or with ``page`` (from 1) and ``size``.
    Reads only (the caller's transaction stays open)."""
    query = select(PeriodicTask).where(*_filters(enabled, task, name)).order_by(PeriodicTask.name)
    if page is not None or size is not None:
        if limit is not None or offset:
            raise ValidationError("page", page, "use page/size or limit/offset, not both")
        size = as_int("size", DEFAULT_PAGE_SIZE if size is None else size, 1)
        page = as_int("page", 1 if page is None else page, 1)
        assert size is not None and page is not None
        limit, offset = size, (page - 1) * size
    offset = as_int("offset", offset, 0) or 0
    if limit is not None:
        query = query.limit(as_int("limit", limit, 0))
    if offset:
        query = query.offset(offset)
    return list(session.scalars(query).unique())


def count_tasks(
    session: Session, *, enabled: bool | None = None, task: str | None = None, name: str | None = None,
) -> int:
    """How many tasks ``list_tasks`` would return without pagination.
    Reads only (the caller's transaction stays open)."""
    query = select(func.count()).select_from(PeriodicTask).where(*_filters(enabled, task, name))
    return int(session.scalar(query) or 0)


def _tasks_named(session: Session, names: Iterable[str], missing_ok: bool) -> list[PeriodicTask]:
    wanted = list(dict.fromkeys(as_name("name", n) or "" for n in names))
    _end_read(session)
    prepare_write(session)
    found = {t.name: t for t in session.scalars(select(PeriodicTask).where(PeriodicTask.name.in_(wanted)))}
    missing = [n for n in wanted if n not in found]
    if missing and not missing_ok:
        session.rollback()
        raise TaskNotFound(missing[0])
    return [found[n] for n in wanted if n in found]


def _set_enabled(
    session: Session, names: Iterable[str], enabled: bool, missing_ok: bool,
) -> list[PeriodicTask]:
    _end_read(session)  # before the try: the caller's changes are not ours to roll back
    try:
        tasks = _tasks_named(session, names, missing_ok)
        for task in tasks:
            task.enabled = enabled  # the flush hook computes next_run_at (None when disabled)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return tasks


def enable_tasks(session: Session, names: Iterable[str], missing_ok: bool = False) -> list[PeriodicTask]:
    """Enable every task named; each gets a fresh ``next_run_at``. All or nothing: a
    missing name raises TaskNotFound unless ``missing_ok``. Returns the tasks.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    return _set_enabled(session, names, True, missing_ok)


def disable_tasks(session: Session, names: Iterable[str], missing_ok: bool = False) -> list[PeriodicTask]:
    """Disable every task named (see ``enable_tasks``).
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    return _set_enabled(session, names, False, missing_ok)


def delete_tasks(session: Session, names: Iterable[str], missing_ok: bool = False) -> list[str]:
    """Delete every task named; all or nothing (see ``enable_tasks``). Returns the names deleted.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    _end_read(session)  # before the try: the caller's changes are not ours to roll back
    try:
        tasks = _tasks_named(session, names, missing_ok)
        ids = [t.id for t in tasks]
        if ids:
            session.execute(delete(PeriodicTask).where(PeriodicTask.id.in_(ids)))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return [t.name for t in tasks]


def enable_task(session: Session, name: str) -> PeriodicTask:
    """Enable the task ``name``; raises TaskNotFound.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    return enable_tasks(session, [name])[0]


def disable_task(session: Session, name: str) -> PeriodicTask:
    """Disable the task ``name``; raises TaskNotFound.
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    return disable_tasks(session, [name])[0]


def delete_task(session: Session, name: str) -> None:
    """Delete the task ``name``; raises TaskNotFound (``remove_task`` returns False instead).
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    delete_tasks(session, [name])


def next_run_at(session: Session, name: str, now: datetime | None = None) -> datetime | None:
    """When beat sends the task ``name`` next (UTC); None when it is disabled or finished.
    A row changed with plain SQL and not yet recomputed by beat is computed here the way
    beat will; a row beat cannot schedule or send raises ValidationError. Reads only."""
    return _next_run(get_task(session, name), now)


def next_run_or_error(task: PeriodicTask, now: datetime | None = None) -> tuple[datetime | None, str | None]:
    """The next run of ``task`` as beat will see it, or why beat cannot schedule or send
    the row (the reason beat recorded, or the one found now). Reads only, no query."""
    if task.schedule_error and not task.needs_recompute and task.read_error() is None:
        return None, task.schedule_error
    try:
        return _next_run(task, now), None
    except ValidationError as exc:
        return None, str(exc)


def _next_run(task: PeriodicTask, now: datetime | None) -> datetime | None:
    error = task.read_error()
    if error is not None:
        raise error
    if task.enabled:
        _payload(task)  # what beat checks before it sends a row (plain SQL may change any column)
    if task.needs_recompute or (task.enabled and task.next_run_at is None and task.schedule_error is None):
        return task.compute_next_run(now or sched.utcnow())
    if task.schedule_error and task.enabled:
        task.compute_next_run(now or sched.utcnow())  # raises the reason, when still bad
    return task.next_run_at


def upcoming(session: Session, name: str, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """The next ``count`` runs of the task ``name`` (UTC), from ``next_run_at`` on.
    Reads only (the caller's transaction stays open)."""
    task = get_task(session, name)
    first = next_run_at(session, name, now)
    row = task.schedule_row
    if first is None or row is None:
        return []
    spec = row.spec()
    runs = [first]
    while len(runs) < count and not task.one_off:
        following = sched.after_run(spec, runs[-1], runs[-1])
        if following is None or following <= runs[-1]:
            break
        runs.append(following)
    return runs


def default_sender(kind: str = "api") -> str:
    """Who sends a run by hand: ``kind:user@host:pid`` (the run log's ``sent_by``)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{kind}:{user}@{socket.gethostname()}:{os.getpid()}"[:255]


def send_options(task: PeriodicTask) -> dict[str, Any]:
    """The ``apply_async`` options of a task, validated (as beat sends them).
    Reads only (the caller's transaction stays open)."""
    extra = task.extra_options
    return build_options(
        None if extra is None else as_json("extra_options", extra, dict),
        as_json("headers", task.headers or {}, dict),
        queue=task.queue, exchange=task.exchange, routing_key=task.routing_key,
        priority=task.priority, expires=task.expires, expire_seconds=task.expire_seconds,
    )


def _payload(task: PeriodicTask) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The Celery task's args, kwargs and ``apply_async`` options, validated as beat
    validates a row before it sends it (a plain-SQL row may hold anything)."""
    as_name("task", task.task)
    args = list(as_json("args", [] if task.args is None else task.args, list))
    kwargs = dict(as_json("kwargs", {} if task.kwargs is None else task.kwargs, dict))
    return args, kwargs, send_options(task)


def run_now(
    session: Session, app: Celery, name: str, sent_by: str | None = None, now: datetime | None = None,
) -> PeriodicTaskRun:
    """Send one run of the task ``name`` now, through ``app``'s broker, whether the task is
    enabled or not. The run gets a task id of its own (derived from the deployment, the
    task row and the moment, like beat's), is recorded in the run log as sent by ``sent_by``, and counts in
    ``total_run_count`` and ``last_run_at``; ``next_run_at`` does not move. Raises
    TaskNotFound, ValidationError for a row that cannot be sent, and the broker's error
    when the message cannot be published (nothing is recorded then).
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    now = sched.as_utc(now or sched.utcnow())
    task = get_task(session, name)
    pk, task_name, run_key = task.id, task.task, task.run_key
    deployment = deployment_id(session.connection())
    args, kwargs, options = _payload(task)
    if task.expires is not None and task.expires <= now:
        _end_read(session)
        raise ValidationError("expires", task.expires.isoformat(), "the task has expired")
    _end_read(session)
    task_id = run_task_id(deployment, pk, run_key, now)
    # logged before it is published, so a worker recording its outcome finds it by task id
    run = PeriodicTaskRun(
        periodic_task_id=pk, periodic_task_name=name, slot=now, task_id=task_id, state=CLAIMED,
        sent_by=(sent_by or default_sender())[:255], claim_token=uuid.uuid4().hex, claimed_at=now,
    )
    _commit_own(session, lambda: session.add(run))
    try:
        publish(app, task_name, args, kwargs, task_id, options)  # outside any transaction
    except BaseException:
        _commit_own(session, lambda: session.delete(run))  # never sent: nothing recorded
        raise
    sent_at = sched.utcnow()

    def mark_sent() -> None:
        run.state, run.sent_at = SENT, sent_at
        session.execute(
            update(PeriodicTask).where(PeriodicTask.id == pk)
            .values(total_run_count=PeriodicTask.total_run_count + 1, last_run_at=now)
            .execution_options(synchronize_session=False)
        )

    _commit_own(session, mark_sent)
    return run


def _commit_own(session: Session, work: Any) -> None:
    """Do ``work`` in a write transaction of its own and commit it (roll back on error)."""
    try:
        prepare_write(session)
        work()
        session.commit()
    except BaseException:
        session.rollback()
        raise


# -- export and import ----------------------------------------------------------------

def _iso(value: datetime | None) -> str | None:
    if isinstance(value, str):  # a stored value that cannot be read, as its text
        return value
    return None if value is None else sched.as_utc(value).isoformat()


def schedule_to_dict(task: PeriodicTask) -> tuple[str, dict[str, Any]] | None:
    """``(kind, fields)`` of a task's schedule, as JSON values.
    Reads only (the caller's transaction stays open)."""
    row = task.schedule_row
    if row is None:
        return None
    fields: dict[str, Any] = {}
    for key in row.identity:
        value = getattr(row, key)
        if isinstance(value, datetime):
            value = _iso(value)
        elif key in ("latitude", "longitude") and not isinstance(value, str):
            value = float(value)
        fields[key] = value
    return row.kind, fields


def task_to_dict(task: PeriodicTask, state: bool = True) -> dict[str, Any]:
    """A task as JSON values: its name, Celery task, source (``config`` or ``database``),
    ``schedule`` in plain words, the schedule's fields under its kind (``interval``,
    ``crontab``, ``solar`` or ``clocked``), its options and, with ``state``, its run state.
    Reads only (the caller's transaction stays open)."""
    data: dict[str, Any] = {
        "name": task.name, "task": task.task, "enabled": task.enabled,
        "source": task.source or DATABASE_SOURCE, "description": task.description or "",
        "schedule": describe.task(task),
    }
    kind_fields = schedule_to_dict(task)
    if kind_fields is not None:
        data[kind_fields[0]] = kind_fields[1]
    for key in DEFINITION_FIELDS:
        value = getattr(task, key)
        data[key] = _iso(value) if isinstance(value, datetime) else value
    if state:
        data.update(
            last_run_at=_iso(task.last_run_at), next_run_at=_iso(task.next_run_at),
            total_run_count=task.total_run_count, schedule_error=task.schedule_error,
            last_outcome=task.last_outcome, last_outcome_at=_iso(task.last_outcome_at),
            last_success_at=_iso(task.last_success_at), consecutive_failures=task.consecutive_failures,
        )
    return data


def export_tasks(session: Session, **filters: Any) -> list[dict[str, Any]]:
    """Every task's definition (no run state) sorted by name, for ``import_tasks``;
    ``filters`` as for ``list_tasks``.
    Reads only (the caller's transaction stays open)."""
    tasks = list_tasks(session, **filters)
    return sorted((task_to_dict(t, state=False) for t in tasks), key=lambda d: str(d["name"]))


_IMPORT_KEYS = frozenset(("name", "task", "enabled", "source", "description", "schedule",
                          *SCHEDULE_KINDS, *DEFINITION_FIELDS, *STATE_FIELDS))


def import_tasks(session: Session, entries: Any) -> tuple[int, int]:
    """Create or update by name the tasks in ``entries`` (what ``export_tasks`` returns:
    a list of objects, or ``{"tasks": [...]}``), in one transaction: a bad entry raises
    ValidationError naming the task, the field and the value, and nothing is written.
    ``schedule`` (words) and run state are ignored. Returns (created, updated).
    Commits its own work; a session holding the caller's changes raises PendingChanges."""
    if isinstance(entries, Mapping) and set(entries) == {"tasks"}:
        entries = entries["tasks"]
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise ValidationError("tasks", entries, "must be a JSON array of task objects")
    created = updated = 0
    _end_read(session)
    prepare_write(session)
    try:
        created, updated = _import_all(session, entries)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return created, updated


def _import_all(session: Session, entries: Sequence[Any]) -> tuple[int, int]:
    created = updated = 0
    for index, entry in enumerate(entries):
        label = f"task #{index + 1}"
        try:
            if not isinstance(entry, Mapping):
                raise ValidationError("task", entry, "must be a JSON object")
            if entry.get("name") is not None:
                label = f"task {entry['name']!r}"
            fields = _import_fields(entry)
            _, was_created = PeriodicTask.update_or_create(session, commit=False, **fields)
        except ValidationError as exc:
            raise ValidationError(exc.field, exc.value, f"{exc.reason} (in {label})") from exc
        created += was_created
        updated += not was_created
    return created, updated


def _import_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(entry) - _IMPORT_KEYS)
    if unknown:
        raise ValidationError(unknown[0], entry[unknown[0]], "not a field of a task")
    if "name" not in entry:
        raise ValidationError("name", None, "is required")
    return {k: v for k, v in entry.items() if k not in STATE_FIELDS and k != "schedule"}


# -- beat health ---------------------------------------------------------------------------

def status(
    session: Session, *, max_age: float = health.MAX_AGE, grace: float = health.GRACE,
    claim_timeout: float = 30.0, now: datetime | None = None,
) -> health.Status:
    """Beats alive (a heartbeat within ``max_age`` seconds) and gone, enabled tasks overdue
    by more than ``grace`` seconds, claims unconfirmed after ``claim_timeout``, broken and
    failing tasks: each count capped at ``health.COUNT_CAP`` with the first few names.
    Reads only (the caller's transaction stays open)."""
    return health.status(session.connection(), max_age=max_age, grace=grace,
                         claim_timeout=claim_timeout, now=now)
