"""The models on every backend: validation, update_or_create, schedules, constraints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from beatsqlalchemy import schedules as sched
from beatsqlalchemy.celery_schedules import ClockedCelerySchedule
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import (
    Base,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
    get_session,
)
from beatsqlalchemy.runids import DEPLOYMENT_TABLE
from harness.helpers import fresh

UTC = timezone.utc
LATER = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of ours (the deployment id aside)."""
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables if table.name != DEPLOYMENT_TABLE
        }


# -- invalid values: a table of cases ---------------------------------------------------

@dataclass(frozen=True)
class Bad:
    """Fields that must be refused, the field the error names and a text it must show."""

    fields: dict[str, Any]
    field: str
    shows: str
    #: also try the same values as an update of an existing task
    on_update: bool = True


INVALID: dict[str, Bad] = {
    "minute-out-of-range": Bad({"crontab": {"minute": "61"}}, "minute", "'61'"),
    "hour-out-of-range": Bad({"crontab": {"hour": "24"}}, "hour", "'24'"),
    "day-of-week-out-of-range": Bad({"crontab": {"day_of_week": "8"}}, "day_of_week", "'8'"),
    "day-of-month-zero": Bad({"crontab": {"day_of_month": "0"}}, "day_of_month", "'0'"),
    "day-of-month-32": Bad({"crontab": {"day_of_month": "32"}}, "day_of_month", "'32'"),
    "month-out-of-range": Bad({"crontab": {"month_of_year": "13"}}, "month_of_year", "'13'"),
    "minute-unparsable": Bad({"crontab": {"minute": "every five"}}, "minute", "'every five'"),
    "hour-step-zero": Bad({"crontab": {"hour": "*/0"}}, "hour", "'*/0'"),
    "cron-string-out-of-range": Bad({"crontab": "61 * * * *"}, "minute", "'61'"),
    "cron-string-wrong-length": Bad({"crontab": "* * *"}, "crontab", "'* * *'"),
    "crontab-bad-json": Bad({"crontab": '{"minute": '}, "crontab", "'{\"minute\": '"),
    "crontab-unknown-key": Bad({"crontab": {"minute": "1", "second": "5"}}, "crontab", "second"),
    "unknown-timezone": Bad({"crontab": {"minute": "0", "timezone": "Mars/Olympus"}}, "timezone",
                            "'Mars/Olympus'"),
    "unknown-period": Bad({"interval": {"every": 5, "period": "fortnights"}}, "period", "'fortnights'"),
    "every-zero": Bad({"interval": {"every": 0, "period": "seconds"}}, "every", "0"),
    "every-negative-json": Bad({"interval": '{"every": -3, "period": "minutes"}'}, "every", "-3"),
    "every-not-a-number": Bad({"interval": {"every": "ten", "period": "minutes"}}, "every", "'ten'"),
    "interval-zero-timedelta": Bad({"interval": timedelta(0)}, "interval", "timedelta(0)"),
    "interval-bad-json": Bad({"interval": '{"every": }'}, "interval", "'{\"every\": }'"),
    "interval-unknown-key": Bad({"interval": {"every": 1, "period": "seconds", "phase": 3}},
                                "interval", "phase"),
    "solar-unknown-event": Bad({"solar": {"event": "teatime", "latitude": 0, "longitude": 0}},
                               "event", "'teatime'"),
    "solar-latitude": Bad({"solar": {"event": "sunset", "latitude": 91, "longitude": 0}},
                          "latitude", "91"),
    "clocked-not-a-date": Bad({"clocked": "not a date", "one_off": True}, "clocked_time",
                              "'not a date'"),
    "args-not-a-list": Bad({"args": {"a": 1}}, "args", "{'a': 1}"),
    "args-json-object": Bad({"args": '{"a": 1}'}, "args", "{'a': 1}"),
    "args-bad-json": Bad({"args": "[1, 2"}, "args", "'[1, 2'"),
    "args-not-json-encodable": Bad({"args": [object]}, "args", "object"),
    "kwargs-not-an-object": Bad({"kwargs": [1, 2]}, "kwargs", "[1, 2]"),
    "kwargs-json-array": Bad({"kwargs": "[1, 2]"}, "kwargs", "[1, 2]"),
    "kwargs-bad-json": Bad({"kwargs": "{pp: workd}"}, "kwargs", "'{pp: workd}'"),
    "headers-not-an-object": Bad({"headers": ["x"]}, "headers", "['x']"),
    "headers-bad-json": Bad({"headers": "nope"}, "headers", "'nope'"),
    "priority-too-high": Bad({"priority": 256}, "priority", "256"),
    "priority-negative": Bad({"priority": -1}, "priority", "-1"),
    "priority-not-a-number": Bad({"priority": "5"}, "priority", "'5'"),
    "expire-seconds-negative": Bad({"expire_seconds": -1}, "expire_seconds", "-1"),
    "expires-and-expire-seconds": Bad({"expires": LATER, "expire_seconds": 60}, "expires", "2030"),
    "clocked-without-one-off": Bad({"clocked": LATER, "one_off": False}, "one_off", "False"),
    "no-schedule": Bad({}, "schedule", "None", on_update=False),
    "two-schedules": Bad({"interval": timedelta(seconds=5), "crontab": "* * * * *"}, "schedule",
                         "crontab"),
    "schedule-not-a-schedule": Bad({"schedule": "sometimes"}, "schedule", "'sometimes'"),
    "start-time-not-a-date": Bad({"start_time": "tomorrow"}, "start_time", "'tomorrow'"),
    "enabled-not-a-bool": Bad({"enabled": "yes"}, "enabled", "'yes'"),
    "queue-too-long": Bad({"queue": "q" * 201}, "queue", "qqqq"),
    "task-empty": Bad({"task": ""}, "task", "''"),
    "task-too-long": Bad({"task": "t" * 201}, "task", "tttt"),
    "unknown-field": Bad({"colour": "blue"}, "colour", "'blue'"),
    "name-empty": Bad({"name": ""}, "name", "''", on_update=False),
    "name-blank": Bad({"name": "   "}, "name", "'   '", on_update=False),
    "name-too-long": Bad({"name": "n" * 201}, "name", "nnnn", on_update=False),
    "name-not-a-string": Bad({"name": 42}, "name", "42", on_update=False),
}


