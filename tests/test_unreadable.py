"""Rows holding values the database let through but nothing can read, on every backend:
the store marks only those rows broken (window, claim, recompute, take-over), and the
readers (API, CLI) show them as broken instead of failing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun, Unreadable
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import TASKS, Store

#: values no date column can turn into a time, per backend (SQL literals)
BAD_TIMES = {
    "sqlite": ["'next monday 9:00'", "' 2026-01-01 00:00:00'", "5", "'2020-13-45 25:00:00'"],
    "postgresql": ["'infinity'", "'-infinity'", "'0044-03-15 00:00:00 BC'", "'12000-01-01 00:00:00'"],
    "mysql": ["'0000-00-00 00:00:00'", "'2026-00-00 00:00:00'", "'2026-02-00 12:00:00'"],
}
MISSING_EPHEM = "solar schedules need the ephem package: pip install 'beatsqlalchemy[solar]'"
EVERY_10S = {"every": 10, "period": "seconds"}


def make(session: Session, name: str, **fields: Any) -> int:
    fields.setdefault("task", "tasks.t")
    if not any(k in fields for k in ("interval", "crontab", "solar", "clocked")):
        fields["interval"] = EVERY_10S
    task, _ = PeriodicTask.update_or_create(session, name=name, **fields)
    return task.id


def write(engine: Engine, statement: str) -> None:
    """Plain SQL, as a user's tool would run it (zero dates allowed on MariaDB)."""
    with engine.begin() as connection:
        if engine.dialect.name in ("mysql", "mariadb"):
            connection.execute(text("SET SESSION sql_mode = 'STRICT_ALL_TABLES'"))
        connection.execute(text(statement))


def due_now(engine: Engine, *names: str) -> None:
    """Make the tasks ``names`` due a second ago (without flagging them)."""
    with engine.begin() as connection:
        connection.execute(TASKS.update().where(TASKS.c.name.in_(names))
                           .values(next_run_at=utcnow() - timedelta(seconds=1)))


def error_of(engine: Engine, name: str) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(select(TASKS.c.schedule_error).where(TASKS.c.name == name))


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine, "test-beat")


def test_window_parks_rows_whose_next_run_at_is_no_time(
    backend: str, engine: Engine, session: Session, store: Store,
) -> None:
    make(session, "healthy")
    bad = {f"bad-{i}": value for i, value in enumerate(BAD_TIMES[backend])}
    for name in bad:
        make(session, name)
    due_now(engine, "healthy", *bad)
    for name, value in bad.items():
        write(engine, f"UPDATE celery_periodic_task SET next_run_at = {value} WHERE name = '{name}'")
    now = utcnow()
    window = store.window(now + timedelta(seconds=5), 100)
    assert [r.id for r in window.due] == [session.scalars(select(PeriodicTask.id).where(
        PeriodicTask.name == "healthy")).one()]
    assert len(window.unreadable) == len(bad)
    errors = dict(store.park_unreadable(window.unreadable))
    assert sorted(errors) == sorted(bad)
    for name in bad:
        assert errors[name].startswith("next_run_at: invalid value ")
        assert error_of(engine, name) == errors[name]
    # parked: no read meets them again, and the healthy task is still claimed
    again = store.window(now + timedelta(seconds=5), 100)
    assert again.unreadable == [] and len(again.due) == 1
    assert [r.name for r in store.claim([(r.id, r.next_run_at) for r in again.due], now).runs] == ["healthy"]


@pytest.mark.parametrize("column", ["last_run_at", "expires", "args", "kwargs", "headers", "extra_options",
                                    "task", "priority", "expire_seconds", "misfire_policy"])
def test_claim_marks_only_the_row_with_an_unusable_value_broken(
    backend: str, engine: Engine, session: Session, store: Store, column: str,
) -> None:
    values = {
        "last_run_at": BAD_TIMES[backend][0], "expires": BAD_TIMES[backend][0], "args": "'{}'",
        "kwargs": "'[]'", "headers": "'5'", "extra_options": "'\"x\"'", "task": "'  '", "priority": "9999",
        "expire_seconds": "-1", "misfire_policy": "'bogus'",
    }
    make(session, "healthy")
    make(session, "bad")
    due_now(engine, "healthy", "bad")
    write(engine, f"UPDATE celery_periodic_task SET {column} = {values[column]} WHERE name = 'bad'")
    now = utcnow()
    result = store.claim([(r.id, r.next_run_at) for r in store.window(now, 100).due], now)
    assert [r.name for r in result.runs] == ["healthy"]
    assert [name for name, _ in result.errors] == ["bad"]
    assert result.errors[0][1].startswith(f"{column}: invalid value ")
    assert error_of(engine, "bad") == result.errors[0][1]
    assert store.window(now, 100).due == []  # parked, not due again


