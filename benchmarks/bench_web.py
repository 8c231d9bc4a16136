"""Benchmark the web console's task list on PostgreSQL: the time a real ``beatsqlalchemy
web`` process takes to answer (a request from 127.0.0.1, logged in) with N tasks in the
database, for the first page, a deep page (a cursor 90 % down the table), a name search, a
task search, filters, the overview and ``GET /health``; medians of ``--repeats`` requests
after one warm-up, printed as a markdown table, with the console process's memory (VmRSS,
VmHWM) at the end.

Usage (from the repository root; ``pip install -e '.[web,postgresql]'``)::

    python benchmarks/bench_web.py [--sizes 1k,1m] [--repeats 15] [--analyze] [--keep-db]

The tasks are written with one ``INSERT ... SELECT generate_series`` (75 % interval,
25 % crontab, one in ten disabled, one in a thousand from the configuration, one in ten
thousand broken, one in ten thousand failing, next runs spread over the coming days). No
``ANALYZE`` is run unless ``--analyze``: the queries must be fast without planner statistics
(autovacuum may be off).
The database, ``BEAT_BENCH_DB`` (default ``bsa_bench_web``) on ``BEAT_BENCH_POSTGRESQL_URL``,
is dropped and recreated for every N.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
#: the repository root: the harness shared with the tests lives there (it is not installed)
sys.path.insert(0, str(HERE.parent))

import bench_common as common  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from beatsqlalchemy import db, listing, migrate  # noqa: E402
from beatsqlalchemy.models import PeriodicTask  # noqa: E402
from beatsqlalchemy.web.auth import hash_password  # noqa: E402
from harness import servers  # noqa: E402
from harness.web import PASSWORD, USER, ConsoleServer  # noqa: E402

DATABASE = os.environ.get("BEAT_BENCH_DB", "bsa_bench_web")
#: the bar: every case at 1M within this (milliseconds)
BAR_MS = 150.0
FILL = """
INSERT INTO celery_periodic_task (name, task, interval_id, crontab_id, args, kwargs, headers, one_off,
    enabled, total_run_count, description, next_run_at, source, schedule_error, date_changed,
    consecutive_failures)
SELECT 'task-' || lpad(i::text, 7, '0'), 'bench.task_' || lpad((i % 100)::text, 2, '0'),
    CASE WHEN i % 4 <> 0 THEN :interval_id END, CASE WHEN i % 4 = 0 THEN :crontab_id END,
    '[]', '{}', '{}', false, i % 10 <> 0, 0, '',
    CASE WHEN i % 10 <> 0 THEN now() + ((i::bigint * 7919) % 604800) * interval '1 second' END,
    CASE WHEN i % 1000 = 0 THEN 'config' END,
    CASE WHEN i % 10000 = 5 THEN 'kwargs: invalid value: must be a JSON object' END, now(),
    CASE WHEN i % 10000 = 7 THEN 3 ELSE 0 END