def _attempt(session: Session, values: dict[str, Any]) -> ValidationError:
    values = dict(values)
    name = values.pop("name", "bad")
    with pytest.raises(ValidationError) as caught:
        PeriodicTask.update_or_create(session, name=name, **values)
    return caught.value


def _check_error(error: ValidationError, case: Bad) -> None:
    assert isinstance(error, ValueError)
    assert error.field == case.field, str(error)
    message = str(error)
    assert message.startswith(f"{case.field}: invalid value "), message
    assert repr(error.value) in message
    assert case.shows in message, message


@pytest.mark.parametrize("case_id", sorted(INVALID))
def test_invalid_values_are_refused_and_nothing_is_written(
    engine: Engine, session: Session, case_id: str
) -> None:
    case = INVALID[case_id]
    empty = row_counts(engine)
    assert set(empty.values()) == {0}

    # creating a task
    values = {"task": "tasks.add", **case.fields}
    if case.field not in ("schedule",) and not {"interval", "crontab", "solar", "clocked",
                                                "schedule"} & set(case.fields):
        values["interval"] = timedelta(seconds=10)
    _check_error(_attempt(session, values), case)
    assert row_counts(engine) == empty

    if not case.on_update:
        return
    # updating an existing task leaves it, and every table, as it was
    _, created = PeriodicTask.update_or_create(
        session, name="bad", task="tasks.add", interval=timedelta(seconds=10), args=[1],
        kwargs={"k": "v"}, priority=5, queue="q0",
    )
    assert created
    before = row_counts(engine)
    stored = fresh(engine, "bad")
    _check_error(_attempt(session, case.fields), case)
    assert row_counts(engine) == before
    after = fresh(engine, "bad")
    for column in ("task", "interval_id", "crontab_id", "args", "kwargs", "priority", "queue",
                   "next_run_at", "enabled", "one_off", "expires", "expire_seconds", "headers"):
        assert getattr(after, column) == getattr(stored, column), column
    # the session is still usable after the refusal
    assert session.scalars(select(PeriodicTask.name)).all() == ["bad"]


