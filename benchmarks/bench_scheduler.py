"""Benchmark DatabaseScheduler at N tasks: start-up, idle tick, sync, change, memory, burst.

Usage::

    python benchmarks/bench_scheduler.py [--sizes 1k,10k,100k,1m]
        [--backends sqlite,postgresql] [--repeats 3] [--burst 2000] [--e2e] [--json out.json]

The parent process prepares one database per (backend, N) (dropped and recreated for
each N), migrates it with ``beatsqlalchemy.migrate.upgrade`` and bulk-loads N tasks
(COPY on PostgreSQL, executemany elsewhere). Every measurement runs in a fresh child
process, so memory and caches are honest; the table shows the median of ``--repeats``
children. ``--e2e`` adds, at each N, a burst sent to the real Redis broker against a plain
loop of ``app.send_task`` on the same broker, in alternating rounds within each child.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

#: the repository root: the harness shared with the tests lives there (it is not installed)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import (
    CHANGE_TASKS,
    INTERVALS,
    OFFSET,
    PROBE_EVERY,
    RESULT_MARK,
    SPREAD,
    crontab_rows,
    parse_backends,
    parse_sizes,
    peak_rss_mb,
    proc_status_mb,
    spawn_writer,
)
from sqlalchemy import JSON, Engine, delete, func, insert, select, text
from sqlalchemy.engine import make_url

from harness import servers
from harness.http import free_port

UTC = timezone.utc
#: the server database, dropped and recreated per N: give concurrent runs different names
DB_NAME = os.environ.get("BEAT_BENCH_DB", "bsa_bench")
CHUNK = 20_000
#: the project's bar (for N = 1M on PostgreSQL), checked for every backend at its largest N
TARGETS = {
    "startup_s": 0.5,
    "idle_tick_ms": 0.05,
    "sync_ms": 2.0,
    "change_beat_ms": 5.0,
    "burst_runs_per_s": 5000.0,
    "rss_growth_mb": 30.0,
    "e2e_ratio": 0.8,
}
METRICS = ("startup_s", "idle_tick_ms", "sync_ms", "read_ms", "rss_mb", "rss_base_mb", "rss_burst_mb",
           "burst_s", "burst_runs_per_s", "change_api_beat_ms", "change_api_wall_ms",
           "change_sql_beat_ms", "change_sql_wall_ms")
#: the Redis database the end-to-end case publishes to (flushed before each burst)
E2E_BROKER = servers.redis_url("bench")
#: plain-loop / beat-burst pairs per end-to-end process
E2E_ROUNDS = 3


# -- shared by parent and child --------------------------------------------------------

def tables() -> dict[str, Any]:
    """The beatsqlalchemy tables, keyed by short name."""
    from beatsqlalchemy import models

    return {
        "task": models.PeriodicTask.__table__,
        "interval": models.IntervalSchedule.__table__,
        "crontab": models.CrontabSchedule.__table__,
        "run": models.PeriodicTaskRun.__table__,
    }


def task_row(name: str, next_run_at: datetime, now: datetime, **schedule: int) -> dict[str, Any]:
    """Every column of a task row, as a core INSERT needs them."""
    return {
        "name": name, "task": "bench.noop", "interval_id": None, "crontab_id": None,
        "solar_id": None, "clocked_id": None, **schedule,
        "args": [], "kwargs": {}, "headers": {}, "queue": None, "exchange": None,
        "routing_key": None, "priority": None, "expires": None, "expire_seconds": None,
        "one_off": False, "start_time": None, "enabled": True, "last_run_at": None,
        "total_run_count": 0, "date_changed": now, "description": "", "next_run_at": next_run_at,
        "extra_options": None, "source": None, "needs_recompute": False, "schedule_error": None,
    }


# -- parent: preparing the databases ------------------------------------------------------

def database_url(backend: str, workdir: Path, n: int) -> str:
    """Drop and recreate the benchmark database; return its URL."""
    if backend == "sqlite":
        path = workdir / f"bench-{n}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    return servers.create_database(backend, DB_NAME, "bench", replace=True)


def drop_database(backend: str) -> None:
    if backend != "sqlite":
        servers.drop_database(backend, DB_NAME, "bench")


def task_chunks(n: int, interval_ids: list[int], crontab_ids: list[int],
                seed: int = 42) -> Iterator[list[dict[str, Any]]]:
    """``n`` task rows in chunks: 75 % interval, 25 % crontab, due in 1 h to 25 h."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    first = now + OFFSET
    spread = SPREAD.total_seconds()
    for start in range(0, n, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, n)):
            due = first + timedelta(seconds=rng.uniform(0, spread))
            if rng.random() < 0.75:  # mostly interval tasks, the rest crontabs
                schedule = {"interval_id": rng.choice(interval_ids)}
            else:
                schedule = {"crontab_id": rng.choice(crontab_ids)}
            rows.append(task_row(f"bench.task.{i:07d}", due, now, **schedule))
        yield rows


