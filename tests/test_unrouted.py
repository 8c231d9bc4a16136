"""Runs the broker drops because no queue is bound to their exchange, on a real Redis and
a real RabbitMQ: beat says so once per task and route; routed runs and other messages
are untouched. And every option a task may set goes through a real publish as JSON.

``BEAT_TEST_REDIS_URL`` (flushed) and ``BEAT_TEST_AMQP_URL`` name the brokers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue
from sqlalchemy import select

from beatsqlalchemy import api, broker
from beatsqlalchemy.models import PeriodicTaskRun
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.helpers import tick_until
from harness.servers import AMQP_URL, REDIS_URL, flushed_redis, reachable_amqp

pytest.importorskip("redis")

DROPPED = "the broker dropped run"


def broker_url(kind: str) -> str:
    return flushed_redis(REDIS_URL) if kind == "redis" else reachable_amqp(AMQP_URL)


@pytest.fixture
def make_beat(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., DatabaseScheduler]:
    """Makes schedulers (not started) on one SQLite file and a broker; closed at teardown."""
    getattr(broker, "_REPORTED", set()).clear()  # each test sees its own reports

    def make(url: str, **conf: Any) -> DatabaseScheduler:
        app = Celery("unrouted", broker=url, set_as_current=False)
        request.addfinalizer(app.close)
        app.conf.update(beat_sqlalchemy_url=f"sqlite:///{tmp_path / 'schedule.sqlite3'}",
                        beat_sqlalchemy_sync_interval=0.2, broker_connection_retry_on_startup=True,
                        **{f"beat_sqlalchemy_{key}": value for key, value in conf.items()})
        scheduler = DatabaseScheduler(app=app, lazy=True)
        request.addfinalizer(scheduler.close)
        scheduler.setup_schedule()
        return scheduler

    return make


def sent(scheduler: DatabaseScheduler, name: str) -> int:
    with scheduler.store.engine.connect() as connection:
        return len(connection.execute(select(PeriodicTaskRun.id).where(
            PeriodicTaskRun.periodic_task_name == name, PeriodicTaskRun.state == "sent")).all())


def tick_until_sent(scheduler: DatabaseScheduler, names: list[str], count: int, timeout: float = 10) -> None:
    tick_until(scheduler, lambda: all(sent(scheduler, name) >= count for name in names), timeout)


@pytest.mark.parametrize(("kind", "dedup"), [("redis", 600.0), ("redis", 0.0), ("amqp", 600.0)])
def test_a_run_no_queue_takes_is_reported_once_per_task_and_route(
    kind: str, dedup: float, make_beat: Callable[..., DatabaseScheduler], caplog: pytest.LogCaptureFixture,
) -> None:
    url = broker_url(kind)
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    scheduler = make_beat(url, broker_dedup_seconds=dedup)
    suffix = uuid.uuid4().hex[:8]
    bound, unbound, queue = f"bound-{suffix}", f"unbound-{suffix}", f"q-{suffix}"
    with Connection(url) as connection:  # a queue bound to one exchange, none to the other
        channel = connection.channel()
        Exchange(unbound, type="direct", channel=channel).declare()
        Queue(queue, Exchange(bound, type="direct"), routing_key="rk", channel=channel).declare()
        try:
            every = timedelta(seconds=1)
            scheduler.add(name="lost", task="tasks.lost", schedule=every,
                          options={"exchange": unbound, "routing_key": "rk"})
            scheduler.add(name="routed", task="tasks.routed", schedule=every,
                          options={"exchange": bound, "routing_key": "rk"})
            tick_until_sent(scheduler, ["lost", "routed"], 2)

            warnings = [r.getMessage() for r in caplog.records if DROPPED in r.getMessage()]
            assert len(warnings) == 1, warnings  # two runs lost, said once
            assert "(tasks.lost)" in warnings[0] and repr(unbound) in warnings[0] and "'rk'" in warnings[0]
            with connection.SimpleQueue(queue, no_ack=True) as simple:
                routed = [simple.get(timeout=2).headers["task"] for _ in range(2)]
            assert routed == ["tasks.routed"] * 2
            assert broker.pushes_once(scheduler.connection) == (dedup > 0 and kind == "redis")
        finally:
            Queue(queue, channel=channel).delete()
            for name in (bound, unbound):
                Exchange(name, channel=channel).delete()


def test_amqp_a_missing_exchange_is_reported_and_other_tasks_keep_going(
    make_beat: Callable[..., DatabaseScheduler], caplog: pytest.LogCaptureFixture,
) -> None:
    """RabbitMQ closes the channel of a publish to an exchange that does not exist, and drops
    whatever else was published on it before the close arrived. Beat publishes with
    confirms: the refusal is the refused run's, said once, and every run of the healthy
    task recorded as sent is in its queue."""
    reachable_amqp(AMQP_URL)
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    scheduler = make_beat(AMQP_URL)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    every = timedelta(seconds=1)
    scheduler.add(name="nowhere", task="tasks.nowhere", schedule=every,
                  options={"exchange": f"missing-{uuid.uuid4().hex[:8]}", "routing_key": "rk"})
    scheduler.add(name="healthy", task="tasks.healthy", schedule=every, options={"queue": queue})
    try:
        tick_until_sent(scheduler, ["nowhere", "healthy"], 4)
        with scheduler.store.engine.connect() as connection:
            states = connection.execute(select(PeriodicTaskRun.state).where(
                PeriodicTaskRun.periodic_task_name == "healthy")).scalars().all()
        assert set(states) == {"sent"}, states  # no run of the healthy task failed
        closed = [r.getMessage() for r in caplog.records if "closed beat's channel" in r.getMessage()]
        assert len(closed) == 1 and "NOT_FOUND" in closed[0], closed
        assert "refused the run of 'nowhere' (tasks.nowhere)" in closed[0], closed
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        with Connection(AMQP_URL) as connection, connection.SimpleQueue(queue, no_ack=True) as simple:
            assert [simple.get(timeout=2).headers["task"] for _ in states] == ["tasks.healthy"] * len(states)
    finally:
        with Connection(AMQP_URL) as connection:
            Queue(queue, channel=connection.channel()).delete()


def test_every_allowed_option_publishes_json(
    make_beat: Callable[..., DatabaseScheduler], tmp_path: Path,
) -> None:
    """A task using every option on the allow-list is sent by beat on Redis as a JSON
    message with beat's own task name and id."""
    url = flushed_redis(REDIS_URL)
    scheduler = make_beat(url)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    options = {"time_limit": 60, "soft_time_limit": 50.5, "ignore_result": True, "retry": True,
               "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                "interval_max": 1},
               "compression": "zlib", "delivery_mode": "persistent", "priority": 3, "expires": 3600}
    scheduler.add(name="full", task="tasks.full", schedule=timedelta(seconds=1), args=[1],
                  options={**options, "queue": queue, "headers": {"tenant": "a"}})
    tick_until_sent(scheduler, ["full"], 1)
    with scheduler.store.engine.connect() as connection:
        task_id = connection.scalar(select(PeriodicTaskRun.task_id))
    with Connection(url) as connection, connection.SimpleQueue(queue, no_ack=True) as simple:
        message = simple.get(timeout=2)
    assert message.content_type == "application/json"
    assert message.headers["compression"] == "application/x-gzip" and message.payload[0] == [1]
    assert (message.headers["task"], message.headers["id"]) == ("tasks.full", task_id)
    assert message.headers["timelimit"] == [60, 50.5] and message.headers["tenant"] == "a"
    assert message.headers["eta"] is None and message.headers["expires"] is not None
    assert message.properties["priority"] == 3 and message.properties["delivery_mode"] == 2
    session = api.open_session(scheduler.app)
    try:
        assert api.get_task(session, "full").extra_options == {
            k: v for k, v in options.items() if k not in ("priority", "expires")}
    finally:
        session.close()
