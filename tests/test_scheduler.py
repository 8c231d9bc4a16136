"""DatabaseScheduler ticked in-process on every backend; sends are recorded, not published."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.store import RUNS, TASKS, Run
from harness.helpers import tick_for, tick_until

HALF_SECOND = timedelta(milliseconds=500)


class RecordingScheduler(DatabaseScheduler):
    """Records each run instead of publishing it (the broker is covered end to end elsewhere)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[tuple[float, Run]] = []
        super().__init__(*args, **kwargs)

    def _send(self, run: Run) -> bool:
        self.sent.append((time.time(), run))
        return True

    def runs_of(self, name: str) -> list[Run]:
        return [run for _, run in self.sent if run.name == name]


@pytest.fixture
def beat(app: Celery) -> Iterator[RecordingScheduler]:
    scheduler = RecordingScheduler(app=app)
    yield scheduler
    scheduler.close()


def execute(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


# -- firing ------------------------------------------------------------------------------

def test_tasks_fire_on_schedule(beat: RecordingScheduler, engine: Engine) -> None:
    beat.add(name="every-second", task="tasks.ping", schedule=timedelta(seconds=1), args=[7])
    tick_for(beat, 3.3)

    fired = beat.sent
    assert 3 <= len(fired) <= 4, [run.slot for _, run in fired]
    slots = [run.slot for _, run in fired]
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots))
    for sent_at, run in fired:  # on time: not before the slot, and promptly after it
        assert run.slot.timestamp() - 0.01 <= sent_at < run.slot.timestamp() + 0.3
        assert (run.task, run.args) == ("tasks.ping", [7])
    with engine.connect() as connection:
        logged = connection.execute(select(RUNS.c.task_id, RUNS.c.state)).all()
    assert sorted(logged) == sorted((run.task_id, "sent") for _, run in fired)
    assert len({run.task_id for _, run in fired}) == len(fired)


def test_changes_through_the_api_take_effect_while_ticking(beat: RecordingScheduler) -> None:
    limit = 0.2 + 0.5 + 0.4  # sync interval + the task's interval + slack
    tick_for(beat, 0.3)
    assert beat.sent == []

    beat.add(name="api", task="tasks.a", schedule=HALF_SECOND, args=[1])
    assert tick_until(beat, lambda: len(beat.runs_of("api")) >= 1, limit) <= limit

    beat.add(name="api", task="tasks.b", schedule=HALF_SECOND, args=[2], kwargs={"x": 1})
    mark = len(beat.sent)
    tick_until(beat, lambda: len(beat.sent) > mark, limit)
    changed = beat.runs_of("api")[-1]
    assert (changed.task, changed.args, changed.kwargs) == ("tasks.b", [2], {"x": 1})

    beat.add(name="api", enabled=False)
    mark = len(beat.sent)
    tick_for(beat, 1.2)
    assert len(beat.sent) == mark  # nothing after it was disabled

    beat.add(name="api", enabled=True)
    tick_until(beat, lambda: len(beat.sent) > mark, limit)

    assert beat.remove("api") is True
    mark = len(beat.sent)
    tick_for(beat, 1.2)
    assert len(beat.sent) == mark
    assert beat.remove("api") is False


def test_changes_through_plain_sql_take_effect_while_ticking(
    beat: RecordingScheduler, engine: Engine,
) -> None:
    limit = 0.2 + 0.5 + 0.4
    execute(engine, "INSERT INTO celery_interval_schedule (every, period) VALUES (500000, 'microseconds')")
    with engine.connect() as connection:
        interval_id = connection.execute(text(
            "SELECT id FROM celery_interval_schedule WHERE every = 500000"
        )).scalar_one()
    tick_for(beat, 0.3)

    execute(
        engine,
        "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, one_off, "
        "enabled, total_run_count, description, needs_recompute) VALUES "
        "('sql', 'tasks.sql', :iid, '[1]', '{}', '{}', :f, :t, 0, '', :f)",
        iid=interval_id, f=False, t=True,
    )
    tick_until(beat, lambda: len(beat.runs_of("sql")) >= 1, limit)
    assert beat.runs_of("sql")[0].args == [1]

    execute(engine, "UPDATE celery_periodic_task SET task = 'tasks.changed', args = '[2]' WHERE name = 'sql'")
    mark = len(beat.sent)
    tick_until(beat, lambda: len(beat.sent) > mark, limit)
    assert (beat.sent[-1][1].task, beat.sent[-1][1].args) == ("tasks.changed", [2])

    execute(engine, "UPDATE celery_periodic_task SET enabled = :f WHERE name = 'sql'", f=False)
    mark = len(beat.sent)
    tick_for(beat, 1.2)
    assert len(beat.sent) == mark

    execute(engine, "UPDATE celery_periodic_task SET enabled = :t WHERE name = 'sql'", t=True)
    tick_until(beat, lambda: len(beat.sent) > mark, limit)

    # a schedule edited in place: the task follows it
    execute(engine, "UPDATE celery_interval_schedule SET every = 1, period = 'hours' WHERE id = :id",
            id=interval_id)
    tick_for(beat, 0.3)
    mark = len(beat.sent)
    tick_for(beat, 1.0)
    assert len(beat.sent) == mark
    execute(engine, "UPDATE celery_interval_schedule SET every = 500000, period = 'microseconds' "
                    "WHERE id = :id", id=interval_id)
    tick_until(beat, lambda: len(beat.sent) > mark, 1.0 + limit)  # anchored at the last run

    execute(engine, "DELETE FROM celery_periodic_task WHERE name = 'sql'")
    mark = len(beat.sent)
    tick_for(beat, 1.2)
    assert len(beat.sent) == mark


