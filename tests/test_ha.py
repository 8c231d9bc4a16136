"""Several beats on one database, on every backend: claim tokens, take-over of stale claims,
confirmation after a stall, broker refusals, run-log pruning and queries."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db, runlog
from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.runids import run_task_id
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import RUNS, Run, Store, Takeover
from harness.helpers import task_id_of, tick_for, tick_until

HOURLY = {"every": 1, "period": "hours"}
HALF_SECOND = timedelta(milliseconds=500)
CLAIM_TIMEOUT = 1.0


# -- helpers ----------------------------------------------------------------------------

def make(session: Session, name: str, due: datetime, **fields: Any) -> int:
    """Create a task (hourly unless told) whose next run is ``due``; returns its id."""
    fields.setdefault("interval", HOURLY)
    fields.setdefault("task", f"tasks.{name}")
    task, created = PeriodicTask.update_or_create(session, name=name, **fields)
    assert created
    task, _ = PeriodicTask.update_or_create(session, name=name, next_run_at=due)
    return task.id


def logged(engine: Engine) -> list[Any]:
    """Every run-log row, in claim order."""
    with engine.connect() as connection:
        return list(connection.execute(select(RUNS).order_by(RUNS.c.id)).all())


def by_id(engine: Engine) -> dict[int, Any]:
    return {r.id: r for r in logged(engine)}


def age_claims(engine: Engine, claimed_at: datetime, *run_ids: int) -> None:
    """Move the claim time of these runs (all runs when none are given) back."""
    statement = update(RUNS).values(claimed_at=claimed_at)
    if run_ids:
        statement = statement.where(RUNS.c.id.in_(run_ids))
    with engine.begin() as connection:
        connection.execute(statement)


def execute(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def claim_due(store: Store, now: datetime) -> list[Run]:
    """What a beat does: read the due window, claim it."""
    return store.claim([(r.id, r.next_run_at) for r in store.window(now, 1000).due], now).runs


def logged_id(task_pk: int, slot: datetime) -> str:
    """The task id ``log_run`` gives a run (a take-over publishes the stored one)."""
    return run_task_id("test-deployment", task_pk, "test-key", slot)


def log_run(engine: Engine, task_pk: int, name: str, slot: datetime, claimed_at: datetime,
            state: str = "sent", sent_by: str = "beat-a") -> None:
    """A run-log row as a beat writes it."""
    with engine.begin() as connection:
        connection.execute(insert(RUNS).values(
            periodic_task_id=task_pk, periodic_task_name=name, slot=slot,
            task_id=logged_id(task_pk, slot), state=state, sent_by=sent_by,
            claim_token=uuid.uuid4().hex, claimed_at=claimed_at,
            sent_at=claimed_at if state == "sent" else None,
        ))


def broken_args(engine: Engine) -> str:
    """A stored ``args`` value that is not a JSON array (SQLite: not even JSON)."""
    return "'[9'" if engine.dialect.name == "sqlite" else "'{\"not\": \"a list\"}'"


class Beat(DatabaseScheduler):
    """A beat ticked in-process: records what it publishes, can refuse, stall or pause."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Run] = []
        self.refused: list[Run] = []
        self.refuse = False
        self.send_delay = 0.0
        #: called once, with the runs, between a claim and its publish (a paused process)
        self.pause: Callable[[list[Run]], None] | None = None
        #: called before each send attempt
        self.before_send: Callable[[Run], None] | None = None
        super().__init__(*args, **kwargs)

    def _publish(self, runs: list[Run], token: str, claimed: float) -> None:
        pause, self.pause = self.pause, None
        if pause is not None and runs:
            pause(runs)
        else:
            self.pause = pause
        super()._publish(runs, token, claimed)

    def _send(self, run: Run) -> bool:
        if self.before_send is not None:
            self.before_send(run)
        time.sleep(self.send_delay)
        if self.refuse:
            self.refused.append(run)
            return False
        self.sent.append(run)
        return True


@pytest.fixture
def beats(db_url: str) -> Iterator[Callable[..., Beat]]:
    """Makes beats on the test database, each with its own app and identity."""
    made: list[tuple[Beat, Celery]] = []

    def start(identity: str, **conf: Any) -> Beat:
        app = Celery(identity, broker="memory://", set_as_current=False)
        app.conf.beat_sqlalchemy_url = db_url
        app.conf.beat_sqlalchemy_sync_interval = 0.2
        app.conf.beat_sqlalchemy_claim_timeout = CLAIM_TIMEOUT
        app.conf.beat_sqlalchemy_identity = identity
        for key, value in conf.items():
            app.conf[f"beat_sqlalchemy_{key}"] = value
        beat = Beat(app=app)
        made.append((beat, app))
        return beat

    yield start
    for beat, app in made:
        beat.close()
        app.close()


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# -- claim --------------------------------------------------------------------------------

