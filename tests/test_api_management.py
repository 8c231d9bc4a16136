"""The management API on every backend: get, list, create, update, enable, disable, delete,
run_now, next_run_at, export and import."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from queue import Empty
from typing import Any

import pytest
from celery import Celery
from kombu.simple import SimpleQueue
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db, migrate
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.exceptions import TaskNotFound, ValidationError
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.helpers import stored, task_count, task_id_of

UTC = timezone.utc


def names(tasks: list[PeriodicTask]) -> list[str]:
    return [t.name for t in tasks]


def run_rows(engine: Engine, name: str) -> list[PeriodicTaskRun]:
    with db.session_factory(engine)() as session:
        query = select(PeriodicTaskRun).where(PeriodicTaskRun.periodic_task_name == name)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


class Inbox:
    """A fresh queue on the app's in-memory broker, read with a connection of its own."""

    def __init__(self, simple: SimpleQueue, name: str) -> None:
        self.simple = simple
        self.name = name


@pytest.fixture
def queue(app: Celery) -> Iterator[Inbox]:
    name = f"q-{uuid.uuid4().hex[:8]}"
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(name, no_ack=True)
        yield Inbox(simple, name)
        simple.close()


def received(queue: Inbox) -> list[Any]:
    """Every message waiting in the queue."""
    messages = []
    while True:
        try:
            messages.append(queue.simple.get(timeout=0.2))
        except Empty:
            return messages


def add_sample(session: Session) -> None:
    """Five tasks, two disabled, two sending tasks.report."""
    api.create_task(session, "report-daily", "tasks.report", "0 6 * * *")
    api.create_task(session, "report-weekly", "tasks.report", "0 6 * * mon", enabled=False)
    api.create_task(session, "ping", "tasks.ping", timedelta(seconds=30))
    api.create_task(session, "Big_Job%", "tasks.big", timedelta(hours=1))
    api.create_task(session, "cleanup", "tasks.cleanup", timedelta(minutes=10), enabled=False)


# -- get, create, update -------------------------------------------------------------------

def test_get_task_and_task_not_found(session: Session) -> None:
    api.create_task(session, "one", "tasks.one", timedelta(seconds=5), args=[1])
    task = api.get_task(session, "one")
    assert (task.name, task.task, task.args) == ("one", "tasks.one", [1])
    with pytest.raises(TaskNotFound) as caught:
        api.get_task(session, "two")
    assert caught.value.name == "two" and isinstance(caught.value, LookupError)
    with pytest.raises(ValidationError) as invalid:
        api.get_task(session, "")
    assert invalid.value.field == "name"


def test_create_task_computes_next_run_and_refuses_a_taken_name(engine: Engine, session: Session) -> None:
    before = sched.utcnow()
    api.create_task(session, "one", "tasks.one", timedelta(seconds=30), kwargs={"a": 1})
    row = stored(engine, "one")
    assert row is not None and row.kwargs == {"a": 1} and row.enabled
    assert row.next_run_at is not None and before + timedelta(seconds=29) < row.next_run_at
    with pytest.raises(ValidationError) as caught:
        api.create_task(session, "one", "tasks.other", timedelta(seconds=5))
    assert (caught.value.field, caught.value.value) == ("name", "one")
    again = stored(engine, "one")
    assert again is not None and again.task == "tasks.one"


@pytest.mark.parametrize(("fields", "field", "value"), [
    ({"schedule": "61 * * * *"}, "minute", "61"),
    ({"schedule": timedelta(seconds=5), "args": {"a": 1}}, "args", {"a": 1}),
    ({"schedule": timedelta(seconds=5), "kwargs": "[1"}, "kwargs", "[1"),
    ({"schedule": timedelta(seconds=5), "priority": 256}, "priority", 256),
    ({"schedule": {"minute": "0", "timezone": "Mars/Olympus"}}, "timezone", "Mars/Olympus"),
    ({"schedule": None}, "schedule", None),
])
def test_create_task_validates_and_writes_nothing(
    engine: Engine, session: Session, fields: dict[str, Any], field: str, value: Any,
) -> None:
    fields = dict(fields)
    if isinstance(fields["schedule"], dict):
        fields["crontab"] = fields.pop("schedule")
    with pytest.raises(ValidationError) as caught:
        api.create_task(session, "bad", "tasks.bad", **fields)
    assert (caught.value.field, caught.value.value) == (field, value)
    assert task_count(engine) == 0