# -- beat_schedule ---------------------------------------------------------------------------

def test_beat_schedule_installed_at_first_tick(app: Celery, engine: Engine) -> None:
    app.conf.beat_schedule = {
        "relative": {
            "task": "tasks.cfg", "schedule": 0.5, "args": (1, 2), "kwargs": {"k": 3},
            "options": {"expires": 20, "queue": "cfgq", "priority": 3, "soft_time_limit": 9},
        },
        "as-timedelta": {
            "task": "tasks.cfg2", "schedule": HALF_SECOND,
            "options": {"expires": timedelta(seconds=45)},
        },
    }
    scheduler = RecordingScheduler(app=app)
    try:
        with engine.connect() as connection:
            assert connection.execute(select(TASKS.c.name)).all() == []
        scheduler.tick()
        with engine.connect() as connection:
            stored = {r.name: r for r in connection.execute(
                select(TASKS.c.name, TASKS.c.source, TASKS.c.expires, TASKS.c.expire_seconds,
                       TASKS.c.queue, TASKS.c.priority)
            )}
        assert set(stored) == {"relative", "as-timedelta"}
        assert stored["relative"].source == "config"
        assert (stored["relative"].expires, stored["relative"].expire_seconds) == (None, 20)
        assert (stored["as-timedelta"].expires, stored["as-timedelta"].expire_seconds) == (None, 45)
        assert (stored["relative"].queue, stored["relative"].priority) == ("cfgq", 3)

        tick_until(scheduler, lambda: bool(scheduler.runs_of("relative"))
                   and bool(scheduler.runs_of("as-timedelta")), 2.0)
        relative = scheduler.runs_of("relative")[0]
        assert (relative.task, relative.args, relative.kwargs) == ("tasks.cfg", [1, 2], {"k": 3})
        assert relative.options["expires"] == 20  # still relative to the send
        assert relative.options["queue"] == "cfgq" and relative.options["priority"] == 3
        assert relative.options["soft_time_limit"] == 9
        assert scheduler.runs_of("as-timedelta")[0].options["expires"] == 45
    finally:
        scheduler.close()


# -- bad rows, info, outages ---------------------------------------------------------------------