@pytest.mark.parametrize("task_name", ["''", "'   '"])
def test_a_row_with_an_empty_task_is_never_sent(
    engine: Engine, session: Session, store: Store, task_name: str,
) -> None:
    make(session, "empty")
    due_now(engine, "empty")
    write(engine, f"UPDATE celery_periodic_task SET task = {task_name} WHERE name = 'empty'")
    now = utcnow()
    result = store.claim([(r.id, r.next_run_at) for r in store.window(now, 100).due], now)
    assert result.runs == []
    stored = task_name.strip("'")
    assert result.errors == [("empty", f"task: invalid value {stored!r}: must be a non-empty string")]


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("task", "''", "task: invalid value '': must be a non-empty string"),
    ("headers", "'{\"id\": \"fixed\"}'", "headers: invalid value {'id': 'fixed'}: reserved key 'id'"),
    ("extra_options", "'{\"serializer\": \"pickle\"}'", "'serializer' is not an option"),
])
def test_readers_judge_a_flagged_row_as_beat_will(
    session: Session, db_url: str, column: str, value: str, reason: str,
) -> None:
    """A row written with plain SQL and not yet recomputed: ``next_run_at`` and ``list``
    report what beat will find wrong with it, not a next run beat will never send."""
    make(session, "flagged")
    write(session.get_bind(), f"UPDATE celery_periodic_task SET {column} = {value} WHERE name = 'flagged'")
    session.expire_all()
    with pytest.raises(api.ValidationError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        api.next_run_at(session, "flagged")
    session.rollback()
    listed = CliRunner().invoke(cli_main, ["--url", db_url, "list"])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[-4] for line in listed.output.splitlines()[1:]] == ["error"], listed.output


def test_recompute_marks_unreadable_rows_and_schedules_the_others(
    backend: str, engine: Engine, session: Session, store: Store,
) -> None:
    make(session, "good")
    make(session, "bad-start", interval={"every": 11, "period": "seconds"})
    make(session, "bad-clocked", clocked=utcnow() + timedelta(days=1))
    make(session, "bad-solar", solar={"event": "sunset", "latitude": 10, "longitude": 20})
    with engine.connect() as connection:
        ids = dict(connection.execute(select(TASKS.c.name, TASKS.c.clocked_id)).all())  # type: ignore[arg-type]
        solar = dict(connection.execute(select(TASKS.c.name, TASKS.c.solar_id)).all())  # type: ignore[arg-type]
    write(engine, f"UPDATE celery_periodic_task SET start_time = {BAD_TIMES[backend][0]} "
                  "WHERE name = 'bad-start'")
    write(engine, f"UPDATE celery_clocked_schedule SET clocked_time = {BAD_TIMES[backend][1]} "
                  f"WHERE id = {ids['bad-clocked']}")
    latitude = "'NaN'" if backend == "postgresql" else "'abc'" if backend == "sqlite" else "95"
    write(engine, f"UPDATE celery_solar_schedule SET latitude = {latitude} WHERE id = {solar['bad-solar']}")
    with engine.begin() as connection:
        connection.execute(TASKS.update().where(TASKS.c.name == "good").values(needs_recompute=True))
    result = store.recompute(utcnow(), 100)
    assert sorted(name for name, _ in result.errors) == ["bad-clocked", "bad-solar", "bad-start"]
    assert error_of(engine, "good") is None
    with engine.connect() as connection:
        assert connection.scalar(select(TASKS.c.next_run_at).where(TASKS.c.name == "good")) is not None
    for name in ("bad-clocked", "bad-solar", "bad-start"):
        assert error_of(engine, name)


