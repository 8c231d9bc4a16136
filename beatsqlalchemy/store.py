"""Every SQL statement the scheduler runs: the near window, recompute, claim, run log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)

from . import schedules as sched
from .db import begin_write
from .exceptions import ValidationError
from .models import (
    SCHEDULE_KINDS,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
    SolarSchedule,
    parse_json,
)

logger = logging.getLogger(__name__)

#: a result row of the task columns below
TaskRow: TypeAlias = Any


def _table(model: type[Any]) -> Table:
    return model.__table__  # type: ignore[no-any-return]


TASKS = _table(PeriodicTask)
RUNS = _table(PeriodicTaskRun)
_C = TASKS.c
#: the columns beat reads to send a run (JSON read as text, parsed per row)
_SEND_COLUMNS = (
    _C.id, _C.name, _C.task, _C.enabled, _C.one_off, _C.next_run_at, _C.last_run_at,
    _C.start_time, _C.expires, _C.expire_seconds, _C.queue, _C.exchange, _C.routing_key,
    _C.priority, _C.interval_id, _C.crontab_id, _C.solar_id, _C.clocked_id,
    cast(_C.args, Text).label("args"), cast(_C.kwargs, Text).label("kwargs"),
    cast(_C.headers, Text).label("headers"), cast(_C.extra_options, Text).label("extra_options"),
)

def _window_statement() -> Any:
    due = (
        select(_C.id, _C.next_run_at)
        .where(_C.enabled == true(), _C.next_run_at <= bindparam("until", type_=_C.next_run_at.type))
        .order_by(_C.next_run_at)
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )
    flagged = select(_C.id).where(_C.needs_recompute == true()).limit(1).subquery()
    stale = (
        select(RUNS.c.id)
        .where(RUNS.c.state == CLAIMED,
               RUNS.c.claimed_at < bindparam("stale_before", type_=RUNS.c.claimed_at.type))
        .limit(1)
        .subquery()
    )
    return union_all(
        select(due.c.id, due.c.next_run_at, literal(0).label("probe")),
        select(flagged.c.id, null(), literal(1)),
        select(stale.c.id, null(), literal(2)),
    )


CLAIMED, SENT, ABANDONED = "claimed", "sent", "abandoned"
#: the near window plus probes for flagged tasks and stale claims, built once
_WINDOW = _window_statement()
_EPOCH = datetime(1970, 1, 1, tzinfo=sched.UTC)
TASK_ID_NAMESPACE = uuid.UUID("6f2b8f52-3c4e-5b7a-9d1e-2a7c0e5b4f10")


def run_task_id(task_pk: int, slot: datetime) -> str:
    """The Celery task id of a run: the same wherever and however often it is sent."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{task_pk}@{sched.as_utc(slot).isoformat()}"))


@dataclass(slots=True)
class Run:
    """A claimed run, ready to publish."""

    run_id: int
    task_pk: int
    name: str
    task: str
    slot: datetime
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    next_run_at: datetime | None


class Window(NamedTuple):
    """What a sync reads: the runs due soon and what else needs doing."""

    due: Sequence[TaskRow]
    flagged: bool
    stale: bool


@dataclass(slots=True)
class Takeover:
    """A stale claim this beat took over: who had it and since when."""

    run: Run
    previous_claimer: str
    claimed_at: datetime


@dataclass(slots=True)
class ClaimResult:
    """What one claim transaction did."""

    token: str = ""
    runs: list[Run] = field(default_factory=list)
    #: tasks whose next run moved without a send (expired, bad row): (id, next_run_at)
    rescheduled: list[tuple[int, datetime | None]] = field(default_factory=list)
    #: (task name, reason) for rows that could not be scheduled
    errors: list[tuple[str, str]] = field(default_factory=list)