def copy_rows(engine: Engine, table: Any, chunks: Iterator[list[dict[str, Any]]]) -> None:
    """PostgreSQL: load the rows with COPY ... FROM STDIN (psycopg 3), one transaction; the
    columns with a server default (the row's run key, ...) are left to the database."""
    columns = [c.name for c in table.columns if c.name != "id" and c.server_default is None]
    json_columns = {c.name for c in table.columns
                    if isinstance(getattr(c.type, "impl_instance", c.type), JSON)}
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(statement) as copy:
            for rows in chunks:
                for row in rows:
                    copy.write_row([json.dumps(row[c]) if c in json_columns and row.get(c) is not None
                                    else row.get(c) for c in columns])
        raw.commit()
    finally:
        raw.close()


def populate(engine: Engine, n: int, seed: int = 42) -> float:
    """Insert the schedules and ``n`` tasks (COPY on PostgreSQL with psycopg 3, else
    executemany in chunks of 20,000 in one transaction); returns seconds."""
    t = tables()
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(insert(t["interval"]), [{"every": e, "period": p} for e, p in INTERVALS])
        interval_ids = list(connection.scalars(select(t["interval"].c.id)))
        connection.execute(insert(t["interval"]), [{"every": PROBE_EVERY[0], "period": PROBE_EVERY[1]}])
        connection.execute(insert(t["crontab"]), crontab_rows())
        crontab_ids = list(connection.scalars(select(t["crontab"].c.id)))
    chunks = task_chunks(n, interval_ids, crontab_ids, seed)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        copy_rows(engine, t["task"], chunks)
    else:
        with engine.begin() as connection:
            for rows in chunks:
                connection.execute(insert(t["task"]), rows)
    return time.perf_counter() - started


def analyze(engine: Engine, backend: str) -> None:
    """Refresh planner statistics, as autovacuum / InnoDB would on a live database."""
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    elif backend == "mysql":
        with engine.connect() as connection:
            connection.execute(text("ANALYZE TABLE celery_periodic_task"))
    # SQLite: left as most SQLite files are, without sqlite_stat1


def prepare(backend: str, n: int, workdir: Path, run_analyze: bool) -> tuple[str, float]:
    """A fresh, migrated database holding ``n`` tasks; returns (url, insert seconds)."""
    from beatsqlalchemy import db, migrate

    url = database_url(backend, workdir, n)
    engine = db.get_engine(url)
    migrate.upgrade(engine)
    seconds = populate(engine, n)
    if run_analyze:
        analyze(engine, backend)
    db.dispose_all()
    return url, seconds


def run_child(url: str, n: int, args: argparse.Namespace, mode: str = "scheduler",
              observed: bool = False) -> dict[str, Any]:
    """Measure one case in a fresh interpreter; returns the child's result dict. With
    ``observed``, beat writes heartbeats (every OBSERVED_HEARTBEAT s) and serves metrics."""
    config = {"url": url, "n": n, "burst": args.burst, "profile": args.profile,
              "ticks": args.ticks, "syncs": args.syncs, "mode": mode,
              "change": not args.no_change, "observed": observed}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=900, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])  # type: ignore[no-any-return]
    raise RuntimeError(f"child for {redact_url(url)} N={n} failed (exit {done.returncode})")


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# -- child: the measurements ------------------------------------------------------------

@dataclass
class Phase:
    """Wall time of a code block, optionally under cProfile."""

    profile: bool
    label: str
    seconds: float = 0.0

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        profiler = cProfile.Profile() if self.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            yield
        finally:
            if profiler:
                profiler.disable()
            self.seconds = time.perf_counter() - started
            if profiler:
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative")
                stats.print_stats(30)
                print(f"\n===== profile: {self.label} ({self.seconds * 1000:.2f} ms) =====\n"
                      f"{out.getvalue()}", file=sys.stderr)


