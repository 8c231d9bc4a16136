"""Beat's broker connection on a real Redis: each run reaches its queue at most once.

``BEAT_TEST_REDIS_URL`` names the Redis to use (default ``redis://127.0.0.1:6379/11``;
the tests flush that database).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue
from sqlalchemy import select

from beatsqlalchemy import broker, db, redis_push_once
from beatsqlalchemy.constants import BEAT_HEADER
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.helpers import tick_until

redis = pytest.importorskip("redis")

QUEUE = "beat-runs"


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def make_beat(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., DatabaseScheduler]]:
    """Makes schedulers (not started) on one SQLite file and the Redis broker."""
    made: list[tuple[DatabaseScheduler, Celery]] = []

    def make(identity: str = "beat-a", transport_options: dict[str, Any] | None = None,
             **conf: Any) -> DatabaseScheduler:
        app = Celery(identity, broker=redis_url, set_as_current=False)
        app.conf.update(
            beat_sqlalchemy_url=f"sqlite:///{tmp_path / 'schedule.sqlite3'}",
            beat_sqlalchemy_identity=identity, beat_sqlalchemy_sync_interval=0.2,
            task_default_queue=QUEUE, broker_transport_options=transport_options or {},
            **{f"beat_sqlalchemy_{key}": value for key, value in conf.items()},
        )
        scheduler = DatabaseScheduler(app=app, lazy=True)
        scheduler.setup_schedule()  # creates the schema on SQLite
        made.append((scheduler, app))
        return scheduler

    yield make
    for scheduler, app in made:
        scheduler.close()
        app.close()


def publish(scheduler: DatabaseScheduler, task_id: str, queue: str | Queue = QUEUE, beat: bool = True,
            **options: Any) -> None:
    """Publish one message as beat does, on the scheduler's own producer."""
    headers = {BEAT_HEADER: True} if beat else {}
    scheduler.app.send_task("proj.report", [1], producer=scheduler.producer, task_id=task_id,
                            queue=queue, headers=headers, **options)


