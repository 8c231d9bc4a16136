"""Input that used to be accepted and then misled: a past expiry on an enabled task, a
timezone the schedule ignores, an empty timezone, a crontab that never fires, a reversed
range read as a wrap-around. Each is refused at every door with a ValidationError naming
the field, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import CrontabSchedule, PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler

from .test_bad_input import stored_state

EVERY_10S = {"every": 10, "period": "seconds"}


def cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli_main, ["--url", url, *args], catch_exceptions=False)


def refused_on_cli(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


def refused(field: str, attempt: Callable[[], Any], *fragments: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        attempt()
    assert caught.value.field == field, str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    return caught.value


# -- a past expiry ---------------------------------------------------------------------------

def test_a_past_expiry_is_refused_at_every_door(
    engine: Engine, session: Session, db_url: str, app: Celery,
) -> None:
    past = sched.utcnow() - timedelta(minutes=1)
    added = cli(db_url, "add", "x", "tasks.x", "--every", "5s", "--expires", past.isoformat())
    result = refused_on_cli(added,
                            "expires", "in the past")
    assert "never run" in result
    refused("expires", lambda: PeriodicTask.update_or_create(
        session, name="x", task="tasks.x", interval=EVERY_10S, expires=past), "in the past")
    refused("expires", lambda: api.create_task(session, "x", "tasks.x", timedelta(seconds=5), expires=past))
    beat = DatabaseScheduler(app=app)
    try:
        refused("expires", lambda: beat.add(name="x", task="tasks.x", schedule=5.0,
                                            options={"expires": past}))
    finally:
        beat.close()
    assert session.scalars(select(PeriodicTask)).all() == []

    api.create_task(session, "x", "tasks.x", timedelta(seconds=5))
    before = stored_state(engine)
    refused_on_cli(cli(db_url, "edit", "x", "--expires", past.isoformat()), "expires", "in the past")
    refused("expires", lambda: api.update_task(session, "x", expires=past))
    assert stored_state(engine) == before


def test_a_past_expiry_is_kept_on_a_disabled_task_that_stays_disabled(
    engine: Engine, session: Session, db_url: str,
) -> None:
    """Disabled, an expired task misleads nobody (beat disables expired tasks too); it
    cannot be enabled again without a new expiry."""
    past = sched.utcnow() - timedelta(minutes=1)
    api.create_task(session, "x", "tasks.x", timedelta(seconds=5), expires=past, enabled=False)
    api.update_task(session, "x", description="still disabled")
    before = stored_state(engine)
    refused("expires", lambda: api.enable_task(session, "x"), "in the past")
    refused_on_cli(cli(db_url, "enable", "x"), "expires")
    refused_on_cli(cli(db_url, "edit", "x", "--enabled"), "expires")
    assert stored_state(engine) == before
    ok = cli(db_url, "edit", "x", "--enabled", "--expires", "none")
    assert ok.exit_code == 0, ok.output


# -- timezones the schedule ignores ----------------------------------------------------------

def test_tz_that_would_be_ignored_is_refused_by_add_and_edit_alike(db_url: str, engine: Engine) -> None:
    assert cli(db_url, "add", "every", "tasks.x", "--every", "5s").exit_code == 0
    edited = cli(db_url, "edit", "every", "--tz", "Europe/Berlin")
    edit = refused_on_cli(edited, "timezone", "--tz applies to")
    before = stored_state(engine)
    message = edit.split(": ", 3)[3].split(";")[0]
    for args in (["--every", "5s"], ["--solar", "sunrise", "52.5", "13.4"],
                 ["--at", "2030-01-01T09:00:00+00:00"], ["--at", "2030-01-01T09:00:00Z"]):
        refused_on_cli(cli(db_url, "add", "other", "tasks.x", *args, "--tz", "Europe/Berlin"),
                       "timezone", "'Europe/Berlin'", message)
        refused_on_cli(cli(db_url, "edit", "every", *args, "--tz", "Europe/Berlin"), "timezone", message)
    assert stored_state(engine) == before
    naive = cli(db_url, "add", "once", "tasks.x", "--at", "2030-01-01T09:00:00", "--tz", "Europe/Berlin")
    assert naive.exit_code == 0 and "08:00:00 UTC" in naive.output, naive.output


@pytest.mark.parametrize("tz", ["", " "])
def test_an_empty_timezone_is_refused(tz: str, db_url: str, engine: Engine, session: Session) -> None:
    refused_on_cli(cli(db_url, "add", "x", "tasks.x", "--cron", "0 7 * * *", "--tz", tz), "timezone")
    refused_on_cli(cli(db_url, "add", "x", "tasks.x", "--at", "2030-01-01T09:00:00", "--tz", tz), "timezone")
    assert cli(db_url, "add", "x", "tasks.x", "--cron", "0 7 * * *", "--tz", "UTC").exit_code == 0
    before = stored_state(engine)
    refused_on_cli(cli(db_url, "edit", "x", "--tz", tz), "timezone")
    refused("timezone", lambda: api.update_task(session, "x", crontab={"minute": "0", "timezone": tz}))
    assert stored_state(engine) == before


@pytest.mark.parametrize("option", ["--every", "--cron", "--at"])
def test_an_empty_schedule_option_is_refused_not_ignored(option: str, db_url: str, engine: Engine) -> None:
    assert cli(db_url, "add", "x", "tasks.x", "--every", "5s").exit_code == 0
    before = stored_state(engine)
    refused_on_cli(cli(db_url, "edit", "x", option, "", "--description", "d"))
    assert stored_state(engine) == before


# -- crontabs that never fire, reversed ranges ----------------------------------------------

NEVER = {
    "feb-31": ("* * 31 2 *", "never fires: February has no day 31"),
    "feb-30-31": ("0 0 30,31 2 *", "never fires: February has no day 30 or 31"),
    "short-months-31": ("0 0 31 4,6,9,11 *",
                        "never fires: none of April, June, September, November has a day 31"),
}
REVERSED = {
    "minute": ("5-1 * * * *", "minute", "write 5-59,0-1"),
    "minute-step": ("50-10/5 * * * *", "minute", "write 50-59,0-10"),
    "hour": ("0 22-2 * * *", "hour", "write 22-23,0-2"),
    "day-of-month": ("0 0 30-2 * *", "day_of_month", "write 30-31,1-2"),
}


def as_fields(expression: str) -> dict[str, str]:
    return dict(zip(sched.CRON_ORDER, expression.split(), strict=True))


def celery_crontab(expression: str) -> Any:
    fields = as_fields(expression)
    return crontab(**fields)


Door = Callable[[Session, Celery, str, str], Any]


def _orm(session: Session, app: Celery, url: str, expression: str) -> None:
    session.add(PeriodicTask(name="x", task="tasks.x", crontab=CrontabSchedule(**as_fields(expression))))
    session.commit()


def _scheduler_add(session: Session, app: Celery, url: str, expression: str) -> None:
    beat = DatabaseScheduler(app=app)
    try:
        beat.add(name="x", task="tasks.x", schedule=expression)
    finally:
        beat.close()


def _cli(session: Session, app: Celery, url: str, expression: str) -> None:
    result = cli(url, "add", "x", "tasks.x", "--cron", expression)
    assert result.exit_code == 2, result.output
    raise ValidationError("cli", expression, result.stderr)  # checked by the caller's fragments


CRON_DOORS: dict[str, Door] = {
    "string": lambda s, a, u, e: PeriodicTask.update_or_create(s, name="x", task="tasks.x", crontab=e),
    "dict": lambda s, a, u, e: PeriodicTask.update_or_create(
        s, name="x", task="tasks.x", crontab=as_fields(e)),
    "json": lambda s, a, u, e: PeriodicTask.update_or_create(
        s, name="x", task="tasks.x", crontab=json.dumps(as_fields(e))),
    "celery-crontab": lambda s, a, u, e: PeriodicTask.update_or_create(
        s, name="x", task="tasks.x", crontab=celery_crontab(e)),
    "orm": _orm,
    "api": lambda s, a, u, e: api.create_task(s, "x", "tasks.x", e),
    "import": lambda s, a, u, e: api.import_tasks(
        s, [{"name": "x", "task": "tasks.x", "crontab": as_fields(e)}]),
    "scheduler.add": _scheduler_add,
    "cli": _cli,
}


def try_door(door: str, session: Session, app: Celery, url: str, expression: str) -> str:
    """The error message of the door's refusal (the field is checked for Python doors)."""
    try:
        CRON_DOORS[door](session, app, url, expression)
    except ValidationError as exc:
        session.rollback()
        return str(exc)
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} instead of a ValidationError: {exc}")
    pytest.fail(f"{expression!r} was accepted through {door}")