def test_the_run_counter_at_its_limit_does_not_fail_the_claim(
    engine: Engine, session: Session, store: Store,
) -> None:
    make(session, "counted")
    make(session, "other")
    due_now(engine, "counted", "other")
    write(engine, "UPDATE celery_periodic_task SET total_run_count = 2147483647 WHERE name = 'counted'")
    now = utcnow()
    result = store.claim([(r.id, r.next_run_at) for r in store.window(now, 100).due], now)
    assert sorted(r.name for r in result.runs) == ["counted", "other"]
    with engine.connect() as connection:
        counted = connection.scalar(select(TASKS.c.total_run_count).where(TASKS.c.name == "counted"))
    assert counted == 2147483647


def test_take_over_abandons_the_claim_of_a_row_now_unreadable(
    backend: str, engine: Engine, session: Session, store: Store,
) -> None:
    make(session, "taken")
    due_now(engine, "taken")
    now = utcnow()
    assert len(store.claim([(r.id, r.next_run_at) for r in store.window(now, 100).due], now).runs) == 1
    write(engine, f"UPDATE celery_periodic_task SET expires = {BAD_TIMES[backend][0]} WHERE name = 'taken'")
    _token, taken = store.take_over(now + timedelta(minutes=5), now + timedelta(minutes=1), 100)
    assert taken == []
    with engine.connect() as connection:
        assert connection.scalar(select(PeriodicTaskRun.state)) == "abandoned"


# -- the readers -------------------------------------------------------------------------------

@pytest.fixture
def unreadable_rows(backend: str, engine: Engine, session: Session) -> Iterator[list[str]]:
    """Tasks holding an unreadable value in a date, a JSON and a number column, each."""
    make(session, "fine")
    make(session, "bad-time")
    make(session, "bad-json")
    make(session, "bad-clocked", clocked=utcnow() + timedelta(days=1))
    make(session, "bad-solar", solar={"event": "sunset", "latitude": 1, "longitude": 2})
    session.close()
    with engine.connect() as connection:
        clocked = connection.scalar(select(TASKS.c.clocked_id).where(TASKS.c.name == "bad-clocked"))
        solar = connection.scalar(select(TASKS.c.solar_id).where(TASKS.c.name == "bad-solar"))
    write(engine, f"UPDATE celery_periodic_task SET last_run_at = {BAD_TIMES[backend][0]}, "
                  f"start_time = {BAD_TIMES[backend][-1]} WHERE name = 'bad-time'")
    json_value = "'{bad'" if backend == "sqlite" else "'5'"  # the others check JSON
    write(engine, f"UPDATE celery_periodic_task SET extra_options = {json_value}, headers = {json_value} "
                  "WHERE name = 'bad-json'")
    write(engine, f"UPDATE celery_clocked_schedule SET clocked_time = {BAD_TIMES[backend][0]} "
                  f"WHERE id = {clocked}")
    latitude = "'NaN'" if backend == "postgresql" else "'abc'" if backend == "sqlite" else "95"
    write(engine, f"UPDATE celery_solar_schedule SET latitude = {latitude} WHERE id = {solar}")
    # a run-log row with an unreadable time too
    write(engine, "INSERT INTO celery_periodic_task_run (periodic_task_id, periodic_task_name, slot, "
                  "task_id, state, sent_by, claim_token, claimed_at) VALUES (1, 'bad-time', "
                  f"{BAD_TIMES[backend][0]}, 'x', 'sent', 'me', 't', {BAD_TIMES[backend][0]})")
    yield ["bad-time", "bad-clocked", "bad-solar"] + (["bad-json"] if backend == "sqlite" else [])


def test_api_readers_read_unreadable_rows(
    engine: Engine, session: Session, unreadable_rows: list[str],
) -> None:
    tasks = {t.name: t for t in api.list_tasks(session)}
    assert len(tasks) == 5
    assert type(tasks["bad-time"].last_run_at) is Unreadable
    for name in unreadable_rows:
        task = api.get_task(session, name)
        json.dumps(api.task_to_dict(task))
        with pytest.raises(ValueError, match="invalid value"):
            api.next_run_at(session, name)
    assert tasks["fine"].read_error() is None
    assert tasks["bad-time"].read_error() is not None and tasks["bad-clocked"].read_error() is not None
    assert len(api.export_tasks(session)) == 5
    [run] = api.runs(session)
    assert type(run.slot) is Unreadable


