"""The ``beatsqlalchemy`` command in-process (click's CliRunner) on every backend: every
command, every error path, exit codes; and the plain-words schedule descriptions."""

from __future__ import annotations

import json
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select, text

from beatsqlalchemy import api, db, describe, migrate
from beatsqlalchemy.cli import celery_command, main, parse_duration
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import PeriodicTaskRun
from harness.helpers import stored, task_count

UTC = timezone.utc
APP_MODULE = "beatsqlalchemy_cli_test_app"


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``beatsqlalchemy ARGS``; an unexpected exception fails the test."""
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output
    return result.stdout


def failed(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one line on stderr holding every fragment."""
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}: {result.output}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"one line on stderr, got {lines}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@pytest.fixture
def cli_app(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Celery:
    """The test app, importable as ``-A beatsqlalchemy_cli_test_app``."""
    module = types.ModuleType(APP_MODULE)
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, APP_MODULE, module)
    return app


def add_three(url: str) -> None:
    ok(cli("--url", url, "add", "heartbeat", "tasks.ping", "--every", "30s"))
    ok(cli("--url", url, "add", "report", "tasks.report", "--cron", "30 7 * * 1", "--tz", "Europe/Berlin"))
    ok(cli("--url", url, "add", "cleanup", "tasks.cleanup", "--every", "10m", "--disabled"))


# -- help ------------------------------------------------------------------------------------

def test_every_command_has_help_with_examples() -> None:
    assert set(main.commands) == {"upgrade", "downgrade", "current", "list", "show", "add", "edit",
                                  "enable", "disable", "remove", "run", "export", "import", "web",
                                  "web-password", "status", "health"}
    assert set(celery_command.commands) == set(main.commands)
    for args in ([], *([name] for name in main.commands)):
        result = cli(*args, "--help")
        text_ = ok(result)
        assert "Usage: " in text_ and "Example" in text_, f"{args}: {text_}"
    assert "celery -A proj beatsqlalchemy list" in (celery_command.help or "")


# -- add, list, show ---------------------------------------------------------------------------

def test_add_every_kind_of_schedule(url: str, engine: Engine) -> None:
    out = ok(cli("--url", url, "add", "heartbeat", "tasks.ping", "--every", "30s"))
    assert out.startswith("added 'heartbeat' (tasks.ping): every 30 seconds; next run 20")
    out = ok(cli("--url", url, "add", "report", "tasks.report", "--cron", "30 7 * * 1",
                 "--tz", "Europe/Berlin"))
    assert "at 07:30 on Monday (Europe/Berlin); next run" in out
    out = ok(cli("--url", url, "add", "launch", "tasks.launch", "--at", "2040-01-31T09:00:00Z"))
    assert "once at 2040-01-31 09:00 UTC; next run 2040-01-31 09:00:00 UTC" in out
    out = ok(cli("--url", url, "add", "lights", "tasks.lights", "--solar", "sunset", "52.52", "13.405",
                 "--disabled"))
    assert out.strip() == "added 'lights' (tasks.lights): at sunset (52.52, 13.405); disabled"
    out = ok(cli("--url", url, "add", "local", "tasks.local", "--at", "2040-06-01T09:00",
                 "--tz", "Europe/Berlin"))
    assert "once at 2040-06-01 07:00 UTC" in out, "a naive --at is read in --tz"

    heartbeat = stored(engine, "heartbeat")
    assert heartbeat is not None and heartbeat.interval is not None
    assert (heartbeat.interval.every, heartbeat.interval.period) == (30, "seconds")
    report = stored(engine, "report")
    assert report is not None and report.crontab is not None
    assert str(report.crontab) == "30 7 * * 1 (Europe/Berlin)"
    launch = stored(engine, "launch")
    assert launch is not None and launch.one_off and launch.clocked is not None
    assert launch.clocked.clocked_time == datetime(2040, 1, 31, 9, tzinfo=UTC)
    lights = stored(engine, "lights")
    assert lights is not None and not lights.enabled and lights.solar is not None
    assert (lights.solar.event, lights.solar.latitude) == ("sunset", Decimal("52.52"))


