"""Every SQL statement the scheduler runs: the near window, recompute, claim, run log.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Text,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import NullType

from . import schedules as sched
from .constants import ABANDONED, BEAT_HEADER, CLAIMED, SCHEDULE_KINDS, SENT, SKIPPED
from .db import begin_write, outside_transaction
from .exceptions import ValidationError
from .message_options import build_options
from .models import (
    ROW_ERRORS,
    SCHEDULE_MODELS,
    BeatRecord,
    PeriodicTask,
    PeriodicTaskRun,
    readable,
    row_error,
)
from .runids import deployment_id, run_task_id
from .validators import as_misfire_policy, as_name, parse_json

logger = logging.getLogger(__name__)

#: a result row of the task columns below
TaskRow: TypeAlias = Any


def _table(model: type[Any]) -> Table:
    return model.__table__  # type: ignore[no-any-return]


TASKS = _table(PeriodicTask)
RUNS = _table(PeriodicTaskRun)
BEATS = _table(BeatRecord)
_C = TASKS.c
#: the columns beat reads to send a run (JSON read as text, parsed per row)
_SEND_COLUMNS = (
    _C.id, _C.name, _C.task, _C.enabled, _C.one_off, _C.next_run_at, _C.last_run_at,
    _C.start_time, _C.expires, _C.expire_seconds, _C.queue, _C.exchange, _C.routing_key,
    _C.priority, _C.interval_id, _C.crontab_id, _C.solar_id, _C.clocked_id, _C.misfire_policy, _C.run_key,
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
    # times past any a task can have: only values no datetime holds (PostgreSQL's
    # infinity, text sorting after digits on SQLite), which the due runs never reach
    unreadable = (
        select(_C.id)
        .where(_C.enabled == true(), _C.next_run_at > bindparam("beyond", type_=_C.next_run_at.type))
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )
    oldest_claim = (  # an index seek on (state, claimed_at)
        select(RUNS.c.id, RUNS.c.claimed_at)
        .where(RUNS.c.state == CLAIMED)
        .order_by(RUNS.c.claimed_at)
        .limit(1)
        .subquery()
    )
    return union_all(
        select(due.c.id, due.c.next_run_at, literal(0).label("probe")),
        select(flagged.c.id, null(), literal(1)),
        select(oldest_claim.c.id, oldest_claim.c.claimed_at, literal(2)),
        select(unreadable.c.id, null(), literal(3)),
    )


#: the near window plus probes for flagged tasks and the oldest unconfirmed claim, built once
_WINDOW = _window_statement()
#: the latest time a ``next_run_at`` can hold and beat read
_BEYOND = datetime.max


#: one more run counted, unless the INTEGER column is full (a plain-SQL value): a run
#: must not fail on its counter
_COUNTED = case((_C.total_run_count < sched.INT32_MAX, _C.total_run_count + 1), else_=_C.total_run_count)
#: a claim: advance the row past its slot, only if it is still at the slot we saw
_ADVANCE = (
    update(TASKS)
    .where(_C.id == bindparam("b_id"), _C.next_run_at == bindparam("b_slot", type_=_C.next_run_at.type))
    .values(next_run_at=bindparam("b_next", type_=_C.next_run_at.type),
            last_run_at=bindparam("b_now", type_=_C.last_run_at.type),
            total_run_count=_COUNTED, enabled=bindparam("b_enabled"))
)
#: a due row moved on without a run (broken, expired, missed): same compare-and-set
_PARK = (
    update(TASKS)
    .where(_C.id == bindparam("b_id"), _C.next_run_at == bindparam("b_slot", type_=_C.next_run_at.type))
    .values(next_run_at=bindparam("b_next", type_=_C.next_run_at.type), enabled=bindparam("b_enabled"),
            schedule_error=bindparam("b_error"))
)
_INSERT_RUN = insert(RUNS)
#: tasks flagged by a plain-SQL write, and their fresh values
_FLAGGED = select(*_SEND_COLUMNS).where(_C.needs_recompute == true()).limit(bindparam("limit", type_=Integer))
_RECOMPUTED = (
    update(TASKS).where(_C.id == bindparam("b_id"))
    .values(next_run_at=bindparam("b_next", type_=_C.next_run_at.type), needs_recompute=False,
            schedule_error=bindparam("b_error", type_=_C.schedule_error.type))
)


def _array(name: str, item_type: Any, value: str | None = None) -> Any:
    """A PostgreSQL array parameter: a whole batch in one bound value, sent as the
    array's text (see ``_array_text``), which PostgreSQL parses far faster than the
    driver adapts a list. Untyped, so that the cast is of a constant and done once
    (a ``::VARCHAR`` cast first would make it a per-row expression)."""
    return cast(bindparam(name, value, type_=NullType()), ARRAY(item_type))


def _array_text(values: Iterable[Any]) -> str:
    """``{1,2,...}``: ints, bools, UUID strings and naive datetimes (ISO, no spaces), none
    of which needs quoting; None is NULL."""
    items = ("NULL" if v is None else ("t" if v else "f") if isinstance(v, bool)
             else v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
    return "{" + ",".join(items) + "}"


def _unnest(*columns: tuple[str, Any]) -> Any:
    """``unnest(array, ...) AS v(name, ...)``: parallel array parameters as rows."""
    return (
        func.unnest(*(_array(f"v_{name}", kind) for name, kind in columns))
        .table_valued(*(column(name, kind) for name, kind in columns))
        .render_derived(name="v")
    )


_V = _unnest(("id", Integer), ("slot", DateTime()), ("next", DateTime()), ("enabled", Boolean()),
             ("task_id", String()))
#: PostgreSQL: every claim of a batch in one conditional UPDATE (compare-and-set on each
#: row's slot), and a run-log row for each that matched, in one statement
_ADVANCED = (
    update(TASKS)
    .where(_C.id == _V.c.id, _C.next_run_at == _V.c.slot)
    .values(next_run_at=_V.c.next, enabled=_V.c.enabled,
            last_run_at=bindparam("b_now", type_=_C.last_run_at.type),
            total_run_count=_COUNTED)
    .returning(_C.id, _C.name, _V.c.slot, _V.c.task_id)
    .cte("advanced")
)
_CLAIM_ALL = insert(RUNS).from_select(
    ["periodic_task_id", "periodic_task_name", "slot", "task_id", "state", "sent_by", "claim_token",
     "claimed_at"],
    select(_ADVANCED.c.id, _ADVANCED.c.name, _ADVANCED.c.slot, _ADVANCED.c.task_id, literal(CLAIMED),
           bindparam("b_by", type_=String()), bindparam("b_token", type_=String()),
           bindparam("b_now", type_=RUNS.c.claimed_at.type)),
).returning(RUNS.c.id, RUNS.c.periodic_task_id)


def _next_run_at(row: TaskRow) -> Any:
    return row.next_run_at


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else sched.as_utc(moment).replace(tzinfo=None)


def _among(id_column: Any, dialect: str) -> Any:
    """``id_column`` is one of the ids given as ``b_ids`` (see ``_ids``): one array
    parameter on PostgreSQL, integer literals elsewhere (a thousand placeholders cost
    more than the query)."""
    if dialect == "postgresql":
        return id_column == any_(_array("b_ids", Integer))
    return id_column.in_(bindparam("b_ids", expanding=True, literal_execute=True))


def _ids(ids: Iterable[int], dialect: str) -> Any:
    """The value of ``_among``'s ``b_ids``."""
    return _array_text(ids) if dialect == "postgresql" else [int(i) for i in ids]


