"""Readers for consoles (the web console, scripts): tasks a page at a time, found with
indexes and paged by key (no COUNT(*) of the whole table, no OFFSET walk), the overview of
what beat did lately, a task's next runs in UTC and in its own zone, and a cron preview.

Every function reads only (the caller's transaction stays open) and validates its input
with the package's validators: a bad filter raises ValidationError naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, text, true, tuple_
from sqlalchemy.orm import Session

from . import api, describe
from . import schedules as sched
from .constants import ABANDONED, CONFIG_SOURCE, DATABASE_SOURCE, SCHEDULE_KINDS, SENT, SKIPPED
from .exceptions import ValidationError
from .models import CrontabSchedule, PeriodicTask, PeriodicTaskRun
from .validators import as_bool, as_int, as_name

#: the sort orders of ``task_page``: by next run (then id; disabled tasks and tasks with no
#: next run last, by id), by name
SORTS = ("next", "name")
#: the highest code point: the upper end of a prefix range on an index
_LAST_CHARACTER = "\U0010ffff"
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class TaskFilters:
    """What a task listing is narrowed to; None means any."""

    enabled: bool | None = None
    source: str | None = None
    kind: str | None = None
    broken: bool | None = None
    #: a prefix of the task's name (a range on the unique name index)
    name: str | None = None
    #: a prefix of the Celery task it sends (a range on the task index)
    task: str | None = None

    @classmethod
    def checked(cls, enabled: Any = None, source: Any = None, kind: Any = None, broken: Any = None,
                name: Any = None, task: Any = None) -> TaskFilters:
        """Filters from loose values ("" and None mean any), each validated."""
        given = {k: (None if v in ("", None) else v) for k, v in
                 {"enabled": enabled, "source": source, "kind": kind, "broken": broken,
                  "name": name, "task": task}.items()}
        if given["source"] not in (None, CONFIG_SOURCE, DATABASE_SOURCE):
            raise ValidationError("source", given["source"],
                                  f"must be {CONFIG_SOURCE!r} or {DATABASE_SOURCE!r}")
        if given["kind"] not in (None, *SCHEDULE_KINDS):
            raise ValidationError("kind", given["kind"], f"must be one of {', '.join(SCHEDULE_KINDS)}")
        return cls(
            enabled=_flag("enabled", given["enabled"]), source=given["source"], kind=given["kind"],
            broken=_flag("broken", given["broken"]),
            name=as_name("name", given["name"], optional=True),
            task=as_name("task", given["task"], optional=True),
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE conditions, each one an index can serve."""
        found: list[ColumnElement[bool]] = []
        if self.enabled is not None:
            found.append(PeriodicTask.enabled == self.enabled)
        if self.source == CONFIG_SOURCE:
            found.append(PeriodicTask.source == CONFIG_SOURCE)
        elif self.source == DATABASE_SOURCE:
            found.append(PeriodicTask.source.is_(None))
        if self.kind is not None:
            found.append(getattr(PeriodicTask, f"{self.kind}_id").is_not(None))
        if self.broken is not None:
            broken = PeriodicTask.schedule_error.is_not(None)
            found.append(broken if self.broken else ~broken)
        for column, prefix in ((PeriodicTask.name, self.name), (PeriodicTask.task, self.task)):
            if prefix is not None:
                found.append(_prefix(column, prefix))
        return found


#: how a flag is written in a query string
_FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _flag(field: str, value: Any) -> bool | None:
    """A filter flag: a bool, or its word (``true``/``false``, ``yes``/``no``, ``1``/``0``)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = _FLAG_WORDS.get(value.strip().lower(), value)
    return as_bool(field, value)


def _prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``: a range an index serves, and a LIKE that keeps
    the match exact whatever the column's collation."""
    escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return and_(column >= prefix, column < prefix + _LAST_CHARACTER,
                column.like(escaped + "%", escape="!"))


@dataclass(frozen=True)
class TaskPage:
    """One page of tasks and the cursor of the next page (None on the last)."""

    tasks: list[PeriodicTask]
    next_cursor: str | None
    sort: str
    filters: TaskFilters = field(default_factory=TaskFilters)