def test_update_task_changes_what_is_given_only(engine: Engine, session: Session) -> None:
    api.create_task(session, "one", "tasks.one", timedelta(seconds=30), args=[1], queue="q")
    api.update_task(session, "one", args=[2], priority=9)
    row = stored(engine, "one")
    assert row is not None
    assert (row.task, row.args, row.queue, row.priority) == ("tasks.one", [2], "q", 9)
    assert row.interval is not None and (row.interval.every, row.interval.period) == (30, "seconds")
    with pytest.raises(TaskNotFound):
        api.update_task(session, "nope", args=[1])
    assert stored(engine, "nope") is None, "update never creates"
    with pytest.raises(ValidationError) as caught:
        api.update_task(session, "one", args=[3], priority=-1)
    assert (caught.value.field, caught.value.value) == ("priority", -1)
    row = stored(engine, "one")
    assert row is not None and (row.args, row.priority) == ([2], 9), "nothing written on error"


# -- list and count ------------------------------------------------------------------------

def test_list_is_sorted_and_filtered(session: Session) -> None:
    add_sample(session)
    assert names(api.list_tasks(session)) == sorted(
        ["report-daily", "report-weekly", "ping", "Big_Job%", "cleanup"]
    )
    assert names(api.list_tasks(session, enabled=False)) == ["cleanup", "report-weekly"]
    assert names(api.list_tasks(session, enabled=True, task="tasks.report")) == ["report-daily"]
    assert names(api.list_tasks(session, name="report-*")) == ["report-daily", "report-weekly"]
    assert names(api.list_tasks(session, name="REPORT-?AILY")) == ["report-daily"], "case-insensitive"
    assert names(api.list_tasks(session, name="ping")) == ["ping"], "no wildcard: the whole name"
    assert names(api.list_tasks(session, name="pin")) == []
    # LIKE's own wildcards are plain characters in a pattern
    assert names(api.list_tasks(session, name="big_job%")) == ["Big_Job%"]
    assert names(api.list_tasks(session, name="big%job*")) == []
    assert names(api.list_tasks(session, name="big?job*")) == ["Big_Job%"]
    assert api.count_tasks(session) == 5
    assert api.count_tasks(session, enabled=True, name="*") == 3
    assert api.count_tasks(session, task="tasks.report") == 2


def test_list_paginates(session: Session) -> None:
    for number in range(7):
        api.create_task(session, f"t{number}", "tasks.t", timedelta(seconds=10 + number))
    assert names(api.list_tasks(session, limit=3)) == ["t0", "t1", "t2"]
    assert names(api.list_tasks(session, limit=3, offset=5)) == ["t5", "t6"]
    assert names(api.list_tasks(session, offset=6)) == ["t6"]
    assert names(api.list_tasks(session, page=2, size=3)) == ["t3", "t4", "t5"]
    assert names(api.list_tasks(session, page=3, size=3)) == ["t6"]
    assert names(api.list_tasks(session, page=4, size=3)) == []
    assert len(api.list_tasks(session, page=1)) == 7  # default size 50