def test_claim_logs_each_run_with_token_identity_and_task_id(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    first = make(session, "first", slot)
    second = make(session, "second", slot)
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")

    result = a.claim([(first, slot), (second, slot)], now)
    assert len(result.runs) == 2 and len(result.token) == 32
    rows = by_id(engine)
    assert len(rows) == 2
    for run in result.runs:
        row = rows[run.run_id]
        assert (row.state, row.sent_by, row.claim_token) == ("claimed", "beat-a", result.token)
        assert (row.periodic_task_id, row.slot, row.claimed_at) == (run.task_pk, slot, now)
        assert row.task_id == run.task_id == task_id_of(engine, run.task_pk, slot)
    assert result.runs[0].task_id != result.runs[1].task_id

    # the next slot of the same tasks, claimed by another beat: another token and task ids
    later = now + timedelta(hours=1)
    next_result = b.claim([(r.id, r.next_run_at) for r in b.window(later, 100).due], later)
    assert {r.task_pk for r in next_result.runs} == {first, second}
    assert next_result.token != result.token
    rows = by_id(engine)
    for run in next_result.runs:
        row = rows[run.run_id]
        assert (row.slot, row.sent_by, row.claim_token) == (
            slot + timedelta(hours=1), "beat-b", next_result.token,
        )
        assert row.task_id == run.task_id == task_id_of(engine, run.task_pk, row.slot)
        assert row.task_id not in {r.task_id for r in result.runs}
    assert len(rows) == 4


# -- take over ------------------------------------------------------------------------------

def test_take_over_moves_a_stale_claim_to_the_new_beat(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pk = make(session, "nightly", slot, args=[1], queue="q1")
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")
    [claimed] = claim_due(a, now)
    old_token = logged(engine)[0].claim_token
    # the task changes while its run waits: the run goes out as the task is now
    PeriodicTask.update_or_create(session, name="nightly", args=[2], kwargs={"k": 3}, queue="q2")

    later = now + timedelta(seconds=40)
    stale_before = later - timedelta(seconds=30)
    # a claim 40 s old is fresh for a 60 s timeout, stale for a 30 s one
    assert b.window(later, 100).stale(later - timedelta(seconds=60)) is False
    assert b.take_over(later, later - timedelta(seconds=60), 100)[1] == []
    assert b.window(later, 100).stale(stale_before) is True

    token, taken = b.take_over(later, stale_before, 100)
    assert token != old_token and len(token) == 32
    [takeover] = taken
    assert isinstance(takeover, Takeover)
    assert (takeover.previous_claimer, takeover.claimed_at) == ("beat-a", now)
    run = takeover.run
    assert (run.run_id, run.task_pk, run.name, run.task) == (claimed.run_id, pk, "nightly", "tasks.nightly")
    assert (run.slot, run.task_id) == (slot, claimed.task_id)
    assert (run.args, run.kwargs, run.options["queue"]) == ([2], {"k": 3}, "q2")
    assert run.options["headers"]["celery_beat_task"] is True

    [row] = logged(engine)
    assert (row.state, row.sent_by, row.claim_token, row.claimed_at) == ("claimed", "beat-b", token, later)
    assert (row.task_id, row.slot) == (claimed.task_id, slot)
    # now fresh again: nobody takes it, and the window no longer reports a stale claim
    assert a.take_over(later, stale_before, 100)[1] == []
    assert a.window(later, 100).stale(stale_before) is False


def test_take_over_leaves_fresh_and_sent_claims(engine: Engine, session: Session) -> None:
    now = utcnow()
    make(session, "sent", now - timedelta(seconds=1))
    make(session, "pending", now - timedelta(seconds=1))
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")
    runs = {r.name: r for r in claim_due(a, now)}
    token = logged(engine)[0].claim_token
    a.mark_sent([runs["sent"].run_id], now, token)

    assert b.take_over(now, now - timedelta(seconds=30), 100)[1] == []  # fresh
    _, taken = b.take_over(now + timedelta(seconds=1), now + timedelta(seconds=1), 100)
    assert [t.run.name for t in taken] == ["pending"]
    _, again = b.take_over(now + timedelta(seconds=2), now + timedelta(hours=1), 100)
    assert [t.run.name for t in again] == ["pending"]  # 'sent' is never taken, however old
    rows = {r.periodic_task_name: r for r in logged(engine)}
    assert (rows["sent"].state, rows["sent"].sent_by, rows["sent"].claim_token) == ("sent", "beat-a", token)


def test_a_run_starts_once_on_the_workers(engine: Engine, session: Session) -> None:
    """``RunOnceTask``'s check: the first start of a run is recorded, a second copy is refused,
    and a claim a worker has started is never published again (it was on the broker)."""
    now = utcnow()
    make(session, "started", now - timedelta(seconds=1))
    make(session, "unstarted", now - timedelta(seconds=1))
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")
    runs = {r.name: r for r in claim_due(a, now)}
    started = runs["started"].task_id

    assert runlog.start(engine, started, "worker-1", now) is True
    assert runlog.start(engine, started, "worker-2", now + timedelta(seconds=1)) is False
    assert runlog.start(engine, logged_id(10**6, now), "worker-1", now) is True  # not a run beat logged
    row = next(r for r in logged(engine) if r.task_id == started)
    assert (row.started_by, row.started_at, row.state) == ("worker-1", now, "claimed")

    # beat-a died before recording either as sent: only the unstarted one goes out again
    _, taken = b.take_over(now + timedelta(seconds=60), now + timedelta(seconds=30), 100)
    assert [t.run.name for t in taken] == ["unstarted"]
    rows = {r.periodic_task_name: r for r in logged(engine)}
    assert (rows["started"].state, rows["started"].sent_at) == ("sent", now)
    assert rows["unstarted"].sent_by == "beat-b"


def test_take_over_abandons_claims_of_deleted_or_broken_tasks(
    engine: Engine, session: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    now = utcnow()
    for name in ("kept", "deleted", "broken"):
        make(session, name, now - timedelta(seconds=1))
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")
    assert len(claim_due(a, now)) == 3
    execute(engine, "DELETE FROM celery_periodic_task WHERE name = 'deleted'")
    execute(engine, f"UPDATE celery_periodic_task SET args = {broken_args(engine)} WHERE name = 'broken'")

    later = now + timedelta(seconds=60)
    _, taken = b.take_over(later, later, 100)
    assert [t.run.name for t in taken] == ["kept"]
    rows = {r.periodic_task_name: r for r in logged(engine)}
    assert {n: r.state for n, r in rows.items()} == {
        "kept": "claimed", "deleted": "abandoned", "broken": "abandoned",
    }
    assert rows["deleted"].sent_by == rows["broken"].sent_by == "beat-a"
    warnings = messages(caplog)
    assert any("'deleted'" in m and "deleted" in m.split(":")[-1] for m in warnings), warnings
    assert any("'broken'" in m and "args" in m for m in warnings), warnings
    # abandoned runs are never taken again, nor reported as stale
    even_later = later + timedelta(seconds=60)
    assert [t.run.name for t in b.take_over(even_later, even_later, 100)[1]] == ["kept"]
    assert b.window(even_later, 100).stale(even_later - timedelta(seconds=1)) is False


def test_concurrent_take_overs_take_each_stale_claim_once(engine: Engine, session: Session) -> None:
    now = utcnow()
    count = 24
    for i in range(count):
        make(session, f"t{i:02d}", now - timedelta(seconds=1, milliseconds=i))
    assert len(claim_due(Store(engine, "beat-dead"), now)) == count
    age_claims(engine, now - timedelta(seconds=120))
    stores = [Store(engine, f"beat-{i}") for i in range(3)]
    barrier = threading.Barrier(len(stores))
    taken: dict[str, list[tuple[str, Takeover]]] = {s.identity: [] for s in stores}
    failures: list[BaseException] = []

    def beat(store: Store) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(8):  # small batches, so the three beats interleave
                at = utcnow()
                token, got = store.take_over(at, at - timedelta(seconds=30), 4)
                taken[store.identity] += [(token, t) for t in got]
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=beat, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures

    every = [(identity, token, t) for identity, got in taken.items() for token, t in got]
    assert sorted(t.run.run_id for _, _, t in every) == sorted(r.id for r in logged(engine))
    assert len(every) == count  # each stale claim taken exactly once
    rows = by_id(engine)
    for identity, token, takeover in every:
        row = rows[takeover.run.run_id]
        assert (row.sent_by, row.claim_token, row.state) == (identity, token, "claimed")
        assert takeover.previous_claimer == "beat-dead"
        assert takeover.run.task_id == row.task_id == task_id_of(engine, row.periodic_task_id, row.slot)


# -- confirm, mark_sent ----------------------------------------------------------------------

def test_confirm_returns_only_claims_still_held(engine: Engine, session: Session) -> None:
    now = utcnow()
    make(session, "one", now - timedelta(seconds=1))
    make(session, "two", now - timedelta(seconds=1))
    a, b = Store(engine, "beat-a"), Store(engine, "beat-b")
    result = a.claim([(r.id, r.next_run_at) for r in a.window(now, 100).due], now)
    one, two = sorted(result.runs, key=lambda r: r.name)
    ids = [one.run_id, two.run_id]

    renewed = now + timedelta(seconds=10)
    assert a.confirm(ids, result.token, renewed) == set(ids)
    assert {r.claimed_at for r in logged(engine)} == {renewed}
    assert a.confirm(ids, uuid.uuid4().hex, renewed) == set()  # not our token
    assert a.confirm([], result.token, renewed) == set()
    a.mark_sent([one.run_id], renewed, result.token)
    assert a.confirm(ids, result.token, renewed) == {two.run_id}  # sent: no longer a claim

    # another beat takes the claim over: the old token holds nothing any more
    later = renewed + timedelta(seconds=60)
    token, [takeover] = b.take_over(later, later - timedelta(seconds=30), 100)
    assert takeover.run.run_id == two.run_id
    assert a.confirm(ids, result.token, later + timedelta(seconds=1)) == set()
    assert by_id(engine)[two.run_id].claimed_at == later  # not renewed by the old token
    a.mark_sent([two.run_id], later, result.token)  # a stale token marks nothing
    row = by_id(engine)[two.run_id]
    assert (row.state, row.sent_at, row.sent_by) == ("claimed", None, "beat-b")
    assert b.confirm(ids, token, later + timedelta(seconds=2)) == {two.run_id}
    b.mark_sent([two.run_id], later + timedelta(seconds=3), token)
    row = by_id(engine)[two.run_id]
    assert (row.state, row.sent_at) == ("sent", later + timedelta(seconds=3))
    assert by_id(engine)[one.run_id].sent_by == "beat-a"


# -- the scheduler: paused process, slow or refusing broker ------------------------------------

def test_paused_beat_does_not_send_a_run_another_beat_republished(
    beats: Callable[..., Beat], engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = beats("beat-a"), beats("beat-b")
    a.add(name="pulse", task="tasks.pulse", schedule=HALF_SECOND)
    paused: list[Run] = []
    paused_for: list[float] = []

    def pause(runs: list[Run]) -> None:
        """A stops between its claim and its publish; B carries on past the claim timeout."""
        started = time.monotonic()
        paused.extend(runs)
        tick_until(b, lambda: runs[0].task_id in {r.task_id for r in b.sent}, 4 * CLAIM_TIMEOUT)
        paused_for.append(time.monotonic() - started)

    a.pause = pause
    tick_until(a, lambda: bool(paused) and a.pause is None, 2.0)
    [held] = paused
    assert paused_for[0] > CLAIM_TIMEOUT  # B waited for the claim to go stale
    assert held.task_id not in {r.task_id for r in a.sent}  # A woke up and did not send it
    assert any("'pulse'" in m and "another beat took it over" in m for m in messages(caplog))
    assert any("'pulse'" in m and "beat-a" in m and held.slot.isoformat() in m
               for m in messages(caplog)), messages(caplog)

    tick_for(a, 1.5, b)  # both keep going
    every = a.sent + b.sent
    assert a.sent and b.sent
    sends = Counter((r.task_pk, r.slot) for r in every)
    assert set(sends.values()) == {1}, sends  # each (task, slot) sent exactly once
    assert len({r.task_id for r in every}) == len(every)
    slots = sorted(sends)
    assert all(y[1] - x[1] == HALF_SECOND for x, y in pairwise(slots)), slots  # none lost
    rows = {r.slot: r for r in logged(engine)}
    assert rows[held.slot].sent_by == "beat-b" and rows[held.slot].state == "sent"
    assert {r.slot for r in every} <= set(rows)
    assert all(rows[r.slot].state == "sent" and rows[r.slot].task_id == r.task_id for r in every)


def test_slow_broker_does_not_make_another_beat_send_again(
    beats: Callable[..., Beat], engine: Engine, session: Session,
) -> None:
    """A batch that takes longer than the claim timeout to publish: what was already sent
    is recorded before the rest is confirmed, so no other beat publishes it again."""
    now = utcnow()
    for i in range(4):
        make(session, f"batch{i}", now - timedelta(seconds=1))
    a, b = beats("beat-a"), beats("beat-b")
    a.send_delay = 0.4  # 4 sends: 1.6 s, longer than the 1 s claim timeout
    a.before_send = lambda run: b.tick()  # once A has claimed, B syncs all along (every 0.2 s)
    tick_until(a, lambda: len(a.sent) == 4, 5.0)
    a.before_send = None
    tick_for(a, 1.5, b)

    assert b.sent == []
    assert sorted(r.name for r in a.sent) == [f"batch{i}" for i in range(4)]
    assert {(r.state, r.sent_by) for r in logged(engine)} == {("sent", "beat-a")}


def test_stalled_publish_skips_only_the_runs_taken_over(
    beats: Callable[..., Beat], engine: Engine, session: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish that resumes after a stall confirms its claims: it sends those still its
    own, leaves the one another beat took over, and says so once."""
    now = utcnow()
    for i in range(4):
        make(session, f"r{i}", now - timedelta(seconds=1))
    a = beats("beat-a")
    result = a.store.claim([(r.id, r.next_run_at) for r in a.store.window(now, 100).due], now)
    runs = sorted(result.runs, key=lambda r: r.name)
    lost = runs[1]
    age_claims(engine, now - timedelta(seconds=60), lost.run_id)
    token, [takeover] = Store(engine, "beat-b").take_over(now, now - timedelta(seconds=30), 100)
    assert takeover.run.run_id == lost.run_id

    a.send_delay = 0.6  # each send outlasts half the claim timeout: confirmed again each time
    a._publish(runs, result.token, time.monotonic() - 10 * CLAIM_TIMEOUT)

    assert [r.name for r in a.sent] == ["r0", "r2", "r3"]
    rows = {r.periodic_task_name: r for r in logged(engine)}
    assert {n: (r.state, r.sent_by) for n, r in rows.items()} == {
        "r0": ("sent", "beat-a"), "r1": ("claimed", "beat-b"), "r2": ("sent", "beat-a"),
        "r3": ("sent", "beat-a"),
    }
    assert rows["r1"].claim_token == token
    skipped = [m for m in messages(caplog) if "another beat took it over" in m]
    assert len(skipped) == 1 and "'r1'" in skipped[0], skipped


@pytest.mark.parametrize("republisher", ["same", "other"])
def test_refused_run_is_published_again_with_the_same_task_id(
    republisher: str, beats: Callable[..., Beat], engine: Engine, session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slot = utcnow()
    make(session, "nightly", slot)
    a = beats("beat-a")
    a.refuse = True
    tick_until(a, lambda: bool(a.refused), 2.0)
    refused_at = time.monotonic()
    [refused] = a.refused
    [row] = logged(engine)
    assert (row.state, row.sent_by, row.task_id) == ("claimed", "beat-a", refused.task_id)

    if republisher == "same":
        a.refuse = False
        other = a
    else:
        other = beats("beat-b")
    tick_until(other, lambda: bool(other.sent), 3 * CLAIM_TIMEOUT)
    assert time.monotonic() - refused_at >= CLAIM_TIMEOUT * 0.9  # not before the timeout
    tick_for(other, 0.5)

    [again] = other.sent
    assert len(a.refused) == 1  # not retried before the claim went stale
    assert (again.task_id, again.slot, again.name) == (refused.task_id, slot, "nightly")
    assert again.task_id == task_id_of(engine, again.task_pk, slot)
    [row] = logged(engine)
    assert (row.state, row.sent_by, row.task_id) == ("sent", other.config.identity, refused.task_id)
    assert row.sent_at is not None
    warnings = [m for m in messages(caplog) if "publishing again" in m]
    assert len(warnings) == 1, warnings
    assert "'nightly'" in warnings[0] and slot.isoformat() in warnings[0] and "beat-a" in warnings[0]


# -- batches: the next claimed while one is sent -------------------------------------------------

def record_claims(beat: Beat, fail: Callable[[int], bool] = lambda _: False) -> list[tuple[str, int]]:
    """Wrap the beat's claims: the events they log, in order; ``fail(n)`` makes the
    n-th claim (from 1) lose the database."""
    events: list[tuple[str, int]] = []
    claim = beat.store.claim

    def recorded(due: Any, now: datetime) -> Any:
        events.append(("claim", len(due)))
        if fail(sum(1 for kind, _ in events if kind == "claim")):
            raise DBAPIError("claim", {}, ConnectionError("connection lost"))
        return claim(due, now)

    beat.store.claim = recorded  # type: ignore[method-assign]
    beat.before_send = lambda run: events.append(("send", run.task_pk))
    return events


def test_a_burst_goes_out_in_batches_each_claimed_while_the_one_before_is_sent(
    beats: Callable[..., Beat], engine: Engine, session: Session,
) -> None:
    """A tenth of a batch first, then whole batches; each next batch is claimed while the
    one before is being sent; every run once, each recorded as sent."""
    now = utcnow()
    ids = {make(session, f"b{i:02d}", now - timedelta(seconds=1)) for i in range(35)}
    a = beats("beat-a", batch_size=10, sync_interval=30)
    events = record_claims(a)
    a.send_delay = 0.01

    tick_until(a, lambda: len(a.sent) == 35, 10.0)

    assert Counter(r.task_pk for r in a.sent) == Counter(ids)
    claims = [size for kind, size in events if kind == "claim"]
    assert claims == [1, 10, 10, 10, 4]
    # the claim of the third batch begins before the last send of the second
    third = [i for i, event in enumerate(events) if event[0] == "claim"][2]
    second_sends = [i for i, event in enumerate(events) if event[0] == "send"][1:11]
    assert third < second_sends[-1], events
    assert {(r.state, r.sent_by) for r in logged(engine)} == {("sent", "beat-a")}
    assert len(logged(engine)) == 35


def test_a_batch_whose_claim_loses_the_database_is_claimed_again_later(
    beats: Callable[..., Beat], engine: Engine, session: Session,
) -> None:
    """The claim of a next batch, made while the one before is sent, fails: the sent runs
    are recorded, the others stay scheduled and go out once the database answers."""
    now = utcnow()
    ids = {make(session, f"f{i:02d}", now - timedelta(seconds=1)) for i in range(25)}
    a = beats("beat-a", batch_size=10, sync_interval=30)
    events = record_claims(a, fail=lambda n: n == 2)

    a.tick()
    assert len(a.sent) == 1 and a._outage_since is not None
    tick_until(a, lambda: len(a.sent) == 25, 10.0)

    assert Counter(r.task_pk for r in a.sent) == Counter(ids)
    assert [size for kind, size in events if kind == "claim"][:2] == [1, 10]
    assert {r.state for r in logged(engine)} == {"sent"} and len(logged(engine)) == 25


def test_a_batch_recorded_in_the_background_after_the_database_went_away_is_not_sent_again(
    beats: Callable[..., Beat], engine: Engine, session: Session,
) -> None:
    """Recording a sent batch fails while the next is being sent: it is recorded at the
    next sync, before any take-over, and no run is published twice."""
    now = utcnow()
    ids = {make(session, f"m{i:02d}", now - timedelta(seconds=1)) for i in range(15)}
    a = beats("beat-a", batch_size=10)
    mark_sent = a.store.mark_sent
    failures: list[list[int]] = []

    def fail_once(run_ids: Any, *args: Any) -> None:
        if not failures:
            failures.append(list(run_ids))
            raise DBAPIError("mark", {}, ConnectionError("connection lost"))
        mark_sent(run_ids, *args)

    a.store.mark_sent = fail_once  # type: ignore[method-assign]
    tick_until(a, lambda: len(a.sent) == 15, 10.0)
    tick_for(a, 3 * CLAIM_TIMEOUT)  # past the claim timeout: a stale claim would be taken over

    assert failures and len(failures[0]) == 1
    assert Counter(r.task_pk for r in a.sent) == Counter(ids)
    assert {(r.state, r.sent_by) for r in logged(engine)} == {("sent", "beat-a")}


# -- run log: prune and query -----------------------------------------------------------------

def test_prune_deletes_only_old_rows_in_batches(engine: Engine) -> None:
    now = utcnow()
    old = [now - timedelta(days=10, minutes=i) for i in range(5)]
    recent = [now - timedelta(days=1), now]
    for i, claimed_at in enumerate(old + recent):
        log_run(engine, 1, "t", now + timedelta(minutes=i), claimed_at)
    store = Store(engine, "beat-a")
    cutoff = now - timedelta(days=7)

    assert store.prune(cutoff, 2) == 2
    left = {r.claimed_at for r in logged(engine)}
    assert left == set(old[:3] + recent)  # the oldest went first
    assert store.prune(cutoff, 2) == 2
    assert store.prune(cutoff, 2) == 1
    assert store.prune(cutoff, 2) == 0
    assert {r.claimed_at for r in logged(engine)} == set(recent)


def test_beat_prunes_the_run_log_by_age(
    beats: Callable[..., Beat], engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="beatsqlalchemy")
    now = utcnow()
    for i in range(3):
        log_run(engine, 1, "t", now - timedelta(days=9, minutes=i), now - timedelta(days=9, minutes=i))
    log_run(engine, 1, "t", now - timedelta(days=6), now - timedelta(days=6))
    beat = beats("beat-a", run_log_days=7, batch_size=2)
    beat.tick()
    assert len(logged(engine)) == 2  # one batch per sync
    tick_until(beat, lambda: len(logged(engine)) == 1, 2.0)
    [kept] = logged(engine)
    assert kept.claimed_at == now - timedelta(days=6)
    pruned = [m for m in messages(caplog, logging.INFO) if "pruned" in m]
    assert pruned[:2] == [pruned[0], pruned[1]] and "2 run-log row(s)" in pruned[0]


def test_api_runs_filters_newest_first(engine: Engine, session: Session) -> None:
    base = utcnow().replace(microsecond=0)
    for i in range(4):
        log_run(engine, 1, "a", base + timedelta(minutes=i), base,
                state="claimed" if i == 3 else "sent", sent_by=f"beat-{i % 2}")
    log_run(engine, 2, "b", base + timedelta(minutes=1, seconds=30), base, state="abandoned")

    def slots(**filters: Any) -> list[tuple[str, int]]:
        found = api.runs(session, **filters)
        return [(r.periodic_task_name, round((r.slot - base).total_seconds())) for r in found]

    assert slots() == [("a", 180), ("a", 120), ("b", 90), ("a", 60), ("a", 0)]
    assert slots(name="a") == [("a", 180), ("a", 120), ("a", 60), ("a", 0)]
    assert slots(name="a", since=base + timedelta(minutes=1)) == [("a", 180), ("a", 120), ("a", 60)]
    assert slots(until=base + timedelta(minutes=1)) == [("a", 60), ("a", 0)]
    assert slots(since=base + timedelta(seconds=30), until=base + timedelta(minutes=2)) == [
        ("a", 120), ("b", 90), ("a", 60),
    ]
    assert slots(state="claimed") == [("a", 180)]
    assert slots(state="abandoned") == [("b", 90)]
    assert slots(name="a", state="sent", limit=2) == [("a", 120), ("a", 60)]
    assert slots(name="nobody") == []
    [latest] = api.runs(session, name="a", limit=1)
    assert (latest.task_id, latest.sent_by, latest.sent_at) == (
        logged_id(1, base + timedelta(minutes=3)), "beat-1", None,
    )


# -- beat's connections and identity -----------------------------------------------------------

def test_beat_engine_limits_idle_transactions(
    backend: str, beats: Callable[..., Beat], engine: Engine,
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no server-side idle-transaction timeout (a file lock instead)")
    beat = beats("beat-a", claim_timeout=2)  # limit: half the claim timeout
    query = {
        "postgresql": "SHOW idle_in_transaction_session_timeout",
        "mysql": "SELECT @@session.idle_transaction_timeout",
    }[backend]
    expected = {"postgresql": "1s", "mysql": 1}[backend]
    with beat.engine.connect() as connection:
        assert connection.execute(text(query)).scalar_one() == expected
    with engine.connect() as connection:  # other engines are left alone
        assert connection.execute(text(query)).scalar_one() in ("0", 0)

    # a transaction left idle is ended by the server, releasing its locks
    with pytest.raises(DBAPIError), beat.engine.connect() as connection, connection.begin():
        connection.execute(select(RUNS.c.id).with_for_update()).all()  # reads a table: a transaction
        time.sleep(1.6)
        connection.execute(text("SELECT 1"))
    with beat.engine.connect() as connection:  # the pool recovers
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_is_checked_only_after_idling_and_replaced_if_the_server_dropped_it(
    backend: str, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transactions of one sync or burst reuse a connection without a ping; one unused
    for longer is pinged first and, if the server closed it meanwhile, replaced silently."""
    if backend == "sqlite":
        pytest.skip("SQLite keeps pool_pre_ping: a local file has no server to drop it")
    beat_engine = db.get_engine(db_url, {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5})
    pings: list[object] = []
    do_ping = beat_engine.dialect.do_ping
    monkeypatch.setattr(beat_engine.dialect, "do_ping", lambda c: pings.append(c) or do_ping(c))
    whoami = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}[backend]
    kill = {"postgresql": "SELECT pg_terminate_backend({})", "mysql": "KILL {}"}[backend]
    try:
        with beat_engine.connect() as connection:
            first = connection.execute(text(whoami)).scalar_one()
        with beat_engine.connect() as connection:  # given back a moment ago: no ping
            assert connection.execute(text(whoami)).scalar_one() == first
        assert pings == []

        time.sleep(db.IDLE_BEFORE_PING + 0.1)  # idle: pinged, alive, kept
        with beat_engine.connect() as connection:
            assert connection.execute(text(whoami)).scalar_one() == first
        assert len(pings) == 1

        with engine.connect() as other:  # the server drops it while it idles
            other.execute(text(kill.format(int(first))))
        time.sleep(db.IDLE_BEFORE_PING + 0.1)
        with beat_engine.connect() as connection:
            assert connection.execute(text(whoami)).scalar_one() != first
        assert len(pings) == 2
    finally:
        beat_engine.dispose()


def test_a_connection_dropped_just_after_use_fails_the_read_as_a_database_error(
    backend: str, db_url: str, engine: Engine,
) -> None:
    """A connection the server closed a moment after it was given back is handed out
    unpinged; the read fails with SQLAlchemy's error (which beat handles as an outage,
    even where the driver fails while switching to autocommit, as PyMySQL does), and the
    next read gets a new connection."""
    if backend == "sqlite":
        pytest.skip("SQLite keeps pool_pre_ping: a local file has no server to drop it")
    beat_engine = db.get_engine(db_url, {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5})
    whoami = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}[backend]
    kill = {"postgresql": "SELECT pg_terminate_backend({})", "mysql": "KILL {}"}[backend]
    store = Store(beat_engine, "beat-a")
    until = utcnow()
    try:
        with beat_engine.connect() as connection:
            first = connection.execute(text(whoami)).scalar_one()
        with engine.connect() as other:
            other.execute(text(kill.format(int(first))))
        time.sleep(0.05)  # well within IDLE_BEFORE_PING: no ping
        with pytest.raises(SQLAlchemyError):
            store.window(until, 10)
        assert store.window(until, 10).due == []  # a new connection
        with beat_engine.connect() as connection:
            assert connection.execute(text(whoami)).scalar_one() != first
    finally:
        beat_engine.dispose()


def test_identity_in_info_and_start_log(
    db_url: str, beats: Callable[..., Beat], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="beatsqlalchemy")
    assert "identity -> beat-eu-1" in beats("beat-eu-1").info

    defaults = []
    for name in ("first", "second"):  # no identity configured: host:pid:random
        app = Celery(name, broker="memory://", set_as_current=False)
        app.conf.beat_sqlalchemy_url = db_url
        try:
            scheduler = DatabaseScheduler(app=app, lazy=True)
            defaults.append(scheduler.config.identity)
            assert f"identity -> {scheduler.config.identity}" in scheduler.info
        finally:
            app.close()
    for identity in defaults:
        host, pid, suffix = identity.rsplit(":", 2)
        assert (host, pid, len(suffix)) == (socket.gethostname(), str(os.getpid()), 8)
    assert defaults[0] != defaults[1]  # unique per beat, even in one process

    app = Celery("started", broker="memory://", set_as_current=False)
    app.conf.beat_sqlalchemy_url = db_url
    app.conf.beat_sqlalchemy_identity = "beat-logged"
    try:  # as ``celery beat`` creates it: the identity is logged at start
        DatabaseScheduler(app=app, schedule_filename="unused").close()
    finally:
        app.close()
    assert any("identity beat-logged" in m for m in messages(caplog, logging.INFO))