class _Statements:
    """The statements of the hot paths, built once per dialect: building and keying a
    statement costs more than running it. ``lock_rows``: the task rows read are locked
    (``FOR UPDATE SKIP LOCKED``)."""

    def __init__(self, dialect: str, lock_rows: bool) -> None:
        def locked(query: Any) -> Any:
            return query.with_for_update(skip_locked=True) if lock_rows else query

        # ``enabled`` is checked on the rows read: in the WHERE clause it made SQLite walk the
        # (enabled, next_run_at) index instead of looking the ids up (a scan at 1M tasks)
        self.claimable = locked(select(*_SEND_COLUMNS).where(_among(_C.id, dialect)))
        self.flagged = locked(_FLAGGED)
        listed, by_token = _among(RUNS.c.id, dialect), RUNS.c.claim_token == bindparam("b_token")
        still_claimed = RUNS.c.state == CLAIMED
        now = bindparam("b_now", type_=RUNS.c.claimed_at.type)
        self.renew = update(RUNS).where(listed, by_token, still_claimed).values(claimed_at=now)
        self.still_mine = select(RUNS.c.id).where(listed, by_token, still_claimed)
        sent = {"state": SENT, "sent_at": now}
        self.mark_sent = update(RUNS).where(listed, by_token).values(**sent)
        self.mark_sent_any = update(RUNS).where(listed).values(**sent)


