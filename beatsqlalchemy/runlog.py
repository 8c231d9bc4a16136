"""The workers' writes to the run log: a beat run's start, found by its task id, and how it
ended, with its task's summary (latest outcome, latest success, failures in a row) in the
same transaction. Each is one short transaction: one statement, on PostgreSQL, in autocommit
mode (one round trip); the statements are built once.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, bindparam, case, column, func, select, table, update

from . import schedules as sched
from .constants import ERROR_LENGTH, FAILURES, STARTED, SUCCEEDED
from .db import begin_write, outside_transaction
from .models import PeriodicTaskRun, UTCDateTime

__all__ = ["error_text", "finish", "start"]

RUNS: Table = PeriodicTaskRun.__table__  # type: ignore[assignment]
#: the task table's outcome columns alone: an update of these sets nothing else (no
#: ``date_changed``), so it moves no schedule and, on PostgreSQL, wakes no beat
_TASKS = table(
    "celery_periodic_task", column("id"), column("last_outcome"),
    column("last_outcome_at", UTCDateTime()), column("last_success_at", UTCDateTime()),
    column("consecutive_failures"),
)


def _b(name: str, column: Any) -> Any:
    return bindparam(name, type_=column.type)


@functools.cache
def _start_statement(first: bool, track: bool) -> Any:
    """The UPDATE recording a start (see ``start``), built once."""
    values: dict[str, Any] = {}
    where = [RUNS.c.task_id == _b("b_task_id", RUNS.c.task_id)]
    if track:
        values.update(outcome=STARTED, worker=_b("b_worker", RUNS.c.worker),
                      retries=_b("b_retries", RUNS.c.retries))
    if first:
        where.append(RUNS.c.started_at.is_(None))
        values.update(started_at=_b("b_now", RUNS.c.started_at), started_by=_b("b_worker", RUNS.c.started_by))
    return update(RUNS).where(*where).values(**values)


_STARTED_BEFORE = select(func.count()).select_from(RUNS).where(
    RUNS.c.task_id == bindparam("b_task_id"), RUNS.c.started_at.is_not(None))


def start(engine: Engine, task_id: str, worker: str, now: datetime, *, first: bool = True,
          track: bool = False, retries: int = 0) -> bool:
    """Record that ``worker`` starts the run ``task_id`` (one statement, its own transaction).
    ``first``: its first delivery, whose start is recorded once (compare-and-set); returns
    False when another start was recorded first (this copy is a duplicate). A task id the run
    log does not know (pruned, not a beat run) may start. ``track``: also record the outcome
    ``started`` and the attempt's worker and retries."""
    params = {"b_task_id": task_id, "b_worker": worker, "b_now": now, "b_retries": retries}
    with outside_transaction(engine) as connection:
        if connection.execute(_start_statement(first, track), params).rowcount or not first:
            return True
        return connection.scalar(_STARTED_BEFORE, params) == 0


def _summary(outcome: str) -> dict[str, Any]:
    """The task columns an ``outcome`` sets (bound: ``b_now``)."""
    now = _b("b_now", _TASKS.c.last_outcome_at)
    failures = _TASKS.c.consecutive_failures
    summary: dict[str, Any] = {"last_outcome": outcome, "last_outcome_at": now}
    if outcome == SUCCEEDED:
        summary.update(last_success_at=now, consecutive_failures=0)
    elif outcome in FAILURES:  # a full INTEGER column (plain SQL) stays full
        summary["consecutive_failures"] = case((failures < sched.INT32_MAX, failures + 1), else_=failures)
    return summary


@functools.cache
def _finish_statements(outcome: str, dialect: str) -> tuple[Any, ...]:
    """The statements recording an end (see ``finish``), built once: on PostgreSQL one
    (the run's row updated in a CTE the task's update reads), elsewhere two."""
    ended = (
        update(RUNS).where(RUNS.c.task_id == _b("b_task_id", RUNS.c.task_id))
        .values(outcome=_b("b_outcome", RUNS.c.outcome), worker=_b("b_worker", RUNS.c.worker),
                finished_at=_b("b_now", RUNS.c.finished_at), runtime=_b("b_runtime", RUNS.c.runtime),
                error=_b("b_error", RUNS.c.error))
    )
    if dialect == "postgresql":
        run = ended.returning(RUNS.c.periodic_task_id).cte("ended")
        return (update(_TASKS).where(_TASKS.c.id == run.c.periodic_task_id).values(**_summary(outcome)),)
    of_run = select(RUNS.c.periodic_task_id).where(RUNS.c.task_id == bindparam("b_task_id"))
    task_pk = of_run.scalar_subquery()
    return ended, update(_TASKS).where(_TASKS.c.id == task_pk).values(**_summary(outcome))


def finish(engine: Engine, task_id: str, outcome: str, worker: str, now: datetime,
           runtime: float | None = None, error: str | None = None) -> bool:
    """Record how the run ``task_id`` ended, and its task's latest outcome, latest success
    and failures in a row, in one transaction; False when the run log does not know the run
    (or, on PostgreSQL, its task is gone)."""
    params = {"b_task_id": task_id, "b_outcome": outcome, "b_worker": worker, "b_now": now,
              "b_runtime": runtime, "b_error": error}
    statements = _finish_statements(outcome, engine.dialect.name)
    if len(statements) == 1:  # one statement: a transaction of its own, one round trip
        with outside_transaction(engine) as connection:
            return bool(connection.execute(statements[0], params).rowcount)
    ended, summed = statements
    with begin_write(engine) as connection:
        if not connection.execute(ended, params).rowcount:
            return False
        connection.execute(summed, params)
    return True


def error_text(exc: BaseException, limit: int = ERROR_LENGTH) -> str:
    """``module.Type: first line of the message``, at most ``limit`` characters, storable by
    every database (no NUL, no lone surrogate); a message that cannot be read is said so."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else \
        f"{kind.__module__}.{kind.__qualname__}"
    try:
        lines = str(exc).strip().splitlines()
        message = lines[0].strip() if lines else ""
    except Exception:  # a broken __str__ must not lose the outcome
        message = "<message unreadable>"
    text = f"{name}: {message}" if message else name
    text = text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 1] + "…"