@pytest.mark.parametrize(("filters", "field"), [
    ({"page": 0}, "page"), ({"size": 0}, "size"), ({"limit": -1}, "limit"),
    ({"offset": -2}, "offset"), ({"page": 1, "limit": 5}, "page"), ({"enabled": "yes"}, "enabled"),
    ({"name": ""}, "name"),
])
def test_list_rejects_bad_filters(session: Session, filters: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        api.list_tasks(session, **filters)
    assert caught.value.field == field


# -- enable, disable, delete -----------------------------------------------------------------

def test_disable_and_enable(engine: Engine, session: Session) -> None:
    api.create_task(session, "one", "tasks.one", timedelta(minutes=1))
    disabled = api.disable_task(session, "one")
    assert not disabled.enabled
    row = stored(engine, "one")
    assert row is not None and not row.enabled and row.next_run_at is None
    before = sched.utcnow()
    api.enable_task(session, "one")
    row = stored(engine, "one")
    assert row is not None and row.enabled
    assert row.next_run_at is not None and row.next_run_at >= before + timedelta(seconds=59)
    with pytest.raises(TaskNotFound):
        api.enable_task(session, "two")
    with pytest.raises(TaskNotFound):
        api.disable_task(session, "two")


def test_bulk_enable_disable_are_all_or_nothing(engine: Engine, session: Session) -> None:
    add_sample(session)
    changed = api.disable_tasks(session, ["ping", "report-daily", "ping"])
    assert names(changed) == ["ping", "report-daily"]
    assert names(api.list_tasks(session, enabled=True)) == ["Big_Job%"]
    with pytest.raises(TaskNotFound) as caught:
        api.enable_tasks(session, ["ping", "missing", "cleanup"])
    assert caught.value.name == "missing"
    assert names(api.list_tasks(session, enabled=True)) == ["Big_Job%"], "nothing enabled"
    assert names(api.enable_tasks(session, ["ping", "missing"], missing_ok=True)) == ["ping"]
    row = stored(engine, "ping")
    assert row is not None and row.enabled and row.next_run_at is not None


def test_delete(engine: Engine, session: Session) -> None:
    add_sample(session)
    api.delete_task(session, "ping")
    assert stored(engine, "ping") is None
    with pytest.raises(TaskNotFound):
        api.delete_task(session, "ping")
    with pytest.raises(TaskNotFound):
        api.delete_tasks(session, ["cleanup", "ping"])
    assert stored(engine, "cleanup") is not None, "nothing deleted when one name is missing"
    assert api.delete_tasks(session, ["cleanup", "ping"], missing_ok=True) == ["cleanup"]
    assert api.delete_tasks(session, ["report-daily", "report-weekly"]) == ["report-daily", "report-weekly"]
    assert names(api.list_tasks(session)) == ["Big_Job%"]
    assert api.remove_task(session, "nope") is False  # the lenient form stays as it was


# -- next_run_at -----------------------------------------------------------------------------

def test_next_run_at_for_any_task(engine: Engine, session: Session) -> None:
    now = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    api.create_task(session, "cron", "tasks.cron", "*/15 * * * *")
    stored_next = stored(engine, "cron")
    assert stored_next is not None
    assert api.next_run_at(session, "cron") == stored_next.next_run_at
    api.disable_task(session, "cron")
    assert api.next_run_at(session, "cron") is None
    with pytest.raises(TaskNotFound):
        api.next_run_at(session, "nope")
    # a task inserted with plain SQL, not yet seen by beat: computed as beat will
    api.create_task(session, "other", "tasks.other", "0 8 * * *")  # creates the crontab row
    with engine.begin() as connection:
        crontab_id = connection.execute(text(
            "SELECT crontab_id FROM celery_periodic_task WHERE name = 'other'")).scalar_one()
        connection.execute(text(
            "INSERT INTO celery_periodic_task (name, task, crontab_id, args, kwargs, headers, one_off, "
            "enabled, total_run_count, description, needs_recompute) VALUES ('plain', 'tasks.p', :cid, "
            "'[]', '{}', '{}', :no, :yes, 0, '', :no)"), {"cid": crontab_id, "no": False, "yes": True})
    assert api.next_run_at(session, "plain", now) == datetime(2030, 1, 2, 8, 0, tzinfo=UTC)


def test_next_run_at_of_a_broken_row_names_the_problem(engine: Engine, session: Session) -> None:
    api.create_task(session, "cron", "tasks.cron", "0 8 * * *")
    with engine.begin() as connection:  # plain SQL makes the crontab invalid
        connection.execute(text("UPDATE celery_crontab_schedule SET minute = '77'"))
    session.expire_all()
    with pytest.raises(ValidationError) as caught:
        api.next_run_at(session, "cron")
    assert (caught.value.field, caught.value.value) == ("minute", "77")


def test_upcoming_runs(session: Session) -> None:
    now = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    api.create_task(session, "cron", "tasks.cron", crontab={
        "minute": "30", "hour": "7", "day_of_week": "mon", "timezone": "Europe/Berlin"})
    task = api.get_task(session, "cron")
    first = task.next_run_at
    assert first is not None
    runs = api.upcoming(session, "cron", 3)
    assert runs[0] == first and [b - a for a, b in pairwise(runs)] == [timedelta(days=7)] * 2
    assert all(r.astimezone(sched.zone("Europe/Berlin")).strftime("%a %H:%M") == "Mon 07:30" for r in runs)
    api.create_task(session, "once", "tasks.once", datetime(2031, 1, 1, tzinfo=UTC))
    assert api.upcoming(session, "once", 3, now) == [datetime(2031, 1, 1, tzinfo=UTC)]
    api.disable_task(session, "cron")
    assert api.upcoming(session, "cron") == []


# -- run_now ------------------------------------------------------------------------------

def test_run_now_sends_records_and_counts_without_moving_next_run(
    engine: Engine, session: Session, app: Celery, queue: Inbox,
) -> None:
    api.create_task(session, "report", "tasks.report", timedelta(hours=1), args=[1, "a"],
                    kwargs={"fmt": "pdf"}, options={"queue": queue.name, "priority": 7, "expires": 60})
    before = stored(engine, "report")
    assert before is not None and before.next_run_at is not None
    run = api.run_now(session, app, "report", sent_by="tester")

    messages = received(queue)
    assert len(messages) == 1
    message = messages[0]
    assert message.headers["id"] == run.task_id and message.headers["task"] == "tasks.report"
    assert message.payload[0] == [1, "a"] and message.payload[1] == {"fmt": "pdf"}
    assert message.properties["priority"] == 7
    assert message.headers["expires"] is not None

    logged = run_rows(engine, "report")
    assert len(logged) == 1
    row = logged[0]
    assert (row.state, row.sent_by, row.task_id) == ("sent", "tester", run.task_id)
    assert row.task_id == task_id_of(engine, before.id, row.slot), "deterministic: the task and the moment"
    assert row.sent_at is not None and row.claimed_at == row.slot
    after = stored(engine, "report")
    assert after is not None
    assert after.total_run_count == 1 and after.last_run_at == row.slot
    assert after.next_run_at == before.next_run_at, "the schedule does not move"
    assert not after.needs_recompute

    second = api.run_now(session, app, "report")
    assert second.task_id != run.task_id, "each run gets a fresh task id"
    assert second.sent_by.startswith("api:") and len(received(queue)) == 1
    final = stored(engine, "report")
    assert final is not None and final.total_run_count == 2


def test_run_now_sends_a_disabled_task_and_a_registered_one(
    engine: Engine, session: Session, app: Celery, queue: Inbox,
) -> None:
    @app.task(name="tasks.registered", shared=False)
    def registered(x: int) -> int:
        return x

    api.create_task(session, "paused", "tasks.registered", timedelta(minutes=5), args=[5],
                    queue=queue.name, enabled=False)
    api.run_now(session, app, "paused")
    messages = received(queue)
    assert [m.headers["task"] for m in messages] == ["tasks.registered"]
    row = stored(engine, "paused")
    assert row is not None and not row.enabled and row.next_run_at is None and row.total_run_count == 1


def test_run_now_errors_send_and_record_nothing(
    engine: Engine, session: Session, app: Celery, queue: Inbox,
) -> None:
    with pytest.raises(TaskNotFound):
        api.run_now(session, app, "missing")
    api.create_task(session, "expired", "tasks.x", timedelta(minutes=5), queue=queue.name,
                    expires=datetime(2001, 1, 1, tzinfo=UTC), enabled=False)  # enabled: refused
    with pytest.raises(ValidationError) as caught:
        api.run_now(session, app, "expired")
    assert caught.value.field == "expires"
    api.create_task(session, "broken", "tasks.x", timedelta(minutes=5), queue=queue.name)
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET kwargs = '[1]' WHERE name = 'broken'"))
    session.expire_all()
    with pytest.raises(ValidationError) as broken:
        api.run_now(session, app, "broken")
    assert (broken.value.field, broken.value.value) == ("kwargs", [1])
    assert received(queue) == []
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(PeriodicTaskRun)).scalar_one() == 0