def _claim_all(
    connection: Connection, runs: list[Run], params: list[dict[str, Any]], identity: str, token: str,
    now: datetime,
) -> list[Run]:
    """Claim the due ``runs`` (``params``: their compare-and-set values) and log each one
    claimed, with its run-log id; the runs lost to another beat are left out. The rows are
    locked (or, on SQLite, the database is), so all match in practice."""
    if not runs:
        return []
    if connection.dialect.name == "postgresql":  # one statement for the whole batch
        ids = dict((task_pk, run_id) for run_id, task_pk in connection.execute(_CLAIM_ALL, {
            "b_now": now, "b_by": identity, "b_token": token,
            "v_id": _array_text(p["b_id"] for p in params),
            "v_slot": _array_text(_naive(p["b_slot"]) for p in params),
            "v_next": _array_text(_naive(p["b_next"]) for p in params),
            "v_enabled": _array_text(p["b_enabled"] for p in params),
            "v_task_id": _array_text(r.task_id for r in runs),
        }))
        claimed = [run for run in runs if run.task_pk in ids]
        for run in claimed:
            run.run_id = ids[run.task_pk]
        return claimed
    won = _advance(connection, [{**p, "b_now": now} for p in params])
    claimed = [run for run in runs if run.task_pk in won]
    _insert_runs(connection, claimed, identity, token, now)
    return claimed


def _advance(connection: Connection, params: list[dict[str, Any]]) -> set[int]:
    """The compare-and-set of ``_claim_all`` as one executemany; where its counted total
    falls short, the batch is undone and each row is tried alone."""
    if len(params) > 1 and connection.dialect.supports_sane_multi_rowcount:
        with connection.begin_nested() as savepoint:
            if connection.execute(_ADVANCE, params).rowcount == len(params):
                return {p["b_id"] for p in params}
            savepoint.rollback()
    return {p["b_id"] for p in params if connection.execute(_ADVANCE, p).rowcount == 1}


def _run_row(run: Run, state: str, identity: str, token: str, now: datetime) -> dict[str, Any]:
    """The run-log values of ``run``, in ``state``, written by ``identity`` at ``now``."""
    return {"periodic_task_id": run.task_pk, "periodic_task_name": run.name, "slot": run.slot,
            "task_id": run.task_id, "state": state, "sent_by": identity, "claim_token": token,
            "claimed_at": now}


def _insert_runs(
    connection: Connection, runs: Sequence[Run], identity: str, token: str, now: datetime,
) -> None:
    """Log the claimed ``runs``, in one batched statement where the database can say their
    ids in order, and give each its run-log id."""
    params = [_run_row(r, CLAIMED, identity, token, now) for r in runs]
    if len(params) > 1 and connection.dialect.insert_executemany_returning_sort_by_parameter_order:
        statement = _INSERT_RUN.returning(RUNS.c.id, sort_by_parameter_order=True)
        for run, run_id in zip(runs, connection.scalars(statement, params), strict=True):
            run.run_id = run_id
        return
    for run, values in zip(runs, params, strict=True):
        run.run_id = connection.execute(_INSERT_RUN, values).inserted_primary_key[0]  # type: ignore[index]


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