def _encode(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise ValidationError("cursor", cursor, "not a page cursor of this listing") from None
    if not isinstance(values, list):
        raise ValidationError("cursor", cursor, "not a page cursor of this listing")
    return values


def task_page(session: Session, filters: TaskFilters | None = None, sort: str = "next",
              cursor: str | None = None, size: int = api.DEFAULT_PAGE_SIZE) -> TaskPage:
    """A page of tasks in ``sort`` order after ``cursor`` (from the previous page), paged
    by key: by next run then id (enabled tasks with a next run; then the others, by id), or
    by name. Broken rows (``broken=True``) come by id, whatever the sort."""
    filters = filters or TaskFilters()
    if sort not in SORTS:
        raise ValidationError("sort", sort, f"must be one of {', '.join(SORTS)}")
    size = as_int("size", size, 1, MAX_PAGE_SIZE) or api.DEFAULT_PAGE_SIZE
    after = _decode(cursor) if cursor else None
    base = select(PeriodicTask).where(*filters.conditions())
    if filters.broken:  # few rows, found by their partial index in id order
        return _by_id(session, base.order_by(PeriodicTask.id), after, size, sort, filters)
    if sort == "name":
        query = base.order_by(PeriodicTask.name)
        if after is not None:
            query = query.where(PeriodicTask.name > _cursor_text(after, 0))
        tasks = _fetch(session, query, size + 1)
        more = len(tasks) > size
        tasks = tasks[:size]
        return TaskPage(tasks, cursor_after(tasks[-1], sort) if more else None, sort, filters)
    return _by_next_run(session, base, filters, after, size)


def _by_id(session: Session, query: Select[Any], after: list[Any] | None, size: int, sort: str,
           filters: TaskFilters) -> TaskPage:
    if after is not None:
        query = query.where(PeriodicTask.id > _cursor_id(after, 1))
    tasks = _fetch(session, query, size + 1)
    more = len(tasks) > size
    tasks = tasks[:size]
    return TaskPage(tasks, _encode(["n", tasks[-1].id]) if more else None, sort, filters)


def _cursor_text(values: list[Any], index: int) -> str:
    if len(values) <= index or not isinstance(values[index], str):
        raise ValidationError("cursor", values, "not a page cursor of this listing")
    return values[index]  # type: ignore[no-any-return]


def _cursor_id(values: list[Any], index: int) -> int:
    if len(values) <= index or not isinstance(values[index], int) or isinstance(values[index], bool):
        raise ValidationError("cursor", values, "not a page cursor of this listing")
    return values[index]  # type: ignore[no-any-return]


def _fetch(session: Session, query: Select[Any], limit: int) -> list[PeriodicTask]:
    return list(session.scalars(query.limit(limit)).unique())


def _by_next_run(session: Session, base: Select[Any], filters: TaskFilters,
                 after: list[Any] | None, size: int) -> TaskPage:
    """Enabled tasks with a next run by (next_run_at, id), then the others (disabled, or
    with no next run) by id: each part one walk of an index (``enabled, next_run_at, id``,
    then the primary key), whatever the planner's statistics say."""
    tasks: list[PeriodicTask] = []
    timed = after is None or after[0] == "t"
    if timed and filters.enabled is not False:
        query = base.where(PeriodicTask.enabled == true(), PeriodicTask.next_run_at.is_not(None)).order_by(
            PeriodicTask.next_run_at, PeriodicTask.id)
        if after is not None:
            key = tuple_(PeriodicTask.next_run_at, PeriodicTask.id)
            query = query.where(key > tuple_(api_datetime(_cursor_text(after, 1)), _cursor_id(after, 2)))
        tasks = _fetch(session, query, size + 1)
    if len(tasks) <= size:
        unscheduled = or_(PeriodicTask.enabled == false(), PeriodicTask.next_run_at.is_(None))
        rest = {True: PeriodicTask.next_run_at.is_(None), False: None, None: unscheduled}[filters.enabled]
        query = base.order_by(PeriodicTask.id)
        if rest is not None:
            query = query.where(rest)
        if after is not None and not timed:
            query = query.where(PeriodicTask.id > _cursor_id(after, 1))
        tasks += _fetch(session, query, size + 1 - len(tasks))
    more = len(tasks) > size
    tasks = tasks[:size]
    return TaskPage(tasks, cursor_after(tasks[-1], "next") if more else None, "next", filters)


def cursor_after(task: PeriodicTask, sort: str) -> str:
    """The cursor of the page that starts after ``task`` in ``sort`` order."""
    if sort == "name":
        return _encode([task.name])
    if task.enabled and isinstance(task.next_run_at, datetime):
        return _encode(["t", sched.as_utc(task.next_run_at).isoformat(), task.id])
    return _encode(["n", task.id])


def api_datetime(text: str) -> datetime:
    """An ISO time from a cursor, as aware UTC."""
    try:
        return sched.as_utc(datetime.fromisoformat(text))
    except (TypeError, ValueError):
        raise ValidationError("cursor", text, "not a page cursor of this listing") from None


def estimated_task_count(session: Session) -> int | None:
    """The planner's estimate of the number of tasks (PostgreSQL's ``pg_class.reltuples``),
    None elsewhere or before the table was first analysed: never a COUNT(*)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    value = session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
                           {"name": PeriodicTask.__tablename__})
    return int(value) if value is not None and value >= 0 else None


#: broken rows the overview lists (with their reasons)
BROKEN_SHOWN = 20


# -- what beat did lately ---------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    """The console's first page, besides the status (``api.status``: beats, overdue,
    unconfirmed) and the failing tasks (``api.failing_tasks``)."""

    sent_hour: int
    sent_day: int
    skipped_day: int
    abandoned_day: int
    broken: list[tuple[str, str]]
    upcoming: list[PeriodicTask]


def _runs_since(session: Session, state: str, since: datetime) -> int:
    query = select(func.count()).select_from(PeriodicTaskRun).where(
        PeriodicTaskRun.state == state, PeriodicTaskRun.claimed_at >= since)
    return int(session.scalar(query) or 0)


def overview(session: Session, now: datetime | None = None, upcoming_count: int = 20) -> Overview:
    """Runs sent in the last hour and day, runs skipped and abandoned in the last day,
    broken rows with beat's reason, and the next ``upcoming_count`` runs across all tasks."""
    now = sched.as_utc(now or sched.utcnow())
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    broken = session.execute(
        select(PeriodicTask.name, PeriodicTask.schedule_error)
        .where(PeriodicTask.schedule_error.is_not(None)).order_by(PeriodicTask.name).limit(BROKEN_SHOWN)
    ).all()
    upcoming = _fetch(session, select(PeriodicTask).where(
        PeriodicTask.enabled == true(), PeriodicTask.next_run_at.is_not(None),
    ).order_by(PeriodicTask.next_run_at, PeriodicTask.id), upcoming_count)
    return Overview(
        sent_hour=_runs_since(session, SENT, hour), sent_day=_runs_since(session, SENT, day),
        skipped_day=_runs_since(session, SKIPPED, day), abandoned_day=_runs_since(session, ABANDONED, day),
        broken=[(str(name), str(error)) for name, error in broken], upcoming=upcoming,
    )