def test_bad_row_does_not_stop_others_and_is_logged_once(
    app: Celery, engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    # runs are due more often than beat syncs, so a row broken while it sits in beat's
    # window fails first at its claim and then again at the recompute the edit triggers
    app.conf.beat_sqlalchemy_sync_interval = 1.0
    beat = RecordingScheduler(app=app)
    try:
        beat.add(name="good", task="tasks.good", schedule=HALF_SECOND)
        beat.add(name="broken", task="tasks.broken", schedule=HALF_SECOND)
        beat.add(name="bad-cron", task="tasks.cron", schedule="*/5 * * * *")
        tick_for(beat, 0.2)
        broken_json = "'[9'" if engine.dialect.name == "sqlite" else "'{\"not\": \"a list\"}'"
        execute(engine, f"UPDATE celery_periodic_task SET args = {broken_json} WHERE name = 'broken'")
        execute(engine, "UPDATE celery_crontab_schedule SET minute = '99'")
        tick_for(beat, 2.3)

        assert len(beat.runs_of("good")) >= 4
        assert beat.runs_of("broken") == [] and beat.runs_of("bad-cron") == []
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([m for m in errors if "'broken'" in m]) == 1, errors
        assert len([m for m in errors if "'bad-cron'" in m]) == 1, errors
        assert any("'broken'" in m and "args" in m for m in errors)
        assert any("'bad-cron'" in m and "minute" in m and "'99'" in m for m in errors)

        # fixed with plain SQL: scheduled again
        execute(engine, "UPDATE celery_periodic_task SET args = '[5]' WHERE name = 'broken'")
        tick_until(beat, lambda: bool(beat.runs_of("broken")), 1.0 + 0.5 + 0.4)
        assert beat.runs_of("broken")[0].args == [5]
    finally:
        beat.close()


def test_info_redacts_the_password(backend: str, tmp_path: Path) -> None:
    urls = {
        "sqlite": f"sqlite:///{tmp_path}/beat.sqlite3",
        "postgresql": "postgresql+psycopg://postgres:s3cret-Pw@127.0.0.1:5432/postgres",
        "mysql": "mysql+pymysql://root:s3cret-Pw@127.0.0.1:3306/test",
    }
    app = Celery("info", broker="memory://", set_as_current=False)
    app.conf.beat_sqlalchemy_url = urls[backend]
    try:
        info = DatabaseScheduler(app=app, lazy=True).info
    finally:
        app.close()
    assert "s3cret-Pw" not in info
    if backend == "sqlite":
        assert str(tmp_path) in info
    else:
        assert make_url(urls[backend]).render_as_string(hide_password=True) in info
        assert "***" in info


def test_database_outage_never_raises_and_is_logged_once(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    urls = {  # nothing listens on port 1; the SQLite file's directory does not exist
        "sqlite": f"sqlite:///{tmp_path}/missing/dir/beat.sqlite3",
        "postgresql": "postgresql+psycopg://postgres:s3cret-Pw@127.0.0.1:1/x",
        "mysql": "mysql+pymysql://root:s3cret-Pw@127.0.0.1:1/x",
    }
    app = Celery("outage", broker="memory://", set_as_current=False)
    app.conf.beat_sqlalchemy_url = urls[backend]
    app.conf.beat_sqlalchemy_create_schema = False
    app.conf.beat_sqlalchemy_sync_interval = 0.1
    app.conf.beat_schedule = {"cfg": {"task": "tasks.cfg", "schedule": 1.0}}
    try:
        scheduler = RecordingScheduler(app=app)
        waits = []
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            wait = scheduler.tick()
            waits.append(wait)
            time.sleep(min(wait, 0.05))
        scheduler.close()
    finally:
        app.close()
    assert len(waits) > 20
    assert all(w > 0 for w in waits), min(waits)
    assert scheduler.sent == []
    outage = [r for r in caplog.records if "error while" in r.getMessage()]
    assert len(outage) == 1, [r.getMessage() for r in outage]
    assert outage[0].levelno == logging.ERROR
    assert "s3cret-Pw" not in caplog.text


def test_idle_tick_does_not_touch_the_database(app: Celery, engine: Engine, session: Session) -> None:
    app.conf.beat_sqlalchemy_sync_interval = 0.5
    app.conf.beat_sqlalchemy_watch_interval = 0  # reads every sync (with a watch: test_watch.py)
    PeriodicTask.update_or_create(session, name="hourly", task="tasks.h", interval=timedelta(hours=1))
    PeriodicTask.update_or_create(session, name="soon", task="tasks.s", interval=timedelta(seconds=5))
    scheduler = RecordingScheduler(app=app)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(scheduler.engine, "before_cursor_execute", count)
    try:
        scheduler.tick()  # the first sync
        assert statements, "the first tick should read the database"
        statements.clear()
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < 0.3:  # well inside the sync interval
            wait = scheduler.tick()
            assert wait > 0
            ticks += 1
        assert ticks > 100
        assert statements == []

        time.sleep(0.25)
        scheduler.tick()  # the sync interval has passed: one sync, one indexed statement
        assert len(statements) == 1, statements  # the near window and the flagged-rows probe
        assert "BEGIN" not in statements[0]  # read outside a transaction: no write lock on SQLite
        assert scheduler.sent == []
    finally:
        event.remove(scheduler.engine, "before_cursor_execute", count)
        scheduler.close()


def test_after_downtime_each_task_follows_its_misfire_policy(
    app: Celery, session: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    """Beat was down for three and a half hours: by default a task sends one catch-up run (not one per
    missed slot); a "skip" task and, under Celery's beat_cron_starting_deadline, a crontab
    send none and wait for their next slot; the run log says why."""
    from beatsqlalchemy.schedules import utcnow

    app.conf.beat_cron_starting_deadline = 300
    down_since = utcnow() - timedelta(hours=3, minutes=30)
    for name, fields in {
        "every-minute": {"schedule": timedelta(minutes=1)},
        "hourly-skip": {"schedule": timedelta(hours=1), "misfire_policy": "skip"},
        "nightly-cron": {"schedule": f"{down_since.minute} {down_since.hour} * * *"},
        "nightly-catch-up": {"schedule": f"{down_since.minute} {down_since.hour} * * *",
                             "misfire_policy": "catch_up"},
    }.items():
        PeriodicTask.update_or_create(session, name=name, task=f"tasks.{name}", **fields)
        PeriodicTask.update_or_create(session, name=name, next_run_at=down_since)
    beat = RecordingScheduler(app=app)
    try:
        caplog.set_level(logging.INFO, logger="beatsqlalchemy")
        tick_for(beat, 1.5)
        assert sorted(run.name for _, run in beat.sent) == ["every-minute", "nightly-catch-up"]
        skipped = [r.getMessage() for r in caplog.records if "skipped the run of" in r.getMessage()]
        assert len(skipped) == 2 and any("'hourly-skip'" in m for m in skipped)
        states = {name: state for name, state in session.execute(
            select(RUNS.c.periodic_task_name, RUNS.c.state))}
        assert states == {"every-minute": "sent", "nightly-catch-up": "sent",
                          "hourly-skip": "skipped", "nightly-cron": "skipped"}
        hourly = session.scalars(select(PeriodicTask).where(PeriodicTask.name == "hourly-skip")).one()
        session.refresh(hourly)
        assert hourly.next_run_at is not None and hourly.next_run_at > utcnow()
        assert hourly.total_run_count == 0
    finally:
        beat.close()