class Due(NamedTuple):
    """A run due soon, as the window holds it."""

    id: int
    next_run_at: datetime


class Window(NamedTuple):
    """What a sync reads: the runs due soon and what else needs doing."""

    due: Sequence[TaskRow | Due]
    flagged: bool
    #: when the oldest claim not yet confirmed as sent was made (None: there is none)
    oldest_claim: datetime | None
    #: enabled tasks whose ``next_run_at`` is no time beat can read (see ``park_unreadable``)
    unreadable: Sequence[int] = ()

    def stale(self, before: datetime) -> bool:
        """Whether a claim made before ``before`` is still unconfirmed."""
        return self.oldest_claim is not None and self.oldest_claim < before

    def changed(self, rows: Mapping[int, datetime | None], until: datetime) -> Window:
        """The window after ``rows`` got a new ``next_run_at`` (None: not due): what
        reading it again would give, without the query, when it was not truncated."""
        due = [r for r in self.due if r.id not in rows]
        due += [Due(pk, at) for pk, at in rows.items() if at is not None and at <= until]
        due.sort(key=lambda r: r.next_run_at)
        return Window(due, False, self.oldest_claim)


class Recomputed(NamedTuple):
    """What a recompute did: rows done, (name, reason) of those that cannot be
    scheduled, and the new ``next_run_at`` of each row done."""

    done: int
    errors: list[tuple[str, str]]
    changed: dict[int, datetime | None]


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
    #: runs not sent because they were past their misfire grace (logged as skipped)
    skipped: int = 0
    #: (task name, reason) for rows that could not be scheduled
    errors: list[tuple[str, str]] = field(default_factory=list)