FROM generate_series(1, :count) AS i
"""


def fill(url: str, count: int, analyze: bool) -> float:
    """Write ``count`` tasks; returns the seconds it took."""
    engine = db.get_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        interval_id = connection.execute(text(
            "INSERT INTO celery_interval_schedule (every, period) VALUES (5, 'minutes') RETURNING id"
        )).scalar()
        crontab_id = connection.execute(text(
            "INSERT INTO celery_crontab_schedule (minute, hour, day_of_week, day_of_month, month_of_year, "
            "timezone) VALUES ('0', '2', '*', '*', '*', 'Europe/Berlin') RETURNING id")).scalar()
        connection.execute(text(FILL), {"interval_id": interval_id, "crontab_id": crontab_id, "count": count})
    if analyze:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE celery_periodic_task"))
    return time.perf_counter() - started


def deep_cursor(url: str, count: int) -> str:
    """The cursor of a page 90 % down the table in next-run order (found once, not timed)."""
    with db.session_factory(db.get_engine(url))() as session:
        task = session.scalars(select(PeriodicTask).where(PeriodicTask.next_run_at.is_not(None))
                               .order_by(PeriodicTask.next_run_at, PeriodicTask.id)
                               .offset(int(count * 0.9 * 0.9)).limit(1)).one()
        return listing.cursor_after(task, "next")


class Client:
    """A logged-in browser stand-in: a cookie jar and the CSRF token of the login form."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        page = self.get("/login")
        token = html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))  # type: ignore[union-attr]
        body = urllib.parse.urlencode({"csrf_token": token, "name": USER, "password": PASSWORD}).encode()
        self.opener.open(f"{base}/login", body).read()

    def get(self, path: str) -> str:
        try:
            with self.opener.open(self.base + path) as answer:
                return str(answer.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and path.startswith("/health"):  # unhealthy is an answer too
                return str(exc.read().decode())
            found = re.search(r'class="flash error"[^>]*>([^<]*)', exc.read().decode())
            reason = html.unescape(found.group(1)) if found else ""
            raise SystemExit(f"GET {path}: {exc.code} {reason}") from None

    def timed(self, path: str, repeats: int) -> tuple[float, int]:
        """The median milliseconds of ``repeats`` GETs (after one warm-up), and rows shown."""
        shown = self.get(path).count('<tr data-name="')
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.get(path)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), shown


def cases(cursor: str) -> dict[str, str]:
    return {
        "first page (by next run)": "/tasks",
        "first page (by name)": "/tasks?sort=name",
        "deep page (90 %, by next run)": f"/tasks?after={cursor}",
        "name search 'task-00009'": "/tasks?q=task-00009",
        "task search 'bench.task_42'": "/tasks?task=bench.task_42",
        "filter: disabled": "/tasks?enabled=false",
        "filter: crontab": "/tasks?kind=crontab",
        "filter: source config": "/tasks?source=config",
        "filter: broken": "/tasks?broken=true",
        "overview (status, failing tasks)": "/",
        "GET /health": "/health",
    }


def run(count: int, repeats: int, analyze: bool, keep: bool) -> list[tuple[str, int, float, int]]:
    url = servers.create_database("postgresql", DATABASE, "bench", replace=True)
    migrate.upgrade(db.get_engine(url))
    seconds = fill(url, count, analyze)
    print(f"filled {count:,} tasks in {seconds:.1f} s{' (analyzed)' if analyze else ''}", file=sys.stderr)
    rows: list[tuple[str, int, float, int]] = []
    with tempfile.TemporaryDirectory() as root:
        server = ConsoleServer(Path(root), url, servers.redis_url("bench"), hash_password(PASSWORD))
        process = server.serve()
        try:
            client = Client(server.url)
            for label, path in cases(deep_cursor(url, count)).items():
                median, shown = client.timed(path, repeats)
                rows.append((label, count, median, shown))
            memory = {key: common.proc_status_mb(key, process.pid) for key in ("VmRSS", "VmHWM")}
            print(f"console process at {count:,} tasks: RSS {memory['VmRSS']:.0f} MB, "
                  f"peak {memory['VmHWM']:.0f} MB", file=sys.stderr)
        finally:
            server.stop_all()
    if not keep:
        servers.drop_database("postgresql", DATABASE, "bench")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=common.parse_sizes, default=common.parse_sizes("1k,1m"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--analyze", action="store_true", help="VACUUM ANALYZE after the fill")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    results = [row for count in options.sizes for row in run(count, options.repeats, options.analyze,
                                                              options.keep_db)]
    print("| case | tasks | median ms | rows shown |")
    print("|---|---:|---:|---:|")
    for label, count, median, shown in results:
        print(f"| {label} | {count:,} | {median:.1f} | {shown} |")
    slow = [r for r in results if r[1] >= 1_000_000 and r[2] > BAR_MS]
    if slow:
        print(f"over {BAR_MS:.0f} ms at 1M: {', '.join(r[0] for r in slow)}", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
