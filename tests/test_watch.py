"""The change watch: beat reads the database when something changed, not every sync.

PostgreSQL (LISTEN/NOTIFY) and a SQLite file (PRAGMA data_version) have a watch;
MySQL/MariaDB has none and reads at every sync interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.store import Run, Store
from beatsqlalchemy.watch import ChangeWatch, watch_for
from harness.helpers import tick_for

WATCHED = ("sqlite", "postgresql")


class Beat(DatabaseScheduler):
    """Records runs instead of publishing them, and counts the window reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Run] = []
        self.reads = 0
        super().__init__(*args, **kwargs)

    def _read(self) -> None:
        self.reads += 1
        super()._read()

    def _send(self, run: Run) -> bool:
        self.sent.append(run)
        return True


@pytest.fixture
def beat(app: Celery) -> Iterator[Beat]:
    scheduler = Beat(app=app)
    yield scheduler
    scheduler.close()


@pytest.fixture
def other_engine(db_url: str) -> Iterator[Engine]:
    """A second engine on the same database: another process's writes."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.005)
    return time.monotonic() - started


def make(session: Session, name: str, due: datetime | None = None) -> PeriodicTask:
    """An hourly task, due at ``due`` (default: in an hour)."""
    task, _ = PeriodicTask.update_or_create(session, name=name, task=f"tasks.{name}",
                                            interval=timedelta(hours=1))
    if due is not None:
        move(session.get_bind(), task.id, due)  # type: ignore[arg-type]
    return task


def move(engine: Engine, pk: int, due: datetime) -> None:
    """Set a task's next run with plain SQL (beat takes the value as it is)."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = :due WHERE id = :id"),
                           {"due": due.replace(tzinfo=None), "id": pk})


def test_watch_exists_where_the_database_can_tell(backend: str, engine: Engine) -> None:
    watch = watch_for(engine)
    assert (watch is not None) == (backend in WATCHED)
    assert watch_for(create_engine("sqlite://")) is None  # in memory: no other connection


