"""Fixtures of the fault suite: the Redis broker, new databases, TCP proxies in front of
the database servers, real beat processes behind them (started with
``harness.processes``), and the table of injected faults printed at the end.

Servers and broker are those of ``harness.servers`` (``BEAT_TEST_POSTGRESQL_URL``,
``BEAT_TEST_MYSQL_URL``; the ``redis_url`` fixture of ``tests/conftest.py``). On a failure,
the logs of every process a test started are added to the report (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from beatsqlalchemy import db, migrate
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from harness.processes import APP_MODULE, CeleryProcess, Cluster, Processes, wait_for
from harness.proxy import Proxy
from harness.reader import QueueReader
from harness.servers import Databases

#: the Celery task every test task sends (the harness's app defines it)
TASK = "e2e.record"
#: the harness's app, plus the settings a test passes as JSON in ``E2E_EXTRA_CONF``
APP_WITH_EXTRA = APP_MODULE + '\napp.conf.update(json.loads(os.environ.get("E2E_EXTRA_CONF") or "{}"))\n'

#: one row per fault injected (see ``fault_table``), printed at the end of the run
FAULT_ROWS: list[dict[str, Any]] = []
FAULT_COLUMNS = ("backend", "fault", "outage (s)", "noticed after (s)", "first send after restore (s)",
                 "sent during cut", "max catch-up/task", "duplicates", "lost", "crashes",
                 "log lines (start/end)")



# -- services -----------------------------------------------------------------------------------

@pytest.fixture
def make_database() -> Iterator[Callable[..., str]]:
    """Makes a new database on a server (``postgresql`` or ``mysql``), migrated to head
    unless ``migrated=False``; returns its URL (as the server's admin user). Dropped at
    teardown."""
    databases = Databases()

    def make(backend: str, migrated: bool = True) -> str:
        url = databases.new(backend, "faults")
        if migrated:
            migrate.upgrade(db.get_engine(url))
        return url

    yield make
    databases.drop_all()


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str], Proxy]]:
    """Makes a proxy in front of the server of a database URL; all closed at teardown."""
    proxies: list[Proxy] = []

    def make(url: str) -> Proxy:
        parsed = make_url(url)
        default = 5432 if parsed.get_backend_name() == "postgresql" else 3306
        proxy = Proxy(parsed.port or default, parsed.host or "127.0.0.1")
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# -- a real beat behind a proxy -----------------------------------------------------------------

class BeatBehindProxy:
    """A real ``celery beat -S beatsqlalchemy`` whose database is reached through a
    proxy, the tasks it runs and the messages it sent (read from the broker)."""

    def __init__(
        self, backend: str, direct_url: str, proxy: Proxy, processes: Processes, redis_url: str, root: Path,
        *, beat_url: str | None = None, sync_interval: float | None = None,
        conf: dict[str, Any] | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        #: the database as its owner sees it, not through the proxy (setup and checks)
        self.direct_url = direct_url
        self.proxy = proxy
        self.processes = processes
        self.beat_url = proxy.url(beat_url or direct_url)
        queue = f"faults-{uuid.uuid4().hex[:10]}"
        self.cluster = Cluster(root, redis_url, self.beat_url, queue=queue)
        (root / "e2eapp.py").write_text(APP_WITH_EXTRA, encoding="utf-8")
        self.cluster.env["E2E_EXTRA_CONF"] = json.dumps(conf or {})
        if sync_interval is not None:
            self.cluster.env["E2E_SYNC_INTERVAL"] = str(sync_interval)
        self.reader = QueueReader(redis_url, queue)
        #: name -> every (seconds) of the tasks created by ``create_tasks``
        self.tasks: dict[str, int] = {}
        self.beat: CeleryProcess | None = None

    def create_tasks(self, tasks: dict[str, int], url: str | None = None) -> None:
        """Interval tasks ``name -> every seconds`` sending ``e2e.record(name)``, written
        directly (or as the user of ``url``)."""
        with db.session_factory(db.get_engine(url or self.direct_url))() as session:
            for name, every in tasks.items():
                PeriodicTask.update_or_create(session, name=name, defaults={
                    "task": TASK, "interval": {"every": every, "period": "seconds"}, "args": [name],
                })
        self.tasks.update(tasks)

    def start(self, wait: bool = True) -> CeleryProcess:
        """Start consuming the queue, then the beat (by default, wait for its first sync)."""
        self.reader.start()
        self.beat = self.cluster.beat(wait=wait)
        self.processes.processes.append(self.beat)  # stopped, and its log reported, by the fixture
        return self.beat

    def wait_steady(self, runs: int = 2, timeout: float = 20) -> None:
        """Wait until every task created by ``create_tasks`` was sent ``runs`` times."""

        def enough() -> bool:
            counts = Counter(m.args[0] for m in self.reader.messages if m.args)
            return all(counts[name] >= runs for name in self.tasks)

        wait_for(enough, timeout, f"{runs} runs of every task")

    def log(self) -> str:
        assert self.beat is not None
        return self.beat.log()

    def wait_log(self, pattern: re.Pattern[str], count: int = 1, timeout: float = 5) -> float:
        """Wait until ``pattern`` was logged ``count`` times; returns when it was seen."""
        wait_for(lambda: len(pattern.findall(self.log())) >= count, timeout,
                 f"beat to log {pattern.pattern!r}", 0.02)
        return time.time()

    def run_log(self) -> dict[str, PeriodicTaskRun]:
        """The run log by task id, read directly."""
        with db.session_factory(db.get_engine(self.direct_url))() as session:
            return {run.task_id: run for run in session.scalars(select(PeriodicTaskRun))}

    def stop(self) -> bool:
        """Stop beat (SIGTERM) and the reader; True when beat was still running."""
        assert self.beat is not None
        alive = self.beat.alive()
        self.beat.stop()
        time.sleep(0.3)
        self.reader.stop()
        self.reader.delete_queue()
        return alive


@pytest.fixture
def beat_behind_proxy(make_database: Callable[..., str], make_proxy: Callable[[str], Proxy],
                      processes: Processes, redis_url: str, tmp_path: Path) -> Callable[..., BeatBehindProxy]:
    """Makes a beat (not started) behind a new proxy, on a new migrated database of
    ``backend`` unless ``url`` names one."""

    def make(backend: str, url: str | None = None, **options: Any) -> BeatBehindProxy:
        url = url or make_database(backend)
        root = tmp_path / f"{backend}-{uuid.uuid4().hex[:6]}"
        return BeatBehindProxy(backend, url, make_proxy(url), processes, redis_url, root, **options)

    return make


# -- reporting ----------------------------------------------------------------------------------

@pytest.fixture
def fault_table() -> list[dict[str, Any]]:
    """Where tests add a row per fault injected; printed as a table at the end."""
    return FAULT_ROWS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FAULT_ROWS:
        return
    terminalreporter.section("faults injected")
    terminalreporter.write_line("| " + " | ".join(FAULT_COLUMNS) + " |")
    terminalreporter.write_line("|" + "---|" * len(FAULT_COLUMNS))
    for row in FAULT_ROWS:
        terminalreporter.write_line("| " + " | ".join(str(row.get(c, "-")) for c in FAULT_COLUMNS) + " |")