def test_schedule_models_validate_on_assignment() -> None:
    with pytest.raises(ValidationError, match="every"):
        IntervalSchedule(every=0, period="seconds")
    with pytest.raises(ValidationError, match="period"):
        IntervalSchedule(every=1, period="weeks")
    with pytest.raises(ValidationError, match="minute: invalid value '99'"):
        CrontabSchedule(minute="99")
    with pytest.raises(ValidationError, match="timezone: invalid value 'Nowhere/Town'"):
        CrontabSchedule(timezone="Nowhere/Town")
    with pytest.raises(ValidationError, match="longitude"):
        SolarSchedule(event="sunrise", latitude=0, longitude=181)
    with pytest.raises(ValidationError, match="priority: invalid value 300"):
        PeriodicTask(name="x", task="x", priority=300)
    interval = IntervalSchedule(every=1, period="seconds")
    with pytest.raises(ValidationError):
        interval.every = -1
    assert interval.every == 1


def test_a_task_added_without_update_or_create_is_validated_at_flush(
    engine: Engine, session: Session
) -> None:
    session.add(PeriodicTask(name="no-schedule", task="tasks.add"))
    with pytest.raises(ValidationError) as caught:
        session.commit()
    assert caught.value.field == "schedule"
    session.rollback()
    clocked = ClockedSchedule(clocked_time=LATER)
    session.add(PeriodicTask(name="clocked", task="tasks.add", clocked=clocked, one_off=False))
    with pytest.raises(ValidationError) as caught:
        session.commit()
    assert caught.value.field == "one_off"
    session.rollback()
    assert set(row_counts(engine).values()) == {0}


# -- update_or_create -----------------------------------------------------------------

def test_update_or_create_creates_then_updates(engine: Engine, session: Session) -> None:
    task, created = PeriodicTask.update_or_create(
        session, name="report", task="tasks.report", interval=timedelta(minutes=5),
        defaults={"args": [1], "queue": "reports"},
    )
    assert created is True
    assert isinstance(task, PeriodicTask) and task.id is not None
    first_id = task.id

    again, created = PeriodicTask.update_or_create(
        session, name="report", defaults={"args": [2, 3], "queue": "other", "priority": 9},
    )
    assert created is False
    assert again.id == first_id
    stored = fresh(engine, "report")
    assert stored.task == "tasks.report"
    assert stored.args == [2, 3]
    assert stored.queue == "other"
    assert stored.priority == 9
    assert stored.interval_id is not None
    assert row_counts(engine)["celery_periodic_task"] == 1


def test_update_or_create_with_session_obj(engine: Engine, session: Session) -> None:
    task, created = PeriodicTask.update_or_create(
        session_obj=session, name="kw", task="tasks.kw", crontab="0 4 * * *"
    )
    assert created and task.crontab is not None
    _, created = PeriodicTask.update_or_create(session_obj=session, name="kw", description="d")
    assert not created
    assert fresh(engine, "kw").description == "d"


def test_update_or_create_needs_a_session() -> None:
    with pytest.raises(TypeError, match="session"):
        PeriodicTask.update_or_create(name="x", task="x", interval=timedelta(seconds=1))