def test_run_now_broker_down_records_nothing(engine: Engine, session: Session, db_url: str) -> None:
    down = Celery("down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    down.conf.update(beat_sqlalchemy_url=db_url, task_publish_retry=False,
                     broker_connection_retry=False, broker_connection_max_retries=0)
    api.create_task(session, "one", "tasks.one", timedelta(minutes=5))
    with pytest.raises(Exception) as caught:
        api.run_now(session, down, "one")
    assert not isinstance(caught.value, (ValidationError, TaskNotFound))
    row = stored(engine, "one")
    assert row is not None and row.total_run_count == 0 and row.last_run_at is None
    assert run_rows(engine, "one") == []
    down.close()


# -- export and import ------------------------------------------------------------------------

def add_every_kind(session: Session) -> None:
    """One task of each schedule kind, with every option set somewhere."""
    api.create_task(session, "interval", "tasks.i", timedelta(seconds=90), args=[1, "two", None],
                    kwargs={"nested": {"a": [1, 2]}}, queue="q1", exchange="ex", routing_key="rk",
                    headers={"h": "v"}, priority=3, expire_seconds=30, description="every ninety seconds",
                    extra_options={"time_limit": 20})
    api.create_task(session, "cron", "tasks.c", crontab={
        "minute": "30", "hour": "7", "day_of_week": "mon-fri", "timezone": "Europe/Berlin"},
        start_time=datetime(2030, 5, 1, 12, 0, tzinfo=UTC), enabled=False)
    api.create_task(session, "solar", "tasks.s", None, solar={"event": "sunset", "latitude": 52.52,
                                                             "longitude": -13.405},
                    expires=datetime(2040, 1, 2, 3, 4, 5, tzinfo=UTC))
    api.create_task(session, "clocked", "tasks.k", datetime(2035, 6, 7, 8, 9, 10, 123456, tzinfo=UTC))
    api.save_task(session, "from-config", task="tasks.f", schedule=timedelta(days=1), source="config")


