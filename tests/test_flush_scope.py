"""Our checks run on every ORM write of our rows, from any session, and on nothing else:
a host application's flush of its own models runs none of this package's code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from sqlalchemy import Engine, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import beatsqlalchemy
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import IntervalSchedule, PeriodicTask

PACKAGE = str(Path(beatsqlalchemy.__file__).parent)


class HostBase(DeclarativeBase):
    """The host application's own declarative base."""


class Note(HostBase):
    __tablename__ = "host_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(50))


def _calls_into_package(work: Any) -> list[str]:
    """The functions of this package that run while ``work()`` runs."""
    seen: list[str] = []

    def profile(frame: FrameType, what: str, _arg: Any) -> None:
        if what == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            seen.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return seen


def test_no_session_wide_flush_hook_of_ours() -> None:
    """Our checks are mapper events of our models, not listeners on every Session."""
    with Session() as session:
        for name in ("before_flush", "after_flush", "after_flush_postexec"):
            listeners = list(getattr(session.dispatch, name))
            assert [fn for fn in listeners if fn.__module__.startswith("beatsqlalchemy")] == []


def test_a_host_flush_of_its_own_model_runs_none_of_our_code() -> None:
    host = create_engine("sqlite://")
    HostBase.metadata.create_all(host)
    with Session(host) as session:
        session.add(Note(text="hello"))
        called = _calls_into_package(session.flush)
        session.commit()
        assert session.scalars(select(Note.text)).all() == ["hello"]
    host.dispose()
    assert called == []


@pytest.fixture
def host_engine(db_url: str) -> Iterator[Engine]:
    """The host application's own engine on our tables (not made by this package)."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("fields", [
    {"name": "host.none"},  # no schedule
    {"name": "host.both", "expires": sched.utcnow() + timedelta(days=1), "expire_seconds": 5,
     "interval": IntervalSchedule(every=10, period="seconds")},
    {"name": "host.two", "one_off": False, "interval": IntervalSchedule(every=10, period="seconds"),
     "crontab_id": 1},
])
def test_a_host_session_writing_a_bad_task_gets_our_validation_error(
        host_engine: Engine, fields: dict[str, Any]) -> None:
    with Session(host_engine) as session:
        session.add(PeriodicTask(task="tasks.a", **fields))
        with pytest.raises(ValidationError):
            session.commit()
        session.rollback()
        assert session.scalars(select(PeriodicTask.name)).all() == []


def test_a_host_session_writing_our_task_schedules_it_and_a_change_moves_it(host_engine: Engine) -> None:
    with Session(host_engine) as session:
        task = PeriodicTask(name="host.b", task="tasks.b",
                            interval=IntervalSchedule(every=1, period="days"))
        session.add(task)
        session.commit()
        first = task.next_run_at
        assert first is not None and first <= sched.utcnow() + timedelta(days=1)
        task.interval = IntervalSchedule(every=5, period="seconds")
        session.commit()
        assert task.next_run_at is not None and task.next_run_at < first