# -- one task -----------------------------------------------------------------------------

def task_zone(task: PeriodicTask) -> str:
    """The timezone a task's schedule is written in (a crontab's own; else UTC)."""
    row = task.schedule_row
    return str(row.timezone) if isinstance(row, CrontabSchedule) else "UTC"


def next_runs(session: Session, name: str, count: int = 10, now: datetime | None = None,
              ) -> tuple[list[tuple[datetime, datetime]], str | None]:
    """The next ``count`` runs of the task ``name`` as (UTC, in the schedule's zone)
    pairs, or why beat cannot schedule it."""
    task = api.get_task(session, name)
    _, error = api.next_run_or_error(task, now)
    if error is not None:
        return [], error
    try:
        moments = api.upcoming(session, name, count, now)
    except ValidationError as exc:
        return [], str(exc)
    tz = sched.zone(task_zone(task))
    return [(moment, moment.astimezone(tz)) for moment in moments], None


# -- a crontab before it is saved -----------------------------------------------------------

@dataclass(frozen=True)
class CronPreview:
    """A crontab in words and its next runs, or the errors by field."""

    words: str | None
    runs: list[tuple[datetime, datetime]]
    errors: dict[str, str]


def cron_preview(expression: str, timezone: str, count: int = 5, now: datetime | None = None) -> CronPreview:
    """What a crontab written as ``expression`` (five fields) in ``timezone`` means and
    when it runs next; validated by the crontab model (nothing is written)."""
    try:
        row = CrontabSchedule(**sched.split_cron(expression), timezone=timezone)
    except ValidationError as exc:
        field = "timezone" if exc.field == "timezone" else "cron"
        return CronPreview(None, [], {field: str(exc)})
    spec = row.spec()
    moment = sched.as_utc(now or sched.utcnow())
    moments: list[datetime] = []
    following = sched.first_run(spec, moment)
    while following is not None and len(moments) < count:
        moments.append(following)
        following = sched.after_run(spec, following, following)
    tz = sched.zone(row.timezone)
    return CronPreview(describe.schedule_row(row), [(m, m.astimezone(tz)) for m in moments], {})
