"""Small helpers the tests share: read what the database holds, empty it, check the pool,
tick a scheduler as celery beat does, and print a line in the run's summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, func, select

from beatsqlalchemy import db
from beatsqlalchemy.models import Base, Deployment, PeriodicTask
from beatsqlalchemy.runids import DEPLOYMENT_TABLE, run_task_id
from beatsqlalchemy.schedulers import DatabaseScheduler

if TYPE_CHECKING:
    import pytest

#: the longest a tick loop sleeps between two ticks (seconds)
TICK_SLEEP = 0.02


# -- reading the database -----------------------------------------------------------------------

def stored(engine: Engine, name: str) -> PeriodicTask | None:
    """The task ``name`` as the database has it, read in a new session (None when absent)."""
    with db.session_factory(engine)() as session:
        task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).one_or_none()
        session.expunge_all()
        return task


def fresh(engine: Engine, name: str) -> PeriodicTask:
    """The task ``name`` as stored, read in a new session; it must exist."""
    task = stored(engine, name)
    assert task is not None, f"no task {name!r}"
    return task


def task_count(engine: Engine) -> int:
    """How many task rows the database holds."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(PeriodicTask)).scalar_one())


def task_id_of(engine: Engine, task_pk: int, slot: datetime) -> str:
    """The Celery task id of the run of row ``task_pk`` for ``slot``: from the database's
    deployment id and the row's run key, read with plain queries."""
    with engine.connect() as connection:
        deployment = connection.execute(select(Deployment.id)).scalar_one()
        key = connection.execute(select(PeriodicTask.run_key).where(PeriodicTask.id == task_pk)).scalar_one()
    return run_task_id(deployment, task_pk, key, slot)


def clear_tables(engine: Engine) -> None:
    """Delete every row of our tables, children first (the deployment id stays)."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != DEPLOYMENT_TABLE:
                connection.execute(delete(table))


def assert_no_leaks(engine: Engine) -> None:
    """Every pooled connection has been returned."""
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    assert checked_out == 0, f"{checked_out} connection(s) were not returned to the pool"


# -- ticking ------------------------------------------------------------------------------------

def _tick(schedulers: tuple[DatabaseScheduler, ...]) -> float:
    """One tick of each scheduler; the shortest wait they ask for."""
    wait = min(scheduler.tick() for scheduler in schedulers)
    assert wait >= 0
    return wait


def tick_for(scheduler: DatabaseScheduler, seconds: float, *others: DatabaseScheduler) -> None:
    """Tick as celery beat does (sleeping what tick() asks, capped) for ``seconds``; with
    ``others``, every scheduler in turn."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(_tick((scheduler, *others)), TICK_SLEEP, left))


def tick_until(scheduler: DatabaseScheduler, condition: Callable[[], bool], timeout: float = 10,
               *others: DatabaseScheduler) -> float:
    """Tick (with ``others``, every scheduler in turn) until ``condition`` holds; returns how
    long it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout}s"
        time.sleep(min(_tick((scheduler, *others)), TICK_SLEEP))
    return time.monotonic() - start


# -- reporting ----------------------------------------------------------------------------------

def print_in_summary(config: pytest.Config, line: str) -> None:
    """Write ``line`` to the terminal past pytest's output capture (a module's closing count)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
