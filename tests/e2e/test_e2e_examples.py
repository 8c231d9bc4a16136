"""The scripts in examples/ run as a user runs them, against a test database."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from beatsqlalchemy.db import session_factory
from beatsqlalchemy.models import CrontabSchedule, PeriodicTask
from harness.processes import Processes, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
#: the examples keep the default sync interval (1 s); plus process and broker latency
EFFECT = 1.0 + 1.0
#: variables that would point the examples somewhere else
EXAMPLE_VARIABLES = ("BEAT_SQLALCHEMY_URL", "BROKER_URL", "EXAMPLE_DATA_DIR")


def example_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_VARIABLES}
    env.update(EXAMPLE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **values)
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """Run a script from the repository root in its own process group; return its output,
    failing on a non-zero exit. Whatever it leaves behind is killed."""
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{' '.join(argv)} exited {process.returncode}:\n{output}"
    return output


def task(engine: Engine, name: str) -> PeriodicTask | None:
    """The task as stored now, read in a short transaction (on SQLite an open one would
    keep the scripts and beat from writing)."""
    with session_factory(engine)() as session:
        return session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).one_or_none()


def count(engine: Engine, model: type[Any]) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_addtask_example_as_written(db_url: str, engine: Engine, tmp_path: Path) -> None:
    env = example_env(tmp_path, BEAT_SQLALCHEMY_URL=db_url)
    output = run(["examples/addtask.py"], env)
    assert output.strip().splitlines()[-1] == "<freq: 30.00 seconds>"

    broadcast = task(engine, "tasks.boardcast_to")
    assert broadcast is not None and broadcast.crontab is not None
    assert broadcast.task == "tasks.boardcast_to"
    assert str(broadcast.crontab) == "*/1 * * * * (UTC)"
    assert broadcast.args == [1, 3, 4, "a"] and broadcast.kwargs == {"pp": "workd"}
    assert broadcast.queue == "noexist" and not broadcast.exchange
    assert broadcast.enabled and broadcast.next_run_at is not None
    assert broadcast.next_run_at.second == 0

    direct = task(engine, "tasks.direct_to")
    assert direct is not None and direct.interval is not None
    assert (direct.interval.every, direct.interval.period) == (30, "seconds")
    assert direct.args == [1, 2, 3, 4] and direct.kwargs == {"hello": "world"}
    assert direct.enabled and direct.next_run_at is not None

    # running it again updates the same rows
    run(["examples/addtask.py"], env)
    assert count(engine, PeriodicTask) == 2
    assert count(engine, CrontabSchedule) == 1


def test_add_task_and_rem_task_examples_while_beat_runs(
    db_url: str, engine: Engine, redis_url: str, processes: Processes,
    tmp_path: Path,
) -> None:
    env = example_env(tmp_path, BEAT_SQLALCHEMY_URL=db_url, BROKER_URL=redis_url)
    worker = processes.start("worker", [
        "-A", "tasks", "worker", "-l", "INFO", "-P", "solo",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ], EXAMPLES, env)
    beat = processes.start("beat", [
        "-A", "tasks", "beat", "-S", "beatsqlalchemy", "-l", "INFO",
        "--pidfile", str(tmp_path / "beat.pid"), "--schedule", str(tmp_path / "beat-schedule"),
    ], EXAMPLES, env)
    worker.wait_log(r"\S+@\S+ ready\.")
    beat.wait_log(r"beat: 2 task\(s\) from beat_schedule installed")  # add-every-5-seconds + cleanup

    # add_task.py: the task is stored and beat sends it, the worker runs it
    added = time.time()
    assert run(["examples/add_task.py"], env).strip() == "added sub-perminute"
    row = task(engine, "sub-perminute")
    assert row is not None and row.task == "tasks.sub" and row.args == [1, 1]
    assert row.interval is not None and (row.interval.every, row.interval.period) == (3, "seconds")
    worker.wait_log(r"Task tasks\.sub\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: 0",
                    timeout=3 + EFFECT + 3)
    assert time.time() - added <= 3 + EFFECT + 3
    assert "Sending due task sub-perminute (tasks.sub)" in beat.log()

    # rem_task.py: the row is gone and beat stops sending it
    assert run(["examples/rem_task.py"], env).strip() == "removed sub-perminute"
    assert task(engine, "sub-perminute") is None
    time.sleep(EFFECT)
    sent = beat.log().count("Sending due task sub-perminute")
    time.sleep(3.5)  # longer than its interval
    assert beat.log().count("Sending due task sub-perminute") == sent, "sent after rem_task.py"
    assert run(["examples/rem_task.py"], env).strip() == "there was no sub-perminute to remove"
    assert beat.alive() and worker.alive()


def test_demo_runs_beat_and_a_worker_with_no_server(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    output = run(["examples/demo.py", "--seconds", "12", "--data-dir", str(data)],
                 example_env(tmp_path), timeout=90)
    summary = output.strip().splitlines()[-1]
    match = re.match(r"demo: (\d+) run\(s\) executed by the worker in \d+s \((\d+) sent by beat", summary)
    assert match, output
    executed, sent = int(match[1]), int(match[2])
    assert executed >= 1 and sent >= executed, output
    assert "beat   -> sent " in output and "worker <- tasks." in output
    assert (data / "demo.sqlite3").exists()

    # both processes were stopped: neither is left running
    pids = re.search(r"beat \(pid (\d+)\) and worker \(pid (\d+)\)", output)
    assert pids, output
    for pid in map(int, pids.groups()):
        wait_for(partial(_gone, pid), timeout=5, what=f"process {pid} to be gone")

    # the worker's log shows what the summary counted
    worker_log = (data / "worker.log").read_text(encoding="utf-8")
    assert worker_log.count("succeeded in") == executed


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
