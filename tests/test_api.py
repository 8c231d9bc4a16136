"""Management API on every backend: options, beat_schedule installation, add/remove."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import Base, PeriodicTask
from beatsqlalchemy.runids import DEPLOYMENT_TABLE
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.store import Store
from harness.helpers import stored, task_count

UTC = timezone.utc
TASKS = PeriodicTask.__table__


def raw_row(engine: Engine, name: str) -> dict[str, Any]:
    """Every column of the task row, as the database has it."""
    with engine.connect() as connection:
        row = connection.execute(select(TASKS).where(TASKS.c.name == name)).mappings().one()
    return dict(row)


@contextmanager
def writes(engine: Engine) -> Iterator[list[str]]:
    """The INSERT/UPDATE/DELETE statements sent to the database inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# -- option_fields -----------------------------------------------------------------------

def test_option_fields_defaults_clear_expiry_and_extras() -> None:
    assert api.option_fields(None) == {"expires": None, "expire_seconds": None, "extra_options": None}
    assert api.option_fields({}) == {"expires": None, "expire_seconds": None, "extra_options": None}


@pytest.mark.parametrize(
    ("expires", "seconds"),
    [(60, 60), (90.7, 90), (timedelta(minutes=5), 300), (timedelta(hours=12), 43200)],
)
def test_option_fields_relative_expires_stays_relative(expires: Any, seconds: int) -> None:
    fields = api.option_fields({"expires": expires})
    assert fields["expire_seconds"] == seconds
    assert fields["expires"] is None


def test_option_fields_absolute_expires() -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    fields = api.option_fields({"expires": moment})
    assert fields["expires"] == moment
    assert fields["expire_seconds"] is None


def test_option_fields_bad_expires() -> None:
    with pytest.raises(ValidationError) as caught:
        api.option_fields({"expires": [1]})
    assert caught.value.field == "expires"
    assert "[1]" in str(caught.value)


def test_option_fields_routing_columns_and_extras() -> None:
    fields = api.option_fields({
        "queue": "q", "exchange": "ex", "routing_key": "rk", "priority": 7,
        "headers": {"h": 1}, "time_limit": 30, "soft_time_limit": 20, "countdown": 5,
    })
    assert fields == {
        "queue": "q", "exchange": "ex", "routing_key": "rk", "priority": 7, "headers": {"h": 1},
        "expires": None, "expire_seconds": None,
        "extra_options": {"time_limit": 30, "soft_time_limit": 20, "countdown": 5},
    }


def test_options_reach_the_stored_row(engine: Engine, session: Session) -> None:
    api.save_task(session, "opts", task="tasks.add", schedule=timedelta(seconds=10),
                  options={"queue": "q", "exchange": "ex", "routing_key": "rk", "priority": 200,
                           "headers": {"h": "v"}, "expires": timedelta(minutes=2),
                           "time_limit": 30})
    row = stored(engine, "opts")
    assert (row.queue, row.exchange, row.routing_key, row.priority) == ("q", "ex", "rk", 200)
    assert row.headers == {"h": "v"}
    assert row.expire_seconds == 120 and row.expires is None
    assert row.extra_options == {"time_limit": 30}
    # an absolute expiry replaces the relative one (never both)
    moment = datetime(2031, 1, 1, tzinfo=UTC)
    api.save_task(session, "opts", options={"expires": moment})
    row = stored(engine, "opts")
    assert row.expires == moment and row.expire_seconds is None
    assert row.extra_options is None


# -- install_config_schedule ------------------------------------------------------------------

def config_entries() -> dict[str, dict[str, Any]]:
    return {
        "add-every-10s": {
            "task": "tasks.add", "schedule": timedelta(seconds=10), "args": (16, 16),
            "options": {"queue": "q1", "expires": 30, "time_limit": 5},
        },
        "add-every-monday-morning": {
            "task": "tasks.add", "schedule": crontab(hour=7, minute=30, day_of_week=1),
            "args": (16, 16), "kwargs": {"k": 1},
        },
        "cron-string": {"task": "tasks.ping", "schedule": "*/5 * * * *", "description": "pings"},
    }