def test_update_or_create_task_defaults_to_the_name(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="tasks.cleanup", interval=timedelta(hours=1))
    assert fresh(engine, "tasks.cleanup").task == "tasks.cleanup"


def test_update_or_create_without_commit_leaves_the_transaction_open(
    engine: Engine, session: Session
) -> None:
    PeriodicTask.update_or_create(session, name="pending", task="t", interval=timedelta(seconds=9),
                                  commit=False)
    session.rollback()
    assert row_counts(engine)["celery_periodic_task"] == 0


CRONTAB_FORMS: dict[str, Any] = {
    "model": lambda: CrontabSchedule(minute="5", hour="3"),
    "dict": lambda: {"minute": "5", "hour": "3"},
    "dict-all-fields": lambda: {"minute": "5", "hour": "3", "day_of_week": "*", "day_of_month": "*",
                                "month_of_year": "*", "timezone": "UTC"},
    "json": lambda: json.dumps({"minute": "5", "hour": "3"}),
    "celery": lambda: crontab(minute="5", hour="3"),
    "celery-int": lambda: crontab(minute=5, hour=3),
    "cron-string": lambda: "5 3 * * *",
}


def test_crontab_in_every_form_shares_one_row(engine: Engine, session: Session, app: Celery) -> None:
    ids = set()
    for form, make in CRONTAB_FORMS.items():
        task, _ = PeriodicTask.update_or_create(session, name=f"cron-{form}", task="t", crontab=make())
        ids.add(task.crontab_id)
        stored = fresh(engine, f"cron-{form}")
        assert stored.crontab is not None
        assert (stored.crontab.minute, stored.crontab.hour, stored.crontab.day_of_week,
                stored.crontab.day_of_month, stored.crontab.month_of_year,
                stored.crontab.timezone) == ("5", "3", "*", "*", "*", "UTC"), form
    # the schedule= keyword recognises the kind by itself
    PeriodicTask.update_or_create(session, name="cron-schedule-kw", task="t", schedule="5 3 * * *")
    PeriodicTask.update_or_create(session, name="cron-schedule-obj", task="t",
                                  schedule=crontab(minute="5", hour="3"))
    ids |= {fresh(engine, "cron-schedule-kw").crontab_id, fresh(engine, "cron-schedule-obj").crontab_id}
    assert len(ids) == 1 and None not in ids
    counts = row_counts(engine)
    assert counts["celery_crontab_schedule"] == 1
    assert counts["celery_periodic_task"] == len(CRONTAB_FORMS) + 2


def test_crontab_keeps_its_timezone(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="berlin", task="t",
                                  crontab={"minute": "30", "hour": "2", "timezone": "Europe/Berlin"})
    PeriodicTask.update_or_create(session, name="utc", task="t", crontab={"minute": "30", "hour": "2"})
    assert row_counts(engine)["celery_crontab_schedule"] == 2
    stored = fresh(engine, "berlin")
    assert stored.crontab is not None and stored.crontab.timezone == "Europe/Berlin"
    celery_schedule = stored.schedule
    assert isinstance(celery_schedule, crontab)
    assert celery_schedule.tz.key == "Europe/Berlin"  # type: ignore[attr-defined]
    assert celery_schedule.hour == {2} and celery_schedule.minute == {30}


INTERVAL_FORMS: dict[str, Any] = {
    "model": lambda: IntervalSchedule(every=30, period="seconds"),
    "dict": lambda: {"every": 30, "period": "seconds"},
    "json": lambda: json.dumps({"every": 30, "period": "seconds"}),
    "celery": lambda: schedule(timedelta(seconds=30)),
    "timedelta": lambda: timedelta(seconds=30),
    "number": lambda: 30,
}


