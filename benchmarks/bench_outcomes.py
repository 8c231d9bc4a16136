"""What recording run outcomes costs a worker: throughput of a no-op task with
``beat_sqlalchemy_track_outcomes`` on against off, on a real ``celery worker`` (solo pool)
and a real Redis broker, the run log on PostgreSQL (or another backend).

Each round fills the queue with N beat runs (messages carrying beat's header, each with a
run-log row the worker finds by its task id, as beat leaves them), starts a worker, and
times the tasks from the first to the last (each marks the moment it ran in a file when it
is the first or the last). Rounds alternate off and on; the table gives the median rate
and the cost per task in milliseconds::

    python benchmarks/bench_outcomes.py --tasks 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import insert
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the harness

from beatsqlalchemy import api, db, migrate, runlog
from beatsqlalchemy.constants import BEAT_HEADER
from beatsqlalchemy.models import PeriodicTaskRun
from beatsqlalchemy.worker import worker_engine
from harness import servers
from harness.processes import app_module

QUEUE = "bench-outcomes"
#: the benchmark's app: a no-op task that marks the moment it ran when it is the first or last
APP = app_module("The app of the outcome benchmark.", "BENCH", imports=("time",), settings=(
    '    beat_sqlalchemy_track_outcomes=os.environ["BENCH_TRACK"] == "1",\n'
    "    worker_prefetch_multiplier=16,\n"
), body='''

@app.task(name="bench.noop", ignore_result=True)
def noop(index, last):
    """Nothing, but for a mark at the first and the last run."""
    if index in (0, last):
        with open(os.environ["BENCH_MARKS"], "a", encoding="utf-8") as out:
            out.write(f"{index} {time.time()}\\n")
''')


def fill(app: Celery, url: str, count: int) -> None:
    """``count`` beat runs of one task: their run-log rows, then their messages."""
    engine = db.get_engine(url)
    with Session(engine) as session:
        task = api.get_task(session, "noop")
        now = datetime.now(timezone.utc)
        ids = [str(uuid.uuid4()) for _ in range(count)]
        session.execute(insert(PeriodicTaskRun), [{
            "periodic_task_id": task.id, "periodic_task_name": "noop", "slot": now, "task_id": task_id,
            "state": "sent", "sent_by": "bench", "claim_token": uuid.uuid4().hex, "claimed_at": now,
            "sent_at": now} for task_id in ids])
        session.commit()
    with app.producer_or_acquire() as producer:
        for index, task_id in enumerate(ids):
            app.send_task("bench.noop", args=[index, count - 1], task_id=task_id, queue=QUEUE,
                          headers={BEAT_HEADER: True}, producer=producer)


def writes_alone(app: Celery, url: str, count: int) -> float:
    """Milliseconds per run of the two writes alone (start and end), in this process, as a
    worker makes them: what tracking costs a task, without the worker around it."""
    fill_rows = [str(uuid.uuid4()) for _ in range(count)]
    engine = db.get_engine(url)
    with Session(engine) as session:
        task = api.get_task(session, "noop")
        now = datetime.now(timezone.utc)
        session.execute(insert(PeriodicTaskRun), [{
            "periodic_task_id": task.id, "periodic_task_name": "noop", "slot": now, "task_id": task_id,
            "state": "sent", "sent_by": "bench", "claim_token": uuid.uuid4().hex, "claimed_at": now,
            "sent_at": now} for task_id in fill_rows])
        session.commit()
    tracker = worker_engine(app)
    started = time.perf_counter()
    for task_id in fill_rows:
        runlog.start(tracker, task_id, "bench@host", now, track=True)
        runlog.finish(tracker, task_id, "succeeded", "bench@host", now, runtime=0.001)
    return (time.perf_counter() - started) / count * 1000


def round_(root: Path, env: dict[str, str], app: Celery, url: str, count: int, track: bool) -> float:
    """Tasks per second of one worker over ``count`` queued beat runs."""
    marks = root / f"marks-{uuid.uuid4().hex[:6]}"
    fill(app, url, count)
    worker_env = {**env, "BENCH_TRACK": "1" if track else "0", "BENCH_MARKS": str(marks)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchapp", "worker", "-P", "solo", "-l", "WARNING",
         "-Q", QUEUE, "--without-mingle", "--without-gossip", "--without-heartbeat"],
        cwd=root, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if marks.exists() and len(marks.read_text().splitlines()) >= 2:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: {worker.stderr.read() if worker.stderr else ''}")
            time.sleep(0.05)
        else:
            raise TimeoutError("the worker did not finish in time")
    finally:
        worker.terminate()
        worker.wait(30)
    times = {int(i): float(t) for i, t in (line.split() for line in marks.read_text().splitlines())}
    return (count - 1) / (times[count - 1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each, alternating (default 3)")
    parser.add_argument("--backend", default="postgresql", choices=("postgresql", "mysql"))
    parser.add_argument("--redis", default=servers.redis_url("bench"), help="the broker (a Redis URL)")
    args = parser.parse_args()

    name = f"bench_outcomes_{uuid.uuid4().hex[:8]}"
    url = servers.create_database(args.backend, name, "bench")
    try:
        migrate.upgrade(db.get_engine(url))
        app = Celery("bench", broker=args.redis, set_as_current=False)
        app.conf.beat_sqlalchemy_url = url
        with Session(db.get_engine(url)) as session:
            api.create_task(session, "noop", "bench.noop", 3600.0)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "benchapp.py").write_text(APP, encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
            env.update(BENCH_BROKER_URL=args.redis, BENCH_DB_URL=url, BENCH_SYNC_INTERVAL="1",
                       BENCH_QUEUE=QUEUE, PYTHONPATH=str(root))
            rates: dict[bool, list[float]] = {False: [], True: []}
            alone: list[float] = []
            for _ in range(args.repeats):
                for track in (False, True):
                    rates[track].append(round_(root, env, app, url, args.tasks, track))
                alone.append(writes_alone(app, url, args.tasks))
        app.close()
    finally:
        servers.drop_database(args.backend, name, "bench")
    report(args, rates, alone)


def report(args: Any, rates: dict[bool, list[float]], alone: list[float]) -> None:
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    rows = [("tracking", "tasks/s (median)", "ms per task", "rounds (tasks/s)")]
    for label, rate, all_rates in (("off", off, rates[False]), ("on", on, rates[True])):
        rows.append((label, f"{rate:,.0f}", f"{1000 / rate:.3f}", ", ".join(f"{r:,.0f}" for r in all_rates)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"no-op task, solo worker, {args.tasks} tasks per round, {args.repeats} rounds each, "
          f"run log on {args.backend}, Redis broker")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"cost of tracking in the worker: {1000 / on - 1000 / off:.3f} ms per task "
          f"({(off - on) / off:.0%} of the rate)")
    print(f"the two writes alone (start and end, in one process): {statistics.median(alone):.3f} ms per run "
          f"(rounds: {', '.join(f'{a:.3f}' for a in alone)})")


if __name__ == "__main__":
    main()
