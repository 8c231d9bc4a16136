"""Migrations on every backend: upgrade/downgrade, models agree with them, triggers, schema check."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, Engine, Integer, MetaData, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from beatsqlalchemy import migrate
from beatsqlalchemy.exceptions import SchemaNotReady
from beatsqlalchemy.models import Base, PeriodicTask

REPO = Path(__file__).resolve().parent.parent
#: the alembic command of the environment running the tests
ALEMBIC = str(Path(sys.executable).with_name("alembic"))
OUR_TABLES = {
    "beatsqlalchemy_deployment",
    "celery_periodic_task",
    "celery_interval_schedule",
    "celery_crontab_schedule",
    "celery_solar_schedule",
    "celery_clocked_schedule",
    "celery_periodic_task_run",
}


# -- helpers ----------------------------------------------------------------------

@pytest.fixture
def plain_engine(empty_db_url: str) -> Iterator[Engine]:
    """An engine of its own on a brand-new database (not the shared pooled one)."""
    engine = create_engine(empty_db_url)
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def triggers(engine: Engine) -> set[str]:
    """Names of the triggers (and, on PostgreSQL, our functions) in the database."""
    queries = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                      "UNION SELECT proname FROM pg_proc WHERE proname LIKE 'beatsqlalchemy%'",
        "mysql": "SELECT trigger_name FROM information_schema.triggers "
                 "WHERE trigger_schema = DATABASE()",
    }
    with engine.connect() as connection:
        return {str(name) for name in connection.execute(text(queries[engine.dialect.name])).scalars()}


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``alembic`` command from the repository root, as a user would."""
    env = {**os.environ, "BEAT_SQLALCHEMY_URL": url}
    result = subprocess.run(
        [ALEMBIC, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"alembic {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def assert_migrated(engine: Engine) -> None:
    names = tables(engine)
    assert names >= OUR_TABLES, f"missing tables: {OUR_TABLES - names}"
    assert migrate.VERSION_TABLE in names
    assert "alembic_version" not in names
    assert migrate.current_revision(engine) == migrate.head_revision()
    expected_triggers = 6 if engine.dialect.name != "postgresql" else 6 + 3  # + 3 functions
    assert len(triggers(engine)) == expected_triggers, triggers(engine)


def assert_removed(engine: Engine) -> None:
    names = tables(engine)
    assert names == set(), f"left behind: {names}"  # the version table too
    assert triggers(engine) == set()
    assert migrate.current_revision(engine) is None


# -- upgrade / downgrade ---------------------------------------------------------------

def test_alembic_command_upgrade_and_downgrade(empty_db_url: str, plain_engine: Engine) -> None:
    """``alembic upgrade head`` / ``downgrade base`` from a source checkout."""
    assert tables(plain_engine) == set()
    upgraded = alembic(empty_db_url, "upgrade", "head")
    assert_migrated(plain_engine)
    # alembic.ini's logging: each migration is named as it runs
    assert f" -> {migrate.head_revision()}, " in upgraded.stderr, upgraded.stderr
    current = alembic(empty_db_url, "current")
    assert migrate.head_revision() in current.stdout
    downgraded = alembic(empty_db_url, "downgrade", "base")
    assert "Running downgrade 0001 -> , " in downgraded.stderr, downgraded.stderr
    assert_removed(plain_engine)
    alembic(empty_db_url, "upgrade", "head")  # and back again
    assert_migrated(plain_engine)


def test_packaged_upgrade_and_downgrade(plain_engine: Engine) -> None:
    """The same migrations through ``beatsqlalchemy.migrate`` (what the CLI and beat use),
    which leave the host application's logging as it was."""
    assert migrate.current_revision(plain_engine) is None
    root, alembic_logger = logging.getLogger(), logging.getLogger("alembic")
    before = (list(root.handlers), root.level, alembic_logger.level, list(alembic_logger.handlers))
    migrate.upgrade(plain_engine)
    assert (list(root.handlers), root.level, alembic_logger.level, list(alembic_logger.handlers)) == before
    assert_migrated(plain_engine)
    migrate.upgrade(plain_engine)  # a no-op at head
    assert_migrated(plain_engine)
    migrate.downgrade(plain_engine, "base")
    assert_removed(plain_engine)


def test_models_and_migrations_agree(plain_engine: Engine) -> None:
    """Autogenerate (configured as migrations/env.py is) finds nothing to change."""
    migrate.upgrade(plain_engine)
    opts = {"compare_type": True, "version_table": migrate.VERSION_TABLE,
            "target_metadata": Base.metadata}
    with plain_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=opts)
        assert compare_metadata(context, Base.metadata) == []

        # the comparison does see a difference when there is one
        changed = MetaData(naming_convention=Base.metadata.naming_convention)
        for table in Base.metadata.sorted_tables:
            table.to_metadata(changed)
        changed.tables["celery_periodic_task"].append_column(Column("extra", Integer))
        diff = compare_metadata(context, changed)
        assert [d[0] for d in diff] == ["add_column"]


# -- triggers ------------------------------------------------------------------------

TASK_COLUMNS = ("name, task, interval_id, args, kwargs, headers, one_off, enabled, "
                "total_run_count, description, needs_recompute")


def execute(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def flags(engine: Engine, name: str) -> tuple[bool, object]:
    """(needs_recompute, next_run_at) of a task, read with plain SQL."""
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT needs_recompute, next_run_at FROM celery_periodic_task WHERE name = :n"),
            {"n": name},
        ).one()
    return bool(row[0]), row[1]


def interval_id(engine: Engine, every: int) -> int:
    execute(engine, "INSERT INTO celery_interval_schedule (every, period) VALUES (:e, 'seconds')", e=every)
    with engine.connect() as connection:
        return int(connection.execute(
            text("SELECT id FROM celery_interval_schedule WHERE every = :e AND period = 'seconds'"),
            {"e": every},
        ).scalar_one())


def insert_task(engine: Engine, name: str, interval: int, next_run_at: str | None = None) -> None:
    columns = TASK_COLUMNS + (", next_run_at" if next_run_at else "")
    values = ":name, 'tasks.t', :iid, '[]', '{}', '{}', :false, :true, 0, '', :false" + (
        ", :next" if next_run_at else ""
    )
    execute(engine, f"INSERT INTO celery_periodic_task ({columns}) VALUES ({values})",
            name=name, iid=interval, false=False, true=True, next=next_run_at)


def test_trigger_flags_plain_sql_insert(engine: Engine) -> None:
    every = interval_id(engine, 10)
    insert_task(engine, "no-next-run", every)
    assert flags(engine, "no-next-run") == (True, None)
    insert_task(engine, "with-next-run", every, next_run_at="2030-01-01 00:00:00")
    assert flags(engine, "with-next-run")[0] is False
    # a minimal hand-written INSERT that leaves needs_recompute to its default
    execute(engine, "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, "
                    "one_off, enabled, total_run_count, description) "
                    "VALUES ('minimal', 'tasks.t', :iid, '[]', '{}', '{}', :f, :t, 0, '')",
            iid=every, f=False, t=True)
    assert flags(engine, "minimal") == (True, None)


def test_trigger_flags_plain_sql_update(engine: Engine, session: Session) -> None:
    PeriodicTask.update_or_create(
        session, name="orm", task="tasks.t", interval={"every": 10, "period": "seconds"}
    )
    assert flags(engine, "orm")[0] is False  # written through our code: nothing to recompute

    # args, queue, ... are read when a run is claimed: editing them moves nothing
    execute(engine, "UPDATE celery_periodic_task SET args = '[1, 2]', queue = 'q' WHERE name = 'orm'")
    assert flags(engine, "orm")[0] is False

    # every column the schedule depends on flags the task when changed by plain SQL
    other = interval_id(engine, 99)
    for change, params in [
        ("enabled = :f", {"f": False}), ("enabled = :t", {"t": True}),
        ("start_time = '2030-01-01 00:00:00'", {}), ("one_off = :t", {"t": True}),
        ("interval_id = :iid", {"iid": other}),
    ]:
        execute(engine, "UPDATE celery_periodic_task SET needs_recompute = :f WHERE name = 'orm'", f=False)
        execute(engine, f"UPDATE celery_periodic_task SET {change} WHERE name = 'orm'", **params)
        assert flags(engine, "orm")[0] is True, change

    # a row beat found broken is flagged by any edit, so that fixing its args retries it
    execute(engine, "UPDATE celery_periodic_task SET needs_recompute = :f, next_run_at = NULL, "
                    "schedule_error = 'args: broken' WHERE name = 'orm'", f=False)
    assert flags(engine, "orm")[0] is False
    execute(engine, "UPDATE celery_periodic_task SET args = '[4]' WHERE name = 'orm'")
    assert flags(engine, "orm")[0] is True

    # clearing the flag (what beat's recompute does) is not itself flagged
    execute(engine, "UPDATE celery_periodic_task SET needs_recompute = :f WHERE name = 'orm'", f=False)
    assert flags(engine, "orm")[0] is False

    # a write that sets next_run_at itself (a claim, our ORM) is not flagged
    execute(engine, "UPDATE celery_periodic_task SET next_run_at = '2031-05-06 07:08:09', "
                    "args = '[3]' WHERE name = 'orm'")
    assert flags(engine, "orm")[0] is False

    # an update through the ORM that moves next_run_at is not flagged either
    PeriodicTask.update_or_create(session, name="orm", interval={"every": 20, "period": "seconds"})
    assert flags(engine, "orm")[0] is False


@pytest.mark.parametrize("kind", ["interval", "crontab"])
def test_trigger_flags_tasks_of_changed_schedule(engine: Engine, session: Session, kind: str) -> None:
    schedules: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
        "interval": ({"every": 10, "period": "seconds"}, {"every": 11, "period": "seconds"},
                     "every = 15"),
        "crontab": ({"minute": "5"}, {"minute": "6"}, "minute = '7'"),
    }
    used, other, change = schedules[kind]
    uses: dict[str, Any] = {"task": "tasks.t", kind: used}
    first, _ = PeriodicTask.update_or_create(session, name="a", **uses)
    PeriodicTask.update_or_create(session, name="b", **uses)
    PeriodicTask.update_or_create(session, name="c", **{**uses, kind: other})
    assert [flags(engine, n)[0] for n in "abc"] == [False, False, False]

    schedule_id = getattr(first, f"{kind}_id")
    execute(engine, f"UPDATE celery_{kind}_schedule SET {change} WHERE id = :id", id=schedule_id)
    assert [flags(engine, n)[0] for n in "abc"] == [True, True, False]