def queued(client: Any, key: str = QUEUE) -> list[str]:
    """The task ids of the messages waiting in a queue's Redis list, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(key, 0, -1))]


def test_a_run_reaches_its_queue_once_however_often_it_is_published(
    make_beat: Callable[..., DatabaseScheduler], client: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    first, second = make_beat("beat-a"), make_beat("beat-b")
    for scheduler in (first, second, first):  # a retried publish, another beat
        publish(scheduler, "run-1")
    publish(second, "run-2")
    assert queued(client) == ["run-1", "run-2"]
    refused = [r.getMessage() for r in caplog.records if "not pushed again" in r.getMessage()]
    assert len(refused) == 2 and all("run-1 (proj.report)" in m and repr(QUEUE) in m for m in refused)


def test_the_same_run_goes_to_each_of_its_queues_and_other_messages_are_untouched(
    make_beat: Callable[..., DatabaseScheduler], client: Any,
) -> None:
    scheduler = make_beat()
    publish(scheduler, "run-1")
    publish(scheduler, "run-1", queue="other")
    publish(scheduler, "call-1", beat=False)  # not a beat run (a retry, a plain call)
    publish(scheduler, "call-1", beat=False)
    assert queued(client) == ["run-1", "call-1", "call-1"]
    assert queued(client, "other") == ["run-1"]


def test_a_run_id_is_kept_for_the_dedup_period_then_forgotten(
    make_beat: Callable[..., DatabaseScheduler], client: Any,
) -> None:
    scheduler = make_beat(broker_dedup_seconds=0.5)
    publish(scheduler, "run-1")
    ttl = client.pttl(f"{redis_push_once.KEY_PREFIX}{QUEUE}:run-1")
    assert 0 < ttl <= 500
    publish(scheduler, "run-1")
    assert queued(client) == ["run-1"]
    time.sleep(0.6)
    assert not client.exists(f"{redis_push_once.KEY_PREFIX}{QUEUE}:run-1")
    publish(scheduler, "run-1")
    assert queued(client) == ["run-1", "run-1"]
    # the default: ten minutes
    publish(make_beat("beat-b"), "run-2")
    assert 599_000 < client.pttl(f"{redis_push_once.KEY_PREFIX}{QUEUE}:run-2") <= 600_000


def test_a_push_that_fails_leaves_nothing_behind_and_raises(
    make_beat: Callable[..., DatabaseScheduler], client: Any,
) -> None:
    scheduler = make_beat()
    client.set(QUEUE, "not a list")
    with pytest.raises(Exception, match="WRONGTYPE"):
        publish(scheduler, "run-1", retry=False)
    assert not client.exists(f"{redis_push_once.KEY_PREFIX}{QUEUE}:run-1")  # so a later attempt is pushed
    client.delete(QUEUE)
    publish(scheduler, "run-1")
    assert queued(client) == ["run-1"]


def test_the_global_key_prefix_and_priorities_are_kept_and_a_consumer_gets_the_run(
    make_beat: Callable[..., DatabaseScheduler], client: Any, redis_url: str,
) -> None:
    options = {"global_keyprefix": "proj:", "priority_steps": [0, 3, 6, 9], "sep": ":"}
    scheduler = make_beat(transport_options=options)
    publish(scheduler, "run-1", priority=6)
    publish(scheduler, "run-1", priority=6)
    publish(scheduler, "run-2")
    assert queued(client, f"proj:{QUEUE}:6") == ["run-1"] and queued(client, f"proj:{QUEUE}") == ["run-2"]
    assert client.exists(f"proj:{redis_push_once.KEY_PREFIX}{QUEUE}:run-1")

    received: list[str] = []
    with (Connection(redis_url, transport_options=options) as connection,  # as a worker reads
          connection.SimpleQueue(QUEUE) as queue):
        for _ in range(2):
            message = queue.get(timeout=5)
            received.append(message.headers["id"])
            message.ack()
    assert received == ["run-2", "run-1"]  # on Redis, priority 0 is served first


def test_a_queue_with_x_expires_is_still_expired(
    make_beat: Callable[..., DatabaseScheduler], client: Any,
) -> None:
    scheduler = make_beat()
    queue = Queue("expiring", Exchange("expiring", type="direct"), routing_key="expiring", expires=60)
    queue(scheduler.producer.channel).declare()
    publish(scheduler, "run-1", queue=queue)
    assert queued(client, "expiring") == ["run-1"]
    assert 0 < client.pttl("expiring") <= 60_000


def test_a_stale_claim_whose_run_is_on_the_broker_is_recorded_as_sent_not_pushed_again(
    make_beat: Callable[..., DatabaseScheduler], client: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """The window no sender can see into: the broker accepted a run and its beat died
    before recording it as sent. Another beat takes the claim over; Redis refuses the copy."""
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    crashed = make_beat("crashed", claim_timeout=0.5)
    crashed.store.mark_sent = lambda *args, **kwargs: None  # type: ignore[method-assign]  # dies first
    with db.session_factory(crashed.engine)() as session:
        PeriodicTask.update_or_create(session, name="report", task="proj.report",
                                      interval=timedelta(hours=1))
        PeriodicTask.update_or_create(session, name="report", next_run_at=datetime.now(timezone.utc))
    tick_until(crashed, lambda: len(queued(client)) == 1)
    [task_id] = queued(client)

    survivor = make_beat("survivor", claim_timeout=0.5)
    time.sleep(0.6)
    tick_until(survivor, lambda: run_state(survivor, task_id) == "sent")
    assert queued(client) == [task_id]
    log = [r.getMessage() for r in caplog.records]
    assert any("publishing again the run of 'report'" in m and "claimed by crashed" in m for m in log)
    assert any(f"run {task_id} (proj.report) was pushed onto queue" in m for m in log)


def test_with_the_dedup_off_or_another_broker_the_connection_is_the_apps(
    make_beat: Callable[..., DatabaseScheduler], client: Any,
) -> None:
    off = make_beat(broker_dedup_seconds=0)
    assert not broker.pushes_once(off.connection) and "broker ->" not in off.info
    publish(off, "run-1")
    publish(off, "run-1")
    assert queued(client) == ["run-1", "run-1"]
    assert "each run pushed once (task ids kept 600s)" in make_beat("on").info

    for url in ("memory://", "amqp://guest:guest@127.0.0.1:5672//"):
        app = Celery("other", broker=url, set_as_current=False)
        try:
            connection = broker.beat_connection(app, 600)
            assert not broker.pushes_once(connection)
            assert connection.transport_cls == app.connection_for_write().transport_cls
        finally:
            app.close()


def test_beat_on_another_broker_does_not_load_the_redis_client(tmp_path: Path) -> None:
    """The Redis transport (and redis-py, about 7 MB) is imported only for a Redis broker."""
    script = f"""
import sys
from celery import Celery
from beatsqlalchemy.schedulers import DatabaseScheduler
app = Celery("amqp", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False)
app.conf.beat_sqlalchemy_url = "sqlite:///{tmp_path / 'schedule.sqlite3'}"
scheduler = DatabaseScheduler(app=app, lazy=True)
assert "broker ->" not in scheduler.info
print(sorted(m for m in sys.modules if m == "redis" or m.startswith("kombu.transport.redis")))
"""
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stderr


def test_sentinel_brokers_get_the_push_once_sentinel_transport() -> None:
    app = Celery("sentinel", broker="sentinel://127.0.0.1:26379", set_as_current=False)
    app.conf.broker_transport_options = {"master_name": "mymaster"}
    try:
        connection = broker.beat_connection(app, 60)
        assert connection.get_transport_cls() is redis_push_once.PushOnceSentinelTransport
        assert broker.pushes_once(connection)
        assert connection.transport_options == {"master_name": "mymaster", broker.TTL_OPTION: 60_000}
        options = redis_push_once.PushOnceSentinelChannel.from_transport_options
        assert "master_name" in options and broker.TTL_OPTION in options
    finally:
        app.close()


def run_state(scheduler: DatabaseScheduler, task_id: str) -> str | None:
    with scheduler.engine.connect() as connection:
        return connection.scalar(select(PeriodicTaskRun.state).where(PeriodicTaskRun.task_id == task_id))
