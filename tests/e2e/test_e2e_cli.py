"""The installed commands as users run them: ``beatsqlalchemy ...`` and ``celery -A app
beatsqlalchemy ...`` in real processes, on real databases, a real Redis broker and, at the
end, a real beat and worker that pick up what the CLI changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from beatsqlalchemy import api, db
from beatsqlalchemy.models import PeriodicTaskRun
from harness.helpers import stored
from harness.processes import SYNC_INTERVAL, Cluster, wait_for

pytestmark = pytest.mark.e2e

#: a change reaches beat within one sync interval; the rest is process and broker latency
EFFECT = SYNC_INTERVAL + 1.0
BIN = Path(sys.executable).parent


def program(name: str) -> str:
    """The console script installed next to this Python (or on PATH)."""
    found = BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    assert on_path, f"the {name!r} command is not installed"
    return on_path


APP_MODULE = '''\
"""A Celery app for the CLI tests."""

import os
from datetime import timedelta

from celery import Celery

app = Celery("cliproj", broker=os.environ["CLI_BROKER_URL"])
app.conf.update(
    beat_sqlalchemy_url=os.environ["CLI_DB_URL"],
    timezone="Europe/Berlin",
    beat_schedule={"from-config": {"task": "cliproj.ping", "schedule": timedelta(minutes=5)}},
    task_publish_retry=False,
    broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
)


@app.task(name="cliproj.ping")
def ping():
    return "pong"
'''


class Commands:
    """Runs one of the two spellings of the command in a directory holding ``cliproj``."""

    def __init__(self, root: Path, db_url: str, broker_url: str = "memory://", via: str = "beatsqlalchemy",
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        (root / "cliproj.py").write_text(APP_MODULE, encoding="utf-8")
        self.via = via
        self.env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
        self.env.update(CLI_DB_URL=db_url, CLI_BROKER_URL=broker_url, PYTHONUNBUFFERED="1",
                        **(env or {}))

    def prefix(self, app: str | None) -> list[str]:
        if self.via == "celery":
            return [program("celery"), *(["-A", app] if app else []), "beatsqlalchemy"]
        return [program("beatsqlalchemy"), *(["-A", app] if app else [])]

    def __call__(self, *args: str, app: str | None = "cliproj", input: str | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.prefix(app), *args], cwd=self.root, env=self.env, input=input,
            capture_output=True, text=True, timeout=120,
        )
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        return result

    def ok(self, *args: str, **kwargs: Any) -> str:
        result = self(*args, **kwargs)
        assert result.returncode == 0, f"{args}: exit {result.returncode}: {result.stderr}"
        return result.stdout

    def fails(self, code: int, *args: str, fragment: str, **kwargs: Any) -> str:
        result = self(*args, **kwargs)
        assert result.returncode == code, f"{args}: exit {result.returncode}, wanted {code}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{args}: {result.stderr!r}"
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
        return lines[0]


# -- every command, in a real process, both spellings ----------------------------------------

@pytest.mark.parametrize("via", ["beatsqlalchemy", "celery"])
def test_a_session_with_the_installed_command(via: str, db_url: str, engine: Engine, tmp_path: Path) -> None:
    run = Commands(tmp_path, db_url, via=via)
    out = run.ok("add", "heartbeat", "cliproj.ping", "--every", "30s", "--args", "[1]")
    assert out.startswith("added 'heartbeat' (cliproj.ping): every 30 seconds; next run ")
    out = run.ok("add", "report", "reports.weekly", "--cron", "30 7 * * 1", "--queue", "reports")
    assert "at 07:30 on Monday (Europe/Berlin)" in out, "the app's timezone is the default"
    # beat_schedule, plus celery.backend_cleanup (no result backend expires results itself)
    assert run.ok("import", "--from-app").strip() == "installed 2 task(s) from beat_schedule, retired 0"

    table = run.ok("list").splitlines()
    assert [line.split()[0] for line in table] == [
        "NAME", "celery.backend_cleanup", "from-config", "heartbeat", "report"]
    assert table[2].split()[-2:] == ["config", "-"] and table[3].split()[-2:] == ["database", "-"]

    run.ok("edit", "heartbeat", "--every", "1m", "--priority", "5")
    disabled = run.ok("disable", "heartbeat", "report").splitlines()
    assert disabled == ["disabled 'heartbeat'", "disabled 'report'"]
    listed = {t["name"]: t for t in json.loads(run.ok("list", "--json"))}
    assert listed["heartbeat"]["schedule"] == "every minute" and listed["heartbeat"]["priority"] == 5
    assert not listed["heartbeat"]["enabled"] and listed["heartbeat"]["next_run_at"] is None
    assert listed["from-config"]["source"] == "config"
    assert run.ok("enable", "report").startswith("enabled 'report' (reports.weekly): at 07:30 on Monday")

    shown = run.ok("show", "report")
    assert "schedule:    at 07:30 on Monday (Europe/Berlin)" in shown
    assert 'options:     {"queue": "reports"}' in shown
    exported = json.loads(run.ok("export"))
    assert [t["name"] for t in exported] == ["celery.backend_cleanup", "from-config", "heartbeat", "report"]
    assert run.ok("remove", "heartbeat").strip() == "removed 'heartbeat'"
    assert stored(engine, "heartbeat") is None
    report = stored(engine, "report")
    assert report is not None and report.enabled and report.queue == "reports"


ERRORS: list[tuple[int, list[str], str]] = [
    (2, ["add", "x", "cliproj.ping", "--every", "5x"], "every: invalid value '5x'"),
    (2, ["add", "x", "cliproj.ping", "--cron", "0 25 * * *"], "hour: invalid value '25'"),
    (2, ["add", "x", "cliproj.ping", "--every", "5s", "--kwargs", "[]"], "kwargs: invalid value []"),
    (2, ["add", "x"], "Missing argument 'TASK'"),
    (2, ["list", "--page", "zero"], "'--page': 'zero'"),
    (2, ["nonsense"], "No such command 'nonsense'"),
    (1, ["show", "ghost"], "no periodic task named 'ghost'"),
    (1, ["remove", "ghost"], "no periodic task named 'ghost'"),
    (1, ["run", "ghost"], "no periodic task named 'ghost'"),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("via", ["beatsqlalchemy", "celery"])
def test_errors_are_one_line_with_exit_codes(via: str, db_url: str, engine: Engine, tmp_path: Path) -> None:
    run = Commands(tmp_path, db_url, via=via)
    for code, args, fragment in ERRORS:
        run.fails(code, *args, fragment=fragment)
    with db.session_factory(engine)() as session:
        assert api.count_tasks(session) == 0
    if via == "beatsqlalchemy":
        run.ok("add", "x", "cliproj.ping", "--every", "5s")
        run.fails(2, "--url", db_url, "run", "x", app=None, fragment="run needs the Celery app")
        run.fails(2, "list", app="no_such_module", fragment="cannot load the Celery app 'no_such_module'")
    line = run.fails(1, "--url", "postgresql+psycopg://u:pw@127.0.0.1:1/x", "list",
                     fragment="database postgresql+psycopg://u:***@127.0.0.1:1/x failed: OperationalError")
    assert ":pw@" not in line


def test_a_server_database_without_tables_names_the_command(
    backend: str, empty_db_url: str, tmp_path: Path,
) -> None:
    run = Commands(tmp_path, empty_db_url)
    if backend == "sqlite":
        assert run.ok("list").strip() == "no periodic tasks"
        return
    run.fails(1, "list", fragment="has no beatsqlalchemy tables; run `beatsqlalchemy --url")
    assert "is at revision" in run.ok("upgrade")
    assert run.ok("list").strip() == "no periodic tasks"
    assert run.ok("current").splitlines()[0].startswith("current: 0")


def test_export_then_import_into_an_empty_database_gives_the_same_json(
    db_url: str, empty_db_url: str, engine: Engine, tmp_path: Path,
) -> None:
    with db.session_factory(engine)() as session:
        api.create_task(session, "interval", "t.i", None, interval={"every": 45, "period": "seconds"},
                        args=[1, [2]], kwargs={"k": None}, queue="q", priority=2, expire_seconds=9)
        api.create_task(session, "cron", "t.c", None, crontab={"minute": "*/5", "hour": "8-18",
                                                              "day_of_week": "mon-fri",
                                                              "timezone": "America/Chicago"},
                        enabled=False, description="office hours")
        api.create_task(session, "solar", "t.s", None, solar={"event": "sunrise", "latitude": "48.8566",
                                                             "longitude": "2.3522"}, headers={"x": "y"})
        api.create_task(session, "clocked", "t.k", None, clocked={"clocked_time": "2042-02-02T02:02:02Z"})
        api.save_task(session, "config", task="t.cfg", schedule=86400, source="config",
                      options={"time_limit": 60, "expires": 30})
    source = Commands(tmp_path, db_url, via="celery")
    exported = source.ok("export")
    copy = Commands(tmp_path, empty_db_url)
    copy.ok("--url", empty_db_url, "upgrade", app=None)
    out = copy.ok("--url", empty_db_url, "import", "-", app=None, input=exported)
    assert out.strip() == "imported 5 task(s): 5 created, 0 updated"
    assert copy.ok("--url", empty_db_url, "export", app=None) == exported
    assert [t["name"] for t in json.loads(exported)] == ["clocked", "config", "cron", "interval", "solar"]


# -- run: a message on a real broker --------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_run_publishes_to_redis_with_the_logged_task_id(
    db_url: str, engine: Engine, redis_url: str, tmp_path: Path,
) -> None:
    import redis

    run = Commands(tmp_path, db_url, broker_url=redis_url, via="celery")
    run.ok("add", "report", "reports.weekly", "--cron", "0 6 * * 1", "--queue", "cli-run-test",
           "--kwargs", '{"fmt": "pdf"}', "--disabled")
    out = run.ok("run", "report")
    task_id = out.split()[-1]
    assert out.startswith("sent 'report' (reports.weekly) as task id ")
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange("cli-run-test", 0, -1)
    finally:
        client.close()
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["id"] == task_id and message["headers"]["task"] == "reports.weekly"
    with db.session_factory(engine)() as session:
        logged = session.scalars(select(PeriodicTaskRun)).one()
        assert (logged.task_id, logged.state) == (task_id, "sent")
        assert logged.sent_by.startswith("cli:")
    report = stored(engine, "report")
    assert report is not None and report.total_run_count == 1 and not report.enabled

    down = Commands(tmp_path, db_url, broker_url="redis://127.0.0.1:1/0")
    down.fails(1, "run", "report", fragment="could not send 'report' through the broker redis://127.0.0.1:1/0")


# -- a change made with the CLI reaches a running beat ----------------------------------------------

def test_cli_changes_reach_a_running_beat_within_the_sync_interval(
    cluster: Cluster, engine: Engine,
) -> None:
    cluster.worker()
    beat = cluster.beat()
    env = dict(cluster.env)

    def cli(*args: str) -> str:
        result = subprocess.run([program("celery"), "-A", "e2eapp", "beatsqlalchemy", *args],
                                cwd=cluster.root, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # added with the CLI: beat sends it within the sync interval
    cli("add", "cli-task", "e2e.record", "--every", "1s", "--args", '["cli"]')
    added = time.time()
    first = cluster.wait_runs("cli", timeout=1 + EFFECT + 2)[0]
    assert first.t - added <= 1 + EFFECT, f"first run {first.t - added:.2f}s after the CLI returned"
    cluster.wait_runs("cli", 3, since=added, timeout=5 + EFFECT)

    # disabled with the CLI: no run after the sync interval
    cli("disable", "cli-task")
    disabled = time.time()
    time.sleep(EFFECT + 2.5)
    late = [r for r in cluster.records("cli") if r.t > disabled + EFFECT]
    assert not late, f"ran {len(late)} time(s) after being disabled"

    # enabled again: runs resume within the sync interval
    cli("enable", "cli-task")
    enabled = time.time()
    resumed = cluster.wait_runs("cli", since=enabled, timeout=1 + EFFECT + 2)[0]
    assert resumed.t - enabled <= 1 + EFFECT

    # run now, while disabled: the worker executes the task id the run log holds
    cli("disable", "cli-task")
    time.sleep(EFFECT)
    out = cli("run", "cli-task")
    task_id = out.split()[-1]
    executed = wait_for(lambda: [r for r in cluster.records("cli") if r.id == task_id], 10,
                        "the run sent by the CLI")
    assert len(executed) == 1
    with db.session_factory(engine)() as session:
        logged = session.scalars(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id == task_id)).one()
        assert logged.state == "sent" and logged.sent_by.startswith("cli:")
        other = session.scalars(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id != task_id)).all()
        assert all(r.sent_by != logged.sent_by for r in other), "beat's runs name beat"

    # removed with the CLI: gone for good
    cli("remove", "cli-task")
    assert stored(engine, "cli-task") is None
    assert beat.alive()
    ids = [r.id for r in cluster.records()]
    assert len(ids) == len(set(ids)), "no run executed twice"