@pytest.mark.parametrize("door", sorted(set(CRON_DOORS) - {"celery-crontab"}))  # Celery refuses them itself
def test_a_crontab_that_never_fires_is_refused_at_every_door(
    door: str, session: Session, app: Celery, db_url: str, engine: Engine,
) -> None:
    for expression, reason in NEVER.values():
        message = try_door(door, session, app, db_url, expression)
        assert "crontab" in message and reason in message, message
    assert all(rows == [] for rows in stored_state(engine).values())


@pytest.mark.parametrize("door", sorted(CRON_DOORS))
def test_a_reversed_range_is_refused_at_every_door(
    door: str, session: Session, app: Celery, db_url: str, engine: Engine,
) -> None:
    for expression, field, hint in REVERSED.values():
        message = try_door(door, session, app, db_url, expression)
        assert field in message and "reversed" in message and hint in message, message
    assert all(rows == [] for rows in stored_state(engine).values())


def test_changing_a_stored_crontab_so_it_never_fires_is_refused(session: Session, engine: Engine) -> None:
    api.create_task(session, "x", "tasks.x", "0 0 28 2 *")
    before = stored_state(engine)
    row = api.get_task(session, "x").crontab
    assert row is not None
    row.day_of_month = "31"
    refused("crontab", session.commit, "never fires: February has no day 31")
    session.rollback()
    assert stored_state(engine) == before


def test_week_and_year_ranges_wrap_as_in_celery(session: Session) -> None:
    """``sat-sun`` and ``nov-feb`` name a weekend and a winter: they wrap, as in Celery."""
    weekends = {"minute": "0", "hour": "0", "day_of_week": "sat-sun", "month_of_year": "nov-feb"}
    task = api.create_task(session, "x", "tasks.x", crontab=weekends)
    spec = task.crontab.spec() if task.crontab is not None else None
    assert spec is not None and spec.days_of_week == {6, 0} and spec.months == {11, 12, 1, 2}


def test_a_stored_reversed_range_is_still_read_as_celery_does() -> None:
    """Rows written before keep running: beat reads them as Celery does."""
    assert sched.Cron.parse("5-1", "*", "*", "*", "*", "UTC").minutes == (0, 1, *range(5, 60))