class Store:
    """The scheduler's view of the database; each method is one short transaction."""

    def __init__(
        self, engine: Engine, identity: str, misfire_grace: float = 60.0,
        cron_starting_deadline: float | None = None,
    ) -> None:
        self.engine = engine
        self.identity = identity
        self.misfire_grace = misfire_grace
        self.cron_starting_deadline = cron_starting_deadline
        self._lock_rows = engine.dialect.name != "sqlite"  # SQLite: BEGIN IMMEDIATE instead
        self._dialect = engine.dialect.name
        self._sql = _Statements(self._dialect, self._lock_rows)
        #: the deployment id, part of every run id: read at the first claim
        self._deployment: str | None = None

    # -- reading --------------------------------------------------------------

    def window(self, until: datetime, limit: int) -> Window:
        """Enabled tasks due by ``until`` (at most ``limit``, earliest first), whether any
        task is flagged for recompute, and the time of the oldest claim never confirmed as
        sent: one statement, outside a transaction."""
        with outside_transaction(self.engine) as connection:
            rows = connection.execute(_WINDOW, {"until": until, "limit": limit, "beyond": _BEYOND}).all()
        due = [r for r in rows if r.probe == 0]
        unreadable = [r.id for r in rows if r.probe == 3]
        try:  # a value that is no time (plain SQL) is text: mixed with times, sorting raises
            due.sort(key=_next_run_at)
            readable_times = not due or type(due[0].next_run_at) is datetime
        except TypeError:
            readable_times = False
        if not readable_times:
            unreadable += [r.id for r in due if type(r.next_run_at) is not datetime]
            due = sorted((r for r in due if type(r.next_run_at) is datetime), key=_next_run_at)
        claims = [r.next_run_at for r in rows if r.probe == 2]
        return Window(due, any(r.probe == 1 for r in rows), claims[0] if claims else None, unreadable)

    def park_unreadable(self, ids: Sequence[int]) -> list[tuple[str, str]]:
        """Mark the tasks ``ids`` whose ``next_run_at`` is still no readable time as
        broken (``schedule_error``, no next run) so that no read meets them again;
        returns (name, reason) of each."""
        errors: list[tuple[str, str]] = []
        with begin_write(self.engine) as connection:
            query = select(_C.id, _C.name, _C.next_run_at).where(_C.id.in_(ids))
            if self._lock_rows:
                query = query.with_for_update()
            for row in connection.execute(query).all():
                try:
                    readable("next_run_at", row.next_run_at)
                    continue  # fixed meanwhile
                except ValidationError as exc:
                    reason = str(exc)
                connection.execute(
                    update(TASKS).where(_C.id == row.id).values(next_run_at=None, schedule_error=reason)
                )
                errors.append((row.name, reason))
        return errors

    # -- recompute ------------------------------------------------------------

    def retry_solar(self) -> int:
        """Flag for recompute the solar tasks broken only because ``ephem`` was missing,
        now that it is installed (a restart after ``pip install``); returns how many."""
        if not sched.has_ephem():
            return 0
        with begin_write(self.engine) as connection:
            return int(connection.execute(
                update(TASKS).where(_C.solar_id.is_not(None), _C.schedule_error == sched.MISSING_EPHEM)
                .values(needs_recompute=True)
            ).rowcount)

    def recompute(self, now: datetime, limit: int) -> Recomputed:
        """Give tasks flagged by a plain-SQL write a fresh ``next_run_at``."""
        errors: list[tuple[str, str]] = []
        changed: dict[int, datetime | None] = {}
        with begin_write(self.engine) as connection:
            rows = connection.execute(self._sql.flagged, {"limit": limit}).all()
            if not rows:
                return Recomputed(0, errors, changed)
            specs = _load_specs(connection, rows)
            params: list[dict[str, Any]] = []
            for row in rows:
                values: dict[str, Any] = {"b_id": row.id, "b_next": None, "b_error": None}
                try:
                    _parse_payload(row)
                    spec = _spec_of(row, specs)
                    if row.enabled:
                        values["b_next"] = sched.first_run(spec, now, row.last_run_at, row.start_time)
                except ROW_ERRORS as exc:
                    reason = str(row_error(TASKS.name, row.id, exc))
                    values.update(b_next=None, b_error=reason)
                    errors.append((row.name, reason))
                params.append(values)
                changed[row.id] = values["b_next"]
            connection.execute(_RECOMPUTED, params)
        return Recomputed(len(rows), errors, changed)

    # -- claim ----------------------------------------------------------------

    def claim(self, due: Sequence[tuple[int, datetime]], now: datetime) -> ClaimResult:
        """Claim the runs ``(task id, next_run_at seen)`` in one transaction and a handful
        of round trips, however many there are: each row is advanced only if its
        ``next_run_at`` is still the value seen (compare-and-set), and each claim is
        logged; a run lost to another beat is simply left out."""
        token = uuid.uuid4().hex
        result = ClaimResult(token=token)
        seen = dict(due)
        with begin_write(self.engine) as connection:
            rows = [
                r for r in connection.execute(self._sql.claimable, {"b_ids": _ids(seen, self._dialect)})
                if r.enabled and r.next_run_at == seen[r.id]
            ]
            if not rows:
                return result
            specs = _load_specs(connection, rows)
            deployment = self._deployment or self._read_deployment(connection)
            advanced: list[dict[str, Any]] = []
            parked: list[tuple[dict[str, Any], Run | None]] = []  # Run: a skipped run to log
            pending: list[Run] = []
            for row in rows:
                slot: datetime = row.next_run_at
                park: dict[str, Any] = {"b_id": row.id, "b_slot": slot, "b_next": None,
                                        "b_enabled": True, "b_error": None}
                try:
                    args, kwargs, options = _parse_payload(row)
                    spec = _spec_of(row, specs)
                    next_run = None if row.one_off else sched.after_run(spec, slot, now)
                except ROW_ERRORS as exc:
                    reason = str(row_error(TASKS.name, row.id, exc))
                    parked.append(({**park, "b_error": reason}, None))
                    result.errors.append((row.name, reason))
                    result.rescheduled.append((row.id, None))
                    continue
                if row.expires is not None and row.expires <= now:
                    parked.append(({**park, "b_enabled": False}, None))
                    logger.info("beat: task %r expired at %s; disabled it", row.name, row.expires.isoformat())
                    result.rescheduled.append((row.id, None))
                    continue
                enabled = not row.one_off and next_run is not None
                run = Run(
                    run_id=0, task_pk=row.id, name=row.name, task=row.task, slot=slot,
                    task_id=run_task_id(deployment, row.id, row.run_key, slot), args=args, kwargs=kwargs,
                    options=options, next_run_at=next_run,
                )
                grace = self._grace(row.misfire_policy, spec)
                if grace is not None and not sched.on_time(spec, slot, now, grace):
                    parked.append(({**park, "b_next": next_run, "b_enabled": enabled}, run))
                    result.rescheduled.append((row.id, next_run))
                    continue
                advanced.append({"b_id": row.id, "b_slot": slot, "b_next": next_run, "b_enabled": enabled})
                pending.append(run)
            for values, skipped in parked:  # rare: one statement each
                if connection.execute(_PARK, values).rowcount == 1 and skipped is not None:
                    self._log_skipped(connection, skipped, token, now)
                    result.skipped += 1
            result.runs = _claim_all(connection, pending, advanced, self.identity, token, now)
        return result

    def _read_deployment(self, connection: Connection) -> str:
        self._deployment = deployment_id(connection)
        return self._deployment

    def _grace(self, policy: str | None, spec: sched.Spec) -> float | None:
        """How late a run of this task may be and still be sent (None: any lateness)."""
        if policy == "skip":
            return self.misfire_grace
        if policy is None and isinstance(spec, sched.Cron):
            return self.cron_starting_deadline
        return None

    def _log_skipped(self, connection: Connection, run: Run, token: str, now: datetime) -> None:
        """Record a run its misfire policy skipped, so the run log can say why it never went."""
        connection.execute(_INSERT_RUN, _run_row(run, SKIPPED, self.identity, token, now))
        logger.info("beat: skipped the run of %r for %s: %.0fs late, past its misfire grace; next "
                    "run %s", run.name, run.slot.isoformat(), (now - run.slot).total_seconds(),
                    run.next_run_at.isoformat() if run.next_run_at else "none")

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
                if claim.started_at is not None:  # a worker has it: it was published after all
                    connection.execute(mine.values(state=SENT, sent_at=claim.started_at))
                    continue
                task = tasks.get(claim.periodic_task_id)
                try:
                    if task is None:
                        raise ValidationError("periodic_task_id", claim.periodic_task_id, "task deleted")
                    args, kwargs, options = _parse_payload(task)
                except ROW_ERRORS as exc:
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
        params = {"b_ids": _ids(run_ids, self._dialect), "b_token": token, "b_now": now}
        with begin_write(self.engine) as connection:
            connection.execute(self._sql.renew, params)
            return set(connection.scalars(self._sql.still_mine, params))

    def mark_sent(self, run_ids: Sequence[int], now: datetime, token: str | None = None) -> None:
        """Record that the broker accepted these runs (those still claimed with ``token``)."""
        if not run_ids:
            return
        params = {"b_ids": _ids(run_ids, self._dialect), "b_token": token, "b_now": now}
        with begin_write(self.engine) as connection:
            connection.execute(self._sql.mark_sent_any if token is None else self._sql.mark_sent, params)

    def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` run-log rows claimed before ``before``; returns how many."""
        with begin_write(self.engine) as connection:
            ids = list(connection.scalars(
                select(RUNS.c.id).where(RUNS.c.claimed_at < before).order_by(RUNS.c.claimed_at).limit(limit)
            ))
            if ids:
                connection.execute(delete(RUNS).where(RUNS.c.id.in_(ids)))
        return len(ids)

    # -- heartbeats -------------------------------------------------------------

    def heartbeat(self, values: Mapping[str, Any], prune_before: datetime | None = None) -> int:
        """Upsert this beat's row of ``beatsqlalchemy_beat`` (``values``: its columns); with
        ``prune_before``, delete the rows of beats last seen before then. Returns how many
        were deleted."""
        identity = values["identity"]
        changes = {key: value for key, value in values.items() if key != "identity"}
        with begin_write(self.engine) as connection:
            updated = connection.execute(update(BEATS).where(BEATS.c.identity == identity).values(changes))
            if updated.rowcount == 0:
                connection.execute(insert(BEATS).values(dict(values)))
            if prune_before is None:
                return 0
            return int(connection.execute(
                delete(BEATS).where(BEATS.c.last_seen < prune_before, BEATS.c.identity != identity)
            ).rowcount)


# -- row parsing ------------------------------------------------------------------

#: the stored text of an empty array or object, by far the most common args and kwargs
_EMPTY = {"[]": list, "{}": dict}


def _loads(field: str, raw: str | None, kind: type, default: Any) -> Any:
    if raw is None:
        return default
    empty = _EMPTY.get(raw)
    if empty is kind:
        return empty()
    value = parse_json(field, raw)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ValidationError(field, value, f"must be a JSON {'array' if kind is list else 'object'}")
    return value


def _parse_payload(row: TaskRow) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """args, kwargs and the apply_async options of a task row, validated: whatever the
    database let through (plain SQL) that cannot be sent raises ValidationError."""
    as_name("task", row.task)
    readable("last_run_at", row.last_run_at)
    readable("start_time", row.start_time)
    as_misfire_policy("misfire_policy", row.misfire_policy)
    args = _loads("args", row.args, list, [])
    kwargs = _loads("kwargs", row.kwargs, dict, {})
    options = build_options(
        _loads("extra_options", row.extra_options, dict, {}), _loads("headers", row.headers, dict, {}),
        queue=row.queue, exchange=row.exchange, routing_key=row.routing_key, priority=row.priority,
        expires=readable("expires", row.expires), expire_seconds=row.expire_seconds,
    )
    options["headers"][BEAT_HEADER] = True
    return args, kwargs, options


_SPEC_TABLES: dict[str, tuple[Table, Callable[[TaskRow], Any]]] = {
    kind: (_table(model), model.spec_of) for kind, model in SCHEDULE_MODELS.items()
}


#: the schedule rows of one kind, by id
_SPEC_ROWS = {
    kind: select(table).where(table.c.id.in_(bindparam("ids", expanding=True)))
    for kind, (table, _build) in _SPEC_TABLES.items()
}


def _load_specs(connection: Connection, rows: Sequence[TaskRow]) -> dict[tuple[str, int], Any]:
    """The schedules the rows use, keyed by (kind, id); a bad schedule maps to its error."""
    specs: dict[tuple[str, int], Any] = {}
    for kind in SCHEDULE_KINDS:
        ids = {getattr(r, f"{kind}_id") for r in rows} - {None}
        if not ids:
            continue
        build = _SPEC_TABLES[kind][1]
        for schedule_row in connection.execute(_SPEC_ROWS[kind], {"ids": list(ids)}):
            try:
                specs[kind, schedule_row.id] = build(schedule_row)
            except ROW_ERRORS as exc:
                specs[kind, schedule_row.id] = row_error(_SPEC_TABLES[kind][0].name, schedule_row.id, exc)
    return specs


def _spec_of(row: TaskRow, specs: dict[tuple[str, int], Any]) -> sched.Spec:
    ids = (row.interval_id, row.crontab_id, row.solar_id, row.clocked_id)  # SCHEDULE_KINDS' order
    kinds = [(kind, pk) for kind, pk in zip(SCHEDULE_KINDS, ids, strict=True) if pk is not None]
    if len(kinds) != 1:
        raise ValidationError("schedule", [k for k, _ in kinds] or None, "a task needs exactly one schedule")
    spec = specs.get(kinds[0])
    if spec is None:
        raise ValidationError(f"{kinds[0][0]}_id", kinds[0][1], "no such schedule")
    if isinstance(spec, ValidationError):
        raise spec
    return spec  # type: ignore[no-any-return]