def test_interval_in_every_form_shares_one_row(engine: Engine, session: Session, app: Celery) -> None:
    for form, make in INTERVAL_FORMS.items():
        PeriodicTask.update_or_create(session, name=f"every-{form}", task="t", interval=make())
        stored = fresh(engine, f"every-{form}")
        assert stored.interval is not None
        assert (stored.interval.every, stored.interval.period) == (30, "seconds"), form
        assert stored.schedule == schedule(timedelta(seconds=30))
    PeriodicTask.update_or_create(session, name="every-schedule-kw", task="t",
                                  schedule=timedelta(seconds=30))
    counts = row_counts(engine)
    assert counts["celery_interval_schedule"] == 1
    assert counts["celery_periodic_task"] == len(INTERVAL_FORMS) + 1


@pytest.mark.parametrize(
    ("delta", "every", "period"),
    [
        (timedelta(days=2), 2, "days"),
        (timedelta(hours=36), 36, "hours"),
        (timedelta(minutes=90), 90, "minutes"),
        (timedelta(seconds=45), 45, "seconds"),
        (timedelta(milliseconds=1500), 1_500_000, "microseconds"),
    ],
)
def test_timedelta_intervals_are_stored_in_the_largest_whole_unit(
    engine: Engine, session: Session, delta: timedelta, every: int, period: str
) -> None:
    PeriodicTask.update_or_create(session, name="i", task="t", interval=delta)
    stored = fresh(engine, "i")
    assert stored.interval is not None
    assert (stored.interval.every, stored.interval.period) == (every, period)
    assert stored.schedule.run_every == delta  # type: ignore[attr-defined]


def test_clocked_in_every_form_shares_one_row(engine: Engine, session: Session) -> None:
    forms: dict[str, Any] = {
        "model": ClockedSchedule(clocked_time=LATER),
        "dict": {"clocked_time": LATER.isoformat()},
        "json": json.dumps({"clocked_time": LATER.isoformat()}),
        "iso": LATER.isoformat(),
        "datetime": LATER,
        "celery": ClockedCelerySchedule(LATER),
        "other-zone": LATER.astimezone(sched.zone("Asia/Kolkata")),
    }
    for form, value in forms.items():
        PeriodicTask.update_or_create(session, name=f"once-{form}", task="t", clocked=value)
        stored = fresh(engine, f"once-{form}")
        assert stored.clocked is not None and stored.clocked.clocked_time == LATER, form
        assert stored.one_off is True  # implied by a clocked schedule
        assert stored.next_run_at == LATER
        assert stored.schedule == ClockedCelerySchedule(LATER)
    assert row_counts(engine)["celery_clocked_schedule"] == 1


def test_solar_schedule(engine: Engine, session: Session) -> None:
    pytest.importorskip("ephem")
    from celery.schedules import solar

    for form, value in {
        "dict": {"event": "sunset", "latitude": 52.52, "longitude": 13.405},
        "json": json.dumps({"event": "sunset", "latitude": 52.52, "longitude": 13.405}),
        "celery": solar("sunset", 52.52, 13.405),
    }.items():
        PeriodicTask.update_or_create(session, name=f"sun-{form}", task="t", solar=value)
        stored = fresh(engine, f"sun-{form}")
        assert isinstance(stored.schedule, solar)
        assert stored.next_run_at is not None
    assert row_counts(engine)["celery_solar_schedule"] == 1


def test_changing_the_schedule_kind_replaces_it(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="switch", task="t", interval=timedelta(seconds=10))
    PeriodicTask.update_or_create(session, name="switch", crontab="0 4 * * *")
    stored = fresh(engine, "switch")
    assert stored.interval_id is None and stored.interval is None
    assert stored.crontab_id is not None
    assert isinstance(stored.schedule, crontab)


def test_an_existing_schedule_row_can_be_passed(engine: Engine, session: Session) -> None:
    row = IntervalSchedule(every=7, period="minutes")
    session.add(row)
    session.commit()
    PeriodicTask.update_or_create(session, name="a", task="t", interval=row)
    PeriodicTask.update_or_create(session, name="b", task="t", interval=IntervalSchedule(every=7,
                                                                                          period="minutes"))
    assert fresh(engine, "a").interval_id == row.id == fresh(engine, "b").interval_id
    assert row_counts(engine)["celery_interval_schedule"] == 1


