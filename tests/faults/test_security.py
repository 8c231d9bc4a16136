"""Security: JSON only (no pickle anywhere), no password in any output, all SQL through
bound parameters, nothing secret stored, and beat running as a database user that can
read and write our tables but cannot change the schema.

The password checks use PostgreSQL, whose test server trusts local connections and so
accepts any password: the URL carries one, and it must never be shown.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import subprocess
import sys
import time
import tokenize
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import JSON, Engine, LargeBinary, PickleType, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from beatsqlalchemy import api, cli, db
from beatsqlalchemy.exceptions import SchemaNotReady
from beatsqlalchemy.models import Base, PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.processes import Cluster, Processes
from harness.proxy import Proxy
from harness.servers import admin_engine

from .conftest import TASK, BeatBehindProxy

MakeBeat = Callable[..., BeatBehindProxy]
MakeDatabase = Callable[..., str]
MakeProxy = Callable[[str], Proxy]

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "beatsqlalchemy").rglob("*.py"), *(ROOT / "migrations").rglob("*.py")])
#: a password no output may ever contain
PASSWORD = f"Pw-{uuid.uuid4().hex[:12]}-secret"
#: the six tables beat reads and writes
TABLES = ("celery_interval_schedule", "celery_crontab_schedule", "celery_solar_schedule",
          "celery_clocked_schedule", "celery_periodic_task", "celery_periodic_task_run")
#: beat's heartbeat table (its key is the beat's identity: no sequence)
HEARTBEATS = "beatsqlalchemy_beat"
OUTAGE_START = re.compile(r"beat: database \S+ error while")
OUTAGE_END = re.compile(r"beat: database working again after")
INSTALLED = re.compile(r"beat: \d+ task\(s\) from beat_schedule installed")

#: names, Celery task names, arguments that would break SQL built by string formatting
NASTY_NAMES = (
    "x'); DROP TABLE celery_periodic_task; --",
    'y"); DELETE FROM celery_periodic_task_run; --',
    "' OR '1'='1",
    "%(name)s %s :name ? $1 {0} \\ \\' `tick`; /* */",
    "ünïcødé ☃ tab\tand\nnewline",
)
NASTY_TASK = "tasks.it's \"quoted\"; DROP TABLE celery_crontab_schedule; --"
NASTY_ARGS = ["'; DROP TABLE celery_interval_schedule; --", '" OR 1=1 --', "%s", ":param", '{"json": [1]}',
              "\\", "Robert'); --", 42, None, {"nested'": ["a\"b"]}]
NASTY_KWARGS = {"k'ey": 'v"al; --', "sql": "'); TRUNCATE celery_periodic_task; --", "%(x)s": ":y"}


def no_password(*outputs: Any) -> None:
    """None of ``outputs`` (strings, or anything str() shows) contains the password."""
    for output in outputs:
        assert PASSWORD not in str(output), f"the password leaked: {output!r}"


@pytest.fixture
def pg_url(make_database: MakeDatabase) -> str:
    """A new, migrated PostgreSQL database, its URL carrying the password."""
    return with_password(make_database("postgresql"))


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


# -- no pickle ----------------------------------------------------------------------------------

def test_the_package_source_uses_no_pickle_marshal_or_shelve() -> None:
    banned_modules = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                      "jsonpickle"}
    found = []
    assert len(SOURCES) > 10
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                found.append(f"{path}: from {node.module} import")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.string in {*banned_modules, "PickleType"}:
                found.append(f"{path}:{token.start[0]}: {token.string}")
            if token.type == tokenize.STRING and token.string.strip("'\"").lower() in {"pickle", "yaml"}:
                found.append(f"{path}:{token.start[0]}: serializer {token.string}")
    assert found == []


def test_no_column_holds_a_pickled_or_binary_value(engine: Engine) -> None:
    """In the models and in the migrated database: JSON for args, kwargs, headers and
    options; no PickleType, BLOB or bytea anywhere."""
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            assert not isinstance(column.type, PickleType | LargeBinary), (table.name, column.name)
    json_columns = {"args", "kwargs", "headers", "extra_options"}
    columns = PeriodicTask.__table__.columns
    stored_as_json = {c.name for c in columns if isinstance(getattr(c.type, "impl_instance", c.type), JSON)}
    assert stored_as_json == json_columns
    inspector = inspect(engine)
    for table_name in TABLES:
        for column in inspector.get_columns(table_name):
            kind = str(column["type"]).lower()
            assert not isinstance(column["type"], LargeBinary), (table_name, column["name"], kind)
            assert "blob" not in kind and "bytea" not in kind and "binary" not in kind, (table_name, kind)


# -- all SQL through bound parameters -----------------------------------------------------------

SQL_CALLS = {"text", "literal_column", "exec_driver_sql", "execute", "executemany", "executescript"}


def _literal(node: ast.expr) -> bool:
    """A string literal, or a choice between string literals."""
    if isinstance(node, ast.IfExp):
        return _literal(node.body) and _literal(node.orelse)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_no_sql_is_built_by_string_formatting() -> None:
    """No f-string, ``%`` or ``.format`` SQL handed to SQLAlchemy or a driver, and no
    ``text()``/``literal_column()``/``exec_driver_sql()`` of anything but a literal."""
    found = []
    for path in SOURCES:
        if path.parts[-3:-1] == ("migrations", "versions") or path.parent.name == "migrations":
            continue  # DDL of constant identifiers, run by the schema owner
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in SQL_CALLS:
                continue
            first = node.args[0]
            formatted = isinstance(first, ast.JoinedStr) or (
                isinstance(first, ast.BinOp) and isinstance(first.op, ast.Mod | ast.Add)
            ) or (isinstance(first, ast.Call) and getattr(first.func, "attr", "") == "format")
            raw = name in {"text", "literal_column", "exec_driver_sql"} and not _literal(first)
            if formatted or raw:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:100]}")
    assert found == []


def _check_intact(session: Session, names: list[str]) -> None:
    """Every table is still there and holds exactly the tasks written."""
    bind = session.get_bind()
    assert set(TABLES) <= set(inspect(bind).get_table_names())
    stored = set(session.scalars(select(PeriodicTask.name))) - {"celery.backend_cleanup"}  # beat's default
    assert sorted(stored) == sorted(names)


def test_quotes_and_sql_fragments_round_trip_through_the_api(session: Session, app: Celery) -> None:
    """Names, task names, arguments, descriptions and options written through every
    front door of the API come back byte for byte, and nothing else changes."""
    names = list(NASTY_NAMES)
    for i, name in enumerate(names):
        api.save_task(session, name, task=NASTY_TASK, schedule=60 + i, args=NASTY_ARGS, kwargs=NASTY_KWARGS,
                      options={"queue": name[:50], "headers": {name: name}}, description=name)
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.add(name=f"{names[0]} (add)", task=NASTY_TASK, schedule=30.0, args=NASTY_ARGS,
                  kwargs=NASTY_KWARGS)
    PeriodicTask.update_or_create(session, name=f"{names[1]} (update_or_create)", defaults={
        "task": NASTY_TASK, "interval": {"every": 5, "period": "seconds"}, "args": NASTY_ARGS,
        "kwargs": NASTY_KWARGS})
    everything = [*names, f"{names[0]} (add)", f"{names[1]} (update_or_create)"]
    session.expire_all()
    for name in everything:
        task = api.get_task(session, name)
        assert (task.name, task.task, task.args, task.kwargs) == (name, NASTY_TASK, NASTY_ARGS, NASTY_KWARGS)
    for name in names:
        task = api.get_task(session, name)
        assert (task.description, task.queue, task.headers) == (name, name[:50], {name: name})
        # the name filter (a LIKE pattern) finds the task by its literal name only
        assert [t.name for t in api.list_tasks(session, name=name)] == [name]
        assert api.runs(session, name=name) == []
    exported = api.export_tasks(session)
    assert sorted(e["name"] for e in exported) == sorted(everything)
    api.disable_tasks(session, names[:2])
    assert [t.enabled for t in api.list_tasks(session, name=names[0])] == [False]
    assert scheduler.remove(names[2]) is True
    assert api.remove_task(session, names[3]) is True
    everything = [n for n in everything if n not in (names[2], names[3])]
    _check_intact(session, everything)
    api.import_tasks(session, exported)  # the removed two come back, the rest is updated in place
    _check_intact(session, [*everything, names[2], names[3]])


def test_quotes_and_sql_fragments_round_trip_through_the_cli(db_url: str, session: Session) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli.main, ["--url", db_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    for name in NASTY_NAMES:
        run("add", name, NASTY_TASK, "--every", "1m", "--args", json.dumps(NASTY_ARGS),
            "--kwargs", json.dumps(NASTY_KWARGS), "--description", name)
    for name in NASTY_NAMES:
        shown = json.loads(run("show", name, "--json"))
        assert (shown["name"], shown["task"], shown["args"], shown["kwargs"], shown["description"]) == (
            name, NASTY_TASK, NASTY_ARGS, NASTY_KWARGS, name)
    listed = json.loads(run("list", "--json"))
    assert sorted(t["name"] for t in listed) == sorted(NASTY_NAMES)
    run("disable", NASTY_NAMES[0])
    run("remove", NASTY_NAMES[1])
    _check_intact(session, [n for n in NASTY_NAMES if n != NASTY_NAMES[1]])


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_beat_sends_quotes_and_sql_fragments_intact_as_json(
    backend: str, beat_behind_proxy: MakeBeat,
) -> None:
    """A real beat claims and publishes tasks whose names, Celery task name and
    arguments are SQL fragments: every message is JSON (never pickle), carries them
    unchanged, and beat keeps no shelve (pickle) schedule file."""
    beat = beat_behind_proxy(backend)
    engine = db.get_engine(beat.direct_url)
    with db.session_factory(engine)() as session:
        for name in NASTY_NAMES:
            api.save_task(session, name, task=NASTY_TASK, schedule=1.0, args=[name, *NASTY_ARGS],
                          kwargs=NASTY_KWARGS)
    beat.start()
    wait_for_each(beat, NASTY_NAMES, runs=2)
    beat.stop()
    messages = list(beat.reader.messages)
    assert {(m.content_type, m.content_encoding) for m in messages} == {("application/json", "utf-8")}
    assert {m.task for m in messages} == {NASTY_TASK}
    assert {m.args[0] for m in messages if m.args} == set(NASTY_NAMES)
    assert all(m.args == [m.args[0], *NASTY_ARGS] and m.kwargs == NASTY_KWARGS for m in messages if m.args)
    runs = beat.run_log()
    assert {runs[m.id].periodic_task_name for m in messages} == set(NASTY_NAMES)
    assert [p.name for p in beat.cluster.root.iterdir() if p.name.startswith("beat-schedule")] == []
    with db.session_factory(engine)() as session:
        _check_intact(session, list(NASTY_NAMES))


def wait_for_each(beat: BeatBehindProxy, names: tuple[str, ...], runs: int, timeout: float = 20) -> None:
    """Wait until a message whose first argument is each name arrived ``runs`` times."""
    deadline = time.monotonic() + timeout
    while True:
        firsts = [m.args[0] for m in beat.reader.messages if m.args]
        counts = {name: firsts.count(name) for name in names}
        if all(n >= runs for n in counts.values()):
            return
        assert time.monotonic() < deadline, f"timed out waiting for runs: {counts}\n{beat.log()[-3000:]}"
        time.sleep(0.05)


# -- nothing secret stored ----------------------------------------------------------------------

SECRET_COLUMN = re.compile(r"url|uri|dsn|passw|pwd|secret|credential|auth|key|token|conn", re.IGNORECASE)
#: column -> why it is not a secret
NOT_SECRET = {
    ("celery_periodic_task", "routing_key"): "the broker routing key of the task's messages",
    ("celery_periodic_task_run", "claim_token"): "a random value per claim transaction (uuid4 hex), "
                                                  "a compare-and-set guard, no credential",
    ("celery_periodic_task", "run_key"): "a random value per task row (uuid4 hex) that run ids are "
                                         "derived from, no credential",
}


def test_no_table_has_a_column_for_a_url_or_a_credential(engine: Engine) -> None:
    inspector = inspect(engine)
    columns = {(t, c["name"]) for t in TABLES for c in inspector.get_columns(t)}
    suspicious = {column for column in columns if SECRET_COLUMN.search(column[1])}
    assert suspicious == set(NOT_SECRET), suspicious - set(NOT_SECRET)


# -- passwords never shown ----------------------------------------------------------------------

@pytest.mark.e2e
def test_beat_log_banner_outage_lines_and_tables_never_show_the_password(
    pg_url: str, beat_behind_proxy: MakeBeat,
) -> None:
    """A real beat with a password in its URL, through a database outage: its banner,
    identity line and both outage lines name the database with the password masked,
    and no table row holds the password or the URL."""
    beat = beat_behind_proxy("postgresql", url=pg_url)
    assert PASSWORD in beat.beat_url
    beat.create_tasks({"every1": 1})
    beat.start()
    beat.wait_steady(runs=1)
    beat.proxy.cut()
    beat.wait_log(OUTAGE_START)
    beat.proxy.resume()
    beat.wait_log(OUTAGE_END, timeout=40)
    beat.stop()
    log = beat.log()
    masked = make_url(beat.beat_url).render_as_string(hide_password=True)
    assert "***" in masked
    lines = [line for line in log.splitlines() if masked in line]
    assert len(lines) >= 3, log  # the banner, the identity line, the outage line
    assert OUTAGE_START.search(log) and OUTAGE_END.search(log) and INSTALLED.search(log)
    no_password(log)
    engine = db.get_engine(beat.direct_url)
    with engine.connect() as connection:
        for table in TABLES:
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                dumped = " ".join(str(value) for value in row)
                no_password(dumped)
                assert "://" not in dumped and "postgres@" not in dumped, (table, dumped)
        assert connection.execute(select(PeriodicTaskRun.id)).first() is not None


@pytest.mark.e2e
def test_beat_on_a_database_without_tables_exits_with_a_redacted_message(
    make_database: MakeDatabase, processes: Processes, redis_url: str, tmp_path: Path,
) -> None:
    url = with_password(make_database("postgresql", migrated=False))
    cluster = Cluster(tmp_path, redis_url, url, queue=f"faults-{uuid.uuid4().hex[:8]}")
    process = cluster.beat(wait=False)
    processes.processes.append(process)
    process.wait_exit(60)
    log = process.log()
    assert process.process.returncode != 0
    assert "has no beatsqlalchemy tables" in log and "upgrade" in log, log
    assert "postgres:***@" in log, log
    no_password(log)


def test_scheduler_info_and_schema_errors_never_show_the_password(
    pg_url: str, make_database: MakeDatabase,
) -> None:
    app = Celery("faults", broker="memory://", set_as_current=False)
    app.conf.beat_sqlalchemy_url = pg_url
    info = DatabaseScheduler(app=app, lazy=True).info
    assert "postgres:***@" in info
    no_password(info)

    empty = Celery("faults", broker="memory://", set_as_current=False)
    empty.conf.update(beat_sqlalchemy_url=with_password(make_database("postgresql", migrated=False)),
                      beat_sqlalchemy_create_schema=False)
    with pytest.raises(SchemaNotReady) as raised:
        DatabaseScheduler(app=empty)
    with pytest.raises(SchemaNotReady) as raised_api:
        api.engine_for(empty)
    for exc in (raised.value, raised_api.value):
        assert "***" in str(exc)
        no_password(str(exc), repr(exc), exc.args)


def test_outage_log_lines_and_database_errors_never_show_the_password(
    pg_url: str, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture,
) -> None:
    """An in-process scheduler through a proxy that cuts the database: every record
    logged, with its arguments and traceback, and the errors users get."""
    proxy = make_proxy(pg_url)
    url = proxy.url(pg_url)
    app = Celery("faults", broker="memory://", set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=url, beat_sqlalchemy_sync_interval=0.1)
    with db.session_factory(db.get_engine(pg_url))() as session:
        api.save_task(session, "every1", task=TASK, schedule=1.0)
    caplog.set_level(logging.DEBUG)
    scheduler = DatabaseScheduler(app=app)
    try:
        scheduler.tick()
        proxy.cut()
        wait_until(lambda: scheduler.tick() is not None and OUTAGE_START.search(caplog.text), 5)
        with pytest.raises(SQLAlchemyError) as raised, api.open_session(app) as session:
            session.execute(select(1))
        with pytest.raises(DBAPIError) as raised_direct, create_engine(url).connect():
            pass
        proxy.resume()
        wait_until(lambda: scheduler.tick() is not None and OUTAGE_END.search(caplog.text), 40)
    finally:
        scheduler.close()
    assert OUTAGE_START.search(caplog.text) and "postgres:***@" in caplog.text
    for record in caplog.records:
        no_password(record.getMessage(), record.args, record.exc_text or "")
    for exc in (raised.value, raised_direct.value):
        no_password(str(exc), repr(exc), str(getattr(exc, "orig", "")))


def wait_until(condition: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


BEATSQLALCHEMY = str(Path(sys.executable).with_name("beatsqlalchemy"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``beatsqlalchemy`` command, as users run it."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run([BEATSQLALCHEMY, *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_cli_never_shows_the_password(
    pg_url: str, make_database: MakeDatabase, make_proxy: MakeProxy,
) -> None:
    """``current``, ``upgrade`` and ``list``, and their error paths: a database without
    tables, one that does not exist, one that is down, an unknown driver."""
    empty = with_password(make_database("postgresql", migrated=False))
    missing = with_password(make_url(pg_url).set(database="bsa_no_such_database").render_as_string(False))
    down = make_proxy(pg_url)
    down.cut()
    cases = [
        (["--url", pg_url, "current"], 0, "current:"),
        (["--url", empty, "list"], 1, "has no beatsqlalchemy tables"),
        (["--url", empty, "upgrade"], 0, "is at revision"),
        (["--url", missing, "current"], 1, "does not exist"),
        (["--url", down.url(pg_url), "list"], 1, "database postgresql+psycopg://postgres:***@"),
        (["--url", pg_url.replace("+psycopg", "+nosuchdriver"), "current"], 2, "url:"),
        (["--url", f"not a url {PASSWORD}", "current"], 2, "url:"),
    ]
    for args, code, expected in cases:
        result = run_cli(*args)
        output = result.stdout + result.stderr
        assert result.returncode == code and expected in output, (args[-1], code, output)
        assert "Traceback" not in output, output
        no_password(output)


@pytest.mark.parametrize("key", ["password", "passwd", "sslpassword"])
def test_a_password_in_the_url_query_string_is_masked_too(key: str) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/celery?{key}={PASSWORD}"
    app = Celery("faults", broker="memory://", set_as_current=False)
    app.conf.beat_sqlalchemy_url = url
    no_password(db.redact(url), DatabaseScheduler(app=app, lazy=True).info)


# -- a database user without DDL rights -----------------------------------------------------------

def pg_grants(database: str, role: str, version_table: bool = True) -> list[str]:
    """What an administrator runs so that ``role`` can run beat on ``database``, whose
    schema the owner created (``beatsqlalchemy upgrade``): read and write our six tables
    and their sequences, read the deployment id and the schema version; nothing else."""
    grants = [
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {role}",
        f"GRANT USAGE ON SEQUENCE {', '.join(f'{t}_id_seq' for t in TABLES)} TO {role}",
        f"GRANT SELECT ON beatsqlalchemy_deployment TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {HEARTBEATS} TO {role}",
    ]
    if version_table:
        grants.append(f"GRANT SELECT ON beatsqlalchemy_version TO {role}")
    return grants


@pytest.fixture
def pg_role(make_database: MakeDatabase) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL role with LOGIN and no privileges, and a migrated database whose
    PUBLIC privileges are revoked (no TEMP, no CREATE): (owner URL, database name).
    The role is dropped at teardown."""
    owner_url = make_database("postgresql")
    database = make_url(owner_url).database
    role = f"bsa_beat_{uuid.uuid4().hex[:8]}"
    admin = admin_engine("postgresql")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        connection.execute(text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
    with db.get_engine(owner_url).begin() as connection:
        connection.execute(text("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
    try:
        yield owner_url, role
    finally:
        db.dispose_all()
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role}
            )
        owner = create_engine(owner_url, isolation_level="AUTOCOMMIT")
        with owner.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
        owner.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def role_url(owner_url: str, role: str) -> str:
    return make_url(owner_url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)


DDL = (
    "CREATE TABLE beat_was_here (id integer)",
    "CREATE TEMPORARY TABLE beat_was_here (id integer)",
    "ALTER TABLE celery_periodic_task ADD COLUMN beat_was_here integer",
    "CREATE INDEX beat_was_here ON celery_periodic_task (name)",
    "DROP TABLE celery_periodic_task_run",
    "TRUNCATE celery_periodic_task_run",
    "DROP TRIGGER celery_periodic_task_changed ON celery_periodic_task",
    "UPDATE beatsqlalchemy_version SET version_num = 'x'",
)


@pytest.mark.e2e
def test_a_postgresql_role_without_ddl_rights_runs_beat(
    pg_role: tuple[str, str], beat_behind_proxy: MakeBeat,
) -> None:
    owner_url, role = pg_role
    database = str(make_url(owner_url).database)
    with db.get_engine(owner_url).begin() as connection:
        sequences = {connection.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": t}).scalar()
                     for t in TABLES}
        assert sequences == {f"public.{t}_id_seq" for t in TABLES}
        for grant in pg_grants(database, role):
            connection.execute(text(grant))
    url = role_url(owner_url, role)
    restricted = create_engine(url)
    try:
        for statement in DDL:
            with pytest.raises(DBAPIError, match=r"permission denied|must be owner"), restricted.begin() as c:
                c.execute(text(statement))
        # the role manages tasks through the API, and plain SQL fires the schema's triggers
        with db.session_factory(restricted)() as session:
            api.save_task(session, "every1-api", task=TASK, schedule=1.0, args=["every1-api"])
        with restricted.begin() as connection:
            interval = connection.execute(text(  # the row save_task created above
                "SELECT id FROM celery_interval_schedule WHERE every = 1 AND period = 'seconds'"
            )).scalar_one()
            connection.execute(text(
                "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, one_off, "
                "enabled, total_run_count, description, needs_recompute) VALUES ('every1-sql', :task, :i, "
                "'[\"every1-sql\"]', '{}', '{}', false, true, 0, '', false)"), {"task": TASK, "i": interval})
    finally:
        restricted.dispose()
    beat = beat_behind_proxy("postgresql", url=owner_url, beat_url=url,
                             conf={"beat_sqlalchemy_create_schema": False})
    beat.tasks = {"every1-api": 1, "every1-sql": 1}
    beat.start()
    beat.wait_steady(runs=3)
    alive = beat.stop()
    log = beat.log()
    assert alive and "Traceback" not in log and "permission denied" not in log, log
    no_password(log)
    runs = beat.run_log()
    assert {r.periodic_task_name for r in runs.values()} == {"every1-api", "every1-sql"}
    assert {r.state for r in runs.values() if r.task_id in {m.id for m in beat.reader.messages}} == {"sent"}
    assert heartbeats(owner_url) == 1


def heartbeats(owner_url: str) -> int:
    """How many beats recorded a heartbeat."""
    with db.get_engine(owner_url).connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {HEARTBEATS}")).scalar_one())


def test_without_select_on_the_version_table_beat_says_which_grant_is_missing(
    pg_role: tuple[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    """With only the six tables granted, beat cannot check the schema version: it says
    so in one line, naming the table, and keeps retrying (a GRANT fixes it live)."""
    owner_url, role = pg_role
    database = str(make_url(owner_url).database)
    with db.get_engine(owner_url).begin() as connection:
        for grant in pg_grants(database, role, version_table=False):
            connection.execute(text(grant))
    app = Celery("faults", broker="memory://", set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=role_url(owner_url, role), beat_sqlalchemy_create_schema=False,
                    beat_sqlalchemy_sync_interval=0.1)
    scheduler = DatabaseScheduler(app=app)
    try:
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1 and "permission denied for table beatsqlalchemy_version" in lines[0], lines
        no_password(*lines)
        with db.get_engine(owner_url).begin() as connection:
            connection.execute(text(f"GRANT SELECT ON beatsqlalchemy_version TO {role}"))
        wait_until(lambda: scheduler.tick() is not None and OUTAGE_END.search(caplog.text), 40)
    finally:
        scheduler.close()


def mariadb_grants(database: str, user: str) -> list[str]:
    """The MariaDB/MySQL equivalent of ``pg_grants`` (no sequences there)."""
    writes = (*TABLES, HEARTBEATS)
    return [f"GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.{t} TO {user}" for t in writes] + [
        f"GRANT SELECT ON {database}.{t} TO {user}"
        for t in ("beatsqlalchemy_version", "beatsqlalchemy_deployment")]


@pytest.mark.e2e
def test_a_mariadb_user_without_ddl_rights_runs_beat(
    make_database: MakeDatabase, beat_behind_proxy: MakeBeat,
) -> None:
    owner_url = make_database("mysql")
    database = str(make_url(owner_url).database)
    name = f"bsa_beat_{uuid.uuid4().hex[:8]}"
    user = f"'{name}'@'%'"
    admin = admin_engine("mysql")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE USER {user} IDENTIFIED BY '{PASSWORD}'"))
    try:
        with admin.connect() as connection:
            for grant in mariadb_grants(database, user):
                connection.execute(text(grant))
        url = make_url(owner_url).set(username=name, password=PASSWORD).render_as_string(hide_password=False)
        restricted = create_engine(url)
        try:
            for statement in DDL:
                if "TRIGGER" in statement or "TEMPORARY" in statement:
                    continue  # other syntax; TEMPORARY needs CREATE TEMPORARY TABLES, not granted
                with pytest.raises(DBAPIError, match="denied"), restricted.begin() as c:
                    c.execute(text(statement))
            with db.session_factory(restricted)() as session:
                api.save_task(session, "every1-api", task=TASK, schedule=1.0, args=["every1-api"])
        finally:
            restricted.dispose()
        beat = beat_behind_proxy("mysql", url=owner_url, beat_url=url,
                                 conf={"beat_sqlalchemy_create_schema": False})
        beat.tasks = {"every1-api": 1}
        beat.start()
        beat.wait_steady(runs=3)
        alive = beat.stop()
        log = beat.log()
        assert alive and "Traceback" not in log and "denied" not in log, log
        no_password(log)
        assert heartbeats(owner_url) == 1
    finally:
        db.dispose_all()
        with admin.connect() as connection:
            connection.execute(text(f"DROP USER IF EXISTS {user}"))
        admin.dispose()