def median_per_call(call: Callable[[], object], batches: int, per_batch: int) -> float:
    """Median over ``batches`` of the mean seconds per call within a batch."""
    means = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(per_batch):
            call()
        means.append((time.perf_counter() - started) / per_batch)
    return statistics.median(means)


def child_main(config: dict[str, Any]) -> dict[str, Any]:
    """Start a scheduler on the prepared database and measure it."""
    import logging

    from celery import Celery

    from beatsqlalchemy import db
    from beatsqlalchemy.schedulers import DatabaseScheduler
    from beatsqlalchemy.store import Run

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    profile = bool(config["profile"])

    class BenchScheduler(DatabaseScheduler):
        """Counts what would be published instead of publishing; DB writes stay real."""

        sent: Counter[int]
        #: (time.time() at its end, seconds) of each read of the database, for the change test
        syncs: list[tuple[float, float]] = []

        def _send(self, run: Run) -> bool:
            self.sent[run.task_pk] += 1
            return True

        def _read(self) -> None:
            started = time.perf_counter()
            super()._read()
            self.syncs.append((time.time(), time.perf_counter() - started))

    app = Celery("bench", broker="memory://", set_as_current=False)
    app.conf.update(
        beat_sqlalchemy_url=config["url"],
        result_expires=None,  # no backend_cleanup entry that might fall due at 04:00
        beat_schedule={"bench.config-task": {"task": "bench.noop", "schedule": 86400.0}},
        # heartbeats and metrics: off, or on (heartbeats more often than the default 5 s)
        beat_sqlalchemy_heartbeat_interval=OBSERVED_HEARTBEAT if config.get("observed") else 0,
        beat_sqlalchemy_metrics_port=free_port() if config.get("observed") else 0,
        beat_sqlalchemy_metrics_token="bench-token",
    )
    result: dict[str, Any] = {"n": config["n"]}
    make_url(config["url"]).get_dialect().import_dbapi()  # the driver too is imported before
    result["rss_base_mb"] = proc_status_mb("VmRSS")

    # start-up: construct, then the first tick (schema check, config install, first sync)
    BenchScheduler.sent = Counter()
    phase = Phase(profile, "start-up")
    with phase.run():
        scheduler = BenchScheduler(app=app)
        scheduler.tick()
    result["startup_s"] = phase.seconds
    for _ in range(10):
        scheduler.tick()

    # idle tick: nothing due, next sync pushed an hour away
    scheduler._next_sync = time.monotonic() + 3600
    ticks = int(config["ticks"])
    with Phase(profile, f"{ticks * 100} idle ticks").run():
        result["idle_tick_ms"] = median_per_call(scheduler.tick, ticks, 100) * 1000
    result["window_size"] = len(scheduler._window)

    # the periodic sync with nothing changed (with a change watch: a look at the watch), and
    # the read of the database it does when something changed, or at least once a window
    syncs = int(config["syncs"])
    with Phase(profile, f"{syncs} syncs").run():
        result["sync_ms"] = median_per_call(scheduler._sync, syncs, 1) * 1000
    with Phase(profile, f"{syncs} reads").run():
        result["read_ms"] = median_per_call(scheduler._read, syncs, 1) * 1000
    result["watched"] = scheduler._watch is not None
    result["idle_sent"] = sum(BenchScheduler.sent.values())
    result["rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if config.get("change", True):
        for how in ("api", "sql"):
            result.update(change_applied(scheduler, BenchScheduler.sent, config["url"], how))
    k = int(config["burst"])
    if k:
        result.update(burst(scheduler, BenchScheduler.sent, k, profile))
        result["rss_burst_mb"] = peak_rss_mb()
    scheduler.close()
    db.dispose_all()
    return result


def start_writer(url: str, how: str, name: str) -> subprocess.Popen[str]:
    """Another process, ready to change task ``name`` (through the API or plain SQL)
    when it reads a line; it then prints the time.time() of its commit."""
    return spawn_writer(Path(__file__).resolve(), {"url": url, "how": how, "name": name})


def writer_main(config: dict[str, Any]) -> None:
    """The other process of the change test: one committed change, then its time."""
    from celery import Celery
    from sqlalchemy import update

    from beatsqlalchemy import api, db

    name, how = config["name"], config["how"]
    t = tables()
    if how == "api":
        app = Celery("bench-writer", set_as_current=False)
        app.conf.beat_sqlalchemy_url = config["url"]
        session = api.open_session(app)
        api.get_task(session, name)  # connected and warm; the change is what is timed
        session.commit()
        print("READY", flush=True)
        sys.stdin.readline()
        api.update_task(session, name, schedule=timedelta(seconds=PROBE_EVERY[0]))
        committed = time.time()
        session.close()
    else:
        engine = db.get_engine(config["url"])
        interval = t["interval"]
        with engine.connect() as connection:
            probe = connection.scalar(select(interval.c.id).where(
                interval.c.every == PROBE_EVERY[0], interval.c.period == PROBE_EVERY[1]))
            connection.commit()
            print("READY", flush=True)
            sys.stdin.readline()
            connection.execute(update(t["task"]).where(t["task"].c.name == name)
                               .values(interval_id=probe, crontab_id=None))
            connection.commit()
            committed = time.time()
    print(json.dumps({"committed": committed}), flush=True)
    db.dispose_all()


def change_applied(scheduler: Any, sent: Counter[int], url: str, how: str) -> dict[str, Any]:
    """The change test, twice: the first change a beat process applies also compiles the
    statements of that path (a few ms, once per process); the second is what a running
    beat spends on each change, and is the one reported."""
    change_once(scheduler, sent, url, how)
    return change_once(scheduler, sent, url, how)


def change_once(scheduler: Any, sent: Counter[int], url: str, how: str) -> dict[str, Any]:
    """Another process changes one task's schedule (to every 5 s, so it enters the near
    window); beat runs its own loop (tick, sleep what tick says) until its in-memory
    window holds the task. Returns beat's time in the sync that applied it and the wall
    time from the writer's commit to the end of that sync; the row is restored after."""
    from beatsqlalchemy.db import begin_write

    t = tables()
    task = t["task"]
    name = CHANGE_TASKS[how]
    engine = scheduler.engine
    with engine.connect() as connection:
        before = connection.execute(select(task).where(task.c.name == name)).mappings().one()
        connection.commit()
    task_pk = before["id"]
    writer = start_writer(url, how, name)
    assert writer.stdin is not None and writer.stdout is not None
    interval = scheduler.config.watch_interval if scheduler._watch else scheduler.config.sync_interval
    scheduler._next_sync = time.monotonic() + interval * random.random()
    syncs = scheduler.syncs
    syncs.clear()
    sent.pop(task_pk, None)
    writer.stdin.write("go\n")
    writer.stdin.flush()
    deadline = time.monotonic() + 60
    applied = False
    while time.monotonic() < deadline:
        wait = scheduler.tick()
        window = getattr(scheduler, "_window", [])
        if sent[task_pk] or any(item[1] == task_pk for item in window):
            applied = True
            break
        time.sleep(min(wait, 1.0))
    committed = json.loads(writer.stdout.readline())["committed"]
    writer.wait(timeout=30)
    result: dict[str, Any] = {f"change_{how}_applied": applied}
    if applied and syncs:
        ended, seconds = syncs[-1]
        result[f"change_{how}_beat_ms"] = seconds * 1000
        result[f"change_{how}_wall_ms"] = (ended - committed) * 1000
    # put the row back as it was (next_run_at set explicitly: no recompute flag)
    restore = {c: before[c] for c in ("interval_id", "crontab_id", "next_run_at", "last_run_at",
                                     "total_run_count", "needs_recompute")}
    with begin_write(engine) as connection:
        connection.execute(delete(t["run"]).where(t["run"].c.periodic_task_id == task_pk))
        connection.execute(task.update().where(task.c.id == task_pk).values(**restore))
    scheduler._read()
    sent.pop(task_pk, None)
    return result


def e2e_main(config: dict[str, Any]) -> dict[str, Any]:
    """K tasks due now, sent by a real DatabaseScheduler to the real Redis broker, against
    a plain loop of ``app.send_task`` of K messages on the same broker."""
    import logging
    import uuid

    import redis
    from celery import Celery

    from beatsqlalchemy import db
    from beatsqlalchemy.schedulers import DatabaseScheduler

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    k = int(config["burst"]) or 2000
    client = redis.Redis.from_url(E2E_BROKER)
    app = Celery("bench", broker=E2E_BROKER, set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=config["url"], result_expires=None, beat_schedule={})

    def queued() -> tuple[int, int]:
        """(messages, distinct task ids) in the default queue."""
        messages = client.lrange("celery", 0, -1)
        ids = {json.loads(m)["headers"]["id"] for m in messages}
        return len(messages), len(ids)

    def plain_loop() -> tuple[float, bool]:
        """The physical limit: a plain loop on one producer, as beat uses one."""
        client.flushdb()
        with app.producer_or_acquire() as producer:
            app.send_task("bench.noop", [], {}, producer=producer)  # connect, declare the queue
            client.flushdb()
            started = time.perf_counter()
            for _ in range(k):
                app.send_task("bench.noop", [], {}, producer=producer, task_id=str(uuid.uuid4()))
            seconds = time.perf_counter() - started
        return seconds, queued() == (k, k)

    client.flushdb()
    scheduler = DatabaseScheduler(app=app)
    scheduler.tick()
    producer = scheduler.producer  # connected before the burst, as in a running beat
    producer.connection.ensure_connection()
    t = tables()
    task, run = t["task"], t["run"]

    def beat_burst(round_: int) -> tuple[float, bool]:
        """K tasks due now, sent by the running scheduler; all on the broker once each."""
        client.flushdb()
        now = datetime.now(UTC)
        with scheduler.engine.begin() as connection:
            hourly = connection.scalar(select(t["interval"].c.id).where(
                t["interval"].c.every == 1, t["interval"].c.period == "hours"))
            connection.execute(insert(task), [
                task_row(f"bench.e2e.{round_}.{i:05d}", now - timedelta(seconds=1), now,
                         interval_id=hourly) for i in range(k)])
            ids = set(connection.scalars(
                select(task.c.id).where(task.c.name.like(f"bench.e2e.{round_}.%"))))
        deadline = time.monotonic() + 300
        started = time.perf_counter()
        scheduler._next_sync = scheduler._read_by = 0.0  # as in the burst: found by a read
        while time.monotonic() < deadline:
            scheduler.tick()
            if client.llen("celery") >= k:
                break
        seconds = time.perf_counter() - started
        for _ in range(3):
            scheduler._sync()
            scheduler.tick()
        count = queued()
        with scheduler.engine.begin() as connection:
            logged = connection.scalar(select(func.count()).select_from(run).where(
                run.c.periodic_task_id.in_(ids), run.c.state == "sent"))
            connection.execute(delete(run).where(run.c.periodic_task_id.in_(ids)))
            connection.execute(delete(task).where(task.c.id.in_(ids)))
        return seconds, count == (k, k) and logged == k

    # rounds of one plain loop then one beat burst: drift on a busy machine hits both alike
    rounds = [(plain_loop(), beat_burst(round_)) for round_ in range(E2E_ROUNDS)]
    scheduler.close()
    db.dispose_all()
    client.flushdb()
    plain_s = statistics.median(plain for (plain, _), _ in rounds)
    beat_s = statistics.median(beat for _, (beat, _) in rounds)
    return {
        "n": config["n"], "k": k,
        "plain_s": plain_s, "plain_per_s": k / plain_s, "plain_once": all(ok for (_, ok), _ in rounds),
        "beat_s": beat_s, "beat_per_s": k / beat_s, "beat_once": all(ok for _, (_, ok) in rounds),
        "ratio": statistics.median(plain / beat for (plain, _), (beat, _) in rounds),
    }


def burst(scheduler: Any, sent: Counter[int], k: int, profile: bool) -> dict[str, Any]:
    """Insert ``k`` tasks due now, time until all are claimed and handed to publish,
    check each went out exactly once (in memory and in the run log), then clean up (in
    read-then-write transactions: beat's heartbeats write meanwhile)."""
    from beatsqlalchemy.db import begin_write

    t = tables()
    task, run = t["task"], t["run"]
    engine = scheduler.engine
    now = datetime.now(UTC)
    with begin_write(engine) as connection:
        hourly = connection.scalar(select(t["interval"].c.id).where(
            t["interval"].c.every == 1, t["interval"].c.period == "hours"))
        rows = [task_row(f"bench.burst.{i:05d}", now - timedelta(seconds=1), now, interval_id=hourly)
                for i in range(k)]
        connection.execute(insert(task), rows)
        ids = set(connection.scalars(select(task.c.id).where(task.c.name.like("bench.burst.%"))))
    sent.clear()
    phase = Phase(profile, f"burst of {k}")
    deadline = time.monotonic() + 300
    with phase.run():
        scheduler._next_sync = scheduler._read_by = 0.0  # the read that finds them is part of the burst
        while sum(sent[i] for i in ids) < k and time.monotonic() < deadline:
            scheduler.tick()
    # a few more syncs and ticks: nothing may go out a second time
    for _ in range(3):
        scheduler._sync()
        scheduler.tick()
    with begin_write(engine) as connection:
        logged = dict(connection.execute(
            select(run.c.periodic_task_id, func.count())
            .where(run.c.periodic_task_id.in_(ids), run.c.state == "sent")
            .group_by(run.c.periodic_task_id)
        ).all())
        connection.execute(delete(run).where(run.c.periodic_task_id.in_(ids)))
        connection.execute(delete(task).where(task.c.id.in_(ids)))
    once = (
        set(sent) == ids and all(sent[i] == 1 for i in ids)
        and set(logged) == ids and all(count == 1 for count in logged.values())
    )
    return {"burst_s": phase.seconds, "burst_runs_per_s": k / phase.seconds if phase.seconds else None,
            "burst_sent": sum(sent[i] for i in ids), "burst_exactly_once": once}


# -- parent: running and reporting ---------------------------------------------------------

def summarize(backend: str, n: int, runs: list[dict[str, Any]], insert_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "n": n, "insert_s": insert_s, "repeats": runs}
    for metric in METRICS:
        values = [r[metric] for r in runs if r.get(metric) is not None]
        row[metric] = statistics.median(values) if values else None
    syncs = [r["sync_ms"] for r in runs]
    row["sync_ms_range"] = [min(syncs), max(syncs)]
    row["watched"] = all(r.get("watched") for r in runs)
    row["window_size"] = max(r["window_size"] for r in runs)
    row["idle_sent"] = sum(r["idle_sent"] for r in runs)
    if any("burst_exactly_once" in r for r in runs):
        row["burst_exactly_once"] = all(r.get("burst_exactly_once") for r in runs)
    for how in ("api", "sql"):
        if any(f"change_{how}_applied" in r for r in runs):
            row[f"change_{how}_applied"] = all(r.get(f"change_{how}_applied") for r in runs)
    return row


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]], k: int) -> str:
    head = ("| backend | N | startup_s | idle_tick_ms | sync_ms | sync range | read_ms | "
            "change api ms (beat / wall) | change sql ms (beat / wall) | rss_mb | rss_burst_mb | "
            f"burst_s (K={k}) | runs/s | once |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        once = r.get("burst_exactly_once")
        changes = []
        for how in ("api", "sql"):
            if r.get(f"change_{how}_applied") is False:
                changes.append("NOT APPLIED")
            else:
                changes.append(f"{fmt(r.get(f'change_{how}_beat_ms'), '.2f')} / "
                               f"{fmt(r.get(f'change_{how}_wall_ms'), ',.0f')}")
        lines.append(
            f"| {r['backend']} | {r['n']:,} | {fmt(r['startup_s'], '.3f')} | "
            f"{fmt(r['idle_tick_ms'], '.4f')} | {fmt(r['sync_ms'], '.4f')} | "
            f"{r['sync_ms_range'][0]:.4f}-{r['sync_ms_range'][1]:.4f} | {fmt(r.get('read_ms'), '.2f')} | "
            f"{changes[0]} | {changes[1]} | "
            f"{fmt(r['rss_mb'], '.1f')} | {fmt(r.get('rss_burst_mb'), '.1f')} | "
            f"{fmt(r.get('burst_s'), '.2f')} | {fmt(r.get('burst_runs_per_s'), ',.0f')} | "
            f"{'-' if once is None else ('yes' if once else 'NO')} |"
        )
    return "\n".join(lines)


def e2e_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | N | K | plain send_task loop (msg/s) | beat (msg/s) | beat / plain | once |",
             "|---|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        once = "yes" if r["beat_once"] and r["plain_once"] else "NO"
        lines.append(f"| {r['backend']} | {r['n']:,} | {r['k']:,} | {r['plain_per_s']:,.0f} | "
                     f"{r['beat_per_s']:,.0f} | {r['ratio']:.0%} | {once} |")
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]], e2e: list[dict[str, Any]]) -> list[str]:
    """One line per target of the bar, for each backend at its largest N."""
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["n"])
        big, small = mine[-1], mine[0]
        growth = max(big.get("rss_burst_mb") or big["rss_mb"], big["rss_mb"]) - small["rss_mb"]
        change = max((v for v in (big.get("change_api_beat_ms"), big.get("change_sql_beat_ms"))
                      if v is not None), default=None)
        ratio = next((r["ratio"] for r in e2e if r["backend"] == backend and r["n"] == big["n"]), None)
        # (label, value, limit, unit, True when the value must stay at or below the limit)
        checks: list[tuple[str, float | None, float, str, bool]] = [
            (f"start-up <= {TARGETS['startup_s']} s", big["startup_s"], TARGETS["startup_s"], "s", True),
            (f"idle tick <= {TARGETS['idle_tick_ms']} ms", big["idle_tick_ms"],
             TARGETS["idle_tick_ms"], "ms", True),
            (f"sync (nothing changed) <= {TARGETS['sync_ms']} ms", big["sync_ms"],
             TARGETS["sync_ms"], "ms", True),
            (f"read of the database (nothing changed) <= {TARGETS['sync_ms']} ms", big.get("read_ms"),
             TARGETS["sync_ms"], "ms", True),
            (f"one changed row applied in <= {TARGETS['change_beat_ms']} ms of beat's time", change,
             TARGETS["change_beat_ms"], "ms", True),
            (f"burst >= {TARGETS['burst_runs_per_s']:,.0f} runs/s, each once",
             big.get("burst_runs_per_s") if big.get("burst_exactly_once") else None,
             TARGETS["burst_runs_per_s"], "runs/s", False),
            (f"peak memory within {TARGETS['rss_growth_mb']:g} MB of N={small['n']:,}", growth,
             TARGETS["rss_growth_mb"], "MB", True),
            (f"e2e send rate on Redis >= {TARGETS['e2e_ratio']:.0%} of plain send_task", ratio,
             TARGETS["e2e_ratio"], "", False),
        ]
        label = "" if backend == "postgresql" and big["n"] >= 1_000_000 else \
            " (the bar is for postgresql at N=1,000,000)"
        lines.append(f"Bar at N={big['n']:,} on {backend}{label}:")
        for name, value, limit, unit, at_most in checks:
            if value is None:
                lines.append(f"- {name}: not measured")
                continue
            ok = value <= limit if at_most else value >= limit
            lines.append(f"- {name}: {value:.4g} {unit} -> {'PASS' if ok else 'MISS'}".replace("  ", " "))
    return lines


