"""An api function that commits commits only its own work: handed a session holding the
caller's uncommitted ORM changes, it refuses and leaves them to the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db
from beatsqlalchemy.exceptions import PendingChanges
from beatsqlalchemy.models import IntervalSchedule, PeriodicTask

EVERY_10S = {"every": 10, "period": "seconds"}

WRITES: dict[str, Callable[[Session], Any]] = {
    "save_task": lambda s: api.save_task(s, "mine", task="tasks.mine", interval=EVERY_10S),
    "create_task": lambda s: api.create_task(s, "mine", "tasks.mine", interval=EVERY_10S),
    "update_task": lambda s: api.update_task(s, "stored", description="changed"),
    "remove_task": lambda s: api.remove_task(s, "stored"),
    "delete_task": lambda s: api.delete_task(s, "stored"),
    "disable_task": lambda s: api.disable_task(s, "stored"),
    "import_tasks": lambda s: api.import_tasks(s, [{"name": "mine", "task": "tasks.mine",
                                                   "interval": EVERY_10S}]),
}


def _names(engine: Engine) -> list[str]:
    with db.session_factory(engine)() as other:
        return sorted(other.scalars(select(PeriodicTask.name)))


def _callers_work(session: Session, how: str) -> None:
    if how == "pending":
        every_20s = IntervalSchedule(every=20, period="seconds")
        session.add(PeriodicTask(name="callers", task="tasks.c", interval=every_20s))
    else:  # flushed in the caller's transaction, not committed
        PeriodicTask.update_or_create(session, name="callers", task="tasks.c",
                                      interval={"every": 20, "period": "seconds"}, commit=False)


@pytest.mark.parametrize("how", ["pending", "flushed"])
@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_never_commits_the_callers_changes(engine: Engine, session: Session, write: str,
                                                   how: str) -> None:
    api.save_task(session, "stored", task="tasks.s", interval=EVERY_10S)
    _callers_work(session, how)
    with pytest.raises(PendingChanges):
        WRITES[write](session)
    assert _names(engine) == ["stored"]  # neither the caller's row nor the api's
    assert session.scalars(select(PeriodicTask.name).where(PeriodicTask.name == "callers")).all() == [
        "callers"]  # the caller's work is left to the caller
    session.rollback()
    assert _names(engine) == ["stored"]


def test_a_write_after_a_read_still_commits(engine: Engine, session: Session) -> None:
    session.scalars(select(PeriodicTask)).all()
    api.save_task(session, "mine", task="tasks.mine", interval=EVERY_10S)
    assert _names(engine) == ["mine"]
