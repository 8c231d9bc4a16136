"""Run outcomes on every backend: the workers' writes (start, end, the task's summary in
the same transaction), the readers, the refusal of writers, hostile errors, and the outage
rule (the end-to-end suite runs them on a real worker)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from beatsqlalchemy import api, outcomes, runlog
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.constants import ERROR_LENGTH, OUTCOME_COLUMNS
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from harness.helpers import stored

T0 = sched.utcnow().replace(microsecond=0)


def logged_run(session: Session, name: str, state: str = "sent") -> str:
    """A run of ``name`` as beat logs it when it sends one; returns its task id."""
    task = api.get_task(session, name)
    task_id = str(uuid.uuid4())
    session.add(PeriodicTaskRun(
        periodic_task_id=task.id, periodic_task_name=name, slot=T0, task_id=task_id, state=state,
        sent_by="beat-1", claim_token=uuid.uuid4().hex, claimed_at=T0, sent_at=T0,
    ))
    session.commit()
    return task_id


def run_row(engine: Engine, task_id: str) -> PeriodicTaskRun:
    with Session(engine) as session:
        return session.scalars(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id == task_id)).one()


@pytest.fixture
def task(session: Session) -> PeriodicTask:
    return api.create_task(session, "nightly", "tasks.nightly", timedelta(hours=1))


def test_a_run_records_its_start_and_its_end_with_the_task_summary(
    engine: Engine, session: Session, task: PeriodicTask,
) -> None:
    before = stored(engine, "nightly")
    assert before is not None and before.consecutive_failures == 0 and before.last_outcome is None
    task_id = logged_run(session, "nightly")
    assert runlog.start(engine, task_id, "w1@host", T0, track=True) is True
    started = run_row(engine, task_id)
    assert (started.outcome, started.worker, started.started_by, started.retries) == ("started", "w1@host",
                                                                                      "w1@host", 0)
    assert started.started_at == T0 and started.finished_at is None
    assert runlog.start(engine, task_id, "w2@host", T0, track=True) is False, "a second copy"

    end = T0 + timedelta(seconds=2)
    assert runlog.finish(engine, task_id, "succeeded", "w1@host", end, runtime=1.25) is True
    done = run_row(engine, task_id)
    assert (done.outcome, done.runtime, done.finished_at, done.error) == ("succeeded", 1.25, end, None)
    after = stored(engine, "nightly")
    assert after is not None
    assert (after.last_outcome, after.last_outcome_at, after.last_success_at) == ("succeeded", end, end)
    assert after.consecutive_failures == 0
    # the schedule is untouched, nothing is flagged, and date_changed is the writers'
    assert after.next_run_at == before.next_run_at and not after.needs_recompute
    assert after.date_changed == before.date_changed


def test_failures_count_up_and_a_success_resets_them(engine: Engine, session: Session,
                                                     task: PeriodicTask) -> None:
    for number in (1, 2, 3):
        task_id = logged_run(session, "nightly")
        runlog.finish(engine, task_id, "failed", "w1", T0, runtime=0.5,
                      error=runlog.error_text(ValueError(f"bad {number}")))
        row = stored(engine, "nightly")
        assert row is not None and row.consecutive_failures == number and row.last_outcome == "failed"
        assert row.last_success_at is None
    assert run_row(engine, task_id).error == "ValueError: bad 3"
    retried = logged_run(session, "nightly")
    runlog.finish(engine, retried, "retried", "w1", T0, error="ConnectionError: later")
    row = stored(engine, "nightly")
    assert row is not None and row.consecutive_failures == 3, "a retry is no failure (yet)"
    assert row.last_outcome == "retried"
    assert [t.name for t in api.failing_tasks(session, min_failures=3)] == ["nightly"]
    assert api.failing_tasks(session, min_failures=4) == []
    runlog.finish(engine, logged_run(session, "nightly"), "succeeded", "w1", T0 + timedelta(seconds=1))
    row = stored(engine, "nightly")
    assert row is not None and row.consecutive_failures == 0 and row.last_outcome == "succeeded"
    assert api.failing_tasks(session) == []


def test_a_retry_attempt_records_itself_without_a_second_start(engine: Engine, session: Session,
                                                                 task: PeriodicTask) -> None:
    task_id = logged_run(session, "nightly")
    assert runlog.start(engine, task_id, "w1", T0, track=True)
    runlog.finish(engine, task_id, "retried", "w1", T0, runtime=0.1, error="OSError: flaky")
    later = T0 + timedelta(seconds=5)
    assert runlog.start(engine, task_id, "w2", later, first=False, track=True, retries=1)
    row = run_row(engine, task_id)
    assert (row.outcome, row.worker, row.retries, row.started_by, row.started_at) == ("started", "w2", 1,
                                                                                      "w1", T0)
    runlog.finish(engine, task_id, "succeeded", "w2", later, runtime=0.2)
    row = run_row(engine, task_id)
    assert (row.outcome, row.retries, row.error) == ("succeeded", 1, None)


def test_unknown_runs_write_nothing_and_run_once_alone_records_no_outcome(
    engine: Engine, session: Session, task: PeriodicTask,
) -> None:
    assert runlog.start(engine, "not-a-beat-run", "w1", T0, track=True) is True
    assert runlog.finish(engine, "not-a-beat-run", "failed", "w1", T0) is False
    row = stored(engine, "nightly")
    assert row is not None and row.last_outcome is None and row.consecutive_failures == 0
    task_id = logged_run(session, "nightly")
    assert runlog.start(engine, task_id, "w1", T0) is True  # RunOnceTask without tracking
    assert run_row(engine, task_id).outcome is None


def test_the_failure_count_of_a_full_column_stays_full(engine: Engine, session: Session,
                                                       task: PeriodicTask) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET consecutive_failures = 2147483647"))
    runlog.finish(engine, logged_run(session, "nightly"), "failed", "w1", T0)
    row = stored(engine, "nightly")
    assert row is not None and row.consecutive_failures == 2147483647


# -- hostile errors -------------------------------------------------------------------------

class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_error_text_is_type_and_first_line_capped() -> None:
    assert runlog.error_text(KeyError("x")) == "KeyError: 'x'"
    assert runlog.error_text(ValueError("first\nsecond\nthird")) == "ValueError: first"
    assert runlog.error_text(ValueError()) == "ValueError"
    assert runlog.error_text(Unprintable()) == "test_outcomes.Unprintable: <message unreadable>"
    huge = runlog.error_text(RuntimeError("x" * 1_000_000))
    assert len(huge) == ERROR_LENGTH and huge.startswith("RuntimeError: xxx") and huge.endswith("…")
    assert runlog.error_text(ValueError("naïve ☃ 🐍 日本")) == "ValueError: naïve ☃ 🐍 日本"


@pytest.mark.parametrize("message", ["naïve ☃ 🐍 日本" * 100, "nul\x00byte", "lone \ud800 surrogate",
                                     "y" * 100_000])
def test_hostile_errors_are_stored_on_every_backend(engine: Engine, session: Session, task: PeriodicTask,
                                                    message: str) -> None:
    task_id = logged_run(session, "nightly")
    error = runlog.error_text(RuntimeError(message))
    assert runlog.finish(engine, task_id, "failed", "w1", T0, error=error)
    stored_error = run_row(engine, task_id).error
    assert stored_error == error and len(stored_error) <= ERROR_LENGTH
    assert "\x00" not in stored_error


# -- readers --------------------------------------------------------------------------------

def test_runs_show_and_dict_what_the_workers_recorded(engine: Engine, session: Session,
                                                      task: PeriodicTask) -> None:
    task_id = logged_run(session, "nightly")
    runlog.start(engine, task_id, "w1", T0, track=True)
    runlog.finish(engine, task_id, "failed", "w1", T0 + timedelta(seconds=1), runtime=0.75,
                  error="ZeroDivisionError: division by zero")
    session.expire_all()
    [run] = api.runs(session, name="nightly")
    data = api.run_to_dict(run)
    assert tuple(data) == api.RUN_FIELDS
    assert (data["outcome"], data["runtime"], data["worker"], data["error"]) == (
        "failed", 0.75, "w1", "ZeroDivisionError: division by zero")
    assert data["finished_at"] == (T0 + timedelta(seconds=1)).isoformat()
    shown = api.task_to_dict(api.get_task(session, "nightly"))
    summary = (shown["last_outcome"], shown["consecutive_failures"], shown["last_success_at"])
    assert summary == ("failed", 1, None)


def test_failing_tasks_order_and_bad_input(engine: Engine, session: Session) -> None:
    for name, failures in (("a", 1), ("b", 3), ("c", 0), ("d", 2)):
        api.create_task(session, name, "tasks.x", timedelta(hours=1))
        for _ in range(failures):
            runlog.finish(engine, logged_run(session, name), "failed", "w1", T0)
    session.expire_all()
    assert [t.name for t in api.failing_tasks(session)] == ["b", "d", "a"]
    assert [t.name for t in api.failing_tasks(session, min_failures=2, limit=1)] == ["b"]
    for bad in ({"min_failures": 0}, {"min_failures": "x"}, {"limit": -1}):
        with pytest.raises(ValidationError) as caught:
            api.failing_tasks(session, **bad)  # type: ignore[arg-type]
        assert caught.value.field == next(iter(bad))


# -- writers are refused -------------------------------------------------------------------

@pytest.mark.parametrize("field", OUTCOME_COLUMNS)
def test_writers_cannot_set_the_workers_columns(session: Session, task: PeriodicTask, field: str) -> None:
    for write in (lambda: api.update_task(session, "nightly", **{field: None}),
                  lambda: PeriodicTask.update_or_create(session, name="nightly", **{field: 0}),
                  lambda: PeriodicTask(name="n", task="t", **{field: 1})):
        with pytest.raises(ValidationError) as caught:
            write()
        assert caught.value.field == field and "workers' own" in str(caught.value)
        session.rollback()


def test_export_leaves_outcomes_out_and_import_ignores_them(engine: Engine, session: Session,
                                                             task: PeriodicTask) -> None:
    runlog.finish(engine, logged_run(session, "nightly"), "failed", "w1", T0)
    session.expire_all()
    [exported] = api.export_tasks(session)
    assert not set(exported) & set(OUTCOME_COLUMNS)
    api.import_tasks(session, [dict(exported, last_outcome="succeeded", consecutive_failures=0)])
    row = stored(engine, "nightly")
    assert row is not None and row.last_outcome == "failed" and row.consecutive_failures == 1


# -- PostgreSQL: the workers' writes wake no beat -----------------------------------------

def test_outcome_writes_send_no_change_notification(backend: str, db_url: str, engine: Engine,
                                                    session: Session, task: PeriodicTask) -> None:
    if backend != "postgresql":
        pytest.skip("the change notification is PostgreSQL's")
    task_id = logged_run(session, "nightly")
    listener = create_engine(db_url)
    raw = listener.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        driver.autocommit = True
        driver.execute("LISTEN beatsqlalchemy_changed")

        def notified() -> bool:
            driver.execute("SELECT 1")
            return bool(list(driver.notifies(timeout=0.2, stop_after=1)))

        runlog.finish(engine, task_id, "failed", "w1", T0)
        assert not notified()
        with engine.begin() as connection:  # any other write of the table still notifies
            connection.execute(text("UPDATE celery_periodic_task SET description = 'x'"))
        assert notified()
    finally:
        raw.close()
        listener.dispose()


# -- the outage rule -------------------------------------------------------------------------

@pytest.fixture
def unreachable_app() -> Iterator[Celery]:
    app = Celery("unreachable", set_as_current=False)
    app.conf.beat_sqlalchemy_url = "postgresql+psycopg://beat:secret@127.0.0.1:1/nowhere"
    app.conf.beat_sqlalchemy_track_outcomes = True
    yield app
    app.close()


def test_a_database_out_of_reach_is_logged_once_per_outage(
    unreachable_app: Celery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outcomes, "_outage", outcomes._Outage())
    monkeypatch.setattr(outcomes, "RETRY_EVERY", 0.0)  # every write tries
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    for _ in range(3):
        assert outcomes._write(unreachable_app, runlog.finish, "id", "failed", "w1", T0) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cannot record run outcomes" in lines[0] and "secret" not in lines[0]


def test_while_out_of_reach_writes_wait_for_the_retry_period(
    unreachable_app: Celery, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outage = outcomes._Outage()
    monkeypatch.setattr(outcomes, "_outage", outage)
    calls: list[str] = []

    def write(engine: Engine, *args: object) -> None:
        calls.append("tried")
        runlog.finish(engine, "id", "failed", "w1", T0)

    outcomes._write(unreachable_app, write)
    outcomes._write(unreachable_app, write)
    assert calls == ["tried"] and outage.skip()


def test_the_setting_is_read_from_the_app() -> None:
    app = Celery("flags", set_as_current=False)
    assert outcomes.enabled(app) is False
    for value, expected in ((True, True), ("true", True), ("0", False), (False, False)):
        fresh = Celery("flags", set_as_current=False)
        fresh.conf.beat_sqlalchemy_track_outcomes = value
        assert outcomes.enabled(fresh) is expected
    bad = Celery("flags", set_as_current=False)
    bad.conf.beat_sqlalchemy_track_outcomes = "maybe"
    with pytest.raises(ValidationError) as caught:
        outcomes.enabled(bad)
    assert caught.value.field == "beat_sqlalchemy_track_outcomes"


# -- run now ------------------------------------------------------------------------------------

def test_run_now_logs_its_run_before_publishing_it(engine: Engine, session: Session, app: Celery,
                                                   task: PeriodicTask) -> None:
    """A worker that records the outcome finds the run by its task id, however fast it starts."""
    seen: list[tuple[str, str | None]] = []

    def at_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        task_id = (headers or {}).get("id")
        with Session(engine) as other:
            found = other.scalars(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id == task_id)).first()
            seen.append((str(task_id), found.state if found is not None else None))

    before_task_publish.connect(at_publish, weak=False)
    try:
        run = api.run_now(session, app, "nightly")
    finally:
        before_task_publish.disconnect(at_publish)
    assert seen == [(run.task_id, "claimed")]
    assert run_row(engine, run.task_id).state == "sent"
    assert runlog.finish(engine, run.task_id, "succeeded", "w1", T0)
    row = stored(engine, "nightly")
    assert row is not None and row.last_outcome == "succeeded"