#: the heartbeat interval of ``--observability on`` (the default is 5 s)
OBSERVED_HEARTBEAT = 1.0
#: the row label of each ``--observability`` setting
OBSERVED_LABELS = {False: "", True: " +hb+metrics"}



def parent_main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bsa_bench_"))
    rows: list[dict[str, Any]] = []
    e2e_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for backend in args.backends:
            for n in args.sizes:
                url, insert_s = prepare(backend, n, workdir, not args.no_analyze)
                print(f"[{backend} N={n:,}] {n:,} tasks inserted in {insert_s:.1f}s", file=sys.stderr)
                observed_modes = {"off": [False], "on": [True], "both": [False, True]}[args.observability]
                runs_of: dict[bool, list[dict[str, Any]]] = {mode: [] for mode in observed_modes}
                for repeat in range(args.repeats):
                    for observed in observed_modes:  # interleaved: both see the same machine load
                        runs = runs_of[observed]
                        runs.append(run_child(url, n, args, observed=observed))
                        r = runs[-1]
                        print(f"[{backend}{OBSERVED_LABELS[observed]} N={n:,}] run {repeat + 1}: "
                              f"startup {r['startup_s']:.3f}s, "
                              f"idle tick {r['idle_tick_ms']:.4f}ms, sync {r['sync_ms']:.4f}ms, "
                              f"read {r['read_ms']:.2f}ms, "
                              f"change api/sql {fmt(r.get('change_api_beat_ms'), '.2f')}/"
                              f"{fmt(r.get('change_sql_beat_ms'), '.2f')}ms, "
                              f"rss {r['rss_mb']:.1f}MB, burst {fmt(r.get('burst_s'), '.2f')}s",
                              file=sys.stderr)
                for observed, runs in runs_of.items():
                    rows.append(summarize(backend + OBSERVED_LABELS[observed], n, runs, insert_s))
                if args.e2e:
                    e2e = [run_child(url, n, args, mode="e2e") for _ in range(args.repeats)]
                    best = {key: statistics.median(r[key] for r in e2e)
                            for key in ("plain_s", "plain_per_s", "beat_s", "beat_per_s", "ratio")}
                    e2e_rows.append({"backend": backend, "n": n, "k": e2e[0]["k"], **best,
                                     "plain_once": all(r["plain_once"] for r in e2e),
                                     "beat_once": all(r["beat_once"] for r in e2e), "repeats": e2e})
                    print(f"[{backend} N={n:,}] e2e: plain {best['plain_per_s']:,.0f}/s, "
                          f"beat {best['beat_per_s']:,.0f}/s", file=sys.stderr)
            if not args.keep_db:
                drop_database(backend)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started

    print(f"\nDatabaseScheduler, median of {args.repeats} fresh process(es) per row "
          f"({platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; total {elapsed:.0f}s)\n")
    print(table(rows, args.burst))
    if e2e_rows:
        print(f"\nEnd to end on the real Redis broker ({redact_url(E2E_BROKER)}):\n")
        print(e2e_table(e2e_rows))
    print()
    for line in check_targets(rows, e2e_rows):
        print(line)
    problems = [r for r in rows if r["idle_sent"] or r.get("burst_exactly_once") is False
                or r.get("change_api_applied") is False or r.get("change_sql_applied") is False]
    problems += [r for r in e2e_rows if not (r["beat_once"] and r["plain_once"])]
    for r in problems:
        print(f"WARNING: {r['backend']} N={r['n']}: idle sends {r.get('idle_sent')}, burst exactly "
              f"once: {r.get('burst_exactly_once', r.get('beat_once'))}, changes applied: "
              f"{r.get('change_api_applied')}/{r.get('change_sql_applied')}")
    if args.json:
        report = {"python": platform.python_version(), "machine": platform.machine(),
                  "cpus": os.cpu_count(), "repeats": args.repeats, "burst": args.burst,
                  "targets": TARGETS, "elapsed_s": elapsed, "results": rows, "e2e_redis": e2e_rows}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nJSON written to {args.json}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[1000, 10_000],
                        help="comma-separated task counts (1k, 100k, 1m suffixes allowed); "
                             "the full run is 1k,10k,100k,1m")
    parser.add_argument("--backends", type=parse_backends, default=["sqlite", "postgresql"],
                        help="comma-separated: sqlite, postgresql, mysql (MariaDB)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--burst", type=int, default=2000, metavar="K",
                        help="tasks due at once in the burst test (0 skips it)")
    parser.add_argument("--ticks", type=int, default=200, help="batches of 100 idle ticks")
    parser.add_argument("--syncs", type=int, default=200, help="syncs timed per process")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--profile", action="store_true",
                        help="run each phase under cProfile and print the top calls to stderr")
    parser.add_argument("--no-analyze", action="store_true",
                        help="skip VACUUM ANALYZE / ANALYZE TABLE after the bulk insert")
    parser.add_argument("--keep-db", action="store_true", help="keep the server databases at the end")
    parser.add_argument("--e2e", action="store_true",
                        help="also run the end-to-end burst on the real Redis broker "
                             f"({E2E_BROKER}, flushed), at each N")
    parser.add_argument("--no-change", action="store_true", help="skip the change_applied test")
    parser.add_argument("--observability", choices=("off", "on", "both"), default="off",
                        help="beat's heartbeats (every 1 s) and metrics endpoint: off, on, or both "
                             "(interleaved runs, one row each)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        writer_main(json.loads(args.writer))
        return 0
    if args.child:
        config = json.loads(args.child)
        main_of = e2e_main if config.get("mode") == "e2e" else child_main
        result = main_of(config)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