class Store:
    """The scheduler's view of the database; each method is one short transaction."""

    def __init__(self, engine: Engine, identity: str) -> None:
        self.engine = engine
        self.identity = identity
        self._lock_rows = engine.dialect.name != "sqlite"  # SQLite: BEGIN IMMEDIATE instead

    # -- reading --------------------------------------------------------------

    def window(self, until: datetime, limit: int, stale_before: datetime | None = None) -> Window:
        """Enabled tasks due by ``until`` (at most ``limit``, earliest first), whether any
        task is flagged for recompute, and whether any claim older than ``stale_before``
        was never confirmed as sent: one statement, outside a transaction."""
        params = {"until": until, "limit": limit, "stale_before": stale_before or _EPOCH}
        with self.engine.connect() as connection:
            rows = connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                _WINDOW, params
            ).all()
        due = sorted((r for r in rows if r.probe == 0), key=lambda r: r.next_run_at)
        probes = {r.probe for r in rows}
        return Window(due, 1 in probes, 2 in probes)

    # -- recompute ------------------------------------------------------------

    def recompute(self, now: datetime, limit: int) -> tuple[int, list[tuple[str, str]]]:
        """Give tasks flagged by a plain-SQL write a fresh ``next_run_at``; returns how
        many were done and the (name, reason) of rows that cannot be scheduled."""
        errors: list[tuple[str, str]] = []
        with begin_write(self.engine) as connection:
            query = select(*_SEND_COLUMNS).where(_C.needs_recompute == true()).limit(limit)
            if self._lock_rows:
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query).all()
            if not rows:
                return 0, errors
            specs = _load_specs(connection, rows)
            for row in rows:
                values: dict[str, Any] = {"needs_recompute": False, "schedule_error": None}
                try:
                    _parse_payload(row)
                    spec = _spec_of(row, specs)
                    values["next_run_at"] = (
                        sched.first_run(spec, now, row.last_run_at, row.start_time)
                        if row.enabled else None
                    )
                except ValidationError as exc:
                    values.update(next_run_at=None, schedule_error=str(exc))
                    errors.append((row.name, str(exc)))
                connection.execute(update(TASKS).where(_C.id == row.id).values(**values))
        return len(rows), errors

    # -- claim ----------------------------------------------------------------

    def claim(self, due: Sequence[tuple[int, datetime]], now: datetime) -> ClaimResult:
        """Claim the runs ``(task id, next_run_at seen)`` in one transaction: each row is
        advanced only if its ``next_run_at`` is still the value seen (compare-and-set),
        and each claim is logged; a run lost to another beat is simply left out."""
        token = uuid.uuid4().hex
        result = ClaimResult(token=token)
        seen = dict(due)
        with begin_write(self.engine) as connection:
            query = select(*_SEND_COLUMNS).where(_C.id.in_(list(seen)), _C.enabled == true())
            if self._lock_rows:
                query = query.with_for_update(skip_locked=True)
            rows = [r for r in connection.execute(query).all() if r.next_run_at == seen[r.id]]
            specs = _load_specs(connection, rows)
            for row in rows:
                self._claim_row(connection, row, specs, now, token, result)
        return result

    def _claim_row(
        self, connection: Connection, row: TaskRow, specs: dict[tuple[str, int], sched.Spec],
        now: datetime, token: str, result: ClaimResult,
    ) -> None:
        slot: datetime = row.next_run_at
        cas = update(TASKS).where(_C.id == row.id, _C.next_run_at == slot)
        try:
            args, kwargs, options = _parse_payload(row)
            spec = _spec_of(row, specs)
            next_run = None if row.one_off else sched.after_run(spec, slot, now)
        except ValidationError as exc:
            connection.execute(cas.values(next_run_at=None, schedule_error=str(exc)))
            result.errors.append((row.name, str(exc)))
            result.rescheduled.append((row.id, None))
            return
        if row.expires is not None and row.expires <= now:
            connection.execute(cas.values(enabled=False, next_run_at=None))
            logger.info("beat: task %r expired at %s; disabled it", row.name, row.expires.isoformat())
            result.rescheduled.append((row.id, None))
            return
        claimed = connection.execute(
            cas.values(
                next_run_at=next_run, last_run_at=now,
                total_run_count=_C.total_run_count + 1,
                enabled=not row.one_off and next_run is not None,
            )
        )
        if claimed.rowcount != 1:
            return  # another beat advanced it first
        task_id = run_task_id(row.id, slot)
        inserted = connection.execute(
            insert(RUNS).values(
                periodic_task_id=row.id, periodic_task_name=row.name, slot=slot,
                task_id=task_id, state=CLAIMED, sent_by=self.identity,
                claim_token=token, claimed_at=now,
            )
        )
        run_id: int = inserted.inserted_primary_key[0]  # type: ignore[index]
        result.runs.append(Run(
            run_id=run_id, task_pk=row.id, name=row.name,
            task=row.task, slot=slot, task_id=task_id, args=args, kwargs=kwargs,
            options=options, next_run_at=next_run,
        ))

    def take_over(self, now: datetime, stale_before: datetime, limit: int) -> tuple[str, list[Takeover]]:
        """Take over claims made before ``stale_before`` and never confirmed as sent (their
        beat crashed, stalled or could not reach the broker): each is moved to this beat
        with a new claim token (compare-and-set on the old one), to be published again
        with the same task id. Claims whose task is gone or broken are abandoned."""
        token = uuid.uuid4().hex
        taken: list[Takeover] = []
        with begin_write(self.engine) as connection:
            query = (
                select(RUNS).where(RUNS.c.state == CLAIMED, RUNS.c.claimed_at < stale_before)
                .order_by(RUNS.c.claimed_at).limit(limit)
            )
            if self._lock_rows:
                query = query.with_for_update(skip_locked=True)
            claims = connection.execute(query).all()
            if not claims:
                return token, taken
            tasks = {
                row.id: row for row in connection.execute(
                    select(*_SEND_COLUMNS).where(_C.id.in_({c.periodic_task_id for c in claims}))
                )
            }
            for claim in claims:
                mine = update(RUNS).where(RUNS.c.id == claim.id, RUNS.c.claim_token == claim.claim_token)
                task = tasks.get(claim.periodic_task_id)
                try:
                    if task is None:
                        raise ValidationError("periodic_task_id", claim.periodic_task_id, "task deleted")
                    args, kwargs, options = _parse_payload(task)
                except ValidationError as exc:
                    connection.execute(mine.values(state=ABANDONED))
                    logger.warning("beat: abandoned the unsent run of %r for %s: %s",
                                   claim.periodic_task_name, claim.slot.isoformat(), exc)
                    continue
                moved = connection.execute(
                    mine.values(claim_token=token, sent_by=self.identity, claimed_at=now)
                )
                if moved.rowcount != 1:
                    continue
                run = Run(
                    run_id=claim.id, task_pk=task.id, name=task.name, task=task.task, slot=claim.slot,
                    task_id=claim.task_id, args=args, kwargs=kwargs, options=options, next_run_at=None,
                )
                taken.append(Takeover(run, claim.sent_by, claim.claimed_at))
        return token, taken

    def confirm(self, run_ids: Sequence[int], token: str, now: datetime) -> set[int]:
        """Which of these claims are still this beat's (another beat takes over a claim
        left unconfirmed past the timeout); those are renewed for another timeout."""
        if not run_ids:
            return set()
        ids = list(run_ids)
        with begin_write(self.engine) as connection:
            connection.execute(
                update(RUNS).where(RUNS.c.id.in_(ids), RUNS.c.claim_token == token,
                                   RUNS.c.state == CLAIMED).values(claimed_at=now)
            )
            return set(connection.scalars(
                select(RUNS.c.id).where(RUNS.c.id.in_(ids), RUNS.c.claim_token == token,
                                        RUNS.c.state == CLAIMED)
            ))

    def mark_sent(self, run_ids: Sequence[int], now: datetime, token: str | None = None) -> None:
        """Record that the broker accepted these runs (those still claimed with ``token``)."""
        if not run_ids:
            return
        condition: Any = RUNS.c.id.in_(list(run_ids))
        if token is not None:
            condition = condition & (RUNS.c.claim_token == token)
        with begin_write(self.engine) as connection:
            connection.execute(update(RUNS).where(condition).values(state=SENT, sent_at=now))

    def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` run-log rows claimed before ``before``; returns how many."""
        with begin_write(self.engine) as connection:
            ids = list(connection.scalars(
                select(RUNS.c.id).where(RUNS.c.claimed_at < before).order_by(RUNS.c.claimed_at).limit(limit)
            ))
            if ids:
                connection.execute(delete(RUNS).where(RUNS.c.id.in_(ids)))
        return len(ids)


# -- row parsing ------------------------------------------------------------------

def _loads(field: str, raw: str | None, kind: type, default: Any) -> Any:
    if raw is None:
        return default
    value = parse_json(field, raw)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ValidationError(field, value, f"must be a JSON {'array' if kind is list else 'object'}")
    return value


def _parse_payload(row: TaskRow) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """args, kwargs and the apply_async options of a task row, validated."""
    args = _loads("args", row.args, list, [])
    kwargs = _loads("kwargs", row.kwargs, dict, {})
    headers = _loads("headers", row.headers, dict, {})
    options: dict[str, Any] = dict(_loads("extra_options", row.extra_options, dict, {}))
    for key in ("queue", "exchange", "routing_key"):
        value = getattr(row, key)
        if value:
            options[key] = value
    if row.priority is not None:
        if not 0 <= row.priority <= 255:
            raise ValidationError("priority", row.priority, "must be between 0 and 255")
        options["priority"] = row.priority
    if row.expires is not None:
        options["expires"] = row.expires
    elif row.expire_seconds is not None:
        options["expires"] = row.expire_seconds
    options["headers"] = {**headers, "celery_beat_task": True}
    return args, kwargs, options


_SPEC_TABLES: dict[str, tuple[Table, Callable[[TaskRow], Any]]] = {
    "interval": (_table(IntervalSchedule),
                 lambda r: sched.Interval(sched.interval_delta(r.every, r.period))),
    "crontab": (_table(CrontabSchedule),
                lambda r: sched.Cron.parse(r.minute, r.hour, r.day_of_week, r.day_of_month,
                                           r.month_of_year, r.timezone)),
    "solar": (_table(SolarSchedule),
              lambda r: sched.Solar(sched.solar_event(r.event),
                                    float(sched.coordinate("latitude", r.latitude)),
                                    float(sched.coordinate("longitude", r.longitude)))),
    "clocked": (_table(ClockedSchedule), lambda r: sched.Clocked(sched.as_utc(r.clocked_time))),
}


def _load_specs(connection: Connection, rows: Sequence[TaskRow]) -> dict[tuple[str, int], Any]:
    """The schedules the rows use, keyed by (kind, id); a bad schedule maps to its error."""
    specs: dict[tuple[str, int], Any] = {}
    for kind in SCHEDULE_KINDS:
        ids = {getattr(r, f"{kind}_id") for r in rows} - {None}
        if not ids:
            continue
        table, build = _SPEC_TABLES[kind]
        for schedule_row in connection.execute(select(table).where(table.c.id.in_(ids))):
            try:
                specs[kind, schedule_row.id] = build(schedule_row)
            except ValidationError as exc:
                specs[kind, schedule_row.id] = exc
    return specs


def _spec_of(row: TaskRow, specs: dict[tuple[str, int], Any]) -> sched.Spec:
    kinds = [k for k in SCHEDULE_KINDS if getattr(row, f"{k}_id") is not None]
    if len(kinds) != 1:
        raise ValidationError("schedule", kinds or None, "a task needs exactly one schedule")
    spec = specs.get((kinds[0], getattr(row, f"{kinds[0]}_id")))
    if spec is None:
        raise ValidationError(f"{kinds[0]}_id", getattr(row, f"{kinds[0]}_id"), "no such schedule")
    if isinstance(spec, ValidationError):
        raise spec
    return spec  # type: ignore[no-any-return]
