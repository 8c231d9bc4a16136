"""Names compare exactly on every backend: case, accents and trailing spaces count, as on
PostgreSQL and SQLite; on MySQL/MariaDB whatever the database's default collation and
character set (latin1 included), for new schemas and upgraded ones."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from celery import Celery
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db, migrate
from beatsqlalchemy.cli import main
from beatsqlalchemy.exceptions import TaskNotFound
from beatsqlalchemy.models import PeriodicTask, exact_collation

ROCKET = "\N{ROCKET}"
#: the run log's and the task table's columns compared as names (see models.ExactString)
NAME_COLUMNS = {("celery_periodic_task", c) for c in ("name", "task", "queue", "exchange", "routing_key")} | {
    ("celery_periodic_task_run", "periodic_task_name"), ("celery_periodic_task_run", "task_id")}


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def refused(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output and fragment in result.stderr, result.stderr


def names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.scalars(select(PeriodicTask.name)))


def test_names_differing_in_case_accents_or_trailing_spaces_are_other_tasks(
    db_url: str, engine: Engine,
) -> None:
    entries = [{"name": name, "task": "proj.nightly", "interval": {"every": 1, "period": "days"}}
               for name in ("nightly", "Nightly")]
    assert ok(cli("--url", db_url, "import", "-", input=json.dumps(entries))).strip() == (
        "imported 2 task(s): 2 created, 0 updated")
    for name in ("report", "RÉPORT ", "report "):
        ok(cli("--url", db_url, "add", name, "proj.report", "--every", "1h"))
    assert names(engine) == sorted(["Nightly", "RÉPORT ", "nightly", "report", "report "])

    ok(cli("--url", db_url, "edit", "RÉPORT ", "--queue", "Reports"))
    ok(cli("--url", db_url, "edit", "report", "--queue", "reports"))
    with db.session_factory(engine)() as session:
        queues = {t.name: t.queue for t in session.scalars(select(PeriodicTask))}
        assert (queues["RÉPORT "], queues["report"], queues["report "]) == ("Reports", "reports", None)
        # lookups and filters by name, task and queue are exact too
        assert [t.name for t in api.list_tasks(session, task="proj.report")] == sorted(
            ["RÉPORT ", "report", "report "])
        assert session.scalars(select(PeriodicTask.name).where(PeriodicTask.queue == "REPORTS")).all() == []
        for missing in ("REPORT", "Report", "réport", "nightly "):
            with pytest.raises(TaskNotFound):
                api.get_task(session, missing)

    # show and remove agree on what exists
    for missing in ("REPORT", "RÉPORT"):
        refused(cli("--url", db_url, "show", missing), f"no periodic task named {missing!r}")
        refused(cli("--url", db_url, "remove", missing), repr(missing))
    assert "name:" in ok(cli("--url", db_url, "show", "RÉPORT "))
    ok(cli("--url", db_url, "remove", "report "))
    assert names(engine) == sorted(["Nightly", "RÉPORT ", "nightly", "report"])


def test_the_run_log_is_looked_up_by_the_exact_name(app: Celery, session: Session) -> None:
    for name in ("report", "Report"):
        PeriodicTask.update_or_create(session, name=name, task="proj.report", interval=timedelta(hours=1))
        api.run_now(session, app, name, sent_by="tester")
    assert [r.periodic_task_name for r in api.runs(session, name="report")] == ["report"]
    assert [r.periodic_task_name for r in api.runs(session, name="Report")] == ["Report"]


def test_emoji_names_after_upgrading_a_latin1_database(backend: str, empty_db_url: str) -> None:
    """MySQL/MariaDB: a database whose default character set is latin1, with tasks made at
    revision 0003, upgraded: names kept, emoji names and descriptions stored and found,
    the name columns with the exact collation. The other backends: the same steps."""
    engine = create_engine(empty_db_url)
    try:
        if backend == "mysql":
            with engine.connect() as connection:
                database = connection.scalar(text("SELECT DATABASE()"))
                connection.execute(text(f"ALTER DATABASE {database} CHARACTER SET latin1"))
        migrate.upgrade(engine, "0003")
        with engine.begin() as connection:  # a task of those days, written with plain SQL
            connection.execute(text(
                "INSERT INTO celery_interval_schedule (every, period) VALUES (1, 'hours')"))
            connection.execute(text(
                "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, one_off, "
                "enabled, total_run_count, description) SELECT 'café', 'proj.old', id, '[]', '{}', '{}', "
                ":f, :t, 0, '' FROM celery_interval_schedule"), {"f": False, "t": True})
        migrate.upgrade(engine)

        name = f"deploy {ROCKET}"
        ok(cli("--url", empty_db_url, "add", name, f"proj.{ROCKET}", "--every", "1h",
               "--description", f"ships {ROCKET}", "--queue", f"q{ROCKET}"))
        assert names(engine) == sorted(["café", name])
        assert name in ok(cli("--url", empty_db_url, "show", name))
        with db.session_factory(engine)() as session:
            task = api.get_task(session, name)
            assert (task.task, task.description, task.queue) == (
                f"proj.{ROCKET}", f"ships {ROCKET}", f"q{ROCKET}")
        ok(cli("--url", empty_db_url, "add", "CAFÉ", "proj.old", "--every", "1h"))  # another task
        ok(cli("--url", empty_db_url, "remove", name))
        assert names(engine) == sorted(["CAFÉ", "café"])
        if backend == "mysql":
            assert_mysql_columns(engine)
    finally:
        db.dispose_all()
        engine.dispose()


def assert_mysql_columns(engine: Engine) -> None:
    """Every text column of ours is utf8mb4; the name columns have the exact collation."""
    with engine.connect() as connection:
        exact = exact_collation(connection.dialect)
        rows = connection.execute(text(
            "SELECT table_name, column_name, character_set_name, collation_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND character_set_name IS NOT NULL AND table_name != 'beatsqlalchemy_version'")).all()
    assert rows
    for table, column, charset, collation in rows:
        assert charset == "utf8mb4", (table, column, charset)
        if (table, column) in NAME_COLUMNS:
            assert collation == exact, (table, column, collation)
    assert {(r[0], r[1]) for r in rows} >= NAME_COLUMNS
