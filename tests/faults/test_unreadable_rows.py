"""Values the database lets through but beat cannot read, swept over every column of the
five tables on every backend, with a real ``celery beat`` running.

Each value is written with plain SQL into a task row (or its schedule row) of its own;
the database refuses some (a type, a length, a JSON check, a foreign key): those are
counted and skipped. One beat per backend then serves every accepted bad row at once
beside healthy tasks, one of them inserted with plain SQL too (flagged for recompute in
the same batch as the bad rows). The beat runs without the ``ephem`` package, so that a
good solar row is broken by the missing package. Asserted: beat never exits, the healthy
tasks keep every run, each bad row gets ``schedule_error``, is named once in beat's log
and is never sent, the rows whose bad value beat does not need keep their runs, and
``beatsqlalchemy list`` and ``show`` exit 0 and show the broken rows as broken.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_unreadable import BAD_TIMES, MISSING_EPHEM

from beatsqlalchemy import db, migrate
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.models import PeriodicTask
from harness.processes import APP_MODULE, Cluster, Processes, wait_for
from harness.reader import QueueReader

from .conftest import TASK

UTC = timezone.utc
#: the beat's app, without ``ephem`` (importing it raises ImportError)
APP_WITHOUT_EPHEM = "import sys\nsys.modules['ephem'] = None\n" + APP_MODULE
#: each healthy task runs every second; after the first run, no gap may exceed this
MAX_GAP = 2.5
#: how long the healthy tasks are watched once every bad row is marked
OBSERVE = 4.0

LONG = "'" + "x" * 300 + "'"


@dataclass(frozen=True)
class Case:
    """One bad value: written into ``column`` of a row of ``kind`` (``task`` or a
    schedule kind); ``broken``: beat must mark the row broken (else: it keeps its runs,
    as beat does not need the value)."""

    kind: str
    column: str
    value: str
    broken: bool = True


def cases(backend: str) -> list[Case]:
    """Every bad value tried on ``backend``."""
    found = [Case("task", "task", value) for value in ("''", "'   '", LONG)]
    for column, values in {
        "args": ["'5'", "'\"x\"'", "'{}'", "'not json'", "'[1,'"],
        "kwargs": ["'5'", "'\"x\"'", "'[]'", "'{bad'"],
        "headers": ["'5'", "'[]'", "'{bad'"],
        "extra_options": ["'5'", "'[]'", "'{bad'"],
        "priority": ["9999", "-1", "'x'"],
        "expire_seconds": ["-1", "'x'", "1e20"],
        "misfire_policy": ["'bogus'"],
        "queue": [LONG],
        "exchange": [LONG],
        "routing_key": [LONG],
        "interval_id": ["999999"],
    }.items():
        found += [Case("task", column, value) for value in values]
    for column in ("expires", "start_time", "last_run_at", "next_run_at"):
        found += [Case("task", column, value) for value in BAD_TIMES[backend]]
    found += [Case("task", "date_changed", value, broken=False) for value in BAD_TIMES[backend]]
    found += [Case("task", "total_run_count", value, broken=False) for value in ("2147483647", "-5", "'x'")]
    found += [Case("task", "description", value, broken=False) for value in ("5", LONG)]
    found += [Case("interval", "every", value) for value in ("-1", "0", "'x'", "1e20", "9223372036854775807")]
    found += [Case("interval", "period", value) for value in ("'fortnights'", "''")]
    for column, values in {
        "minute": ["'61'", "'*/0'", "'abc'", "''"],
        "hour": ["'25'"],
        "day_of_week": ["'8'", "'someday'"],
        "day_of_month": ["'32'", "'0'"],
        "month_of_year": ["'13'"],
        "timezone": ["'Mars/Base'", "''"],
    }.items():
        found += [Case("crontab", column, value) for value in values]
    found += [Case("solar", "event", "'moonrise'")]
    found += [Case("solar", "latitude", value) for value in ("95", "-91", "'NaN'", "'abc'")]
    found += [Case("solar", "longitude", value) for value in ("200", "'abc'")]
    found += [Case("clocked", "clocked_time", value) for value in BAD_TIMES[backend]]
    return found


#: counts over the whole module, printed at the end
COUNTS: Counter[str] = Counter()
TABLE: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not TABLE:
        return
    columns = ("backend", "columns", "values tried", "refused by database", "rows served", "broken",
               "kept running", "crashes", "lost runs", "named twice", "sent though broken", "seconds")
    with capture.global_and_fixture_disabled():
        reporter.write_line("\nunreadable rows swept:")
        reporter.write_line("| " + " | ".join(columns) + " |")
        reporter.write_line("|" + "---|" * len(columns))
        for row in TABLE:
            reporter.write_line("| " + " | ".join(str(row[c]) for c in columns) + " |")
        reporter.write_line(", ".join(f"{key} {value}" for key, value in COUNTS.items()))


def _database(backend: str, make_database: Callable[..., str], tmp_path: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'beat.sqlite3'}"
        migrate.upgrade(db.get_engine(url))
        return url
    return make_database(backend)


def _create_rows(url: str, all_cases: list[Case]) -> dict[str, tuple[Case, int, int | None]]:
    """A task (and, for schedule cases, a schedule row of its own) per case: name ->
    (case, task id, schedule id)."""
    made: dict[str, tuple[Case, int, int | None]] = {}
    soon = datetime.now(UTC) + timedelta(days=1)
    index = Counter[str]()
    with db.session_factory(db.get_engine(url))() as session:
        for number, case in enumerate(all_cases):
            i = index[case.kind]
            index[case.kind] += 1
            name = f"bad-{number:03d}-{case.kind}-{case.column}"
            schedule: dict[str, Any] = {
                "task": {"interval": {"every": 1, "period": "seconds"}},
                "interval": {"interval": {"every": 1000 + i, "period": "seconds"}},
                "crontab": {"crontab": {"minute": str(i), "hour": str(i % 24)}},
                "solar": {"solar": {"event": "sunrise", "latitude": i, "longitude": i}},
                "clocked": {"clocked": soon + timedelta(minutes=i), "one_off": True},
            }[case.kind]
            task, _ = PeriodicTask.update_or_create(session, name=name, defaults={
                "task": TASK, "args": [name], **schedule,
            })
            made[name] = (case, task.id, None if case.kind == "task" else getattr(task, f"{case.kind}_id"))
        PeriodicTask.update_or_create(session, name="healthy", defaults={
            "task": TASK, "args": ["healthy"], "interval": {"every": 1, "period": "seconds"},
        })
        # a good solar row: only the missing ephem package breaks it
        PeriodicTask.update_or_create(session, name="solar-good", defaults={
            "task": TASK, "args": ["solar-good"], "solar": {"event": "sunset", "latitude": 1, "longitude": 2},
        })
    return made


def _write_bad_values(url: str, backend: str, made: dict[str, tuple[Case, int, int | None]]) -> set[str]:
    """Write each case's value with plain SQL; returns the names of the rows the database
    refused it for."""
    refused: set[str] = set()
    engine = db.get_engine(url)
    with engine.connect() as connection:
        if backend == "mysql":  # zero dates through, nothing silently changed into another value
            connection.execute(text("SET SESSION sql_mode = 'STRICT_ALL_TABLES'"))
            connection.commit()
        for name, (case, task_id, schedule_id) in made.items():
            table = "celery_periodic_task" if case.kind == "task" else f"celery_{case.kind}_schedule"
            row_id = task_id if schedule_id is None else schedule_id
            try:
                statement = f"UPDATE {table} SET {case.column} = {case.value} WHERE id = {row_id}"
                connection.execute(text(statement))
                connection.commit()
            except DBAPIError:
                connection.rollback()
                refused.add(name)
        # the good solar row touched with plain SQL: flagged for recompute with the bad rows
        solar_id = connection.execute(text(
            "SELECT solar_id FROM celery_periodic_task WHERE name = 'solar-good'")).scalar_one()
        connection.execute(text(f"UPDATE celery_solar_schedule SET event = 'sunset' WHERE id = {solar_id}"))
        # a healthy task inserted with plain SQL: flagged for recompute with the bad rows
        interval_id = connection.execute(text(
            "SELECT id FROM celery_interval_schedule WHERE every = 1 AND period = 'seconds'")).scalar_one()
        connection.execute(text(
            "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, one_off, "
            "enabled, total_run_count, description) VALUES ('healthy-sql', :task, :interval, "
            "'[\"healthy-sql\"]', '{}', '{}', :no, :yes, 0, '')"),
            {"task": TASK, "interval": interval_id, "no": False, "yes": True})
        connection.commit()
    return refused


def _run_gaps(times: list[float]) -> float:
    return max((b - a for a, b in pairwise(times)), default=0.0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_unreadable_values_break_only_their_rows(
    backend: str, make_database: Callable[..., str], redis_url: str, processes: Processes, tmp_path: Path,
) -> None:
    started = time.monotonic()
    url = _database(backend, make_database, tmp_path)
    all_cases = cases(backend)
    made = _create_rows(url, all_cases)
    refused = _write_bad_values(url, backend, made)
    served = {name: entry for name, entry in made.items() if name not in refused}
    expect_broken = {name for name, (case, _, _) in served.items() if case.broken} | {"solar-good"}
    expect_running = {name for name, (case, _, _) in served.items() if not case.broken}
    healthy = ("healthy", "healthy-sql")

    queue = f"unreadable-{uuid.uuid4().hex[:10]}"
    (tmp_path / "beat").mkdir()
    cluster = Cluster(tmp_path / "beat", redis_url, url, queue=queue)
    (cluster.root / "e2eapp.py").write_text(APP_WITHOUT_EPHEM, encoding="utf-8")
    reader = QueueReader(redis_url, queue)
    reader.start()
    beat = cluster.beat()
    processes.processes.append(beat)
    engine = db.get_engine(url)
    try:
        def errors() -> dict[str, str | None]:
            with engine.connect() as connection:
                return dict(connection.execute(text(  # type: ignore[arg-type]
                    "SELECT name, schedule_error FROM celery_periodic_task")).all())

        def all_marked() -> bool:
            found = errors()
            return all(found.get(name) for name in expect_broken)

        try:
            wait_for(all_marked, 30, "every bad row to be marked broken", 0.2)
        except AssertionError:
            unmarked = sorted(n for n in expect_broken if not errors().get(n))
            raise AssertionError(f"not marked broken: {unmarked}") from None
        marked_at = time.time()
        time.sleep(OBSERVE)
        alive = beat.alive()
        log = beat.log()
        found = errors()
        messages = list(reader.messages)
    finally:
        beat.stop()
        reader.stop()
        reader.delete_queue()

    sent = Counter(m.args[0] for m in messages if m.args)
    lost = 0
    for name in healthy:
        times = sorted(m.received for m in messages if m.args == [name])
        assert times, f"{name} was never sent"
        # runs due every second from the first one to the end of the watch
        expected = int((marked_at + OBSERVE - times[0]) // 1)
        lost += max(expected - len(times), 0)
        assert _run_gaps(times) <= MAX_GAP, f"{name}: a gap of {_run_gaps(times):.1f}s between runs"
    named_twice = [n for n in expect_broken if log.count(f"task {n!r} cannot be scheduled") != 1]
    sent_broken = [n for n in expect_broken if sent[n]]
    not_running = [n for n in expect_running if not sent[n]]
    crashes = int(not alive) + log.count("Traceback")
    assert found["solar-good"] is not None and MISSING_EPHEM in found["solar-good"]

    runner = CliRunner()
    listed = runner.invoke(cli_main, ["--url", url, "list", "--json"])
    assert listed.exit_code == 0, listed.output
    by_name = {entry["name"]: entry for entry in json.loads(listed.output)}
    table = runner.invoke(cli_main, ["--url", url, "list"])
    assert table.exit_code == 0, table.output
    shown_broken = []
    for name in sorted(expect_broken):
        shown = runner.invoke(cli_main, ["--url", url, "show", name])
        assert shown.exit_code == 0, f"show {name}: {shown.output}"
        if re.search(r"^error: ", shown.output, re.M) and by_name[name]["schedule_error"]:
            shown_broken.append(name)

    columns = {(case.kind, case.column) for case in all_cases}
    TABLE.append({
        "backend": backend, "columns": len(columns), "values tried": len(all_cases),
        "refused by database": len(refused), "rows served": len(served) + 1,
        "broken": len(expect_broken), "kept running": len(expect_running), "crashes": crashes,
        "lost runs": lost, "named twice": len(named_twice), "sent though broken": len(sent_broken),
        "seconds": round(time.monotonic() - started, 1),
    })
    COUNTS.update({"columns x values x databases tried": len(all_cases), "crashes": crashes,
                   "lost runs": lost})
    assert crashes == 0, log[-5000:]
    assert lost == 0
    assert not [n for n in expect_broken if not found.get(n)]
    assert named_twice == [], (named_twice, log[-5000:])
    assert sent_broken == []
    assert not_running == [], not_running
    assert sorted(shown_broken) == sorted(expect_broken)
    for name in expect_broken:
        assert re.search(rf"^{re.escape(name)} .* error ", table.output, re.M), name
