"""The store on every backend: window, claim (compare-and-set, run log), recompute, mark_sent."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import RUNS, TASKS, ClaimResult, Store
from harness.helpers import task_id_of

EVERY_10S = {"every": 10, "period": "seconds"}


# -- helpers ----------------------------------------------------------------------

def make(session: Session, name: str, due: datetime | None = None, **fields: Any) -> int:
    """Create a task through the seed's API; ``due`` then sets its next run. Returns its id."""
    if not any(k in fields for k in ("interval", "crontab", "solar", "clocked")):
        fields["interval"] = EVERY_10S
    fields.setdefault("task", f"tasks.{name}")
    task, created = PeriodicTask.update_or_create(session, name=name, **fields)
    assert created
    if due is not None:
        task, _ = PeriodicTask.update_or_create(session, name=name, next_run_at=due)
        assert task.next_run_at == due
    return task.id


#: the task columns the tests read back (not the JSON ones, which may hold broken JSON)
STATE = [c for c in TASKS.c if c.name not in ("args", "kwargs", "headers", "extra_options")]


def row(engine: Engine, name: str) -> Any:
    """The task row as stored now (read with a fresh connection)."""
    with engine.connect() as connection:
        return connection.execute(select(*STATE).where(TASKS.c.name == name)).one()


def runs(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(RUNS).order_by(RUNS.c.id)).all())


