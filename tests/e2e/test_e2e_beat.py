"""Real ``celery beat -S beatsqlalchemy`` and ``celery worker`` processes on a real broker
and a real database: what users see when they run the scheduler.

Every execution is recorded by the worker (see ``harness.processes.APP_MODULE``); the
assertions are on those executions, on beat's log and on the database rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.orm import Session

from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.processes import SYNC_INTERVAL, Cluster, Record, wait_for

pytestmark = pytest.mark.e2e

UTC = timezone.utc
MakeCluster = Callable[[str, str], Cluster]
#: a change reaches beat within one sync interval; the rest is process and broker latency
EFFECT = SYNC_INTERVAL + 1.0
#: how long the crontab check may wait for the next minute boundary (0 disables the wait)
CRON_WAIT = float(os.environ.get("BEAT_E2E_CRON_WAIT", "10"))
TASK_COLUMNS = "name, task, {fk}, args, kwargs, headers, one_off, enabled, total_run_count, description"


# -- plain SQL, as a user or another application would write it ----------------------

def sql(engine: Engine, statement: str, **params: Any) -> int:
    """Run one statement in its own transaction; returns the affected row count."""
    with engine.begin() as connection:
        return connection.execute(text(statement), params).rowcount


def schedule_id(engine: Engine, kind: str, **fields: Any) -> int:
    """The id of the schedule row with these fields, inserted when missing."""
    where = " AND ".join(f"{key} = :{key}" for key in fields)
    query = f"SELECT id FROM celery_{kind}_schedule WHERE {where}"
    with engine.begin() as connection:
        found = connection.execute(text(query), fields).scalar()
        if found is None:
            columns = ", ".join(fields)
            values = ", ".join(f":{key}" for key in fields)
            connection.execute(text(f"INSERT INTO celery_{kind}_schedule ({columns}) VALUES ({values})"),
                               fields)
            found = connection.execute(text(query), fields).scalar_one()
    return int(found)


def insert_task(engine: Engine, name: str, args: str, *, interval_id: int | None = None,
                crontab_id: int | None = None) -> None:
    """INSERT a task the way a django-celery-beat user would (next_run_at left empty)."""
    fk, fk_id = ("interval_id", interval_id) if interval_id is not None else ("crontab_id", crontab_id)
    sql(engine,
        f"INSERT INTO celery_periodic_task ({TASK_COLUMNS.format(fk=fk)}) "
        f"VALUES (:name, 'e2e.record', :fk_id, '{args}', '{{}}', '{{}}', :no, :yes, 0, '')",
        name=name, fk_id=fk_id, no=False, yes=True)


def task_row(engine: Engine, name: str) -> Any:
    """The task's row, read in a fresh transaction."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM celery_periodic_task WHERE name = :name"), {"name": name}
        ).mappings().one_or_none()


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def after(records: list[Record], moment: float) -> list[Record]:
    return [r for r in records if r.t > moment]


def assert_unique_ids(cluster: Cluster) -> None:
    """No run reached the worker twice."""
    ids = [r.id for r in cluster.records()]
    assert len(ids) == len(set(ids)), f"a task id was executed twice: {sorted(ids)}"


# -- tasks fire on schedule; a bad row is skipped ------------------------------------