def test_export_shape(session: Session) -> None:
    add_every_kind(session)
    exported = api.export_tasks(session)
    assert [e["name"] for e in exported] == ["clocked", "cron", "from-config", "interval", "solar"]
    by_name = {e["name"]: e for e in exported}
    assert by_name["interval"]["interval"] == {"every": 90, "period": "seconds"}
    assert by_name["interval"]["schedule"] == "every 90 seconds"
    assert by_name["cron"]["crontab"]["timezone"] == "Europe/Berlin"
    assert by_name["cron"]["schedule"] == "at 07:30, Monday through Friday (Europe/Berlin)"
    assert by_name["solar"]["solar"] == {"event": "sunset", "latitude": 52.52, "longitude": -13.405}
    assert by_name["clocked"]["clocked"] == {"clocked_time": "2035-06-07T08:09:10.123456+00:00"}
    assert by_name["clocked"]["one_off"] is True
    assert by_name["from-config"]["source"] == "config"
    assert by_name["interval"]["source"] == "database"
    assert by_name["solar"]["expires"] == "2040-01-02T03:04:05+00:00"
    assert "next_run_at" not in by_name["interval"] and "total_run_count" not in by_name["interval"]


def test_export_import_into_an_empty_database_reproduces_it(session: Session, empty_db_url: str) -> None:
    add_every_kind(session)
    exported = api.export_tasks(session)
    engine = db.get_engine(empty_db_url)
    migrate.upgrade(engine)
    with db.session_factory(engine)() as copy:
        assert api.import_tasks(copy, exported) == (5, 0)
        assert api.export_tasks(copy) == exported
        assert api.import_tasks(copy, {"tasks": exported}) == (0, 5)
        assert api.export_tasks(copy) == exported
        copied = api.get_task(copy, "cron")
        assert copied.next_run_at is None and not copied.enabled
        assert api.get_task(copy, "interval").next_run_at is not None