@pytest.fixture(params=["default", "psycopg2"])
def watched_engine(request: pytest.FixtureRequest, backend: str, db_url: str) -> Iterator[Engine]:
    """The suite's engine, and on PostgreSQL also one through psycopg2 (a plain URL's driver)."""
    if request.param == "default":
        yield db.get_engine(db_url)
        return
    if backend != "postgresql":
        pytest.skip("psycopg2 is a PostgreSQL driver")
    engine = create_engine(make_url(db_url).set(drivername="postgresql+psycopg2"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("how", ["api", "sql"])
def test_watch_sees_a_commit_of_another_connection(
    backend: str, watched_engine: Engine, other_engine: Engine, session: Session, how: str,
) -> None:
    if backend not in WATCHED:
        pytest.skip("MySQL/MariaDB has no change notification: beat reads at every sync")
    task = make(session, "watched")
    watch = watch_for(watched_engine)
    assert watch is not None
    try:
        assert watch.arm() and watch.armed
        time.sleep(0.05)
        assert watch.changed() is False  # nothing committed since
        if how == "api":
            with Session(other_engine) as other:
                api.save_task(other, name="watched", task="tasks.watched", schedule=5.0)
        else:  # a plain-SQL edit: the trigger notifies on PostgreSQL
            with other_engine.begin() as connection:
                connection.execute(text("UPDATE celery_periodic_task SET description = 'x' WHERE id = :id"),
                                   {"id": task.id})
        wait_for(watch.changed, timeout=2.0)
        assert not watch.armed  # said once; armed again by the next read
        assert watch.arm()
        assert watch.changed() is False
    finally:
        watch.close()


def test_watch_that_lost_its_connection_says_changed_and_reconnects(
    backend: str, watched_engine: Engine, other_engine: Engine, session: Session,
) -> None:
    if backend != "postgresql":
        pytest.skip("a SQLite file has no connection to lose; MySQL/MariaDB has no watch")
    watch = watch_for(watched_engine)
    assert isinstance(watch, ChangeWatch)
    try:
        assert watch.arm()
        pid = watch._connection.info.backend_pid
        with other_engine.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        wait_for(watch.changed, timeout=2.0)  # a change may have been missed: "changed"
        assert watch.arm()  # a new connection
        assert watch._connection.info.backend_pid != pid
        make(session, "after")
        wait_for(watch.changed, timeout=2.0)
    finally:
        watch.close()


def test_beat_reads_only_when_something_changed(
    backend: str, beat: Beat, session: Session, other_engine: Engine,
) -> None:
    make(session, "hourly")
    later = make(session, "later")
    statements: list[str] = []
    event.listen(beat.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    beat.tick()  # the first read
    assert beat.reads == 1
    statements.clear()
    tick_for(beat, 1.0)  # five sync intervals (0.2 s) with nothing changed
    if backend in WATCHED:
        assert beat.reads == 1 and statements == []
    else:
        assert beat.reads >= 4 and statements
    reads = beat.reads
    move(other_engine, later.id, sched.utcnow())  # another process makes a task due now
    took = wait_for(lambda: (beat.tick(), [r.name for r in beat.sent] == ["later"])[1], timeout=2.0)
    assert beat.reads > reads
    if backend in WATCHED:
        assert took < 0.5  # the watch is checked every 0.1 s
    assert api.runs(session, name="later")[0].state == "sent"
    with Session(other_engine) as other:  # and through the API
        api.save_task(other, name="hourly", task="tasks.hourly", schedule=5.0)
    wait_for(lambda: (beat.tick(), any(at - time.time() < 6 for at, _, _ in beat._window))[1], timeout=2.0)


def test_beat_reads_before_its_window_runs_out(app: Celery, backend: str, session: Session) -> None:
    app.conf.beat_sqlalchemy_sync_interval = 0.3
    app.conf.beat_sqlalchemy_window = 1.0
    soon = sched.utcnow() + timedelta(seconds=1.8)  # beyond the first window
    make(session, "later", due=soon)
    beat = Beat(app=app)
    try:
        beat.tick()
        assert beat._window == []
        wait_for(lambda: (beat.tick(), bool(beat.sent))[1], timeout=4.0)
        assert time.time() >= soon.timestamp()
        assert beat.reads >= 2  # read again before the first window ran out, though nothing changed
    finally:
        beat.close()


def test_beat_takes_over_a_stale_claim_though_nothing_changed(
    app: Celery, backend: str, engine: Engine, session: Session,
) -> None:
    app.conf.beat_sqlalchemy_claim_timeout = 1.0
    now = sched.utcnow()
    make(session, "due", due=now - timedelta(seconds=1))
    other = Store(engine, "beat-that-died")
    due = [(r.id, r.next_run_at) for r in other.window(now, 100).due]
    claimed = other.claim(due, now).runs
    assert [r.name for r in claimed] == ["due"]  # claimed, never published nor marked sent
    beat = Beat(app=app)
    try:
        beat.tick()
        assert beat.sent == []  # a fresh claim of another beat
        took = wait_for(lambda: (beat.tick(), bool(beat.sent))[1], timeout=4.0)
        assert [r.task_id for r in beat.sent] == [claimed[0].task_id]  # the same run, once
        assert took > 0.5
        assert api.runs(session, name="due")[0].state == "sent"
    finally:
        beat.close()


def test_watch_can_be_turned_off(app: Celery, backend: str) -> None:
    app.conf.beat_sqlalchemy_watch_interval = 0
    beat = Beat(app=app)
    try:
        beat.tick()
        tick_for(beat, 0.7)
        assert beat._watch is None and beat.reads >= 3  # every sync interval (0.2 s)
    finally:
        beat.close()


def test_info_names_the_watch(app: Celery, backend: str) -> None:
    beat = Beat(app=app)
    try:
        assert ("changes -> watched every 0.1s" in beat.info) == (backend in WATCHED)
    finally:
        beat.close()