def test_tasks_fire_on_schedule_and_a_bad_row_does_not_stop_them(
    backend: str, cluster: Cluster, app: Celery, engine: Engine,
) -> None:
    DatabaseScheduler(app=app).add(name="every-second", task="e2e.record",
                                   schedule=timedelta(seconds=1), args=["every-second"])
    cron_id = schedule_id(engine, "crontab", minute="*", hour="*", day_of_week="*",
                          day_of_month="*", month_of_year="*", timezone="UTC")
    insert_task(engine, "every-minute", '["every-minute"]', crontab_id=cron_id)

    cluster.worker()
    beat = cluster.beat()
    ready = time.time()

    # an interval of one second: one run a second
    runs = cluster.wait_runs("every-second", 5, timeout=12)
    gaps = [b.t - a.t for a, b in pairwise(runs[1:])]  # the first may be the slot missed at start
    assert all(0.6 <= gap <= 1.4 for gap in gaps), f"runs one second apart, got gaps {gaps}"

    # a crontab '* * * * *' inserted with plain SQL: beat gave it the next minute boundary
    if CRON_WAIT and 60 - time.time() % 60 <= CRON_WAIT:
        boundary = (time.time() // 60 + 1) * 60
        cluster.wait_runs("every-minute", timeout=boundary - time.time() + EFFECT)
    row = task_row(engine, "every-minute")
    assert not row["needs_recompute"] and row["schedule_error"] is None
    next_run = as_utc(row["next_run_at"])
    assert (next_run.second, next_run.microsecond) == (0, 0)
    assert ready < next_run.timestamp() <= time.time() + 60
    cron_runs, checked = cluster.records("every-minute"), time.time()
    boundaries = [m * 60.0 for m in range(int(ready // 60) + 1, int(checked // 60) + 1)]
    for run in cron_runs:  # one run per boundary passed, on time
        assert any(b <= run.t <= b + EFFECT for b in boundaries), f"off-boundary run {run}"
    assert len({run.t // 60 for run in cron_runs}) == len(cron_runs), f"runs twice: {cron_runs}"
    missed = [b for b in boundaries
              if b + EFFECT < checked and not any(b <= r.t <= b + EFFECT for r in cron_runs)]
    assert not missed, f"no run at the minute boundaries {missed}"

    # bad rows written with plain SQL: logged with their names, skipped
    bad_args = "[9" if backend == "sqlite" else '{"not": "a list"}'  # servers refuse broken JSON
    one_second = schedule_id(engine, "interval", every=1, period="seconds")
    insert_task(engine, "bad-args", bad_args, interval_id=one_second)
    bad_cron = schedule_id(engine, "crontab", minute="61", hour="*", day_of_week="*",
                           day_of_month="*", month_of_year="*", timezone="UTC")
    insert_task(engine, "bad-crontab", '["bad-crontab"]', crontab_id=bad_cron)
    inserted = time.time()
    beat.wait_log(r"task 'bad-args' cannot be scheduled and is skipped: args: ", timeout=EFFECT + 2)
    beat.wait_log(r"task 'bad-crontab' cannot be scheduled and is skipped: minute: ", timeout=EFFECT)
    assert task_row(engine, "bad-args")["schedule_error"].startswith("args: ")

    # ... and every other task keeps running, beat stays up
    cluster.wait_runs("every-second", 3, since=inserted + EFFECT, timeout=EFFECT + 5)
    assert beat.alive()
    assert not cluster.records("bad-args") and not cluster.records("bad-crontab")
    assert beat.log().count("task 'bad-args' cannot be scheduled") == 1, "reported once, not every tick"

    # fixing the row is enough: beat picks it up again
    fixed_at = time.time()
    sql(engine, "UPDATE celery_periodic_task SET args = '[\"bad-args\"]' WHERE name = 'bad-args'")
    first = cluster.wait_runs("bad-args", timeout=1 + EFFECT + 1)[0]
    assert first.t - fixed_at <= 1 + EFFECT + 1
    assert task_row(engine, "bad-args")["schedule_error"] is None
    assert beat.alive()
    assert_unique_ids(cluster)


# -- changes while beat runs, through the API and through plain SQL ----------------------

def test_changes_while_beat_runs_take_effect_within_the_sync_interval(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    cluster.worker()
    beat = cluster.beat()
    scheduler = DatabaseScheduler(app=app)

    def runs(tag: str, version: int | None = None) -> list[Record]:
        return [r for r in cluster.records(tag) if version is None or r.args == [version]]

    # added
    added = time.time()
    scheduler.add(name="api", task="e2e.record", schedule=timedelta(seconds=1), args=["api", 1])
    one_second = schedule_id(engine, "interval", every=1, period="seconds")
    insert_task(engine, "sql", '["sql", 1]', interval_id=one_second)
    for tag in ("api", "sql"):
        first = cluster.wait_runs(tag, timeout=1 + EFFECT + 2)[0]
        assert first.t - added <= 1 + EFFECT, f"{tag} ran {first.t - added:.2f}s after it was added"

    # changed: new args and an interval of two seconds
    changed = time.time()
    PeriodicTask.update_or_create(session, name="api", args=["api", 2],
                                  interval={"every": 2, "period": "seconds"})
    two_seconds = schedule_id(engine, "interval", every=2, period="seconds")
    sql(engine, "UPDATE celery_periodic_task SET args = '[\"sql\", 2]', interval_id = :iid "
        "WHERE name = 'sql'", iid=two_seconds)
    for tag in ("api", "sql"):
        new = cluster.wait_runs(tag, 3, args=[2], timeout=2 * 3 + EFFECT + 2)
        assert new[0].t - changed <= 2 + EFFECT, f"{tag}: first changed run too late"
        assert not after(runs(tag, 1), changed + EFFECT), f"{tag} still ran with the old args"
        gaps = [b.t - a.t for a, b in pairwise(new)]
        assert all(1.5 <= gap <= 2.5 for gap in gaps), f"{tag}: two seconds apart, got {gaps}"

    # disabled
    disabled = time.time()
    PeriodicTask.update_or_create(session, name="api", enabled=False)
    sql(engine, "UPDATE celery_periodic_task SET enabled = :off WHERE name = 'sql'", off=False)
    time.sleep(EFFECT + 2.5)  # longer than the interval: a run would have come
    for tag in ("api", "sql"):
        assert not after(runs(tag), disabled + EFFECT), f"{tag} ran while disabled"

    # re-enabled
    enabled = time.time()
    PeriodicTask.update_or_create(session, name="api", enabled=True)
    sql(engine, "UPDATE celery_periodic_task SET enabled = :on WHERE name = 'sql'", on=True)
    for tag in ("api", "sql"):
        back = cluster.wait_runs(tag, since=enabled, timeout=2 + EFFECT + 2)[0]
        assert back.t - enabled <= 2 + EFFECT, f"{tag} came back {back.t - enabled:.2f}s late"

    # deleted
    deleted = time.time()
    assert scheduler.remove("api") is True
    assert sql(engine, "DELETE FROM celery_periodic_task WHERE name = 'sql'") == 1
    time.sleep(EFFECT + 2.5)
    for tag in ("api", "sql"):
        assert not after(runs(tag), deleted + EFFECT), f"{tag} ran after it was deleted"

    assert beat.alive()
    assert_unique_ids(cluster)
    assert "Traceback" not in beat.log()


# -- kill -9 right after a send ---------------------------------------------------------

def test_kill_9_right_after_a_send_does_not_send_again_after_restart(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    import redis

    scheduler = DatabaseScheduler(app=app)
    now = datetime.now(UTC)
    scheduler.add(name="hourly", task="e2e.record", schedule=timedelta(hours=1), args=["hourly"])
    PeriodicTask.update_or_create(session, name="hourly", next_run_at=now)  # due now, then in an hour
    scheduler.add(name="one-off", task="e2e.record", schedule=timedelta(seconds=1), args=["one-off"],
                  one_off=True)
    scheduler.add(name="clocked", task="e2e.record", schedule=now + timedelta(seconds=1),
                  args=["clocked"])
    tags = ("hourly", "one-off", "clocked")

    # beat alone: the messages wait in Redis; kill -9 the moment all three are there
    client = redis.Redis.from_url(cluster.broker_url)
    try:
        beat = cluster.beat(wait=False)
        wait_for(lambda: client.llen(cluster.queue) >= len(tags), timeout=30, interval=0.005,
                 what="beat to publish the three runs")
        beat.kill9()
        assert client.llen(cluster.queue) == len(tags)
    finally:
        client.close()
    with engine.connect() as connection:
        claimed = connection.execute(text(
            "SELECT periodic_task_name, task_id FROM celery_periodic_task_run")).all()
    assert sorted(name for name, _ in claimed) == sorted(tags)

    # restart beat (stale pid file and all), then a worker; wait several sync intervals
    restarted = cluster.beat()
    cluster.worker()
    cluster.wait_runs(None, len(tags), timeout=15)
    time.sleep(2 + 4 * SYNC_INTERVAL)

    for tag in tags:
        executed = cluster.records(tag)
        assert len(executed) == 1, f"{tag} executed {len(executed)} times across the restart"
    assert_unique_ids(cluster)
    assert {r.id for r in cluster.records()} == {task_id for _, task_id in claimed}
    for tag in tags:
        assert f"Sending due task {tag} " not in restarted.log(), f"{tag} was sent again"
    hourly = task_row(engine, "hourly")
    assert as_utc(hourly["next_run_at"]) - now >= timedelta(minutes=59)
    assert hourly["total_run_count"] == 1
    for tag in ("one-off", "clocked"):
        row = task_row(engine, tag)
        assert not row["enabled"] and row["next_run_at"] is None
    assert restarted.alive()


# -- RabbitMQ -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite"])
def test_on_rabbitmq(make_cluster: MakeCluster, amqp_url: str, db_url: str, app: Celery) -> None:
    from kombu import Connection

    cluster = make_cluster(amqp_url, db_url)
    try:
        scheduler = DatabaseScheduler(app=app)
        scheduler.add(name="every-second", task="e2e.record", schedule=timedelta(seconds=1),
                      args=["every-second"])
        cluster.worker()
        beat = cluster.beat()
        runs = cluster.wait_runs("every-second", 4, timeout=10)
        assert all(0.6 <= b.t - a.t <= 1.4 for a, b in pairwise(runs[1:]))
        added = time.time()
        scheduler.add(name="added", task="e2e.record", schedule=timedelta(seconds=1), args=["added"])
        first = cluster.wait_runs("added", timeout=1 + EFFECT + 2)[0]
        assert first.t - added <= 1 + EFFECT
        assert beat.alive()
        assert_unique_ids(cluster)
    finally:
        cluster.stop_all()
        with Connection(amqp_url) as connection:
            connection.default_channel.queue_delete(cluster.queue)


# -- an un-migrated database ---------------------------------------------------------------

def test_beat_on_an_unmigrated_database(backend: str, make_cluster: MakeCluster, redis_url: str,
                                        empty_db_url: str) -> None:
    cluster = make_cluster(redis_url, empty_db_url)
    if backend == "sqlite":  # the default database: beat creates the schema itself
        beat = cluster.beat()
        assert beat.alive()
        engine = create_engine(empty_db_url)
        try:
            assert "celery_periodic_task" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
        return
    beat = cluster.beat(wait=False)
    code = beat.wait_exit(timeout=30)
    log = beat.log()
    assert code != 0
    assert "has no beatsqlalchemy tables" in log
    assert "upgrade" in log.split("has no beatsqlalchemy tables", 1)[1].splitlines()[0]
    assert "Sending due task" not in log