def test_args_and_kwargs_take_python_values_or_json(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="py", task="t", interval=timedelta(seconds=5),
                                  args=(1, "a", None, [2]), kwargs={"x": {"y": 1.5}},
                                  headers={"h": "v"})
    PeriodicTask.update_or_create(session, name="js", task="t", interval=timedelta(seconds=5),
                                  args='[1, "a", null, [2]]', kwargs='{"x": {"y": 1.5}}',
                                  headers='{"h": "v"}')
    for name in ("py", "js"):
        stored = fresh(engine, name)
        assert stored.args == [1, "a", None, [2]]
        assert stored.kwargs == {"x": {"y": 1.5}}
        assert stored.headers == {"h": "v"}
    PeriodicTask.update_or_create(session, name="empty", task="t", interval=timedelta(seconds=5))
    stored = fresh(engine, "empty")
    assert (stored.args, stored.kwargs, stored.headers) == ([], {}, {})


@pytest.mark.parametrize("text", ["[1e999]", "[-1e400]", '{"x": [NaN]}', "[Infinity]"])
def test_json_numbers_no_float_holds_are_refused(text: str) -> None:
    """1e999 is JSON text, but it would be sent as Infinity, which JSON has no word for."""
    with pytest.raises(ValidationError, match=r"^args: invalid value .*not valid JSON"):
        PeriodicTask(name="x", task="t", args=text)


def test_schedule_property_returns_the_celery_schedule(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="c", task="t", crontab="*/15 9-17 * * mon-fri")
    PeriodicTask.update_or_create(session, name="i", task="t", interval={"every": 2, "period": "hours"})
    PeriodicTask.update_or_create(session, name="o", task="t", clocked=LATER)
    cron_schedule = fresh(engine, "c").schedule
    assert isinstance(cron_schedule, crontab)
    assert cron_schedule.minute == {0, 15, 30, 45}
    assert cron_schedule.hour == set(range(9, 18))
    assert cron_schedule.day_of_week == {1, 2, 3, 4, 5}
    interval_schedule = fresh(engine, "i").schedule
    assert isinstance(interval_schedule, schedule) and not isinstance(interval_schedule, crontab)
    assert interval_schedule.run_every == timedelta(hours=2)
    clocked_schedule = fresh(engine, "o").schedule
    assert isinstance(clocked_schedule, ClockedCelerySchedule)
    assert clocked_schedule.clocked_time == LATER
    assert clocked_schedule.is_due(LATER)[0] is False


def test_schedule_property_without_a_schedule() -> None:
    with pytest.raises(ValidationError) as caught:
        _ = PeriodicTask(name="x", task="x").schedule
    assert caught.value.field == "schedule"


# -- next_run_at --------------------------------------------------------------------------

def test_next_run_at_is_computed_on_insert(engine: Engine, session: Session) -> None:
    before = sched.utcnow()
    PeriodicTask.update_or_create(session, name="i", task="t", interval=timedelta(seconds=30))
    after = sched.utcnow()
    stored = fresh(engine, "i")
    assert stored.next_run_at is not None
    assert before + timedelta(seconds=30) <= stored.next_run_at <= after + timedelta(seconds=30)
    assert stored.needs_recompute is False

    start = (sched.utcnow() + timedelta(days=3)).replace(microsecond=0)
    PeriodicTask.update_or_create(session, name="later", task="t", interval=timedelta(seconds=30),
                                  start_time=start)
    assert fresh(engine, "later").next_run_at == start