def test_cli_list_and_show_show_unreadable_rows_as_broken(db_url: str, unreadable_rows: list[str]) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli_main, ["--url", db_url, "list"])
    assert listed.exit_code == 0, listed.output
    as_json = runner.invoke(cli_main, ["--url", db_url, "list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    errors = {entry["name"]: entry["schedule_error"] for entry in json.loads(as_json.output)}
    assert errors["fine"] is None
    for name in unreadable_rows:
        assert errors[name] and "invalid value" in errors[name], name
        line = next(line for line in listed.output.splitlines() if line.startswith(name + " "))
        assert " error " in line
        shown = runner.invoke(cli_main, ["--url", db_url, "show", name])
        assert shown.exit_code == 0, shown.output
        assert "\nerror:" in shown.output
        assert runner.invoke(cli_main, ["--url", db_url, "show", name, "--json"]).exit_code == 0


# -- a schedule kind whose optional package is missing -----------------------------------------

@pytest.fixture
def without_ephem(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "ephem", None)  # importing it raises ImportError
    sched.has_ephem.cache_clear()
    yield
    monkeypatch.undo()
    sched.has_ephem.cache_clear()


def test_without_ephem_a_solar_row_is_broken_and_the_rest_of_its_batch_scheduled(
    db_url: str, engine: Engine, session: Session, store: Store, without_ephem: None,
) -> None:
    with engine.begin() as connection:  # as plain SQL writes them: flagged, in one batch
        connection.execute(text("INSERT INTO celery_solar_schedule (event, latitude, longitude) "
                                "VALUES ('sunset', 52.5, 13.4)"))
        connection.execute(text("INSERT INTO celery_interval_schedule (every, period) VALUES (5, 'seconds')"))
        solar = connection.scalar(text("SELECT id FROM celery_solar_schedule"))
        interval = connection.scalar(text("SELECT id FROM celery_interval_schedule"))
        for name, column, pk in (("solar", "solar_id", solar), ("good", "interval_id", interval)):
            connection.execute(text(
                f"INSERT INTO celery_periodic_task (name, task, {column}, args, kwargs, headers, one_off, "
                "enabled, total_run_count, description) "
                "VALUES (:name, 't', :pk, '[]', '{}', '{}', :no, :yes, 0, '')"
            ), {"name": name, "pk": pk, "no": False, "yes": True})
    result = store.recompute(utcnow(), 100)
    assert result.errors == [("solar", MISSING_EPHEM)]
    assert error_of(engine, "solar") == MISSING_EPHEM
    assert error_of(engine, "good") is None
    runner = CliRunner()
    listed = runner.invoke(cli_main, ["--url", db_url, "list"])
    assert listed.exit_code == 0, listed.output
    shown = runner.invoke(cli_main, ["--url", db_url, "show", "solar"])
    assert shown.exit_code == 0, shown.output
    assert f"error:       {MISSING_EPHEM}" in shown.output or f"error: {MISSING_EPHEM}" in " ".join(
        shown.output.split())
    with pytest.raises(ValueError, match="need the ephem package"):
        api.next_run_at(session, "solar")


def test_solar_rows_broken_for_want_of_ephem_are_scheduled_again_once_it_is_installed(
    engine: Engine, session: Session, store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    make(session, "solar", solar={"event": "sunset", "latitude": 52.5, "longitude": 13.4})
    make(session, "other-error")
    with engine.begin() as connection:
        connection.execute(TASKS.update().values(schedule_error=MISSING_EPHEM, next_run_at=None))
    monkeypatch.setitem(sys.modules, "ephem", None)
    sched.has_ephem.cache_clear()
    assert store.retry_solar() == 0  # still missing: nothing to retry
    monkeypatch.undo()
    sched.has_ephem.cache_clear()
    assert store.retry_solar() == 1  # only the solar row
    assert store.recompute(utcnow(), 100).errors == []
    assert error_of(engine, "solar") is None
    assert error_of(engine, "other-error") == MISSING_EPHEM


def test_psycopg2_reads_a_year_past_9999_as_unreadable(backend: str, db_url: str, session: Session) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only")
    from beatsqlalchemy import db

    make(session, "far")
    engine = db.get_engine(db_url.replace("+psycopg:", "+psycopg2:"))
    assert engine.dialect.driver == "psycopg2"
    write(engine, "UPDATE celery_periodic_task SET start_time = '12000-01-01 00:00:00' WHERE name = 'far'")
    with db.session_factory(engine)() as other:
        [task] = api.list_tasks(other)
        assert type(task.start_time) is Unreadable and task.read_error() is not None
