"""Passwords never shown, whatever they hold: a sweep of passwords with the characters a
URL reserves (unencoded and percent-encoded) through every door that names the database:
``redact`` itself, the CLI (its own command and Celery's subcommand), beat's start-up
(in process and a real ``celery beat``), the workers' run-once check, ``celery report``,
and the errors of a database that is down or refuses the login.

Each password is made of tokens that appear nowhere else (``Kx9``, ``Vb7``, ...) joined by
the reserved characters: no output may hold any token, so no fragment of a password leaks
either. The test server (PostgreSQL, trust authentication) accepts any password.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import Celery
from sqlalchemy.engine import make_url

from beatsqlalchemy import api, db
from beatsqlalchemy.constants import BEAT_HEADER
from beatsqlalchemy.exceptions import SchemaNotReady, ValidationError
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.worker import RunOnceTask
from harness.processes import Cluster, Processes, wait_for
from harness.proxy import Proxy

MakeDatabase = Callable[..., str]
BIN = Path(sys.executable).parent
TOKENS = ("Kx9", "Vb7", "Qm3", "Wt5", "Hy2", "Zr8", "Lp4")
#: passwords as users type them into a URL, reserved characters unencoded
TRICKY = {
    "at": "Kx9@Vb7",
    "two ats": "Kx9@Vb7@Qm3",
    "colon": "Kx9:Vb7",
    "slash": "Kx9/Vb7",
    "hash": "Kx9#Vb7",
    "question mark": "Kx9?Vb7",
    "space": "Kx9 Vb7",
    "everything": "Kx9@Vb7:Qm3/Wt5#Hy2?Zr8 Lp4",
    "everything but @": "Kx9:Qm3/Wt5#Hy2?Zr8 Lp4",
}


def leaks(*outputs: object) -> list[str]:
    """The password tokens found in ``outputs``."""
    text = "\n".join(str(output) for output in outputs)
    return [token for token in TOKENS if token in text]


def raw_url(url: str, password: str) -> str:
    """``url`` with ``password`` pasted in as typed, not encoded."""
    parsed = make_url(url)
    where = f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
    return f"{parsed.drivername}://{parsed.username}:{password}@{where}"


def encoded_url(url: str, password: str) -> str:
    return raw_url(url, quote(password, safe=""))


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {"PATH": str(BIN), "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONPATH": str(cwd or "")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**base, **(env or {})})


def app_module(directory: Path, url: str, key: str = "beat_sqlalchemy_url") -> str:
    """A Celery app module in ``directory`` whose configuration names ``url`` under ``key``."""
    name = f"secretsapp_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(
        "from celery import Celery\n"
        f"app = Celery({name!r}, broker='memory://')\n"
        f"app.conf[{key!r}] = {url!r}\n", encoding="utf-8")
    return name


@pytest.fixture
def pg_url(make_database: MakeDatabase) -> str:
    return make_database("postgresql")


# -- redact ------------------------------------------------------------------------------------

@pytest.mark.parametrize("password", TRICKY.values(), ids=TRICKY.keys())
@pytest.mark.parametrize("shape", [
    "postgresql+psycopg://beat:{pw}@db.example:5432/celery",
    "mysql+pymysql://beat:{pw}@db.example/celery?charset=utf8mb4",
    "postgresql://beat:{pw}@db.example",
    "postgresql://beat:{pw}@[::1]:5432/celery?sslmode=require",
    "postgresql://beat:{pw}@db.example/celery?application_name=a@b",
])
def test_redact_masks_a_password_whole_whatever_it_holds(shape: str, password: str) -> None:
    for pw in (password, quote(password, safe="")):
        url = shape.format(pw=pw)
        shown, placeholder = db.redact(url), db.redact(url, mask="<password>")
        assert leaks(shown, placeholder) == [], (url, shown, placeholder)
        assert shown.startswith(shape.split(":")[0] + "://beat:***@"), shown
        assert placeholder.startswith(shape.split(":")[0] + "://beat:<password>@"), placeholder


@pytest.mark.parametrize("query", ["password={pw}", "sslpassword={pw}&sslmode=require", "x=1&token={pw}"])
def test_redact_masks_query_passwords_with_plain_stars(query: str) -> None:
    url = "postgresql+psycopg://beat@db.example/celery?" + query.format(pw="Kx9@Vb7#Qm3/Wt5")
    shown = db.redact(url)
    assert leaks(shown) == [] and "%2A" not in shown and "=***" in shown, shown


def test_redact_keeps_an_at_sign_in_a_sqlite_path() -> None:
    assert db.redact("sqlite:////srv/beat@host/schedule.db") == "sqlite:////srv/beat@host/schedule.db"


# -- the doors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("password", TRICKY.values(), ids=TRICKY.keys())
def test_in_process_doors_never_show_the_password(pg_url: str, password: str) -> None:
    """The API's engine, beat's scheduler and banner, the workers' run-once check: a URL
    with an unencoded ``@`` is refused by a ValidationError naming it redacted, the others
    work; tracebacks included, nothing shows the password."""
    for url in (raw_url(pg_url, password), encoded_url(pg_url, password)):
        refused = "@" in password and url == raw_url(pg_url, password)
        app = Celery("secrets", broker="memory://", set_as_current=False)
        app.conf.beat_sqlalchemy_url = url
        outputs: list[str] = []
        for door in (lambda app=app: api.engine_for(app), lambda app=app: DatabaseScheduler(app=app).info):
            try:
                outputs.append(str(door()))
                assert not refused, url
            except ValidationError as exc:
                assert refused and "percent-encode" in str(exc), exc
                outputs.append("".join(traceback.format_exception(exc)))

        @app.task(base=RunOnceTask, name="secrets.once", shared=False)  # this app only
        def once() -> None: ...

        once.push_request(headers={BEAT_HEADER: "1"}, retries=0, hostname="w", delivery_info={})
        try:
            once.before_start(str(uuid.uuid4()), [], {})
            assert not refused
        except ValidationError as exc:
            outputs.append("".join(traceback.format_exception(exc)))
        finally:
            once.pop_request()
        assert leaks(*outputs) == [], outputs


@pytest.mark.parametrize("password", TRICKY.values(), ids=TRICKY.keys())
def test_the_cli_never_shows_the_password(pg_url: str, password: str, tmp_path: Path) -> None:
    """``beatsqlalchemy`` with --url and with -A, and ``celery -A app beatsqlalchemy``."""
    for url in (raw_url(pg_url, password), encoded_url(pg_url, password)):
        refused = "@" in password and url == raw_url(pg_url, password)
        module = app_module(tmp_path, url)
        for argv in (
            [str(BIN / "beatsqlalchemy"), "--url", url, "list"],
            [str(BIN / "beatsqlalchemy"), "--url", url, "current"],
            [str(BIN / "beatsqlalchemy"), "-A", module, "show", "nothing"],
            [str(BIN / "celery"), "-A", module, "beatsqlalchemy", "list"],
        ):
            result = run(argv, cwd=tmp_path)
            output = result.stdout + result.stderr
            assert leaks(output) == [], (argv[1:], output)
            assert "Traceback" not in output, output
            expected = (2, "percent-encode") if refused else (
                (1, "no periodic task named") if "show" in argv else (0, ""))
            assert (result.returncode, expected[1] in output) == (expected[0], True), (argv[1:], output)


@pytest.mark.parametrize("key", ["beat_sqlalchemy_url", "BEAT_SQLALCHEMY_URL", "BEAT_SQLAlchemy_URL"])
def test_celery_report_masks_the_url_in_every_spelling(key: str, tmp_path: Path) -> None:
    for password in TRICKY.values():
        url = f"postgresql+psycopg://beat:{quote(password, safe='')}@db.example/celery"
        module = app_module(tmp_path, url, key)
        result = run([str(BIN / "celery"), "-A", module, "report"], cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and f"{key}: " in output, output
        assert leaks(output) == [], output
        assert "db.example" not in output, output  # Celery masks the whole value


def test_connection_failures_never_show_the_password(
    pg_url: str, make_proxy: Callable[[str], Proxy], make_database: MakeDatabase,
) -> None:
    """A server that is down, and one that refuses the login (MariaDB checks passwords)."""
    down = make_proxy(pg_url)
    down.cut()
    mysql = make_url(make_database("mysql"))
    for password in TRICKY.values():
        for url in (encoded_url(down.url(pg_url), password),
                    mysql.set(password=password).render_as_string(hide_password=False)):
            result = run([str(BIN / "beatsqlalchemy"), "--url", url, "list"])
            output = result.stdout + result.stderr
            assert result.returncode == 1 and "failed:" in output, output
            assert leaks(output) == [], output


@pytest.mark.e2e
@pytest.mark.parametrize("password", [TRICKY["everything"], TRICKY["everything but @"]],
                         ids=["refused", "accepted"])
def test_a_real_beat_never_shows_the_password(
    pg_url: str, password: str, redis_url: str, tmp_path: Path,
) -> None:
    """``celery beat``: refused at start-up (exit 1, one redacted reason) or running (its
    banner and identity line name the database with the password masked)."""
    cluster = Cluster(tmp_path, redis_url, raw_url(pg_url, password), queue=f"secrets-{uuid.uuid4().hex[:8]}")
    processes = Processes(tmp_path)
    try:
        beat = cluster.beat(wait=False)
        processes.processes.append(beat)
        if "@" in password:
            beat.wait_exit(60)
            assert beat.process.returncode != 0
            assert "percent-encode" in beat.log(), beat.log()
        else:
            wait_for(lambda: re.search(r"beat: \d+ task\(s\) from beat_schedule installed", beat.log()),
                     60, "beat to start")
            assert "postgres:***@" in beat.log(), beat.log()
    finally:
        processes.stop_all()
        cluster.stop_all()
    assert leaks(beat.log()) == [], beat.log()


# -- the missing-schema message -----------------------------------------------------------------

def test_the_missing_schema_message_gives_a_command_that_works_once_the_password_is_put_in(
    make_database: MakeDatabase,
) -> None:
    password = TRICKY["everything"]
    url = make_url(make_database("postgresql", migrated=False)).set(password=password)
    app = Celery("secrets", broker="memory://", set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=url.render_as_string(hide_password=False),
                    beat_sqlalchemy_create_schema=False)
    with pytest.raises(SchemaNotReady) as raised:
        api.engine_for(app)
    message = str(raised.value)
    assert leaks(message) == [] and "<password>" in message and "***" in message.split("run")[0], message
    command = re.search(r"run `([^`]*)`", message)
    assert command is not None, message
    argv = shlex.split(command.group(1).replace("<password>", quote(password, safe="")))
    assert argv[0] == "beatsqlalchemy" and "***" not in command.group(1), argv
    result = run([str(BIN / argv[0]), *argv[1:]])
    assert result.returncode == 0 and "is at revision" in result.stdout, result.stdout + result.stderr


# -- the default database -----------------------------------------------------------------------

def test_read_commands_do_not_create_the_default_database_and_every_command_names_it(tmp_path: Path) -> None:
    default = tmp_path / "celerybeat-schedule.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
    note = f"sqlite:///{default} (the default: set --url, -A or BEAT_SQLALCHEMY_URL)"
    for command in (["list"], ["show", "x"], ["export"], ["current"]):
        result = run([str(BIN / "beatsqlalchemy"), *command], cwd=tmp_path, env=env)
        assert result.returncode == 1, result
        assert result.stderr == f"error: no database at {note}; nothing was created\n", result.stderr
        assert not default.exists() and list(tmp_path.iterdir()) == []
    added = run([str(BIN / "beatsqlalchemy"), "add", "t", "x.y", "--every", "5m"], cwd=tmp_path, env=env)
    assert added.returncode == 0 and added.stderr == f"database: {note}\n", added
    listed = run([str(BIN / "beatsqlalchemy"), "list"], cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "x.y" in listed.stdout, listed
    assert listed.stderr == f"database: {note}\n", listed
    named = run([str(BIN / "beatsqlalchemy"), "--url", f"sqlite:///{default}", "list"], cwd=tmp_path, env=env)
    assert named.returncode == 0 and named.stderr == "", named


@pytest.mark.parametrize("password", [TRICKY["at"], TRICKY["everything"]], ids=["at", "everything"])
def test_alembic_never_shows_the_password(password: str) -> None:
    """``alembic -x url=... current`` from a source checkout: refused, the URL redacted."""
    root = Path(__file__).resolve().parents[2]
    url = f"postgresql+psycopg://beat:{password}@127.0.0.1:5432/celery"
    result = run([str(BIN / "alembic"), "-x", f"url={url}", "current"], cwd=root)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "percent-encode" in output, output
    assert leaks(output) == [], output