@pytest.mark.parametrize(("every", "delta"), [
    ("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("2h", timedelta(hours=2)),
    ("1d", timedelta(days=1)), ("1h30m", timedelta(minutes=90)), ("45", timedelta(seconds=45)),
    ("10 minutes", timedelta(minutes=10)), ("250ms", timedelta(milliseconds=250)),
])
def test_durations(every: str, delta: timedelta) -> None:
    assert parse_duration(every) == delta


@pytest.mark.parametrize("every", ["", "5x", "m5", "0s", "-5s", "5s5", "1.5h"])
def test_bad_durations(every: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(every)
    assert (caught.value.field, caught.value.value) == ("every", every)


def test_add_sets_every_option(url: str, engine: Engine) -> None:
    ok(cli("--url", url, "add", "full", "tasks.full", "--every", "1m", "--args", '[1, "two"]',
           "--kwargs", '{"k": {"n": 1}}', "--queue", "q", "--exchange", "ex", "--routing-key", "rk",
           "--headers", '{"h": "v"}', "--priority", "9", "--expires", "120",
           "--start-time", "2040-01-01T00:00:00+00:00", "--one-off", "--description", "all of them"))
    task = stored(engine, "full")
    assert task is not None
    assert (task.args, task.kwargs, task.headers) == ([1, "two"], {"k": {"n": 1}}, {"h": "v"})
    assert (task.queue, task.exchange, task.routing_key, task.priority) == ("q", "ex", "rk", 9)
    assert (task.expire_seconds, task.expires) == (120, None)
    assert task.start_time == datetime(2040, 1, 1, tzinfo=UTC)
    assert task.one_off and task.description == "all of them" and task.enabled
    assert task.next_run_at == datetime(2040, 1, 1, tzinfo=UTC), "start_time delays the first run"
    ok(cli("--url", url, "add", "until", "tasks.until", "--every", "1m", "--expires", "2041-02-03T04:05:06Z"))
    until = stored(engine, "until")
    assert until is not None and until.expires == datetime(2041, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert until.expire_seconds is None


def test_crontab_timezone_defaults_to_the_apps(url: str, engine: Engine, cli_app: Celery) -> None:
    cli_app.conf.timezone = "America/New_York"
    ok(cli("-A", APP_MODULE, "add", "app-tz", "tasks.t", "--cron", "0 9 * * *"))
    ok(cli("--url", url, "add", "utc", "tasks.t", "--cron", "0 9 * * *"))
    app_tz, utc = stored(engine, "app-tz"), stored(engine, "utc")
    assert app_tz is not None and app_tz.crontab is not None and app_tz.crontab.timezone == "America/New_York"
    assert utc is not None and utc.crontab is not None and utc.crontab.timezone == "UTC"


def test_list_table_and_json(url: str, engine: Engine) -> None:
    assert ok(cli("--url", url, "list")).strip() == "no periodic tasks"
    assert json.loads(ok(cli("--url", url, "list", "--json"))) == []
    add_three(url)
    with db.session_factory(engine)() as session:
        api.save_task(session, "from-config", task="tasks.cfg", schedule=timedelta(hours=2), source="config")
    lines = ok(cli("--url", url, "list")).splitlines()
    assert lines[0].split() == ["NAME", "TASK", "SCHEDULE", "ENABLED", "LAST", "RUN", "(UTC)", "NEXT",
                                "RUN", "(UTC)", "RUNS", "SOURCE", "LAST", "OUTCOME"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["cleanup", "from-config", "heartbeat", "report"], "sorted by name"
    assert "every 30 seconds" in rows["heartbeat"] and " yes " in rows["heartbeat"]
    assert "at 07:30 on Monday (Europe/Berlin)" in rows["report"]
    assert rows["cleanup"].split()[-6:] == ["no", "-", "-", "0", "database", "-"]
    assert rows["from-config"].split()[-2:] == ["config", "-"]
    heartbeat = stored(engine, "heartbeat")
    assert heartbeat is not None and heartbeat.next_run_at is not None
    assert heartbeat.next_run_at.strftime("%Y-%m-%d %H:%M:%S") in rows["heartbeat"]

    listed = json.loads(ok(cli("--url", url, "list", "--json")))
    assert [t["name"] for t in listed] == ["cleanup", "from-config", "heartbeat", "report"]
    by_name = {t["name"]: t for t in listed}
    assert by_name["heartbeat"]["schedule"] == "every 30 seconds"
    assert by_name["heartbeat"]["interval"] == {"every": 30, "period": "seconds"}
    assert by_name["heartbeat"]["next_run_at"] == heartbeat.next_run_at.isoformat()
    assert by_name["cleanup"]["enabled"] is False and by_name["cleanup"]["next_run_at"] is None
    assert by_name["from-config"]["source"] == "config" and by_name["report"]["source"] == "database"
    for entry in listed:
        assert {"name", "task", "enabled", "schedule", "next_run_at", "last_run_at",
                "total_run_count", "source"} <= set(entry)


def test_list_filters_and_pages(url: str) -> None:
    add_three(url)
    ok(cli("--url", url, "add", "report-2", "tasks.report", "--every", "1h"))

    def listed(*args: str) -> list[str]:
        return [t["name"] for t in json.loads(ok(cli("--url", url, "list", "--json", *args)))]

    assert listed("--enabled") == ["heartbeat", "report", "report-2"]
    assert listed("--disabled") == ["cleanup"]
    assert listed("--task", "tasks.report") == ["report", "report-2"]
    assert listed("--name", "REPORT*") == ["report", "report-2"]
    assert listed("--name", "report-?") == ["report-2"]
    assert listed("--limit", "2") == ["cleanup", "heartbeat"]
    assert listed("--limit", "2", "--offset", "2") == ["report", "report-2"]
    assert listed("--page", "2", "--size", "3") == ["report-2"]
    table = ok(cli("--url", url, "list", "--name", "nothing*"))
    assert table.strip() == "no periodic tasks"


def test_show(url: str, engine: Engine) -> None:
    add_three(url)
    ok(cli("--url", url, "edit", "report", "--args", "[1]", "--queue", "reports", "--priority", "4",
           "--description", "weekly"))
    out = ok(cli("--url", url, "show", "report"))
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith(" "))
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["name"] == "report" and fields["task"] == "tasks.report"
    assert fields["source"] == "database"
    assert fields["schedule"] == "at 07:30 on Monday (Europe/Berlin)"
    assert json.loads(fields["crontab"])["timezone"] == "Europe/Berlin"
    assert fields["enabled"] == "yes" and fields["args"] == "[1]"
    assert json.loads(fields["options"]) == {"queue": "reports", "priority": 4}
    assert fields["description"] == "weekly" and fields["total runs"] == "0"
    task = stored(engine, "report")
    assert task is not None and task.next_run_at is not None
    assert fields["next run"] == task.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    later = [datetime.strptime(m.strip(), "%Y-%m-%d %H:%M:%S") for m in fields["then"].split(",")]
    assert len(later) == 2 and later[0] - task.next_run_at.replace(tzinfo=None) == timedelta(days=7)

    shown = json.loads(ok(cli("--url", url, "show", "report", "--json")))
    assert shown["name"] == "report" and shown["next_run_at"] == task.next_run_at.isoformat()
    assert len(shown["upcoming"]) == 3 and shown["recent_runs"] == []
    failed(cli("--url", url, "show", "nope"), 1, "no periodic task named 'nope'")


def test_show_and_list_report_a_broken_row(url: str, engine: Engine) -> None:
    ok(cli("--url", url, "add", "broken", "tasks.b", "--cron", "0 8 * * *"))
    with engine.begin() as connection:  # plain SQL breaks the crontab; beat has not seen it yet
        connection.execute(text("UPDATE celery_crontab_schedule SET minute = '99'"))
    listed = json.loads(ok(cli("--url", url, "list", "--json")))
    assert listed[0]["schedule_error"].startswith("minute: invalid value '99'")
    assert listed[0]["next_run_at"] is None
    assert " error " in ok(cli("--url", url, "list")).splitlines()[1]
    assert "error:       minute: invalid value '99'" in ok(cli("--url", url, "show", "broken"))


# -- invalid input: one line, exit 2, nothing written -------------------------------------------

INVALID = [
    (["add", "x", "t", "--every", "5x"], "every: invalid value '5x'"),
    (["add", "x", "t", "--every", "0s"], "every: invalid value '0s'"),
    (["add", "x", "t", "--cron", "61 * * * *"], "minute: invalid value '61'"),
    (["add", "x", "t", "--cron", "* * *"], "crontab: invalid value '* * *'"),
    (["add", "x", "t", "--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
     "timezone: invalid value 'Mars/Olympus'"),
    (["add", "x", "t", "--at", "tomorrow"], "at: invalid value 'tomorrow'"),
    (["add", "x", "t", "--solar", "moonrise", "1", "2"], "event: invalid value 'moonrise'"),
    (["add", "x", "t", "--solar", "sunset", "north", "2"], "latitude: invalid value 'north'"),
    (["add", "x", "t", "--solar", "sunset", "1", "200"], "longitude: invalid value '200'"),
    (["add", "x", "t", "--every", "5s", "--cron", "* * * * *"], "schedule: invalid value '--every --cron'"),
    (["add", "x", "t"], "schedule: missing"),
    (["add", "x", "t", "--every", "5s", "--args", '{"a": 1}'], "args: invalid value {'a': 1}"),
    (["add", "x", "t", "--every", "5s", "--args", "[1"], "args: invalid value '[1'"),
    (["add", "x", "t", "--every", "5s", "--kwargs", "[1]"], "kwargs: invalid value [1]"),
    (["add", "x", "t", "--every", "5s", "--headers", "3"], "headers: invalid value 3"),
    (["add", "x", "t", "--every", "5s", "--priority", "256"], "priority: invalid value 256"),
    (["add", "x", "t", "--every", "5s", "--priority", "high"], "'--priority': 'high'"),
    (["add", "x", "t", "--every", "5s", "--expires", "soon"], "expires: invalid value 'soon'"),
    (["add", "x", "t", "--every", "5s", "--start-time", "later"], "start_time: invalid value 'later'"),
    (["add", "x", "t", "--at", "2040-01-01T00:00Z", "--no-one-off"], "one_off: invalid value False"),
    (["add", "", "t", "--every", "5s"], "name: invalid value ''"),
    (["add", "x" * 201, "t", "--every", "5s"], "name: invalid value 'xxxx"),
    (["add", "x"], "Missing argument 'TASK'"),
    (["add", "x", "t", "--every"], "'--every' requires an argument"),
    (["add", "x", "t", "--evry", "5s"], "No such option '--evry'"),
    (["list", "--page", "0"], "page: invalid value 0"),
    (["list", "--limit", "-1"], "limit: invalid value -1"),
    (["list", "--limit", "ten"], "'--limit': 'ten'"),
    (["list", "--page", "2", "--limit", "3"], "page: invalid value 2"),
    (["enable"], "Missing argument 'NAME...'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["import"], "file: missing"),
    (["import", "/nonexistent/tasks.json"], "'/nonexistent/tasks.json'"),
]


@pytest.mark.parametrize(("args", "message"), INVALID, ids=[" ".join(a)[:40] for a, _ in INVALID])
def test_invalid_input_is_one_line_and_exit_2(
    url: str, engine: Engine, args: list[str], message: str,
) -> None:
    failed(cli("--url", url, *args), 2, message)
    assert task_count(engine) == 0


def test_add_refuses_a_taken_name(url: str, engine: Engine) -> None:
    ok(cli("--url", url, "add", "x", "tasks.one", "--every", "5s"))
    failed(cli("--url", url, "add", "x", "tasks.two", "--every", "9s"), 2,
           "name: invalid value 'x': a task with this name exists")
    task = stored(engine, "x")
    assert task is not None and task.task == "tasks.one"


# -- edit ---------------------------------------------------------------------------------------

def test_edit(url: str, engine: Engine) -> None:
    add_three(url)
    ok(cli("--url", url, "edit", "heartbeat", "--queue", "q", "--priority", "3"))
    out = ok(cli("--url", url, "edit", "heartbeat", "--every", "2m", "--task", "tasks.pong", "--queue", ""))
    assert out.startswith("changed 'heartbeat' (tasks.pong): every 2 minutes; next run ")
    task = stored(engine, "heartbeat")
    assert task is not None and task.interval is not None
    assert (task.interval.every, task.interval.period, task.task) == (2, "minutes", "tasks.pong")
    assert (task.queue, task.priority) == (None, 3), "'' clears, the rest stays"

    out = ok(cli("--url", url, "edit", "report", "--tz", "Asia/Tokyo"))
    assert "at 07:30 on Monday (Asia/Tokyo)" in out
    ok(cli("--url", url, "edit", "report", "--cron", "0 6 * * *"))
    report = stored(engine, "report")
    assert report is not None and str(report.crontab) == "0 6 * * * (Asia/Tokyo)", "keeps its timezone"

    ok(cli("--url", url, "edit", "report", "--disabled"))
    report = stored(engine, "report")
    assert report is not None and not report.enabled and report.next_run_at is None
    ok(cli("--url", url, "edit", "report", "--enabled", "--expires", "none"))
    report = stored(engine, "report")
    assert report is not None and report.enabled and report.next_run_at is not None

    failed(cli("--url", url, "edit", "nope", "--every", "5s"), 1, "no periodic task named 'nope'")
    failed(cli("--url", url, "edit", "report"), 2, "nothing to change")
    failed(cli("--url", url, "edit", "heartbeat", "--tz", "UTC"), 2,
           "timezone: invalid value 'UTC': --tz applies to a crontab")
    failed(cli("--url", url, "edit", "heartbeat", "--priority", "999", "--args", "[5]"), 2,
           "priority: invalid value 999")
    task = stored(engine, "heartbeat")
    assert task is not None and task.args == [] and task.priority == 3, "nothing written on error"


def test_misfire_policy_is_set_shown_exported_and_reset(url: str, engine: Engine) -> None:
    add_three(url)
    assert "misfire:     default" in ok(cli("--url", url, "show", "heartbeat"))
    ok(cli("--url", url, "edit", "heartbeat", "--misfire-policy", "skip"))
    task = stored(engine, "heartbeat")
    assert task is not None and task.misfire_policy == "skip"
    assert "misfire:     skip" in ok(cli("--url", url, "show", "heartbeat"))
    exported = json.loads(ok(cli("--url", url, "export")))
    assert {t["name"]: t["misfire_policy"] for t in exported}["heartbeat"] == "skip"
    ok(cli("--url", url, "edit", "heartbeat", "--misfire-policy", "default"))
    task = stored(engine, "heartbeat")
    assert task is not None and task.misfire_policy is None
    result = cli("--url", url, "edit", "heartbeat", "--misfire-policy", "later")
    assert result.exit_code == 2 and "'later' is not one of" in result.output


def test_editing_a_config_task_warns(url: str, engine: Engine) -> None:
    with db.session_factory(engine)() as session:
        api.save_task(session, "cfg", task="tasks.cfg", schedule=timedelta(hours=1), source="config")
    result = cli("--url", url, "edit", "cfg", "--every", "5m")
    ok(result)
    assert "comes from beat_schedule" in result.stderr
    quiet = cli("--url", url, "edit", "cfg", "--disabled")
    assert ok(quiet) and quiet.stderr == "", "enabled is the database's to keep"
    removed = cli("--url", url, "remove", "cfg")
    assert ok(removed).strip() == "removed 'cfg'"
    assert "beat installs it again" in removed.stderr


# -- enable, disable, remove ----------------------------------------------------------------------

def test_enable_disable_remove_several(url: str, engine: Engine) -> None:
    add_three(url)
    out = ok(cli("--url", url, "disable", "heartbeat", "report"))
    assert out.splitlines() == ["disabled 'heartbeat'", "disabled 'report'"]
    assert all(not t.enabled for t in [stored(engine, "heartbeat"), stored(engine, "report")] if t)
    out = ok(cli("--url", url, "enable", "report", "cleanup"))
    assert out.splitlines()[0].startswith("enabled 'report' (tasks.report): at 07:30 on Monday")
    assert "next run" in out.splitlines()[1]
    cleanup = stored(engine, "cleanup")
    assert cleanup is not None and cleanup.enabled and cleanup.next_run_at is not None

    for command in ("enable", "disable", "remove"):
        failed(cli("--url", url, command, "report", "missing"), 1, "no periodic task named 'missing'")
    report = stored(engine, "report")
    assert report is not None and report.enabled, "all or nothing"
    assert ok(cli("--url", url, "remove", "report", "cleanup")).splitlines() == [
        "removed 'report'", "removed 'cleanup'"]
    assert task_count(engine) == 1


@pytest.mark.parametrize("command", ["show", "edit", "enable", "disable", "remove", "run"])
def test_a_missing_task_exits_1(url: str, cli_app: Celery, command: str) -> None:
    extra = ["--every", "5s"] if command == "edit" else []
    failed(cli("-A", APP_MODULE, "--url", url, command, "ghost", *extra), 1, "no periodic task named 'ghost'")


# -- run ----------------------------------------------------------------------------------------

def test_run_sends_now_and_records_it(url: str, engine: Engine, cli_app: Celery) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    ok(cli("--url", url, "add", "report", "tasks.report", "--every", "1h", "--queue", queue,
           "--args", "[7]"))
    before = stored(engine, "report")
    assert before is not None
    out = ok(cli("-A", APP_MODULE, "run", "report"))
    assert out.startswith("sent 'report' (tasks.report) as task id ")
    task_id = out.split()[-1]
    with cli_app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue, no_ack=True)
        message = simple.get(timeout=2)
        with pytest.raises(Empty):
            simple.get(timeout=0.2)
        simple.close()
    assert message.headers["id"] == task_id and message.payload[0] == [7]
    with db.session_factory(engine)() as session:
        run = session.scalars(select(PeriodicTaskRun)).one()
        assert (run.task_id, run.state, run.periodic_task_name) == (task_id, "sent", "report")
        assert run.sent_by.startswith("cli:")
    after = stored(engine, "report")
    assert after is not None and after.total_run_count == 1 and after.next_run_at == before.next_run_at
    assert "sent" in ok(cli("--url", url, "show", "report")).split("recent runs (UTC):")[1]


def test_run_needs_the_app_and_reports_a_broker_error(url: str, engine: Engine, cli_app: Celery) -> None:
    ok(cli("--url", url, "add", "report", "tasks.report", "--every", "1h"))
    failed(cli("--url", url, "run", "report"), 2, "run needs the Celery app", "-A/--app")
    cli_app.conf.update(broker_url="redis://:secret@127.0.0.1:1/0", task_publish_retry=False,
                        broker_connection_retry=False, broker_connection_max_retries=0)
    line = failed(cli("-A", APP_MODULE, "run", "report"), 1, "could not send 'report' through the broker")
    assert "secret" not in line
    task = stored(engine, "report")
    assert task is not None and task.total_run_count == 0


# -- export and import ------------------------------------------------------------------------------

def test_export_import_roundtrip_into_an_empty_database(url: str, empty_db_url: str, tmp_path: Path) -> None:
    add_three(url)
    ok(cli("--url", url, "add", "launch", "tasks.launch", "--at", "2040-01-31T09:00:00.250Z",
           "--kwargs", '{"x": [1, {"y": null}]}', "--description", "üñï"))
    ok(cli("--url", url, "add", "lights", "tasks.lights", "--solar", "dawn_civil", "-33.8688", "151.2093",
           "--expires", "2041-01-01T00:00:00Z", "--headers", '{"h": 1}', "--exchange", "ex"))
    ok(cli("--url", url, "add", "limits", "tasks.limits", "--every", "1h30m", "--priority", "0",
           "--expires", "30", "--start-time", "2039-12-31T23:00:00-05:00", "--routing-key", "rk"))
    exported = ok(cli("--url", url, "export"))
    data = json.loads(exported)
    assert [t["name"] for t in data] == ["cleanup", "heartbeat", "launch", "lights", "limits", "report"]

    path = tmp_path / "tasks.json"
    path.write_text(exported, encoding="utf-8")
    ok(cli("--url", empty_db_url, "upgrade"))
    out = ok(cli("--url", empty_db_url, "import", str(path)))
    assert out.strip() == "imported 6 task(s): 6 created, 0 updated"
    assert ok(cli("--url", empty_db_url, "export")) == exported
    out = ok(cli("--url", empty_db_url, "import", "-", input=exported))
    assert out.strip() == "imported 6 task(s): 0 created, 6 updated"
    assert ok(cli("--url", empty_db_url, "export")) == exported


def test_import_errors_write_nothing(url: str, engine: Engine, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{", encoding="utf-8")
    failed(cli("--url", url, "import", str(bad_json)), 2, "file: invalid value", "not valid JSON")
    bad_entry = tmp_path / "entry.json"
    bad_entry.write_text(json.dumps([
        {"name": "good", "task": "t", "interval": {"every": 5, "period": "seconds"}},
        {"name": "bad", "task": "t", "interval": {"every": 5, "period": "fortnights"}},
    ]), encoding="utf-8")
    failed(cli("--url", url, "import", str(bad_entry)), 2, "period: invalid value 'fortnights'",
           "(in task 'bad')")
    assert task_count(engine) == 0
    failed(cli("--url", url, "import", str(bad_entry), "--from-app"), 2, "not both")
    failed(cli("--url", url, "import", "--from-app"), 2, "import --from-app needs the Celery app")


def test_import_from_app_installs_beat_schedule(url: str, engine: Engine, cli_app: Celery) -> None:
    cli_app.conf.beat_schedule = {
        "cfg-ping": {"task": "tasks.ping", "schedule": timedelta(minutes=5), "args": [1]},
        "cfg-report": {"task": "tasks.report", "schedule": 3600.0, "options": {"queue": "r"}},
    }
    out = ok(cli("-A", APP_MODULE, "import", "--from-app"))
    assert out.strip() == "installed 2 task(s) from beat_schedule, retired 0"
    listed = {t["name"]: t for t in json.loads(ok(cli("-A", APP_MODULE, "list", "--json")))}
    assert set(listed) == {"cfg-ping", "cfg-report"}
    assert all(t["source"] == "config" for t in listed.values())
    assert listed["cfg-report"]["queue"] == "r" and listed["cfg-ping"]["args"] == [1]
    exported = json.loads(ok(cli("-A", APP_MODULE, "export")))
    assert {t["source"] for t in exported} == {"config"}

    cli_app.conf.beat_schedule = {
        "cfg-ping": {"task": "tasks.ping", "schedule": timedelta(minutes=5)},
        "cfg-bad": {"task": "tasks.bad", "schedule": "never"},
    }
    result = cli("-A", APP_MODULE, "import", "--from-app")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stdout.strip() == "installed 1 task(s) from beat_schedule, retired 1"
    assert result.stderr.strip().splitlines() == [
        "error: beat_schedule entry 'cfg-bad' is invalid and was skipped: schedule: invalid value "
        "'never': not a crontab, interval, solar or clocked schedule"]
    retired = stored(engine, "cfg-report")
    assert retired is not None and not retired.enabled


# -- schema commands and where the database comes from -----------------------------------------------

def test_schema_commands(backend: str, empty_db_url: str) -> None:
    assert ok(cli("--url", empty_db_url, "current")).splitlines()[0] == "current: none"
    if backend == "sqlite":  # the SQLite default creates its schema on first use
        assert ok(cli("--url", empty_db_url, "list")).strip() == "no periodic tasks"
    else:
        failed(cli("--url", empty_db_url, "list"), 1, "has no beatsqlalchemy tables", "upgrade")
    head = migrate.head_revision()
    assert ok(cli("--url", empty_db_url, "upgrade")).strip().endswith(f"is at revision {head}")
    current = ok(cli("--url", empty_db_url, "current")).splitlines()
    assert current[0] == current[1].replace("head:   ", "current:")
    assert ok(cli("--url", empty_db_url, "downgrade", "base")).strip().endswith(
        "has no beatsqlalchemy tables (empty)")
    assert ok(cli("--url", empty_db_url, "current")).splitlines()[0] == "current: none"
    failed(cli("--url", empty_db_url, "downgrade"), 2, "Missing argument 'REVISION'")


def test_database_comes_from_url_then_app_then_environment(
    url: str, engine: Engine, cli_app: Celery, tmp_path: Path,
) -> None:
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    ok(cli("-A", APP_MODULE, "add", "in-app-db", "t", "--every", "5s"))
    assert stored(engine, "in-app-db") is not None, "-A: the app's configuration"
    ok(cli("-A", APP_MODULE, "--url", other, "add", "in-other-db", "t", "--every", "5s"))
    assert stored(engine, "in-other-db") is None, "--url wins over the app"
    ok(cli("add", "from-env", "t", "--every", "5s", env={"BEAT_SQLALCHEMY_URL": other}))
    names = [t["name"] for t in json.loads(ok(cli("--url", other, "list", "--json")))]
    assert names == ["from-env", "in-other-db"]
    failed(cli("-A", "no_such_module_anywhere", "list"), 2, "app: cannot load the Celery app",
           "no_such_module_anywhere")
    failed(cli("--url", "nosuchdialect://x", "list"), 2, "url: invalid value 'nosuchdialect://x'")


def test_an_unreachable_database_is_one_line_exit_1() -> None:
    line = failed(cli("--url", "postgresql+psycopg://beat:hunter2@127.0.0.1:1/celery", "list"), 1,
                  "database postgresql+psycopg://beat:***@127.0.0.1:1/celery failed: OperationalError")
    assert "hunter2" not in line


def test_the_celery_subcommand_takes_the_app_from_celery(url: str, engine: Engine, cli_app: Celery) -> None:
    from celery.bin.celery import celery

    def run(*args: str) -> Result:
        return CliRunner().invoke(celery, ["-A", APP_MODULE, "beatsqlalchemy", *args], catch_exceptions=False)

    ok(run("add", "via-celery", "tasks.c", "--every", "5s"))
    assert stored(engine, "via-celery") is not None
    assert [t["name"] for t in json.loads(ok(run("list", "--json")))] == ["via-celery"]
    failed(run("add", "x", "t", "--every", "5x"), 2, "every: invalid value '5x'")
    failed(run("show", "ghost"), 1, "no periodic task named 'ghost'")
    failed(run("lst"), 2, "No such command 'lst'", "celery beatsqlalchemy --help")


# -- schedules in plain words -------------------------------------------------------------------------

@pytest.mark.parametrize(("every", "period", "words"), [
    (30, "seconds", "every 30 seconds"), (1, "minutes", "every minute"), (2, "hours", "every 2 hours"),
    (1, "days", "every day"), (500, "microseconds", "every 500 microseconds"),
])
def test_interval_words(every: int, period: str, words: str) -> None:
    assert describe.interval(every, period) == words


@pytest.mark.parametrize(("fields", "words"), [
    (("30", "7", "1", "*", "*", "Europe/Berlin"), "at 07:30 on Monday (Europe/Berlin)"),
    (("*/5", "*", "*", "*", "*", "UTC"), "every 5 minutes (UTC)"),
    (("0", "4", "*", "*", "*", "UTC"), "at 04:00 (UTC)"),
    (("0", "0", "*", "1", "jan", "Asia/Tokyo"), "at 00:00, on day 1 of the month in January (Asia/Tokyo)"),
    (("30", "7", "mon-fri", "*", "*", "UTC"), "at 07:30, Monday through Friday (UTC)"),
])
def test_crontab_words(fields: tuple[str, ...], words: str) -> None:
    assert describe.crontab(*fields) == words


def test_crontab_words_fall_back_to_the_expression(monkeypatch: pytest.MonkeyPatch) -> None:
    import cron_descriptor  # type: ignore[import-untyped]

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("cannot read it")

    monkeypatch.setattr(cron_descriptor, "ExpressionDescriptor", broken)
    assert describe.crontab("30", "7", "1", "*", "*", "UTC") == "cron 30 7 * * 1 (UTC)"


def test_solar_and_clocked_words() -> None:
    assert describe.solar("sunset", Decimal("52.520000"), Decimal("13.405000")) == "at sunset (52.52, 13.405)"
    assert describe.solar("dawn_civil", -33.8688, 151.2093) == "at civil dawn (-33.8688, 151.2093)"
    assert describe.solar("solar_noon", 0, 0) == "at solar noon (0, 0)"
    assert describe.clocked(datetime(2030, 1, 2, 3, 4, tzinfo=UTC)) == "once at 2030-01-02 03:04 UTC"
    assert describe.clocked(datetime(2030, 1, 2, 3, 4, 5)) == "once at 2030-01-02 03:04:05 UTC"


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment variable must not pick the database behind the tests' back."""
    monkeypatch.delenv("BEAT_SQLALCHEMY_URL", raising=False)
    yield