def test_next_run_at_follows_a_schedule_change(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(session, name="t", task="t", interval=timedelta(seconds=30))
    first = fresh(engine, "t").next_run_at
    assert first is not None

    # a change that does not touch the schedule keeps next_run_at
    PeriodicTask.update_or_create(session, name="t", description="no schedule change", args=[1])
    assert fresh(engine, "t").next_run_at == first

    before = sched.utcnow()
    PeriodicTask.update_or_create(session, name="t", crontab="0 4 * * *")
    after = sched.utcnow()
    expected = {sched.Cron.parse("0", "4", "*", "*", "*", "UTC").next_after(moment)
                for moment in (before, after)}
    stored = fresh(engine, "t")
    assert stored.next_run_at in expected
    assert stored.next_run_at is not None
    assert (stored.next_run_at.hour, stored.next_run_at.minute) == (4, 0)

    PeriodicTask.update_or_create(session, name="t", enabled=False)
    assert fresh(engine, "t").next_run_at is None
    PeriodicTask.update_or_create(session, name="t", enabled=True)
    assert fresh(engine, "t").next_run_at in expected


def test_next_run_at_after_a_long_pause_is_in_the_future(engine: Engine, session: Session) -> None:
    last = sched.utcnow() - timedelta(days=30, seconds=7)
    PeriodicTask.update_or_create(session, name="t", task="t", interval=timedelta(hours=1),
                                  enabled=False, last_run_at=last)
    PeriodicTask.update_or_create(session, name="t", enabled=True)
    stored = fresh(engine, "t")
    now = sched.utcnow()
    assert stored.next_run_at is not None
    assert now < stored.next_run_at <= now + timedelta(hours=1)
    assert (stored.next_run_at - last) % timedelta(hours=1) == timedelta(0)


# -- the CHECK constraint, with plain SQL -----------------------------------------------------

def _insert_task(engine: Engine, name: str, **fks: int | None) -> None:
    columns = ", ".join(fks)
    marks = ", ".join(f":{key}" for key in fks)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO celery_periodic_task (name, task, args, kwargs, headers, one_off, "
                "enabled, total_run_count, description, needs_recompute"
                f"{', ' + columns if columns else ''}) VALUES (:name, 'tasks.add', '[]', '{{}}', "
                f"'{{}}', :no, :yes, 0, '', :no{', ' + marks if marks else ''})"
            ),
            {"name": name, "yes": True, "no": False, **fks},
        )


def _assert_check_violation(caught: pytest.ExceptionInfo[IntegrityError]) -> None:
    assert "one_schedule" in str(caught.value.orig)


def test_check_constraint_needs_exactly_one_schedule(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO celery_interval_schedule (every, period) VALUES (10, 'seconds')")
        )
        connection.execute(
            text("INSERT INTO celery_crontab_schedule (minute, hour, day_of_week, day_of_month, "
                 "month_of_year, timezone) VALUES ('0', '4', '*', '*', '*', 'UTC')")
        )
        crontab_id = connection.execute(select(CrontabSchedule.id)).scalar_one()
        interval_id = connection.execute(select(IntervalSchedule.id)).scalar_one()

    _insert_task(engine, "one", interval_id=interval_id)  # the statement itself is fine
    with pytest.raises(IntegrityError) as caught:
        _insert_task(engine, "two", interval_id=interval_id, crontab_id=crontab_id)
    _assert_check_violation(caught)
    with pytest.raises(IntegrityError) as caught:
        _insert_task(engine, "none")
    _assert_check_violation(caught)
    with pytest.raises(IntegrityError) as caught, engine.begin() as connection:
        connection.execute(
            text("UPDATE celery_periodic_task SET crontab_id = :c WHERE name = 'one'"), {"c": crontab_id}
        )
    _assert_check_violation(caught)
    with engine.connect() as connection:
        names = connection.execute(select(PeriodicTask.name)).scalars().all()
    assert names == ["one"]


# -- get_session and the seed README example ---------------------------------------------------