def execute(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def claim_due(store: Store, now: datetime) -> ClaimResult:
    """What a beat does: read the due window, claim it."""
    return store.claim([(r.id, r.next_run_at) for r in store.window(now, 1000)[0]], now)


# -- window ------------------------------------------------------------------------

def test_window_returns_enabled_due_tasks_in_order(engine: Engine, session: Session) -> None:
    now = utcnow()
    late = make(session, "late", due=now - timedelta(seconds=1))
    early = make(session, "early", due=now - timedelta(seconds=5))
    later = make(session, "later", due=now + timedelta(seconds=100))
    make(session, "off", due=now - timedelta(seconds=9), enabled=False)
    make(session, "far", due=now + timedelta(days=3))
    store = Store(engine, "beat-a")

    assert [r.id for r in store.window(now, 100)[0]] == [early, late]
    assert [r.id for r in store.window(now + timedelta(seconds=200), 100)[0]] == [early, late, later]
    assert [r.id for r in store.window(now + timedelta(seconds=200), 2)[0]] == [early, late]
    first = store.window(now, 1)[0][0]
    assert first.next_run_at == now - timedelta(seconds=5)
    assert store.window(now - timedelta(seconds=60), 100)[:3] == ([], False, None)
    # the same statement says whether a plain-SQL write flagged any task for recompute
    execute(engine, "UPDATE celery_periodic_task SET enabled = :f WHERE name = 'far'", f=False)
    assert store.window(now - timedelta(seconds=60), 100)[:3] == ([], True, None)


# -- claim ------------------------------------------------------------------------

def test_claim_advances_the_row_and_logs_the_run(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pk = make(session, "tick", due=slot, args=[1, 2], kwargs={"k": "v"})
    store = Store(engine, "beat-a")

    result = store.claim([(pk, slot)], now)
    assert result.errors == [] and len(result.runs) == 1
    run = result.runs[0]
    assert (run.task_pk, run.name, run.task, run.slot) == (pk, "tick", "tasks.tick", slot)
    assert (run.args, run.kwargs) == ([1, 2], {"k": "v"})
    assert run.next_run_at == slot + timedelta(seconds=10)
    assert run.task_id == task_id_of(engine, pk, slot)

    stored = row(engine, "tick")
    assert stored.next_run_at == slot + timedelta(seconds=10)
    assert stored.last_run_at == now
    assert stored.total_run_count == 1
    assert stored.enabled is True

    [logged] = runs(engine)
    assert logged.id == run.run_id
    assert (logged.periodic_task_id, logged.periodic_task_name) == (pk, "tick")
    assert (logged.state, logged.sent_by, logged.slot) == ("claimed", "beat-a", slot)
    assert logged.task_id == run.task_id
    assert logged.claimed_at == now and logged.sent_at is None

    # the same (task, slot) always gets the same Celery task id; another slot another one
    assert task_id_of(engine, pk, slot.astimezone(timezone(timedelta(hours=5)))) == run.task_id
    assert task_id_of(engine, pk, slot + timedelta(seconds=10)) != run.task_id

    # a claim with the stale next_run_at (another beat got there first) claims nothing
    again = store.claim([(pk, slot)], now + timedelta(seconds=1))
    assert again.runs == [] and again.errors == []
    assert len(runs(engine)) == 1
    assert row(engine, "tick").total_run_count == 1


def test_a_batch_claim_is_conditional_row_by_row(engine: Engine, session: Session) -> None:
    """One batched compare-and-set for many rows: a row whose slot moved since it was read
    is left alone while the others are claimed and logged (on SQLite and MySQL the short
    count undoes the batch and each row is tried alone)."""
    from beatsqlalchemy.store import Run, _claim_all, begin_write

    now = utcnow()
    slot = now - timedelta(seconds=1)
    pks = [make(session, f"batch-{i}", due=slot) for i in range(5)]
    moved = pks[2]
    params = [{"b_id": pk, "b_slot": slot, "b_next": slot + timedelta(seconds=10), "b_enabled": True}
              for pk in pks]
    params[2]["b_slot"] = slot - timedelta(seconds=30)  # what a beat saw before the row moved
    runs_in = [Run(run_id=0, task_pk=pk, name=f"batch-{i}", task="t", slot=p["b_slot"],
                   task_id=task_id_of(engine, pk, p["b_slot"]), args=[], kwargs={}, options={},
                   next_run_at=p["b_next"]) for i, (pk, p) in enumerate(zip(pks, params, strict=True))]
    with begin_write(engine) as connection:
        claimed = _claim_all(connection, runs_in, params, "beat-a", "token", now)
    assert [run.task_pk for run in claimed] == [pk for pk in pks if pk != moved]
    assert row(engine, "batch-2").total_run_count == 0 and row(engine, "batch-2").next_run_at == slot
    for i in (0, 1, 3, 4):
        stored = row(engine, f"batch-{i}")
        assert (stored.total_run_count, stored.last_run_at) == (1, now)
        assert stored.next_run_at == slot + timedelta(seconds=10)
    logged = {r.id: r for r in runs(engine)}
    assert sorted(logged) == sorted(run.run_id for run in claimed)
    for run in claimed:
        assert (logged[run.run_id].periodic_task_id, logged[run.run_id].slot) == (run.task_pk, slot)
        assert (logged[run.run_id].claim_token, logged[run.run_id].state) == ("token", "claimed")


def test_a_large_claim_logs_every_run_with_its_own_id(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pks = [make(session, f"many-{i:03d}", due=slot) for i in range(120)]
    result = Store(engine, "beat-a").claim([(pk, slot) for pk in reversed(pks)], now)
    assert sorted(r.task_pk for r in result.runs) == pks
    logged = {r.id: r for r in runs(engine)}
    assert len(logged) == 120
    for run in result.runs:  # each run carries the id of its own run-log row
        assert logged[run.run_id].periodic_task_id == run.task_pk
        assert logged[run.run_id].task_id == run.task_id == task_id_of(engine, run.task_pk, slot)


def test_claim_skips_disabled_and_unknown_tasks(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pk = make(session, "paused", due=slot)
    execute(engine, "UPDATE celery_periodic_task SET enabled = :f WHERE id = :id", f=False, id=pk)
    store = Store(engine, "beat-a")
    assert store.claim([(pk, slot), (pk + 1000, slot)], now).runs == []
    assert runs(engine) == []


def test_two_beats_never_claim_the_same_run(engine: Engine, session: Session) -> None:
    now = utcnow()
    names = [f"t{i:02d}" for i in range(24)]
    for i, name in enumerate(names):
        make(session, name, due=now - timedelta(seconds=30, milliseconds=i))
    beats = [Store(engine, "beat-a"), Store(engine, "beat-b")]
    barrier = threading.Barrier(len(beats))
    claimed: dict[str, list[tuple[int, datetime]]] = {"beat-a": [], "beat-b": []}
    failures: list[BaseException] = []

    def beat(store: Store, seed: int) -> None:
        shuffle = random.Random(seed)
        try:
            for _ in range(3):
                # both beats hold the same due window, as after a sync, then race to claim it
                due = [(r.id, r.next_run_at) for r in store.window(now, 1000)[0]]
                barrier.wait(timeout=10)
                shuffle.shuffle(due)
                for start in range(0, len(due), 3):  # small batches interleave the two beats
                    result = store.claim(due[start:start + 3], now)
                    claimed[store.identity] += [(r.task_pk, r.slot) for r in result.runs]
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=beat, args=(store, i)) for i, store in enumerate(beats)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures

    every = claimed["beat-a"] + claimed["beat-b"]
    assert len(every) == len(names) == len(set(every))
    logged = runs(engine)
    assert len(logged) == len(names)
    assert len({(r.periodic_task_id, r.slot) for r in logged}) == len(names)
    assert {r.sent_by for r in logged} <= {"beat-a", "beat-b"}
    with engine.connect() as connection:
        counts = connection.execute(select(TASKS.c.total_run_count)).scalars().all()
    assert sorted(counts) == [1] * len(names)


def test_one_off_task_disables_itself_in_the_claim(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pk = make(session, "once", due=slot, one_off=True)
    store = Store(engine, "beat-a")

    [run] = store.claim([(pk, slot)], now).runs
    assert run.next_run_at is None
    stored = row(engine, "once")
    assert (stored.enabled, stored.next_run_at, stored.total_run_count) == (False, None, 1)
    assert claim_due(store, now + timedelta(hours=1)).runs == []
    assert len(runs(engine)) == 1


def test_clocked_task_fires_once(engine: Engine, session: Session) -> None:
    at = utcnow() - timedelta(seconds=2)
    pk = make(session, "clocked", clocked=at)
    stored = row(engine, "clocked")
    assert stored.one_off is True and stored.next_run_at is not None
    store = Store(engine, "beat-a")

    now = utcnow()
    result = claim_due(store, now)
    assert [r.task_pk for r in result.runs] == [pk]
    assert claim_due(store, now + timedelta(days=1)).runs == []

    # re-enabled with plain SQL: it already ran at its time, so it stays unscheduled
    execute(engine, "UPDATE celery_periodic_task SET enabled = :t WHERE id = :id", t=True, id=pk)
    store.recompute(utcnow(), 100)
    assert row(engine, "clocked").next_run_at is None
    assert claim_due(store, now + timedelta(days=1)).runs == []
    assert len(runs(engine)) == 1


def test_expired_task_is_disabled_and_not_sent(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    pk = make(session, "stale", due=slot, expires=now + timedelta(hours=1))
    with engine.begin() as connection:  # expired since (a past expiry is refused at writing)
        connection.execute(update(TASKS).where(TASKS.c.id == pk).values(expires=now - timedelta(minutes=1)))
    fresh = make(session, "fresh", due=slot, expires=now + timedelta(hours=1))
    store = Store(engine, "beat-a")

    result = store.claim([(pk, slot), (fresh, slot)], now)
    assert [r.task_pk for r in result.runs] == [fresh]
    assert (pk, None) in result.rescheduled
    stored = row(engine, "stale")
    assert (stored.enabled, stored.next_run_at, stored.total_run_count) == (False, None, 0)
    assert [r.periodic_task_id for r in runs(engine)] == [fresh]


def test_options_reach_the_run(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    expires_at = (now + timedelta(hours=2)).replace(microsecond=123456)
    routed = make(
        session, "routed", due=slot, expire_seconds=30, queue="q1", exchange="ex1",
        routing_key="rk1", priority=7, headers={"h": "1"}, extra_options={"time_limit": 5},
    )
    absolute = make(session, "absolute", due=slot, expires=expires_at)
    plain = make(session, "plain", due=slot)
    result = Store(engine, "beat-a").claim([(routed, slot), (absolute, slot), (plain, slot)], now)
    options = {run.name: run.options for run in result.runs}

    assert options["routed"] == {
        "queue": "q1", "exchange": "ex1", "routing_key": "rk1", "priority": 7, "expires": 30,
        "time_limit": 5, "headers": {"h": "1", "celery_beat_task": True},
    }
    assert options["absolute"]["expires"] == expires_at  # absolute stays absolute, to the µs
    assert options["plain"] == {"headers": {"celery_beat_task": True}}
    assert {"routed", "absolute", "plain"} == set(options)


def _break_args(engine: Engine, pk: int) -> str:
    """Write args no beat can send; broken JSON where the database allows it."""
    if engine.dialect.name == "sqlite":
        execute(engine, "UPDATE celery_periodic_task SET args = '[9' WHERE id = :id", id=pk)
        return "not valid JSON"
    with pytest.raises(DBAPIError):  # PostgreSQL and MariaDB check JSON themselves
        execute(engine, "UPDATE celery_periodic_task SET args = '[9' WHERE id = :id", id=pk)
    execute(engine, "UPDATE celery_periodic_task SET args = '{\"not\": \"a list\"}' WHERE id = :id", id=pk)
    return "must be a JSON array"


@pytest.mark.parametrize("breakage", ["args", "minute", "timezone"])
def test_bad_row_is_reported_and_others_still_claimed(
    engine: Engine, session: Session, breakage: str,
) -> None:
    now = utcnow()
    slot = now - timedelta(seconds=1)
    bad = make(session, "bad", due=slot, crontab={"minute": "*/7", "timezone": "Europe/Paris"})
    good = make(session, "good", due=slot)
    crontab_id = row(engine, "bad").crontab_id
    if breakage == "args":
        reason = _break_args(engine, bad)
        fix = ("UPDATE celery_periodic_task SET args = '[1]' WHERE id = :id", bad)
    elif breakage == "minute":
        execute(engine, "UPDATE celery_crontab_schedule SET minute = '99' WHERE id = :id", id=crontab_id)
        reason = "'99'"
        fix = ("UPDATE celery_crontab_schedule SET minute = '*/7' WHERE id = :id", crontab_id)
    else:
        execute(engine, "UPDATE celery_crontab_schedule SET timezone = 'Mars/Olympus_Mons' WHERE id = :id",
                id=crontab_id)
        reason = "unknown IANA timezone"
        fix = ("UPDATE celery_crontab_schedule SET timezone = 'Asia/Tokyo' WHERE id = :id", crontab_id)
    store = Store(engine, "beat-a")

    result = store.claim([(bad, slot), (good, slot)], now)
    assert [r.task_pk for r in result.runs] == [good]
    [(name, error)] = result.errors
    assert name == "bad"
    assert breakage in error and reason in error
    stored = row(engine, "bad")
    assert stored.schedule_error == error
    assert stored.next_run_at is None and stored.total_run_count == 0
    assert [r.periodic_task_id for r in runs(engine)] == [good]

    # a row broken through its args is not re-read until it changes again; one whose
    # schedule row was edited is flagged, so recompute reports it again
    done, errors, _ = store.recompute(utcnow(), 100)
    if breakage == "args":
        assert (done, errors) == (0, [])
    else:
        assert done == 1 and errors == [("bad", error)]
    assert row(engine, "bad").next_run_at is None

    # fixed with plain SQL: flagged by the triggers, scheduled again at the next recompute
    execute(engine, fix[0], id=fix[1])
    assert row(engine, "bad").needs_recompute is True
    done, errors, _ = store.recompute(utcnow(), 100)
    assert (done, errors) == (1, [])
    stored = row(engine, "bad")
    assert stored.schedule_error is None and stored.needs_recompute is False
    assert stored.next_run_at is not None and stored.next_run_at > now


# -- recompute -------------------------------------------------------------------------

def test_recompute_schedules_plain_sql_rows(engine: Engine, session: Session) -> None:
    make(session, "anchor")  # creates the interval row the plain-SQL tasks use
    interval_id = row(engine, "anchor").interval_id
    for name, enabled in (("on", True), ("off", False)):
        execute(
            engine,
            "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, one_off, "
            "enabled, total_run_count, description, needs_recompute) VALUES "
            "(:name, 'tasks.sql', :iid, '[]', '{}', '{}', :f, :enabled, 0, '', :f)",
            name=name, iid=interval_id, f=False, enabled=enabled,
        )
    assert row(engine, "on").needs_recompute is True and row(engine, "on").next_run_at is None
    assert row(engine, "off").needs_recompute is False  # disabled: nothing to compute yet
    store = Store(engine, "beat-a")

    before = utcnow()
    done, errors, _ = store.recompute(before, 100)
    assert (done, errors) == (1, [])
    on, off = row(engine, "on"), row(engine, "off")
    assert on.next_run_at == before + timedelta(seconds=10)
    assert off.next_run_at is None
    assert on.needs_recompute is False and off.needs_recompute is False
    assert row(engine, "anchor").needs_recompute is False
    assert store.recompute(utcnow(), 100)[:2] == (0, [])  # nothing left flagged

    # a plain-SQL change of a scheduled task is picked up the same way
    execute(engine, "UPDATE celery_periodic_task SET enabled = :f WHERE name = 'on'", f=False)
    assert store.recompute(utcnow(), 100)[:2] == (1, [])
    assert row(engine, "on").next_run_at is None


def test_recompute_respects_batch_limit(engine: Engine, session: Session) -> None:
    for name in ("a", "b", "c"):
        make(session, name)
    execute(engine, "UPDATE celery_periodic_task SET enabled = enabled, start_time = '2030-01-01 00:00:00'")
    store = Store(engine, "beat-a")
    assert store.recompute(utcnow(), 2)[:2] == (2, [])
    assert store.recompute(utcnow(), 2)[:2] == (1, [])
    assert store.recompute(utcnow(), 2)[:2] == (0, [])


# -- mark_sent, catch-up -------------------------------------------------------------------

def test_mark_sent(engine: Engine, session: Session) -> None:
    now = utcnow()
    first = make(session, "first", due=now - timedelta(seconds=1))
    second = make(session, "second", due=now - timedelta(seconds=1))
    store = Store(engine, "beat-a")
    result = claim_due(store, now)
    by_task = {r.task_pk: r.run_id for r in result.runs}
    sent_at = now + timedelta(milliseconds=5)
    store.mark_sent([by_task[first]], sent_at)
    store.mark_sent([], sent_at)  # nothing to do

    states = {r.periodic_task_id: (r.state, r.sent_at) for r in runs(engine)}
    assert states == {first: ("sent", sent_at), second: ("claimed", None)}
    with session.begin():
        assert session.scalar(select(func.count()).select_from(PeriodicTaskRun)) == 2


def test_catch_up_after_downtime_claims_once(engine: Engine, session: Session) -> None:
    """An hour of missed 10-second slots is one run, not 360."""
    now = utcnow()
    pk = make(session, "behind", due=now - timedelta(hours=1))
    store = Store(engine, "beat-a")

    claimed = 0
    for _ in range(5):  # a beat keeps claiming whatever the window says is due
        claimed += len(claim_due(store, now).runs)
    assert claimed == 1
    stored = row(engine, "behind")
    assert now < stored.next_run_at <= now + timedelta(seconds=10)
    # the phase is kept: the next run lies on the original 10-second grid
    assert (stored.next_run_at - (now - timedelta(hours=1))) % timedelta(seconds=10) == timedelta(0)
    assert [r.periodic_task_id for r in runs(engine)] == [pk]


# -- misfire policy ---------------------------------------------------------------

def test_skip_policy_drops_a_run_missed_past_the_grace(engine: Engine, session: Session) -> None:
    now = utcnow()
    slot = now - timedelta(hours=3)  # a daily run, missed while beat was down
    daily = {"every": 1, "period": "days"}
    skip = make(session, "skip-daily", due=slot, interval=daily, misfire_policy="skip")
    fresh = make(session, "skip-fresh", due=now - timedelta(seconds=5), interval=daily, misfire_policy="skip")
    default = make(session, "default-daily", due=slot, interval=daily)
    store = Store(engine, "beat-a", misfire_grace=60)

    result = store.claim([(skip, slot), (fresh, now - timedelta(seconds=5)), (default, slot)], now)
    assert sorted(r.task_pk for r in result.runs) == sorted([fresh, default])  # default: one catch-up
    assert (skip, slot + timedelta(days=1)) in result.rescheduled
    stored = row(engine, "skip-daily")
    assert stored.next_run_at == slot + timedelta(days=1) and stored.enabled is True
    assert (stored.total_run_count, stored.last_run_at) == (0, None)
    [skipped] = [r for r in runs(engine) if r.periodic_task_id == skip]
    assert (skipped.state, skipped.slot, skipped.sent_by) == ("skipped", slot, "beat-a")
    assert skipped.task_id == task_id_of(engine, skip, slot)
    # a skipped run is history, never a claim to publish again
    taken = store.take_over(now + timedelta(hours=1), now + timedelta(minutes=30), 100)[1]
    assert sorted(t.run.task_pk for t in taken) == sorted([fresh, default])  # never marked sent


def test_a_frequent_task_missed_for_long_is_still_on_time(engine: Engine, session: Session) -> None:
    """Skip means "not late": an every-10-seconds task down for an hour has a slot seconds ago."""
    now = utcnow()
    slot = now - timedelta(hours=1)
    pk = make(session, "frequent", due=slot, misfire_policy="skip")
    [run] = Store(engine, "beat-a", misfire_grace=60).claim([(pk, slot)], now).runs
    assert run.slot == slot and run.next_run_at is not None and run.next_run_at > now


def test_cron_starting_deadline_skips_late_crontab_runs(engine: Engine, session: Session) -> None:
    now = utcnow().replace(second=0, microsecond=0)
    two_hours_ago = now - timedelta(hours=2)
    daily = f"{two_hours_ago.minute} {two_hours_ago.hour} * * *"
    late = make(session, "cron-late", due=two_hours_ago, crontab=daily)
    forced = make(session, "cron-catch-up", due=two_hours_ago, crontab=daily, misfire_policy="catch_up")
    interval = make(session, "interval-late", due=two_hours_ago, interval={"every": 1, "period": "days"})
    store = Store(engine, "beat-a", cron_starting_deadline=600)

    result = store.claim([(late, two_hours_ago), (forced, two_hours_ago), (interval, two_hours_ago)], now)
    # Celery's deadline is for crontabs; a task's own catch_up policy wins over it
    assert sorted(r.task_pk for r in result.runs) == sorted([forced, interval])
    assert row(engine, "cron-late").next_run_at == two_hours_ago + timedelta(days=1)
    assert [r.state for r in runs(engine) if r.periodic_task_id == late] == ["skipped"]

    # without a deadline the same late crontab gets its one catch-up run
    yesterday = two_hours_ago - timedelta(days=1)
    PeriodicTask.update_or_create(session, name="cron-late", next_run_at=yesterday)
    [run] = Store(engine, "beat-b").claim([(late, yesterday)], now).runs
    assert run.task_pk == late and run.next_run_at == two_hours_ago + timedelta(days=1)


def test_a_recompute_is_merged_into_the_window_read_before_it(engine: Engine, session: Session) -> None:
    """After a plain-SQL edit the sync recomputes the flagged rows and merges their new
    next runs into the window it read, rather than reading it again: the same result."""
    now = utcnow()
    moved = make(session, "moved", due=now + timedelta(seconds=5))
    stays = make(session, "stays", due=now + timedelta(seconds=3))
    paused = make(session, "paused", due=now + timedelta(seconds=4))
    execute(engine, "UPDATE celery_periodic_task SET crontab_id = NULL, interval_id = :iv WHERE id = :id",
            iv=make_interval(engine, 2), id=moved)
    execute(engine, "UPDATE celery_periodic_task SET enabled = :f WHERE id = :id", f=False, id=paused)
    store = Store(engine, "beat-a")
    until = now + timedelta(seconds=60)
    before = store.window(until, 100)
    assert before.flagged
    recomputed = store.recompute(now, 100)
    assert set(recomputed.changed) == {moved, paused} and recomputed.changed[paused] is None
    merged = before.changed(recomputed.changed, until)
    again = store.window(until, 100)
    assert [(r.id, r.next_run_at) for r in merged.due] == [(r.id, r.next_run_at) for r in again.due]
    assert [r.id for r in merged.due] == [moved, stays]  # every 2 s now: first; paused: gone
    assert not merged.flagged and not again.flagged


def make_interval(engine: Engine, seconds: int) -> int:
    """An interval schedule row of ``seconds``, inserted with plain SQL."""
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO celery_interval_schedule (every, period) "
                                "VALUES (:n, 'seconds')"), {"n": seconds})
        return int(connection.execute(text(
            "SELECT max(id) FROM celery_interval_schedule WHERE every = :n AND period = 'seconds'"),
            {"n": seconds}).scalar_one())
