"""Every column of the task table and of the four schedule tables, given values of the
wrong kind (text for a number, a number for text, a list, a dict, None where one is
required, a bool for a number, NaN, an int past INTEGER, a negative number) through the
ORM constructor, attribute assignment, ``update_or_create``, ``api.create_task`` and
``api.update_task``: a value that is not one the column takes is refused with a
ValidationError naming the column and nothing is written; a value it takes is stored. A
database error is never the answer."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import SCHEDULE_MODELS, PeriodicTask
from harness.helpers import clear_tables

from .test_bad_input import LATER, TRIED, stored_state
from .test_bad_input import _summary as _summary  # the count of bad inputs tried, at the end

WRONG: dict[str, Any] = {
    "str": "x", "int": 7, "list": [1], "dict": {"a": 1}, "none": None, "bool": True,
    "nan": math.nan, "huge": 2**31, "negative": -5,
}
#: for each column, the labels of WRONG that are values it takes (they may be stored, or
#: be refused for a reason that spans several fields); every other label must be refused
#: with a ValidationError naming the column
TAKES: dict[str, dict[str, set[str]]] = {
    "periodic_task": {
        "id": {"int", "none"}, "name": {"str"}, "task": {"str"},
        "interval_id": {"int", "none"}, "crontab_id": {"int", "none"}, "solar_id": {"int", "none"},
        "clocked_id": {"int", "none"},
        "args": {"list", "none"}, "kwargs": {"dict", "none"}, "headers": {"dict", "none"},
        "extra_options": {"dict", "none"},
        "queue": {"str", "none"}, "exchange": {"str", "none"}, "routing_key": {"str", "none"},
        "priority": {"int", "none"}, "expire_seconds": {"int", "none"},
        "expires": {"none"}, "start_time": {"none"}, "last_run_at": {"none"}, "next_run_at": {"none"},
        "date_changed": {"none"},
        "one_off": {"bool"}, "enabled": {"bool"}, "needs_recompute": {"bool"},
        "total_run_count": {"int"}, "description": {"str", "none"},
        "source": {"none"}, "schedule_error": {"none"}, "misfire_policy": {"none"}, "run_key": set(),
        # the workers' own (run outcomes): refused whatever the value
        "last_outcome": set(), "last_outcome_at": set(), "last_success_at": set(),
        "consecutive_failures": set(),
    },
    "interval": {"id": {"int", "none"}, "every": {"int"}, "period": set()},
    "crontab": {"id": {"int", "none"}, "minute": {"int"}, "hour": {"int"}, "day_of_week": {"int"},
                "day_of_month": {"int"}, "month_of_year": {"int"}, "timezone": set()},
    "solar": {"id": {"int", "none"}, "event": set(), "latitude": {"int", "negative"},
              "longitude": {"int", "negative"}},
    "clocked": {"id": {"int", "none"}, "clocked_time": set()},
}
VALID: dict[str, dict[str, Any]] = {
    "interval": {"every": 10, "period": "seconds"},
    "crontab": {"minute": "0", "hour": "4", "timezone": "Europe/Berlin"},
    "solar": {"event": "sunrise", "latitude": 52.5, "longitude": 13.4},
    "clocked": {"clocked_time": LATER},
}
#: the task of each schedule kind the changes are tried on
EXISTING = {"interval": "existing", "crontab": "cron", "solar": "sun", "clocked": "clock"}
DOORS = ("constructor", "assignment", "update_or_create", "api.create_task", "api.update_task")
#: (door, column, label) the API reads as "not given": save_task(enabled=None) keeps the task
#: enabled as it is, update_task(task=None) keeps its Celery task
NOT_GIVEN = {("api.create_task", "enabled", "none"), ("api.update_task", "enabled", "none"),
             ("api.update_task", "task", "none")}
def test_every_column_is_in_the_sweep() -> None:
    """A new column needs a line in TAKES (and a validator)."""
    assert set(TAKES["periodic_task"]) == set(PeriodicTask.__table__.columns.keys())
    for kind, model in SCHEDULE_MODELS.items():
        assert set(TAKES[kind]) == set(model.__table__.columns.keys()), kind  # type: ignore[attr-defined]


def create_existing(session: Session) -> None:
    for kind, name in EXISTING.items():
        PeriodicTask.update_or_create(session, name=name, task="tasks.t", args=[1], priority=5,
                                      description="kept", **{kind: dict(VALID[kind])})


def existing(session: Session, kind: str) -> PeriodicTask:
    return session.scalars(select(PeriodicTask).where(PeriodicTask.name == EXISTING[kind])).unique().one()


def attempt(door: str, session: Session, table: str, column: str, value: Any) -> None:
    """One write of ``value`` to ``column`` through ``door``."""
    if table == "periodic_task":
        fields = {column: value}
        if door == "constructor":
            fresh = SCHEDULE_MODELS["interval"](every=11, period="seconds")  # not stored yet
            schedule = {} if column.endswith("_id") else {"interval": fresh}
            session.add(PeriodicTask(**{"name": "new", "task": "tasks.t", **schedule, **fields}))
            session.flush()
        elif door == "assignment":
            setattr(existing(session, "interval"), column, value)
            session.flush()
        elif door == "update_or_create":
            PeriodicTask.update_or_create(session, name=EXISTING["interval"], **fields)
        elif door == "api.create_task":
            keywords = {"name": "new", "task": "tasks.t", "interval": VALID["interval"], **fields}
            api.create_task(session, keywords.pop("name"), keywords.pop("task"), **keywords)
        else:
            api.update_task(session, EXISTING["interval"], **fields)
        return
    model = SCHEDULE_MODELS[table]
    row = {**VALID[table], column: value}
    one_off = {"one_off": True} if table == "clocked" else {}
    if door == "constructor":
        session.add(model(**row))
        session.flush()
    elif door == "assignment":
        setattr(getattr(existing(session, table), table), column, value)
        session.flush()
    elif door == "update_or_create":
        PeriodicTask.update_or_create(session, name=EXISTING[table], **{table: row})
    elif door == "api.create_task":
        api.create_task(session, "new", "tasks.t", **{table: row}, **one_off)
    else:
        api.update_task(session, EXISTING[table], **{table: row})


def applies(door: str, table: str, column: str) -> bool:
    if door in ("api.update_task", "update_or_create") and table == "periodic_task" and column == "name":
        return False  # the name is the key these look the task up by
    if table != "periodic_task" and column == "id":
        return door in ("constructor", "assignment")  # the other doors take no schedule id
    return True


PARAMS = [pytest.param(table, column, id=f"{table}.{column}") for table, columns in TAKES.items()
          for column in columns]


@pytest.mark.parametrize(("table", "column"), PARAMS)
def test_a_wrong_value_is_refused_naming_the_column_and_nothing_is_written(
    table: str, column: str, engine: Engine, session: Session,
) -> None:
    create_existing(session)
    before = stored_state(engine)
    problems: list[str] = []
    for door in DOORS:
        if not applies(door, table, column):
            continue
        for label, value in WRONG.items():
            TRIED[f"every column ({door})"] += 1
            takes = label in TAKES[table][column] or (door, column, label) in NOT_GIVEN
            where = f"{door} {table}.{column}={value!r}"
            try:
                attempt(door, session, table, column, value)
                session.commit()
            except ValidationError as exc:
                session.rollback()
                if not takes and exc.field != column:
                    problems.append(f"{where}: names {exc.field!r}: {exc}")
                if stored_state(engine) != before:
                    problems.append(f"{where}: refused, but something was written")
                continue
            except Exception as exc:
                session.rollback()
                problems.append(f"{where}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if not takes:
                problems.append(f"{where}: accepted")
            # stored: start again from the same rows
            session.close()
            clear_tables(engine)
            create_existing(session)
            before = stored_state(engine)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])




# -- the reported cases, one by one -------------------------------------------------------------

REPORTED: dict[str, tuple[dict[str, Any], str, str]] = {
    "interval-without-period": ({"interval": '{"every": 5}'}, "period", "is required"),
    "total-run-count-text": ({"total_run_count": "x"}, "total_run_count", "whole number"),
    "total-run-count-negative": ({"total_run_count": -5}, "total_run_count", "between 0 and"),
    "date-changed-text": ({"date_changed": "x"}, "date_changed", "ISO 8601"),
    "source-unknown": ({"source": "hacker"}, "source", "'config' or 'database'"),
    "schedule-error": ({"schedule_error": "x"}, "schedule_error", "beat's own"),
}


@pytest.mark.parametrize("case", sorted(REPORTED))
def test_reported_writes_are_refused_by_name(case: str, engine: Engine, session: Session) -> None:
    fields, field, reason = REPORTED[case]
    create_existing(session)
    before = stored_state(engine)
    with pytest.raises(ValidationError) as caught:
        PeriodicTask.update_or_create(session, name=EXISTING["interval"], **fields)
    assert caught.value.field == field and reason in str(caught.value), str(caught.value)
    assert stored_state(engine) == before
    created = {"interval": VALID["interval"], **fields}
    with pytest.raises(ValidationError) as caught:
        PeriodicTask.update_or_create(session, name="new", task="tasks.t", **created)
    assert caught.value.field == field
    assert stored_state(engine) == before


def test_source_database_is_stored_as_null(session: Session) -> None:
    task, _ = PeriodicTask.update_or_create(session, name="t", interval=VALID["interval"], source="database")
    assert task.source is None
    assert api.task_to_dict(task)["source"] == "database"


def test_a_new_schedule_row_equal_to_a_stored_one_is_refused_by_name(
    session: Session, engine: Engine,
) -> None:
    create_existing(session)
    before = stored_state(engine)
    equal = SCHEDULE_MODELS["interval"](**VALID["interval"])
    session.add(PeriodicTask(name="new", task="tasks.t", interval=equal))
    with pytest.raises(ValidationError) as caught:
        session.flush()
    session.rollback()
    assert caught.value.field == "interval" and "an equal interval schedule exists" in str(caught.value)
    assert stored_state(engine) == before
