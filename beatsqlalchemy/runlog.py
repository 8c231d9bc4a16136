"""The workers' writes to the run log: a beat run's start, found by its task id, and how it
ended, with its task's summary (latest outcome, latest success, failures in a row) in the
same transaction. Each is one short transaction.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Table, case, column, func, select, table, update

from . import schedules as sched
from .constants import ERROR_LENGTH, FAILURES, STARTED, SUCCEEDED
from .db import begin_write
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


def start(engine: Engine, task_id: str, worker: str, now: datetime, *, first: bool = True,
          track: bool = False, retries: int = 0) -> bool:
    """Record that ``worker`` starts the run ``task_id``. ``first``: its first delivery, whose
    start is recorded once (compare-and-set); returns False when another start was recorded
    first (this copy is a duplicate). A task id the run log does not know (pruned, not a
    beat run) may start. ``track``: also record the outcome ``started`` and the attempt."""
    attempt = {"outcome": STARTED, "worker": worker, "retries": retries} if track else {}
    with begin_write(engine) as connection:
        if not first:
            connection.execute(update(RUNS).where(RUNS.c.task_id == task_id).values(**attempt))
            return True
        started = connection.execute(
            update(RUNS).where(RUNS.c.task_id == task_id, RUNS.c.started_at.is_(None))
            .values(started_at=now, started_by=worker, **attempt)
        )
        if started.rowcount:
            return True
        return connection.scalar(select(func.count()).select_from(RUNS).where(
            RUNS.c.task_id == task_id, RUNS.c.started_at.is_not(None))) == 0


def finish(engine: Engine, task_id: str, outcome: str, worker: str, now: datetime,
           runtime: float | None = None, error: str | None = None) -> bool:
    """Record how the run ``task_id`` ended, and its task's latest outcome, latest success
    and failures in a row; False when the run log does not know the run."""
    with begin_write(engine) as connection:
        ended = connection.execute(
            update(RUNS).where(RUNS.c.task_id == task_id)
            .values(outcome=outcome, worker=worker, finished_at=now, runtime=runtime, error=error)
        )
        if not ended.rowcount:
            return False
        failures = _TASKS.c.consecutive_failures
        summary: dict[str, object] = {"last_outcome": outcome, "last_outcome_at": now}
        if outcome == SUCCEEDED:
            summary.update(last_success_at=now, consecutive_failures=0)
        elif outcome in FAILURES:  # a full INTEGER column (plain SQL) stays full
            summary["consecutive_failures"] = case((failures < sched.INT32_MAX, failures + 1), else_=failures)
        task_pk = select(RUNS.c.periodic_task_id).where(RUNS.c.task_id == task_id).scalar_subquery()
        connection.execute(update(_TASKS).where(_TASKS.c.id == task_pk).values(**summary))
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