def test_import_updates_by_name_and_leaves_others(engine: Engine, session: Session) -> None:
    api.create_task(session, "keep", "tasks.keep", timedelta(seconds=5))
    api.create_task(session, "change", "tasks.old", timedelta(seconds=5), queue="q")
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET total_run_count = 4 WHERE name = 'change'"))
    created, updated = api.import_tasks(session, [
        {"name": "change", "task": "tasks.new", "crontab": {"minute": "0"}, "total_run_count": 99,
         "next_run_at": "2001-01-01T00:00:00+00:00", "schedule": "ignored words"},
        {"name": "new", "task": "tasks.n", "interval": {"every": 2, "period": "minutes"}},
    ])
    assert (created, updated) == (1, 1)
    change = stored(engine, "change")
    assert change is not None
    assert (change.task, change.queue, change.total_run_count) == ("tasks.new", "q", 4), "run state kept"
    assert change.crontab is not None and change.interval is None
    assert change.next_run_at is not None and change.next_run_at > sched.utcnow()
    assert stored(engine, "keep") is not None


@pytest.mark.parametrize(("entries", "field", "value", "where"), [
    ([{"name": "a", "task": "t", "interval": {"every": 5, "period": "seconds"}},
      {"name": "b", "task": "t", "interval": {"every": 0, "period": "seconds"}}], "every", 0, "task 'b'"),
    ([{"name": "a", "task": "t", "crontab": {"minute": "0"}, "colour": "red"}], "colour", "red", "task 'a'"),
    ([{"name": "a", "task": "t", "crontab": {"minute": "0"}, "source": "yaml"}], "source", "yaml",
     "task 'a'"),
    ([{"task": "t", "crontab": {"minute": "0"}}], "name", None, "task #1"),
    ([{"name": "a", "task": "t", "crontab": {"minute": "0"}}, "oops"], "task", "oops", "task #2"),
    ([{"name": "new", "task": "t"}], "schedule", None, "task 'new'"),
    ({"name": "a"}, "tasks", {"name": "a"}, None),
])
def test_import_is_all_or_nothing(
    engine: Engine, session: Session, entries: Any, field: str, value: Any, where: str | None,
) -> None:
    api.create_task(session, "a", "tasks.original", timedelta(seconds=5))
    with pytest.raises(ValidationError) as caught:
        api.import_tasks(session, entries)
    assert (caught.value.field, caught.value.value) == (field, value)
    if where:
        assert f"(in {where})" in str(caught.value)
    assert task_count(engine) == 1
    original = stored(engine, "a")
    assert original is not None and original.task == "tasks.original"


# -- the scheduler's add/remove use the same functions ------------------------------------

def test_scheduler_add_remove_and_the_api_agree(engine: Engine, session: Session, app: Celery) -> None:
    scheduler = DatabaseScheduler(app=app)
    scheduler.add(name="shared", task="tasks.s", schedule=timedelta(seconds=7), args=[1])
    assert api.get_task(session, "shared").args == [1]
    assert names(api.list_tasks(session, task="tasks.s")) == ["shared"]
    api.disable_task(session, "shared")
    scheduler.add(name="shared", task="tasks.s", schedule=timedelta(seconds=7), args=[2])
    task = stored(engine, "shared")
    assert task is not None and task.args == [2] and not task.enabled
    assert scheduler.remove("shared") is True
    with pytest.raises(TaskNotFound):
        api.get_task(session, "shared")
