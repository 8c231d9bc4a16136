"""What ``beatsqlalchemy status`` and ``health`` read: beats alive and gone, tasks overdue,
claims never confirmed, broken tasks and failing tasks, each from an index and capped (a
count never walks a million rows: "1000+" and the first few names).

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``); ``api.status``
is the public door.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, true

from .constants import CLAIMED
from .exceptions import ValidationError
from .models import BeatRecord, PeriodicTask, PeriodicTaskRun
from .schedules import utcnow

#: counts stop here: a status never reads more rows than this per finding
COUNT_CAP = 1000
#: names shown per finding
NAMES_SHOWN = 5
#: defaults of the thresholds (seconds)
MAX_AGE = 30.0
GRACE = 60.0


@dataclass(frozen=True)
class Capped:
    """How many rows a finding has (at most ``COUNT_CAP``; ``more``: there are more) and the
    names of the first few."""

    count: int = 0
    more: bool = False
    names: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.count}+" if self.more else str(self.count)

    def __bool__(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class BeatInfo:
    """One beat, as its last heartbeat left it."""

    identity: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen: datetime
    runs_sent: int
    outage_since: datetime | None
    outage_ended: datetime | None
    outage_reason: str | None
    #: seen within ``max_age``
    alive: bool
    #: seconds since it was last seen
    age: float

    @property
    def in_outage(self) -> bool:
        """Its last heartbeat was written during a database outage (the heartbeat got
        through, something else did not: a missing grant, say)."""
        return self.outage_since is not None and self.outage_ended is None


@dataclass(frozen=True)
class Status:
    """The state of the schedule database and of the beats that use it."""

    checked_at: datetime
    max_age: float
    grace: float
    claim_timeout: float
    beats: list[BeatInfo]
    #: enabled tasks whose ``next_run_at`` is more than ``grace`` in the past
    overdue: Capped
    #: runs claimed more than ``claim_timeout`` ago and never confirmed as sent
    unconfirmed: Capped
    #: enabled tasks beat cannot schedule (``schedule_error``)
    broken: Capped
    #: tasks whose recent runs failed on the workers (see ``failing_tasks``)
    failing: Capped

    @property
    def alive(self) -> list[BeatInfo]:
        return [b for b in self.beats if b.alive]

    @property
    def gone(self) -> list[BeatInfo]:
        return [b for b in self.beats if not b.alive]


def status(
    connection: Connection, *, max_age: float = MAX_AGE, grace: float = GRACE, claim_timeout: float = 30.0,
    now: datetime | None = None,
) -> Status:
    """Read the status: a handful of indexed queries, each capped."""
    for name, value in (("max_age", max_age), ("grace", grace), ("claim_timeout", claim_timeout)):
        seconds(name, value)
    now = now or utcnow()
    tasks, runs = PeriodicTask.__table__.c, PeriodicTaskRun.__table__.c
    overdue = _capped(
        connection, select(tasks.name).where(tasks.enabled == true(),
                                             tasks.next_run_at < now - timedelta(seconds=grace)),
        tasks.next_run_at,
    )
    unconfirmed = _capped(
        connection, select(runs.periodic_task_name).where(
            runs.state == CLAIMED, runs.claimed_at < now - timedelta(seconds=claim_timeout)),
        runs.claimed_at,
    )
    broken = _capped(  # a broken row has no next run: a seek on (enabled, next_run_at)
        connection, select(tasks.name).where(tasks.enabled == true(), tasks.next_run_at.is_(None),
                                             tasks.schedule_error.is_not(None)),
        tasks.name, count_in_order=False,  # no index gives names in order among the broken
    )
    return Status(
        checked_at=now, max_age=max_age, grace=grace, claim_timeout=claim_timeout,
        beats=beats(connection, max_age, now), overdue=overdue, unconfirmed=unconfirmed, broken=broken,
        failing=failing_tasks(connection),
    )


def beats(connection: Connection, max_age: float, now: datetime) -> list[BeatInfo]:
    """Every beat with a heartbeat row (gone ones are pruned after a day), most recent first."""
    found: list[BeatInfo] = []
    table = BeatRecord.__table__
    for row in connection.execute(select(table).order_by(table.c.last_seen.desc())):
        age = (now - row.last_seen).total_seconds() if isinstance(row.last_seen, datetime) else float("inf")
        found.append(BeatInfo(
            identity=row.identity, host=row.host, pid=row.pid, version=row.version,
            started_at=row.started_at, last_seen=row.last_seen, runs_sent=row.runs_sent,
            outage_since=row.outage_since, outage_ended=row.outage_ended, outage_reason=row.outage_reason,
            alive=age <= max_age, age=max(age, 0.0),
        ))
    return found


def failing_query(columns: Any, min_failures: int = 1) -> Any:
    """``columns`` of the tasks whose latest ``min_failures`` runs or more all failed on the
    workers (``api.failing_tasks`` reads it too), in ``failing_order()``."""
    tasks = PeriodicTask.__table__.c
    return select(columns).where(tasks.consecutive_failures >= min_failures).order_by(*failing_order())


def failing_order() -> tuple[Any, ...]:
    """Most failures first, then the most recent."""
    tasks = PeriodicTask.__table__.c
    return tasks.consecutive_failures.desc(), tasks.last_outcome_at.desc(), tasks.name


def failing_tasks(connection: Connection) -> Capped:
    """Tasks whose latest run failed on the workers (one failure in a row or more, as the
    workers with ``beat_sqlalchemy_track_outcomes`` record them)."""
    query = failing_query(PeriodicTask.__table__.c.name).order_by(None)
    return _capped(connection, query, *failing_order())


def seconds(name: str, value: Any) -> float:
    """A threshold in seconds: a finite number, zero or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValidationError(name, value, "must be a number of seconds, zero or more")
    return float(value)


def _capped(connection: Connection, query: Any, *order: Any, count_in_order: bool = True) -> Capped:
    """How many rows ``query`` (one name column) has, up to ``COUNT_CAP`` (one more is
    read to know there are more), and the first ``NAMES_SHOWN`` names by ``order``. With
    ``count_in_order``, the count reads in that order too: when an index gives it, a
    planner without statistics walks the index rather than the table."""
    limited = (query.order_by(*order) if count_in_order else query).limit(COUNT_CAP + 1).subquery()
    count = int(connection.execute(select(func.count()).select_from(limited)).scalar_one())
    if not count:
        return Capped()
    names = [str(name) for name in connection.scalars(query.order_by(*order).limit(NAMES_SHOWN))]
    return Capped(min(count, COUNT_CAP), count > COUNT_CAP, names)