def test_install_marks_entries_as_config(engine: Engine, session: Session) -> None:
    assert api.install_config_schedule(session, config_entries()) == (3, 0)
    assert task_count(engine) == 3
    every = stored(engine, "add-every-10s")
    assert every.source == "config"
    assert every.task == "tasks.add"
    assert every.args == [16, 16]
    assert every.queue == "q1"
    assert every.expire_seconds == 30 and every.expires is None  # relative stays relative
    assert every.extra_options == {"time_limit": 5}
    assert every.schedule == schedule(timedelta(seconds=10))
    assert every.next_run_at is not None and every.enabled
    monday = stored(engine, "add-every-monday-morning")
    assert monday.source == "config"
    assert monday.crontab is not None
    assert (monday.crontab.minute, monday.crontab.hour, monday.crontab.day_of_week) == ("30", "7", "1")
    assert monday.kwargs == {"k": 1}
    assert monday.next_run_at is not None
    assert monday.next_run_at.weekday() == 0 and (monday.next_run_at.hour, monday.next_run_at.minute) == (
        7, 30
    )
    pinged = stored(engine, "cron-string")
    assert pinged.description == "pings"
    assert pinged.crontab is not None and pinged.crontab.minute == "*/5"


def test_install_again_writes_nothing(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    # one run claimed, as beat would, so there is run state to keep
    task = stored(engine, "add-every-10s")
    assert task.next_run_at is not None
    result = Store(engine, "test").claim([(task.id, task.next_run_at)],
                                         task.next_run_at + timedelta(seconds=1))
    assert len(result.runs) == 1
    before = {name: raw_row(engine, name) for name in config_entries()}
    assert before["add-every-10s"]["total_run_count"] == 1
    assert before["add-every-10s"]["last_run_at"] is not None

    with writes(engine) as statements:
        assert api.install_config_schedule(session, config_entries()) == (3, 0)
    assert statements == []
    after = {name: raw_row(engine, name) for name in config_entries()}
    assert after == before

    # the recorder does see a real change: new args are one UPDATE of one row
    changed = config_entries()
    changed["cron-string"]["args"] = [1]
    with writes(engine) as statements:
        api.install_config_schedule(session, changed)
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE CELERY_PERIODIC_TASK")
    assert raw_row(engine, "add-every-10s") == before["add-every-10s"]


def test_install_config_wins_for_what_it_defines(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    # someone edits the config-owned task in the database
    PeriodicTask.update_or_create(session, name="add-every-10s", task="tasks.other", args=[9],
                                  crontab="0 0 * * *", queue="elsewhere", expire_seconds=None,
                                  extra_options=None)
    edited = stored(engine, "add-every-10s")
    assert edited.task == "tasks.other" and edited.crontab_id is not None

    api.install_config_schedule(session, config_entries())
    restored = stored(engine, "add-every-10s")
    assert restored.task == "tasks.add"
    assert restored.args == [16, 16]
    assert restored.queue == "q1"
    assert restored.expire_seconds == 30
    assert restored.extra_options == {"time_limit": 5}
    assert restored.crontab_id is None
    assert restored.interval is not None
    assert (restored.interval.every, restored.interval.period) == (10, "seconds")


def test_install_keeps_a_task_disabled_in_the_database(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    PeriodicTask.update_or_create(session, name="add-every-monday-morning", enabled=False)
    assert stored(engine, "add-every-monday-morning").next_run_at is None

    api.install_config_schedule(session, config_entries())
    kept = stored(engine, "add-every-monday-morning")
    assert kept.enabled is False
    assert kept.next_run_at is None
    # ... also when the config changes the entry
    changed = config_entries()
    changed["add-every-monday-morning"]["args"] = (1, 2)
    api.install_config_schedule(session, changed)
    kept = stored(engine, "add-every-monday-morning")
    assert kept.enabled is False and kept.args == [1, 2]


def test_install_retires_entries_removed_from_config(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    smaller = config_entries()
    del smaller["cron-string"]
    assert api.install_config_schedule(session, smaller) == (2, 1)
    retired = stored(engine, "cron-string")
    assert retired.enabled is False
    assert retired.next_run_at is None
    assert stored(engine, "add-every-10s").enabled is True

    assert api.install_config_schedule(session, {}, remove_missing=True) == (0, 3)
    assert task_count(engine) == 0


def test_install_deletes_removed_entries_when_asked(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    smaller = config_entries()
    del smaller["add-every-10s"]
    assert api.install_config_schedule(session, smaller, remove_missing=True) == (2, 1)
    assert stored(engine, "add-every-10s") is None
    assert task_count(engine) == 2


def test_install_leaves_tasks_not_from_config_alone(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="mine", task="tasks.mine", interval=timedelta(hours=1),
                                  args=[1])
    PeriodicTask.update_or_create(session, name="paused", task="tasks.mine", crontab="0 3 * * *",
                                  enabled=False)
    before = {name: raw_row(engine, name) for name in ("mine", "paused")}
    api.install_config_schedule(session, config_entries(), remove_missing=True)
    api.install_config_schedule(session, {}, remove_missing=False)
    api.install_config_schedule(session, {}, remove_missing=True)
    assert {name: raw_row(engine, name) for name in ("mine", "paused")} == before
    assert task_count(engine) == 2


def test_install_skips_a_bad_entry(
    engine: Engine, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    entries: dict[str, dict[str, Any]] = {
        "bad-minute": {"task": "tasks.x", "schedule": "61 * * * *"},
        "no-task": {"schedule": timedelta(seconds=5)},
        "bad-args": {"task": "tasks.x", "schedule": timedelta(seconds=5), "args": "{not json"},
        "bad-schedule": {"task": "tasks.x", "schedule": "whenever"},
        **config_entries(),
        "bad-priority": {"task": "tasks.x", "schedule": timedelta(seconds=5),
                         "options": {"priority": 1000}},
    }
    with caplog.at_level(logging.ERROR, logger="beatsqlalchemy.api"):
        assert api.install_config_schedule(session, entries) == (3, 0)
    assert task_count(engine) == 3
    for name in config_entries():
        assert stored(engine, name).source == "config"
    for name in ("bad-minute", "no-task", "bad-args", "bad-schedule", "bad-priority"):
        assert stored(engine, name) is None
        assert any(name in record.getMessage() for record in caplog.records), name
    assert any("'61'" in record.getMessage() for record in caplog.records)


def test_install_a_bad_entry_keeps_the_existing_row(engine: Engine, session: Session) -> None:
    api.install_config_schedule(session, config_entries())
    before = raw_row(engine, "add-every-10s")
    broken = config_entries()
    broken["add-every-10s"]["schedule"] = "* 99 * * *"
    assert api.install_config_schedule(session, broken) == (2, 0)
    assert raw_row(engine, "add-every-10s") == before


# -- DatabaseScheduler.add / .remove without a running beat -------------------------------------

def test_scheduler_add_and_remove_like_redisbeat(engine: Engine, app: Celery) -> None:
    scheduler = DatabaseScheduler(app=app)
    scheduler.add(**{
        "name": "sub-perminute",
        "task": "tasks.sub",
        "schedule": timedelta(seconds=3),
        "args": (1, 1),
    })
    task = stored(engine, "sub-perminute")
    assert task.task == "tasks.sub"
    assert task.args == [1, 1]
    assert task.interval is not None and (task.interval.every, task.interval.period) == (3, "seconds")
    assert task.enabled and task.next_run_at is not None
    assert task.source is None

    # a second process (a new scheduler object) sees and removes it
    other = DatabaseScheduler(app=app)
    assert other.remove("sub-perminute") is True
    assert stored(engine, "sub-perminute") is None
    assert other.remove("sub-perminute") is False
    assert scheduler.remove("never-existed") is False


@pytest.mark.parametrize(
    ("schedule_value", "kind"),
    [
        (timedelta(minutes=15), "interval"),
        (schedule(timedelta(hours=2)), "interval"),
        (crontab(minute="*/5"), "crontab"),
        (crontab(minute=0, hour=4, day_of_week="mon-fri"), "crontab"),
        ("30 2 * * *", "crontab"),
    ],
)
def test_scheduler_add_accepts_schedules(
    engine: Engine, app: Celery, schedule_value: Any, kind: str
) -> None:
    scheduler = DatabaseScheduler(app=app)
    added = scheduler.add(name="dyn", task="tasks.dyn", schedule=schedule_value, args=[1],
                          kwargs={"a": "b"}, options={"queue": "dynq", "expires": 60})
    assert isinstance(added, PeriodicTask)
    task = stored(engine, "dyn")
    assert task.schedule_row is not None and task.schedule_row.kind == kind
    if kind == "interval":
        assert task.schedule == (schedule_value if isinstance(schedule_value, schedule)
                                 else schedule(schedule_value))
    else:
        expected = schedule_value if isinstance(schedule_value, crontab) else crontab(
            *schedule_value.split()
        )
        assert task.schedule.minute == expected.minute  # type: ignore[attr-defined]
        assert task.schedule.hour == expected.hour  # type: ignore[attr-defined]
        assert task.schedule.day_of_week == expected.day_of_week  # type: ignore[attr-defined]
    assert (task.args, task.kwargs, task.queue, task.expire_seconds) == ([1], {"a": "b"}, "dynq", 60)
    assert task.next_run_at is not None and task.next_run_at > sched.utcnow()


def test_scheduler_add_updates_by_name(engine: Engine, app: Celery) -> None:
    scheduler = DatabaseScheduler(app=app)
    scheduler.add(name="dyn", task="tasks.dyn", schedule=timedelta(seconds=30), args=[1])
    first = stored(engine, "dyn")
    scheduler.add(name="dyn", task="tasks.dyn2", schedule="0 4 * * *", enabled=False)
    second = stored(engine, "dyn")
    assert second.id == first.id
    assert second.task == "tasks.dyn2"
    assert second.crontab is not None and second.interval_id is None
    assert second.enabled is False and second.next_run_at is None
    assert second.args == [1]
    assert task_count(engine) == 1
    scheduler.add(name="dyn", enabled=True)
    assert stored(engine, "dyn").next_run_at is not None


def test_scheduler_add_refuses_bad_values(engine: Engine, app: Celery) -> None:
    scheduler = DatabaseScheduler(app=app)
    with pytest.raises(ValidationError) as caught:
        scheduler.add(name="bad", task="tasks.bad", schedule="* * * * 9")
    assert caught.value.field == "day_of_week"
    with pytest.raises(ValueError, match="args"):
        scheduler.add(name="bad", task="tasks.bad", schedule=timedelta(seconds=1), args={"a": 1})
    assert task_count(engine) == 0
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name != DEPLOYMENT_TABLE:
                assert connection.execute(select(func.count()).select_from(table)).scalar_one() == 0


def test_remove_task_and_save_task_directly(engine: Engine, session: Session) -> None:
    saved = api.save_task(session, "direct", task="tasks.d", schedule="*/10 * * * *", args='[1, "x"]',
                          kwargs='{"y": 2}', enabled=True, description="made directly")
    assert saved.id is not None
    row = stored(engine, "direct")
    assert (row.args, row.kwargs, row.description) == ([1, "x"], {"y": 2}, "made directly")
    assert api.remove_task(session, "direct") is True
    assert api.remove_task(session, "direct") is False
    assert task_count(engine) == 0
