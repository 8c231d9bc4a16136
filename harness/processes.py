"""Real ``celery beat`` and ``celery worker`` processes for the end-to-end tests.

Each test gets a :class:`Cluster`: a directory holding a small Celery app module
(``e2eapp.py``), the record file its task appends one JSON line to per execution,
and the logs, pid files and schedule files of every process it starts. Processes
run in their own process group and die with the test process (Linux); the
cluster stops every one of them, killing what does not stop in time.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

#: the database sync interval of the beat under test
SYNC_INTERVAL = 0.5
#: how long a process may take to start, and to stop before it is killed
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def app_module(doc: str, prefix: str, imports: tuple[str, ...] = (), settings: str = "",
               body: str = "") -> str:
    """The source of a small Celery app module on beatsqlalchemy, configured from the
    environment variables ``<prefix>_BROKER_URL``, ``_DB_URL``, ``_SYNC_INTERVAL`` and
    ``_QUEUE``; ``imports`` (module names), ``settings`` (lines of its ``conf.update``) and
    ``body`` add to it."""
    name = prefix.lower() + "app"
    modules = "".join(f"import {module}\n" for module in sorted({*imports, "os"}))
    return (
        f'"""{doc}"""\n\n{modules}\nfrom celery import Celery\n\n'
        f'app = Celery("{name}", broker=os.environ["{prefix}_BROKER_URL"])\n'
        f"app.conf.update(\n"
        f'    beat_sqlalchemy_url=os.environ["{prefix}_DB_URL"],\n'
        f'    beat_sqlalchemy_sync_interval=float(os.environ["{prefix}_SYNC_INTERVAL"]),\n'
        f"{settings}"
        f'    task_default_queue=os.environ["{prefix}_QUEUE"],\n'
        f"    broker_connection_retry_on_startup=True,\n"
        f'    timezone="UTC",\n'
        f")\n{body}"
    )


#: the app of the end-to-end tests: its one task appends a line per execution to ``E2E_RECORD``;
#: ``E2E_CONF`` (JSON) adds settings
APP_MODULE = app_module("The Celery app the end-to-end tests run beat and a worker on.", "E2E",
                        imports=("json", "time"),
                        settings='    **json.loads(os.environ.get("E2E_CONF") or "{}"),\n', body='''\
RECORD = os.environ["E2E_RECORD"]


@app.task(bind=True, name="e2e.record")
def record(self, tag, *args, **kwargs):
    """Append one line per execution: which run, with what, when."""
    line = json.dumps({
        "tag": tag, "args": list(args), "kwargs": kwargs, "id": self.request.id,
        "t": time.time(), "task": self.name,
    })
    with open(RECORD, "a", encoding="utf-8") as out:
        out.write(line + "\\n")
''')


#: the e2e app, tracking outcomes (its one setting; nothing of ours imported), with a task
#: that fails and one that succeeds on its retry
OUTCOMES_APP = APP_MODULE.replace(
    "    broker_connection_retry_on_startup=True,\n",
    "    broker_connection_retry_on_startup=True,\n    beat_sqlalchemy_track_outcomes=True,\n",
) + '''

@app.task(name="e2e.fail")
def fail(tag):
    """Fails every time, with a message longer than any error the run log keeps."""
    record(tag)
    raise KeyError("no such account " + "x" * 2000)


@app.task(bind=True, name="e2e.flaky", max_retries=3)
def flaky(self, tag):
    """Fails its first attempt (and asks for a retry), then succeeds."""
    record(tag)
    if not self.request.retries:
        raise self.retry(exc=ConnectionError("the mail server said later"), countdown=0.2)
    return "ok"
'''


T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL the child when the test process dies, so none is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class CeleryProcess:
    """One ``python -m celery`` process, its output going to a log file."""

    def __init__(self, role: str, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.role = role
        self.argv = argv
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", *argv], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait for a line matching ``pattern``; fail early if the process exits."""
        regex = re.compile(pattern)

        def seen() -> re.Match[str] | None:
            match = regex.search(self.log())
            if match is None and not self.alive():
                raise AssertionError(f"{self.role} exited with code {self.process.returncode} "
                                     f"before logging {pattern!r}")
            return match

        return wait_for(seen, timeout, f"{self.role} to log {pattern!r}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{self.role} still running after {timeout:g}s") from exc

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill9(self) -> None:
        """SIGKILL, no chance to clean up (a crash)."""
        self._signal_group(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def stop(self) -> int | None:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not exit in time."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        else:
            self._signal_group(signal.SIGKILL)  # leftovers of the group, if any
        self._log.close()
        return self.process.returncode


@dataclass(frozen=True)
class Record:
    """One execution of the ``e2e.record`` task, as the worker wrote it."""

    tag: str
    args: list[Any]
    kwargs: dict[str, Any]
    id: str
    t: float
    task: str


class Processes:
    """The processes a test started, stopped together at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[CeleryProcess] = []

    def start(self, role: str, argv: list[str], cwd: Path, env: dict[str, str]) -> CeleryProcess:
        """Start ``python -m celery <argv>``; its log is ``<root>/<role>[-n].log``."""
        count = sum(1 for p in self.processes if p.role.split("-")[0] == role) + 1
        name = role if count == 1 else f"{role}-{count}"
        process = CeleryProcess(name, argv, cwd, env, self.root / f"{name}.log")
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> Iterator[tuple[str, str]]:
        for process in self.processes:
            yield f"{process.role} (pid {process.pid}) {' '.join(process.argv)}", process.log()


class Cluster(Processes):
    """Beat and workers of the test app ``e2eapp`` on one broker and one database."""

    def __init__(self, root: Path, broker_url: str, db_url: str, queue: str) -> None:
        super().__init__(root)
        self.broker_url = broker_url
        self.db_url = db_url
        self.queue = queue
        self.record_path = root / "records.jsonl"
        (root / "e2eapp.py").write_text(APP_MODULE, encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
        self.env.update(
            E2E_BROKER_URL=broker_url, E2E_DB_URL=db_url, E2E_QUEUE=queue,
            E2E_RECORD=str(self.record_path), E2E_SYNC_INTERVAL=str(SYNC_INTERVAL),
            PYTHONUNBUFFERED="1",
        )

    def _start(self, role: str, argv: list[str]) -> CeleryProcess:
        return self.start(role, ["-A", "e2eapp", *argv], self.root, self.env)

    def beat(self, wait: bool = True) -> CeleryProcess:
        """Start ``celery beat -S beatsqlalchemy`` (the entry-point alias); by default
        wait for its first sync. Each beat has a pid file of its own."""
        number = sum(1 for p in self.processes if p.role.split("-")[0] == "beat") + 1
        process = self._start("beat", [
            "beat", "-S", "beatsqlalchemy", "-l", "INFO",
            "--pidfile", str(self.root / f"beat-{number}.pid"),
            "--schedule", str(self.root / "beat-schedule"),
        ])
        if wait:
            process.wait_log(r"beat: \d+ task\(s\) from beat_schedule installed")
        return process

    def worker(self, wait: bool = True) -> CeleryProcess:
        """Start a solo worker on this test's queue; by default wait until it is ready."""
        process = self._start("worker", [
            "worker", "-l", "INFO", "-P", "solo", "-Q", self.queue, "-n", f"{self.queue}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            "--pidfile", str(self.root / "worker.pid"),
        ])
        if wait:
            process.wait_log(r"\S+@\S+ ready\.")
        return process

    def wait_runs(self, tag: str | None, count: int = 1, *, timeout: float, since: float = 0.0,
                  args: list[Any] | None = None) -> list[Record]:
        """Wait for ``count`` executions of ``tag`` (any, when None) after ``since``,
        with ``args`` when given; returns all those seen, oldest first."""

        def matching() -> list[Record]:
            found = [r for r in self.records(tag) if r.t > since and (args is None or r.args == args)]
            return found if len(found) >= count else []

        return wait_for(matching, timeout, f"{count} run(s) of {tag or 'any task'}")

    def records(self, tag: str | None = None) -> list[Record]:
        """Every execution so far (of ``tag`` only, when given), oldest first."""
        if not self.record_path.exists():
            return []
        found = []
        for line in self.record_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = Record(**json.loads(line))
                if tag is None or record.tag == tag:
                    found.append(record)
        return sorted(found, key=lambda r: r.t)