def run_seed_example(app: Celery) -> None:
    """The seed README's "addtask example", with only the import path (and print) changed."""
    import json

    from beatsqlalchemy.models import PeriodicTask, get_session

    session = get_session(app)
    pt, _ = PeriodicTask.update_or_create(session_obj=session, name="tasks.boardcast_to", task="tasks.boardcast_to",  # noqa: E501
                                          defaults=dict(crontab=json.dumps({'minute': '*/1'}),
                                                        args='[1,3,4,"a"]',
                                                        kwargs='{"pp":"workd"}',
                                                        queue="noexist",
                                                        exchange=""))
    session.add(pt)
    session.flush()


    pt, _ = PeriodicTask.update_or_create(session_obj=session, name="tasks.direct_to", task="tasks.direct_to",
                                          interval=json.dumps({'every': 30, 'period': 'seconds'}),
                                          defaults=dict(args='[1,2,3,4]', kwargs='{"hello":"world"}'))
    session.add(pt)
    session.flush()
    print(pt.schedule)
    session.close()  # not in the seed; returns the connection to the pool


def test_seed_readme_example(engine: Engine, app: Celery, capsys: pytest.CaptureFixture[str]) -> None:
    run_seed_example(app)
    printed = capsys.readouterr().out
    assert "30" in printed and "second" in printed

    counts = row_counts(engine)
    assert counts["celery_periodic_task"] == 2
    assert counts["celery_crontab_schedule"] == 1
    assert counts["celery_interval_schedule"] == 1

    broadcast = fresh(engine, "tasks.boardcast_to")
    assert broadcast.task == "tasks.boardcast_to"
    assert broadcast.crontab is not None
    assert (broadcast.crontab.minute, broadcast.crontab.hour, broadcast.crontab.day_of_week,
            broadcast.crontab.day_of_month, broadcast.crontab.month_of_year,
            broadcast.crontab.timezone) == ("*/1", "*", "*", "*", "*", "UTC")
    assert broadcast.args == [1, 3, 4, "a"]
    assert broadcast.kwargs == {"pp": "workd"}
    assert broadcast.queue == "noexist"
    assert broadcast.exchange == ""
    assert broadcast.enabled is True
    assert broadcast.next_run_at is not None
    assert broadcast.next_run_at.second == 0 and broadcast.next_run_at > sched.utcnow() - timedelta(
        seconds=60
    )

    direct = fresh(engine, "tasks.direct_to")
    assert direct.task == "tasks.direct_to"
    assert direct.interval is not None
    assert (direct.interval.every, direct.interval.period) == (30, "seconds")
    assert direct.args == [1, 2, 3, 4]
    assert direct.kwargs == {"hello": "world"}
    assert direct.schedule == schedule(timedelta(seconds=30))

    # running it again updates the same rows
    run_seed_example(app)
    assert row_counts(engine) == counts


def test_get_session_uses_the_app_database(db_url: str, engine: Engine, app: Celery) -> None:
    with get_session(app) as session:
        bind = session.get_bind()
        assert isinstance(bind, Engine)
        assert bind.url.render_as_string(hide_password=False) == make_url(db_url).render_as_string(
            hide_password=False
        )
        PeriodicTask.update_or_create(session, name="via-app", task="t", interval=timedelta(seconds=5))
    assert fresh(engine, "via-app").task == "t"


def test_get_session_without_app_uses_the_current_app(db_url: str, engine: Engine, app: Celery) -> None:
    from celery import current_app

    assert current_app._get_current_object() is app
    with get_session() as session:
        bind = session.get_bind()
        assert isinstance(bind, Engine)
        assert bind.url.render_as_string(hide_password=False) == make_url(
            db_url
        ).render_as_string(hide_password=False)
        PeriodicTask.update_or_create(session, name="via-current", task="t",
                                      interval=timedelta(seconds=5))
    assert fresh(engine, "via-current").interval is not None
