"""Run ids on every backend: unique per deployment and per task row, for ever (two
deployments sharing a Redis broker, a task re-created under a reused row id), and the same
for a given run across the beats of one deployment and their restarts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, delete, event, select, text, update
from sqlalchemy.orm import Session
from test_broker import QUEUE, queued

from beatsqlalchemy import api, db, migrate
from beatsqlalchemy.exceptions import DeploymentIdMissing, ValidationError
from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.runids import DEPLOYMENT_TABLE
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import RUNS, TASKS, Run, Store
from harness.helpers import task_id_of, tick_until
from harness.servers import REDIS_URL, flushed_redis, new_database

redis = pytest.importorskip("redis")

HOURLY = {"every": 1, "period": "hours"}


@pytest.fixture
def client() -> Iterator[Any]:
    connection = redis.Redis.from_url(flushed_redis(REDIS_URL))
    yield connection
    connection.close()


@pytest.fixture
def beats() -> Iterator[list[DatabaseScheduler]]:
    """Schedulers made by ``beat_on``, closed at the end."""
    made: list[DatabaseScheduler] = []
    yield made
    for scheduler in made:
        scheduler.close()
        scheduler.app.close()


def beat_on(url: str, identity: str) -> DatabaseScheduler:
    """A scheduler (not started) of its own app, on ``url`` and the Redis broker."""
    app = Celery(identity, broker=REDIS_URL, set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=url, beat_sqlalchemy_identity=identity, task_default_queue=QUEUE)
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()
    return scheduler


def logged(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(RUNS).order_by(RUNS.c.id)))


def due_task(session: Session, name: str, slot: datetime) -> int:
    """An hourly task whose next run is ``slot``; returns its row id."""
    PeriodicTask.update_or_create(session, name=name, task="proj.report", interval=HOURLY)
    task, _ = PeriodicTask.update_or_create(session, name=name, next_run_at=slot)
    return task.id


def claim(store: Store, pk: int, slot: datetime) -> Run:
    [run] = store.claim([(pk, slot)], slot + timedelta(seconds=1)).runs
    return run


# -- several deployments on one broker ----------------------------------------------------

def test_two_deployments_on_one_broker_both_runs_reach_the_queue(
    backend: str, tmp_path_factory: pytest.TempPathFactory, client: Any, beats: list[DatabaseScheduler],
) -> None:
    """Two applications, each with its own schedule database, one Redis broker (with beat's
    dedup of copies): the same row id and slot in both, and both runs reach the queue."""
    urls = [new_database(backend, "deployment", tmp_path_factory) for _ in range(2)]
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    pks = []
    for url in urls:
        engine = db.get_engine(url)
        migrate.upgrade(engine)
        with db.session_factory(engine)() as session:
            pks.append(due_task(session, "report", slot))
    assert pks[0] == pks[1]  # the trap: the same row id in both databases

    beats += [beat_on(url, f"beat-{i}") for i, url in enumerate(urls)]
    for beat in beats:
        tick_until(beat, lambda beat=beat: [r.state for r in logged(beat.engine)] == ["sent"])
    runs = [logged(beat.engine)[0] for beat in beats]
    assert [(r.periodic_task_id, r.slot) for r in runs] == [(pks[0], slot)] * 2
    assert runs[0].task_id != runs[1].task_id
    assert sorted(queued(client)) == sorted(r.task_id for r in runs), "a run was refused as a copy"

    # a run sent now (``run``, the API) at the same moment in both: two runs as well
    now = utcnow()
    sent = []
    for beat in beats:
        with db.session_factory(beat.engine)() as session:
            sent.append(api.run_now(session, beat.app, "report", sent_by="tester", now=now).task_id)
    assert sent[0] != sent[1]
    assert sorted(queued(client)) == sorted([*(r.task_id for r in runs), *sent])


# -- a row id used again --------------------------------------------------------------------

def test_a_task_recreated_under_its_row_id_gets_other_run_ids(
    backend: str, engine: Engine, session: Session,
) -> None:
    """A task deleted and created again under the same row id (SQLite reuses the highest
    row id; elsewhere a plain-SQL insert may name it) is claimed for the same slot: its run
    gets an id of its own, and the run log takes it."""
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    pk = due_task(session, "report", slot)
    store = Store(engine, "beat-a")
    first = claim(store, pk, slot)
    api.delete_task(session, "report")

    if backend == "sqlite":
        again = due_task(session, "report", slot)
        assert again == pk  # reused
    else:
        with engine.begin() as connection:
            interval = connection.scalar(text("SELECT id FROM celery_interval_schedule"))
            connection.execute(text(
                "INSERT INTO celery_periodic_task (id, name, task, interval_id, args, kwargs, headers, "
                "one_off, enabled, total_run_count, description, next_run_at) VALUES (:id, 'report', "
                "'proj.report', :iid, '[]', '{}', '{}', :f, :t, 0, '', :slot)"),
                {"id": pk, "iid": interval, "f": False, "t": True, "slot": slot.replace(tzinfo=None)})
    second = claim(store, pk, slot)
    assert (second.task_pk, second.slot) == (first.task_pk, first.slot)
    assert second.task_id != first.task_id
    assert second.task_id == task_id_of(engine, pk, slot)
    assert sorted(r.task_id for r in logged(engine)) == sorted([first.task_id, second.task_id])


# -- the same run, the same id --------------------------------------------------------------

def test_run_ids_are_the_same_across_beats_and_restarts(engine: Engine, session: Session) -> None:
    """What the HA guarantees rest on: another beat, on another engine (a restart reads the
    deployment id again), derives the same id for the same run."""
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    pk = due_task(session, "report", slot)
    first = claim(Store(engine, "beat-a"), pk, slot)
    with engine.begin() as connection:  # as if that claim had never happened
        connection.execute(delete(RUNS))
        connection.execute(update(TASKS).where(TASKS.c.id == pk).values(next_run_at=slot))
    other = create_engine(engine.url)
    try:
        again = claim(Store(other, "beat-b"), pk, slot)
    finally:
        other.dispose()
    assert again.task_id == first.task_id == task_id_of(engine, pk, slot)
    assert claim(Store(engine, "beat-a"), pk, slot + timedelta(hours=1)).task_id != first.task_id


def test_the_deployment_id_is_read_once_not_per_claim(engine: Engine, session: Session) -> None:
    slot = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    pks = [due_task(session, f"t{i}", slot) for i in range(3)]
    fresh = create_engine(engine.url)  # nothing read on it yet
    reads: list[str] = []

    @event.listens_for(fresh, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if DEPLOYMENT_TABLE in statement:
            reads.append(statement)

    try:
        store = Store(fresh, "beat-a")
        for pk in pks:
            claim(store, pk, slot)
        assert len(reads) == 1
        Store(fresh, "beat-b").claim([(pks[0], slot + timedelta(hours=1))], slot + timedelta(hours=1))
        assert len(reads) == 1  # known for this engine
    finally:
        fresh.dispose()


# -- run keys and the deployment id -------------------------------------------------------

def test_every_row_gets_a_run_key_of_its_own(engine: Engine, session: Session) -> None:
    """From our code and from plain SQL that leaves it out; our API does not set it."""
    PeriodicTask.update_or_create(session, name="orm", task="t", interval=HOURLY)
    with engine.begin() as connection:
        interval = connection.scalar(text("SELECT id FROM celery_interval_schedule"))
        connection.execute(text(
            "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, "
            "one_off, enabled, total_run_count, description) VALUES "
            + ", ".join(f"('sql-{i}', 't', :iid, '[]', '{{}}', '{{}}', :f, :t, 0, '')" for i in range(3))),
            {"iid": interval, "f": False, "t": True})
        keys = list(connection.scalars(select(TASKS.c.run_key)))
    assert len(keys) == 4 == len(set(keys))
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys), keys
    with pytest.raises(ValidationError, match="run_key"):
        PeriodicTask.update_or_create(session, name="orm", run_key="0" * 32)


def test_a_missing_deployment_id_is_a_clear_refusal(
    empty_db_url: str,
) -> None:
    engine = create_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text(f"DELETE FROM {DEPLOYMENT_TABLE}"))
        migrate.upgrade(engine)  # at head: nothing to do, and the check is done again
        with pytest.raises(DeploymentIdMissing, match=f"{DEPLOYMENT_TABLE} must hold exactly one"):
            migrate.ensure_schema(engine, create=False)
    finally:
        engine.dispose()