# -- ensure_schema ---------------------------------------------------------------------

@contextmanager
def with_password(backend: str, url: str) -> Iterator[str]:
    """``url`` with a password in it that the server accepts."""
    if backend == "postgresql":  # trust authentication accepts any password
        yield make_url(url).set(password="s3cret-Pw").render_as_string(hide_password=False)
        return
    parsed = make_url(url)
    user = f"bsa_{uuid.uuid4().hex[:8]}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for host in ("%", "localhost"):
                connection.execute(text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY 's3cret-Pw'"))
                connection.execute(text(f"GRANT ALL ON {parsed.database}.* TO '{user}'@'{host}'"))
        yield parsed.set(username=user, password="s3cret-Pw").render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            for host in ("%", "localhost"):
                connection.execute(text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        admin.dispose()


def test_ensure_schema(backend: str, empty_db_url: str) -> None:
    """SQLite: the schema is created on first use. A server database: a clear refusal."""
    if backend == "sqlite":
        engine = create_engine(empty_db_url)
        try:
            migrate.ensure_schema(engine)
            assert_migrated(engine)
            migrate.ensure_schema(engine)  # idempotent
        finally:
            engine.dispose()
        return

    with with_password(backend, empty_db_url) as url:
        engine = create_engine(url)
        try:
            with pytest.raises(SchemaNotReady) as caught:
                migrate.ensure_schema(engine)
            message = str(caught.value)
            assert "s3cret-Pw" not in message
            assert "beatsqlalchemy --url" in message and "upgrade" in message
            assert "alembic upgrade head" in message
            assert str(make_url(url).database) in message  # names the database it checked
            assert tables(engine) == set()  # nothing was created behind the user's back

            with pytest.raises(SchemaNotReady):  # a refusal is not cached as success
                migrate.ensure_schema(engine)
            migrate.upgrade(engine)
            migrate.ensure_schema(engine)  # now it passes
            assert_migrated(engine)
            migrate.downgrade(engine, "base")  # a user without SUPER may drop what it made
        finally:
            engine.dispose()


def test_invalid_json_is_refused_or_kept(engine: Engine, session: Session) -> None:
    """What each database does with broken JSON in a JSON column (the store copes with both)."""
    PeriodicTask.update_or_create(session, name="j", task="tasks.t", interval={"every": 1, "period": "days"})
    statement = "UPDATE celery_periodic_task SET args = '[9' WHERE name = 'j'"
    if engine.dialect.name == "sqlite":
        execute(engine, statement)
        with engine.connect() as connection:
            raw = connection.execute(text("SELECT args FROM celery_periodic_task WHERE name = 'j'"))
            assert raw.scalar_one() == "[9"
    else:
        with pytest.raises(DBAPIError):
            execute(engine, statement)


def test_head_revision_constant_is_the_scripts_head() -> None:
    """Beat compares the database with ``HEAD_REVISION`` without reading the scripts."""
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_current_revision_reads_the_version_table(plain_engine: Engine) -> None:
    """Read without Alembic: none before any migration, each revision after its upgrade,
    none again when the version table is left empty by ``downgrade base``."""
    assert migrate.current_revision(plain_engine) is None
    migrate.upgrade(plain_engine, "0001")
    assert migrate.current_revision(plain_engine) == "0001"
    migrate.upgrade(plain_engine)
    assert migrate.current_revision(plain_engine) == migrate.HEAD_REVISION
    migrate.downgrade(plain_engine, "base")
    assert migrate.current_revision(plain_engine) is None


def test_a_beat_on_a_current_schema_never_imports_alembic(tmp_path: Path) -> None:
    """Alembic (about 11 MB) is loaded only to migrate: a beat whose schema is current
    starts, syncs and claims without it."""
    url = f"sqlite:///{tmp_path / 'beat.sqlite3'}"
    migrate.upgrade(create_engine(url))
    script = (
        "import sys\n"
        "from celery import Celery\n"
        "from beatsqlalchemy.schedulers import DatabaseScheduler\n"
        "app = Celery('t', broker='memory://', set_as_current=False)\n"
        f"app.conf.beat_sqlalchemy_url = {url!r}\n"
        "scheduler = DatabaseScheduler(app=app)\n"
        "scheduler.tick()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- revision 0004: constraint names, run keys, the deployment id -------------------------

def check_constraints(engine: Engine) -> dict[str, set[str]]:
    """The names of the check constraints we made, table by table (MariaDB's own checks of
    JSON columns aside)."""
    inspector = inspect(engine)
    return {name: {str(c["name"]) for c in inspector.get_check_constraints(name)
                   if str(c["name"]).startswith("ck_")}
            for name in OUR_TABLES & set(inspector.get_table_names())}


def model_check_constraints() -> dict[str, set[str]]:
    return {name: {str(c.name) for c in Base.metadata.tables[name].constraints
                   if isinstance(c, CheckConstraint)} for name in OUR_TABLES}


def deployment_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM beatsqlalchemy_deployment")).scalars())


def test_constraint_names_match_the_models(plain_engine: Engine) -> None:
    """Every check constraint has the name the models give it (revision 0001 gave the
    one-schedule check its prefix twice; 0004 renames it, on SQLite by copying the table)."""
    assert model_check_constraints()["celery_periodic_task"] == {"ck_celery_periodic_task_one_schedule"}
    migrate.upgrade(plain_engine, "0003")
    assert check_constraints(plain_engine)["celery_periodic_task"] == {
        "ck_celery_periodic_task_ck_celery_periodic_task_one_schedule"}
    migrate.upgrade(plain_engine)
    assert check_constraints(plain_engine) == model_check_constraints()
    migrate.downgrade(plain_engine, "0003")  # and back: 0003's schema, its name included
    assert check_constraints(plain_engine)["celery_periodic_task"] == {
        "ck_celery_periodic_task_ck_celery_periodic_task_one_schedule"}
    assert "run_key" not in {c["name"] for c in inspect(plain_engine).get_columns("celery_periodic_task")}
    assert migrate.VERSION_TABLE in tables(plain_engine)
    assert "beatsqlalchemy_deployment" not in tables(plain_engine)
    migrate.upgrade(plain_engine)
    assert check_constraints(plain_engine) == model_check_constraints()


def test_upgrade_from_0003_keeps_rows_and_gives_each_a_run_key(plain_engine: Engine) -> None:
    """An existing schema: names intact, a distinct run key for every existing row, one
    new random deployment id, triggers still at work; and the check still holds."""
    migrate.upgrade(plain_engine, "0003")
    every = interval_id(plain_engine, 10)
    names = ["nightly", "report", "weekly-\N{ROCKET}"]  # distinct in any collation
    for name in names:
        insert_task(plain_engine, name, every, next_run_at="2030-01-01 00:00:00")
    migrate.upgrade(plain_engine)
    assert_migrated(plain_engine)
    with plain_engine.connect() as connection:
        rows = connection.execute(text("SELECT name, run_key FROM celery_periodic_task")).all()
    assert sorted(r[0] for r in rows) == sorted(names)
    keys = [r[1] for r in rows]
    assert len(set(keys)) == len(names) and all(len(k) == 32 and int(k, 16) >= 0 for k in keys), keys
    [first] = deployment_ids(plain_engine)
    assert len(first) == 32 and int(first, 16) >= 0

    insert_task(plain_engine, "plain-sql", every)  # the triggers survived the table copy
    assert flags(plain_engine, "plain-sql") == (True, None)
    insert_task(plain_engine, "Nightly", every)  # names now compare exactly everywhere
    insert_task(plain_engine, "report ", every)
    with pytest.raises(DBAPIError):  # and the check constraint holds: no schedule at all
        execute(plain_engine, "UPDATE celery_periodic_task SET interval_id = NULL WHERE name = 'report'")

    migrate.downgrade(plain_engine, "0003")
    migrate.upgrade(plain_engine)
    [second] = deployment_ids(plain_engine)
    assert second != first  # created anew, at random


def test_downgrade_base_on_an_empty_database_leaves_nothing(plain_engine: Engine) -> None:
    """Alembic creates its version table before finding nothing to do: it goes too."""
    migrate.downgrade(plain_engine, "base")
    assert tables(plain_engine) == set()
