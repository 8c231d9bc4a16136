#!/usr/bin/env python
"""One-command demo, no server needed: beat and a worker on a SQLite schedule.

    python examples/demo.py [--seconds 20]

It adds two tasks to a fresh SQLite database (created on first use), starts
``celery -A tasks beat -S beatsqlalchemy`` and ``celery -A tasks worker`` on a
filesystem broker, prints what beat sends and what the worker runs, stops both
after ``--seconds`` and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

EXAMPLES = Path(__file__).resolve().parent
SENT = re.compile(r"Sending due task (?P<name>\S+) \((?P<task>[^)]+)\)")
RAN = re.compile(r"Task (?P<task>\S+)\[(?P<id>[0-9a-f-]+)\] succeeded in [0-9.e-]+s: (?P<result>.*)")
PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")
STOP_TIMEOUT = 15.0
DRAIN_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    parser.add_argument(
        "--data-dir", type=Path, default=EXAMPLES / ".demo",
        help="where the demo keeps its database, broker messages and logs (default examples/.demo)",
    )
    return parser.parse_args(argv)


def prepare(data_dir: Path) -> dict[str, str]:
    """A clean demo database and broker folder; the environment both processes share."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("demo.sqlite3*"):
        stale.unlink()
    messages = data_dir / "broker" / "messages"
    if messages.is_dir():
        for message in messages.glob("*.msg"):
            message.unlink()
    env = dict(os.environ)
    env.update(
        EXAMPLE_DATA_DIR=str(data_dir),
        BROKER_URL="filesystem://",
        BEAT_SQLALCHEMY_URL=f"sqlite:///{data_dir / 'demo.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return env


def add_tasks(env: dict[str, str]) -> str:
    """Add two tasks the way an application would (this also creates the database)."""
    from datetime import timedelta

    os.environ.update(env)
    sys.path.insert(0, str(EXAMPLES))
    from tasks import app

    from beatsqlalchemy.db import dispose_all, redact
    from beatsqlalchemy.schedulers import DatabaseScheduler

    scheduler = DatabaseScheduler(app=app)
    scheduler.add(name="sub-every-3-seconds", task="tasks.sub", schedule=timedelta(seconds=3),
                  args=(10, 3))
    scheduler.add(name="echo-every-2-seconds", task="tasks.echo", schedule=timedelta(seconds=2),
                  args=["hello"], kwargs={"from": "demo"})
    dispose_all()
    return redact(env["BEAT_SQLALCHEMY_URL"])


def start(role: str, command: list[str], env: dict[str, str], log: Path,
          lines: queue.Queue[tuple[float, str, str]]) -> subprocess.Popen[str]:
    """Start ``celery <command>`` in examples/; a thread copies its output to ``log``
    and hands every line to the main loop."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", *command], cwd=EXAMPLES, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        bufsize=1,
    )

    def pump(stream: IO[str]) -> None:
        with log.open("w", encoding="utf-8") as out:
            for line in stream:
                out.write(line)
                out.flush()
                lines.put((time.monotonic(), role, line.rstrip()))

    assert process.stdout is not None
    threading.Thread(target=pump, args=(process.stdout,), daemon=True).start()
    return process


def stop(*processes: subprocess.Popen[str]) -> list[int]:
    """Ask the processes to shut down (SIGTERM: a warm shutdown); kill any that hang."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


class Report:
    """Turns beat and worker log lines into a readable running commentary."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.sent: Counter[str] = Counter()
        self.ran: Counter[str] = Counter()
        self.problems: list[str] = []

    def feed(self, when: float, role: str, line: str) -> None:
        stamp = f"{when - self.started:5.1f}s"
        if role == "beat" and (match := SENT.search(line)):
            self.sent[match["name"]] += 1
            print(f"{stamp}  beat   -> sent {match['name']} ({match['task']})", flush=True)
        elif role == "worker" and (match := RAN.search(line)):
            self.ran[match["task"]] += 1
            print(f"{stamp}  worker <- {match['task']} returned {match['result']}", flush=True)
        elif PROBLEM.search(line):
            self.problems.append(f"{role}: {line}")
            print(f"{stamp}  {role}: {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    data_dir: Path = options.data_dir.resolve()
    env = prepare(data_dir)
    print(f"demo: database {add_tasks(env)} with 2 tasks added "
          "(plus add-every-5-seconds from beat_schedule)", flush=True)
    lines: queue.Queue[tuple[float, str, str]] = queue.Queue()
    started = time.monotonic()
    report = Report(started)
    worker = start("worker", ["worker", "-l", "INFO", "-P", "solo", "-n", "demo@%h",
                              "--without-mingle", "--without-gossip", "--without-heartbeat"],
                   env, data_dir / "worker.log", lines)
    beat = start("beat", ["beat", "-S", "beatsqlalchemy", "-l", "INFO",
                          "--pidfile", str(data_dir / "beat.pid"),
                          "--schedule", str(data_dir / "beat-schedule")],
                 env, data_dir / "beat.log", lines)
    print(f"demo: beat (pid {beat.pid}) and worker (pid {worker.pid}) started; "
          f"running for {options.seconds:g}s", flush=True)
    crashed = None
    try:
        while time.monotonic() - started < options.seconds:
            with contextlib.suppress(queue.Empty):
                report.feed(*lines.get(timeout=0.2))
            for role, process in (("beat", beat), ("worker", worker)):
                if process.poll() is not None and crashed is None:
                    crashed = f"{role} exited early with code {process.returncode}"
            if crashed:
                break
    except KeyboardInterrupt:
        print("demo: interrupted", flush=True)
    finally:
        (beat_code,) = stop(beat)
        time.sleep(DRAIN_SECONDS)  # the worker picks up what beat sent last
        (worker_code,) = stop(worker)
    time.sleep(0.2)  # let the output threads pass on the last lines
    while not lines.empty():
        report.feed(*lines.get_nowait())
    elapsed = time.monotonic() - started
    runs = sum(report.ran.values())
    detail = ", ".join(f"{task} x{count}" for task, count in sorted(report.ran.items())) or "none"
    print(f"demo: {runs} run(s) executed by the worker in {elapsed:.0f}s "
          f"({sum(report.sent.values())} sent by beat; {detail}); logs in {data_dir}", flush=True)
    if crashed:
        print(f"demo: {crashed}; see {data_dir}", file=sys.stderr)
        return 1
    if runs == 0:
        print(f"demo: nothing ran; beat exited {beat_code}, worker exited {worker_code}; "
              f"see the logs in {data_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
