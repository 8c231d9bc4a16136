"""One timezone rule for crontabs at every door: a crontab given without a timezone is
evaluated in the app's ``timezone`` setting (as Celery evaluates its own crontab), else
in UTC; an explicit timezone (a ``timezone`` field, ``--tz``) always wins."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.models import CrontabSchedule, PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler

APP_ZONE = "Europe/Berlin"
APP_MODULE = "beatsqlalchemy_timezone_test_app"
SEVEN = {"minute": "0", "hour": "7"}
NAME = "daily"

Door = Callable[[Celery, Session, str, dict[str, Any]], None]


def update_or_create(value: Any) -> Door:
    def door(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
        PeriodicTask.update_or_create(session, name=NAME, task="tasks.t", crontab=value, **extra)
    return door


def orm(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
    session.add(PeriodicTask(name=NAME, task="tasks.t", crontab=CrontabSchedule(**SEVEN), **extra))
    session.commit()


def api_create(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
    api.create_task(session, NAME, "tasks.t", "0 7 * * *", **extra)


def import_json(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
    api.import_tasks(session, [{"name": NAME, "task": "tasks.t", "crontab": SEVEN, **extra}])



def cli(*args: str) -> str:
    result = CliRunner().invoke(cli_main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_add(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
    options = ["--description", extra["description"]] if extra else []
    cli("-A", APP_MODULE, "add", NAME, "tasks.t", "--cron", "0 7 * * *", *options)


def cli_import(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
    runner = CliRunner()
    entries = json.dumps([{"name": NAME, "task": "tasks.t", "crontab": SEVEN, **extra}])
    result = runner.invoke(cli_main, ["-A", APP_MODULE, "import", "-"], input=entries, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def scheduler_add(value: Any, keyword: str = "schedule") -> Door:
    def door(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
        beat = DatabaseScheduler(app=app)
        try:
            beat.add(name=NAME, task="tasks.t", **{keyword: value}, **extra)
        finally:
            beat.close()
    return door


def beat_schedule(value: Any) -> Door:
    def door(app: Celery, session: Session, url: str, extra: dict[str, Any]) -> None:
        app.conf.beat_schedule = {NAME: {"task": "tasks.t", "schedule": value, **extra}}
        beat = DatabaseScheduler(app=app)
        try:
            beat.tick()  # installs beat_schedule
        finally:
            beat.close()
    return door


DOORS: dict[str, Door] = {
    "string": update_or_create("0 7 * * *"),
    "json": update_or_create(json.dumps(SEVEN)),
    "dict": update_or_create(dict(SEVEN)),
    "celery-crontab": update_or_create(crontab(hour=7, minute=0)),
    "orm": orm,
    "api": api_create,
    "import": import_json,
    "cli-cron": cli_add,
    "cli-import": cli_import,
    "scheduler.add-string": scheduler_add("0 7 * * *"),
    "scheduler.add-crontab": scheduler_add(crontab(hour=7, minute=0)),
    "beat_schedule-crontab": beat_schedule(crontab(hour=7, minute=0)),
    "beat_schedule-string": beat_schedule("0 7 * * *"),
}


@pytest.fixture
def berlin_app(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """The test app with ``timezone = Europe/Berlin``, importable for ``-A``."""
    app.conf.timezone = APP_ZONE
    module = types.ModuleType(APP_MODULE)
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, APP_MODULE, module)
    yield app


def stored(engine: Engine) -> tuple[str, datetime | None]:
    from sqlalchemy.orm import Session as PlainSession

    with PlainSession(engine) as session:
        task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == NAME)).unique().one()
        assert task.crontab is not None
        return task.crontab.timezone, task.next_run_at


def next_seven(zone: str, now: datetime) -> datetime | None:
    return sched.Cron.parse("0", "7", "*", "*", "*", zone).next_after(now)


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_evaluates_a_crontab_in_the_apps_timezone(
    door: str, berlin_app: Celery, session: Session, engine: Engine, db_url: str,
) -> None:
    """Same expression, same app (``timezone = Europe/Berlin``): same stored timezone
    and same next run, whichever door it came through."""
    now = sched.utcnow()
    DOORS[door](berlin_app, session, db_url, {})
    zone, next_run = stored(engine)
    assert zone == APP_ZONE
    assert next_run == next_seven(APP_ZONE, now)
    assert next_run is not None and next_run.astimezone(sched.zone(APP_ZONE)).hour == 7


def cli_tz() -> None:
    cli("-A", APP_MODULE, "add", NAME, "tasks.t", "--cron", "0 7 * * *", "--tz", "America/New_York")


EXPLICIT: dict[str, Door] = {
    "dict": update_or_create({**SEVEN, "timezone": "America/New_York"}),
    "json": update_or_create(json.dumps({**SEVEN, "timezone": "America/New_York"})),
    "import": lambda app, session, url, extra: import_json(
        app, session, url, {"crontab": {**SEVEN, "timezone": "America/New_York"}}),
    "cli-tz": lambda app, session, url, extra: cli_tz(),
    "scheduler.add": scheduler_add({**SEVEN, "timezone": "America/New_York"}, "crontab"),
}


@pytest.mark.parametrize("door", sorted(EXPLICIT))
def test_an_explicit_timezone_wins_over_the_apps(
    door: str, berlin_app: Celery, session: Session, engine: Engine, db_url: str,
) -> None:
    now = sched.utcnow()
    EXPLICIT[door](berlin_app, session, db_url, {})
    assert stored(engine) == ("America/New_York", next_seven("America/New_York", now))


def test_without_an_app_timezone_a_crontab_is_utc(app: Celery, session: Session, engine: Engine) -> None:
    assert not app.conf.timezone
    PeriodicTask.update_or_create(session, name=NAME, task="tasks.t", crontab="0 7 * * *")
    assert stored(engine)[0] == "UTC"


def test_the_cli_without_an_app_uses_utc(berlin_app: Celery, engine: Engine, db_url: str) -> None:
    """Without -A there is no app to take a timezone from, whatever app the process has."""
    cli("--url", db_url, "add", NAME, "tasks.t", "--cron", "0 7 * * *")
    assert stored(engine)[0] == "UTC"


def test_beat_uses_its_own_apps_timezone_when_another_app_is_current(
    berlin_app: Celery, session: Session, engine: Engine,
) -> None:
    """(the ``app`` fixture makes the app that was current before current again)"""
    other = Celery("other", set_as_current=True)
    other.conf.timezone = "Asia/Tokyo"
    try:
        DOORS["scheduler.add-string"](berlin_app, session, "", {})
    finally:
        other.close()
    assert stored(engine)[0] == APP_ZONE
