"""Writes on a session the caller already used: no SQLAlchemy warning, the caller's
transaction is neither split nor ended behind its back."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy.models import PeriodicTask

EVERY_10S = {"every": 10, "period": "seconds"}


@pytest.fixture(autouse=True)
def _warnings_are_errors() -> None:
    warnings.simplefilter("error")


def test_update_or_create_after_a_read_gives_no_warning(session: Session) -> None:
    session.scalars(select(PeriodicTask)).all()  # an open read transaction
    task, created = PeriodicTask.update_or_create(session, name="a", task="tasks.a", interval=EVERY_10S)
    assert created and task.id is not None
    session.scalars(select(PeriodicTask)).all()
    task, created = PeriodicTask.update_or_create(session, name="a", description="changed")
    assert not created and task.description == "changed"


def test_update_or_create_twice_in_one_transaction_gives_no_warning(session: Session) -> None:
    """commit=False twice, as ``import_tasks`` does: one transaction, rolled back as one."""
    PeriodicTask.update_or_create(session, name="a", task="tasks.a", interval=EVERY_10S, commit=False)
    PeriodicTask.update_or_create(session, name="b", task="tasks.b", interval=EVERY_10S, commit=False)
    session.rollback()
    assert session.scalars(select(PeriodicTask.name)).all() == []


def test_api_writes_after_reads_give_no_warning(session: Session) -> None:
    api.create_task(session, "a", "tasks.a", interval=EVERY_10S)
    api.list_tasks(session)
    api.update_task(session, "a", description="x")
    api.get_task(session, "a")
    api.import_tasks(session, [{"name": "b", "task": "tasks.b", "interval": EVERY_10S},
                               {"name": "c", "task": "tasks.c", "interval": EVERY_10S}])
    api.disable_tasks(session, ["a", "b"])
    assert sorted(session.scalars(select(PeriodicTask.name))) == ["a", "b", "c"]
