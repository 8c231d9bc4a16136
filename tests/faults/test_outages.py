"""Database outages under a real ``celery beat -S beatsqlalchemy``.

Beat reaches PostgreSQL and MariaDB through a TCP proxy (``harness/proxy.py``) that drops every
connection and refuses new ones for a while; the test reads every task message from the
real Redis queue (no worker) and compares them with the run log. What users must see:
beat stays up; it sends nothing during the cut except runs it had claimed before; it
logs one line when the outage starts and one when it ends; it sends again within 2 s of
the database returning; each task gets at most one catch-up run for the slots it missed;
no task id is sent twice and no run is lost. Both servers are tested side by side in one
test, to keep the suite short. A table of the faults injected is printed at the end of
the run (``conftest.pytest_terminal_summary``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from celery import Celery
from celery.signals import after_task_publish

from beatsqlalchemy import db
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.schedulers import DatabaseScheduler
from harness.processes import wait_for
from harness.proxy import RESET, Proxy
from harness.reader import Message, QueueReader

from .conftest import TASK, BeatBehindProxy

pytestmark = pytest.mark.e2e

MakeBeat = Callable[..., BeatBehindProxy]
Table = list[dict[str, Any]]

BACKENDS = ("postgresql", "mysql")
#: beat sends again within this long after the database returns (the issue's bar)
RESUME_BOUND = 2.0
#: beat logs a database that stopped answering within this long (the issue's bar)
SILENCE_NOTICED_BOUND = 10.0
#: name -> every (seconds)
TASKS = {"every1-a": 1, "every1-b": 1, "every2": 2}
OUTAGE_START = re.compile(r"beat: database \S+ error while")
OUTAGE_END = re.compile(r"beat: database working again after")
#: a log line of WARNING or worse, in Celery's format ``[time: LEVEL/process] message``
LOUD = re.compile(r"^\[[^\]]*: (WARNING|ERROR|CRITICAL)/|Traceback")


class ResumedLate(AssertionError):
    """Beat sent its first run more than ``RESUME_BOUND`` seconds after the database returned."""


class SentTwice(AssertionError):
    """The broker received a task id more than once."""


# -- what happened ----------------------------------------------------------------------------

@dataclass
class Outcome:
    """What a beat did around one outage, measured from the messages, the run log and its log."""

    backend: str
    fault: str
    cut: float
    restored: float
    noticed: float | None
    alive: bool
    messages: list[Message]
    runs: dict[str, PeriodicTaskRun]
    tasks: dict[str, int]
    log: str
    #: the first message received at or after the restore
    first_after: float | None = None
    during_cut: list[Message] = field(default_factory=list)
    #: received during the cut, but claimed after it started
    not_claimed_before: list[str] = field(default_factory=list)
    #: runs per task whose slot fell inside the outage
    catch_up: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)
    starts: int = 0
    ends: int = 0
    #: WARNING-or-worse lines other than the two outage lines
    noise: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        after = [m.received for m in self.messages if m.received >= self.restored]
        self.first_after = min(after) - self.restored if after else None
        self.during_cut = [m for m in self.messages if self.cut <= m.received < self.restored]
        for message in self.during_cut:
            run = self.runs.get(message.id)
            if run is None or run.claimed_at.timestamp() > self.cut + 0.05:
                self.not_claimed_before.append(message.id)
        ids = Counter(m.id for m in self.messages)
        self.duplicates = {task_id: n for task_id, n in ids.items() if n > 1}
        self.unlogged = [task_id for task_id in ids if task_id not in self.runs]
        self.lost = [f"{r.periodic_task_name} {r.slot.isoformat()} never received ({r.state})"
                     for r in self.runs.values() if r.task_id not in ids]
        slots: dict[str, list[float]] = defaultdict(list)
        for run in self.runs.values():
            slots[run.periodic_task_name].append(run.slot.timestamp())
        for name, every in self.tasks.items():
            mine = sorted(slots[name])
            self.catch_up[name] = sum(1 for s in mine if self.cut < s < self.restored)
            for a, b in pairwise(mine[1:]):  # the first run is the start-up catch-up
                skipped = round((b - a) / every) - 1
                if skipped > 0 and not (a < self.restored and b > self.cut):
                    self.lost.append(f"{name}: {skipped} slot(s) skipped after {a:.2f} outside the outage")
        self.starts = len(OUTAGE_START.findall(self.log))
        self.ends = len(OUTAGE_END.findall(self.log))
        self.noise = [line for line in self.log.splitlines()
                      if LOUD.search(line) and not OUTAGE_START.search(line) and not OUTAGE_END.search(line)]

    def row(self) -> dict[str, Any]:
        unclaimed = len(self.not_claimed_before)
        claimed = f"{unclaimed} not claimed before" if unclaimed else "all claimed before"
        return {
            "backend": self.backend, "fault": self.fault, "outage (s)": f"{self.restored - self.cut:.1f}",
            "noticed after (s)": "-" if self.noticed is None else f"{self.noticed - self.cut:.2f}",
            "first send after restore (s)": "-" if self.first_after is None else f"{self.first_after:.2f}",
            "sent during cut": f"{len(self.during_cut)} ({claimed})",
            "max catch-up/task": max(self.catch_up.values(), default=0),
            "duplicates": sum(n - 1 for n in self.duplicates.values()),
            "lost": len(self.lost), "crashes": 0 if self.alive else 1,
            "log lines (start/end)": f"{self.starts}/{self.ends} (+{len(self.noise)} other warnings)",
        }

    def summary(self) -> str:
        return json.dumps({**self.row(), "catch_up": self.catch_up, "duplicates": self.duplicates,
                           "lost": self.lost[:20], "unlogged": self.unlogged[:20], "noise": self.noise[:20],
                           "not_claimed_before": self.not_claimed_before}, indent=1)

    def check_safety(self, quiet_after: float = 1.0) -> None:
        """Assert what the issue asks of an outage, except how fast beat resumed."""
        report = self.summary()
        assert self.alive, report
        assert self.starts == 1 and self.ends == 1, report
        assert self.noise == [], report
        assert self.not_claimed_before == [], report
        # nothing at all once the runs claimed before the cut are out
        assert [m for m in self.during_cut if m.received > self.cut + quiet_after] == [], report
        assert all(n <= 1 for n in self.catch_up.values()), report
        assert self.duplicates == {}, report
        assert self.unlogged == [] and self.lost == [], report
        assert self.first_after is not None, report


def check(results: list[Outcome]) -> None:
    """Every outcome is safe; then every beat resumed within ``RESUME_BOUND``."""
    for result in results:
        result.check_safety()
    late = [f"{r.backend}: first send {r.first_after:.2f}s after the database returned"
            for r in results if r.first_after is not None and r.first_after > RESUME_BOUND]
    if late:
        raise ResumedLate("; ".join(late) + "\n" + "\n".join(r.summary() for r in results))


def outcome(beat: BeatBehindProxy, fault: str, cut: float, restored: float, noticed: float | None) -> Outcome:
    alive = beat.stop()
    return Outcome(beat.backend, fault, cut, restored, noticed, alive, list(beat.reader.messages),
                   beat.run_log(), dict(beat.tasks), beat.log())


# -- outages while beat runs ------------------------------------------------------------------


def cut_while_running(beats: list[BeatBehindProxy], seconds: float, table: Table,
                      partition: bool = False) -> list[Outcome]:
    """Run the beats until steady, cut their databases (with ``partition``, make them
    silent instead), restore each one ``seconds`` after its beat logged the outage, watch
    5 s more; one Outcome per beat."""
    for beat in beats:
        beat.create_tasks(TASKS)
        beat.start()
    for beat in beats:
        beat.wait_steady()
    cuts = [beat.proxy.partition() if partition else beat.proxy.cut() for beat in beats]
    noticed = [beat.wait_log(OUTAGE_START, timeout=SILENCE_NOTICED_BOUND + 5 if partition else 5)
               for beat in beats]
    restored = []
    for beat, seen in sorted(zip(beats, noticed, strict=True), key=lambda pair: pair[1]):
        time.sleep(max(0.0, seen + seconds - time.time()))
        assert beat.beat is not None and beat.beat.alive(), f"{beat.backend}: beat died during the outage"
        restored.append((beat, beat.proxy.resume()))
    back = dict((id(beat), at) for beat, at in restored)
    for beat in beats:
        beat.reader.wait(1, timeout=40, since=back[id(beat)], what=f"{beat.backend} runs after the outage")
    time.sleep(5)
    results = []
    for beat, cut, seen in zip(beats, cuts, noticed, strict=True):
        restored_at = back[id(beat)]
        fault = (f"partition {restored_at - cut:.0f} s while running (nothing answered)" if partition
                 else f"cut {seconds:g} s while running (port closed)")
        result = outcome(beat, fault, cut, restored_at, seen)
        table.append(result.row())
        results.append(result)
    return results


def test_a_10s_outage_is_logged_once_caught_up_once_and_never_sends_twice(
    beat_behind_proxy: MakeBeat, fault_table: Table,
) -> None:
    """The database is unreachable for 10 s after beat logged the outage."""
    check(cut_while_running([beat_behind_proxy(backend) for backend in BACKENDS], 10, fault_table))


def test_a_one_minute_outage_is_logged_once_caught_up_once_and_never_sends_twice(
    beat_behind_proxy: MakeBeat, fault_table: Table,
) -> None:
    """62 s: longer than a minute, and than the 30 s claim timeout (no claim is left
    behind to be taken over twice)."""
    check(cut_while_running([beat_behind_proxy(backend) for backend in BACKENDS], 62, fault_table))


def test_a_15s_partition_is_noticed_within_10s_logged_once_and_never_sends_twice(
    beat_behind_proxy: MakeBeat, fault_table: Table,
) -> None:
    """The proxy stops forwarding, both ways, without closing or refusing anything, until
    10 s after beat logged the outage (about 15 s): beat's calls wait for answers that
    never come. With the default ``beat_sqlalchemy_database_timeout`` (5 s), that is an
    outage like any other."""
    results = cut_while_running([beat_behind_proxy(backend) for backend in BACKENDS], 10, fault_table,
                                partition=True)
    late = [f"{r.backend}: noticed {r.noticed - r.cut:.2f}s after the database went silent"
            for r in results if r.noticed is not None and r.noticed - r.cut > SILENCE_NOTICED_BOUND]
    assert late == [], "; ".join(late) + "\n" + "\n".join(r.summary() for r in results)
    check(results)


# -- an outage at start-up --------------------------------------------------------------------

def test_beat_started_while_the_database_is_down_waits_retries_with_backoff_and_starts(
    beat_behind_proxy: MakeBeat, fault_table: Table,
) -> None:
    """The proxy accepts and resets every connection (so each attempt is counted) from
    before beat starts until 10 s after beat's first attempt."""
    beats = [beat_behind_proxy(backend) for backend in BACKENDS]
    cuts, noticed, attempts = [], [], []
    for beat in beats:
        beat.create_tasks(TASKS)
        cuts.append(beat.proxy.cut(RESET))
        beat.start(wait=False)
    for beat in beats:
        noticed.append(beat.wait_log(OUTAGE_START, timeout=30))
        wait_for(lambda beat=beat: beat.proxy.stats.reset_attempts, 5, "a connection attempt")
    restored = []
    for beat in sorted(beats, key=lambda b: b.proxy.stats.reset_attempts[0]):
        time.sleep(max(0.0, beat.proxy.stats.reset_attempts[0] + 10 - time.time()))
        assert beat.beat is not None and beat.beat.alive(), f"{beat.backend}: beat exited"
        attempts.append((beat, list(beat.proxy.stats.reset_attempts)))
        restored.append((beat, beat.proxy.resume()))
    back = dict((id(beat), at) for beat, at in restored)
    for beat in beats:
        beat.reader.wait(1, timeout=40, since=back[id(beat)], what=f"{beat.backend} runs")
        beat.wait_log(re.compile(r"beat: \d+ task\(s\) from beat_schedule installed"))
    time.sleep(3)
    results = []
    for beat, cut, seen in zip(beats, cuts, noticed, strict=True):
        result = outcome(beat, "down at start-up for 10 s (reset)", cut, back[id(beat)], seen)
        fault_table.append(result.row())
        results.append(result)
    for beat, tried in attempts:
        gaps = [round(b - a, 2) for a, b in pairwise(tried)]
        report = f"{beat.backend}: attempts at {[round(t - tried[0], 2) for t in tried]}"
        # backoff, no busy loop: at most about two attempts a second, each wait at least
        # as long as the one before, the later ones longer than the first
        assert 3 <= len(tried) <= 21, report
        assert all(b >= a * 0.8 for a, b in pairwise(gaps)) and gaps[-1] > gaps[0], report
    check(results)


# -- MariaDB closing idle connections (wait_timeout) --------------------------------------------

def test_mariadb_wait_timeout_dropping_idle_connections_is_survived_silently(
    beat_behind_proxy: MakeBeat, fault_table: Table,
) -> None:
    """The server closes any connection idle for 1 s ("server has gone away"); beat syncs
    every 2.5 s and sends every 3 s and 4 s, so its pooled connection is idle longer than
    that between uses: pool_pre_ping replaces it without a word in the log."""
    beat = beat_behind_proxy("mysql", sync_interval=2.5, conf={
        "beat_sqlalchemy_engine_options": {"connect_args": {"init_command": "SET SESSION wait_timeout=1"}},
    })
    tasks = {"every3": 3, "every4": 4}
    beat.create_tasks(tasks)
    beat.start()
    beat.wait_steady(runs=1, timeout=15)
    time.sleep(14)
    stats = beat.proxy.stats
    alive = beat.stop()
    runs = beat.run_log()
    received = Counter(m.id for m in beat.reader.messages)
    by_task: dict[str, list[float]] = defaultdict(list)
    for run in runs.values():
        by_task[run.periodic_task_name].append(run.slot.timestamp())
    lost = [f"{name}: gap {b - a:.1f}s" for name, every in tasks.items()
            for a, b in pairwise(sorted(by_task[name])[1:]) if round((b - a) / every) != 1]
    lost += [r.task_id for r in runs.values() if r.task_id not in received]
    duplicates = sum(n - 1 for n in received.values())
    log = beat.log()
    loud = [line for line in log.splitlines() if LOUD.search(line)]
    fault_table.append({
        "backend": "mysql",
        "fault": f"wait_timeout=1 s: server closed {stats.closed_by_server} idle connection(s)",
        "duplicates": duplicates, "lost": len(lost), "crashes": 0 if alive else 1,
        "log lines (start/end)": f"0/0 (+{len(loud)} other warnings)",
    })
    report = f"{stats}\nlost={lost}\nloud={loud}\nruns={len(runs)}"
    # the server did drop the beat's idle connections, and beat reconnected each time
    assert stats.closed_by_server >= 2 and stats.forwarded >= 3, report
    assert alive and loud == [] and "gone away" not in log and "Lost connection" not in log, report
    assert duplicates == 0 and lost == [], report
    assert all(len(by_task[name]) >= 4 for name in tasks), report


# -- the database lost between the broker accepting a run and the run log recording it ----------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_sent_just_before_the_database_went_away_is_not_sent_again(
    backend: str, make_database: Callable[..., str], make_proxy: Callable[[str], Proxy], redis_url: str,
    fault_table: Table,
) -> None:
    """The cut lands right after the broker accepted a run (Celery's after_task_publish
    signal, in the beat's own process) and before the run log says it was sent."""
    url = make_database(backend)
    proxy = make_proxy(url)
    queue = f"faults-{uuid.uuid4().hex[:10]}"
    app = Celery("faults", broker=redis_url, set_as_current=False)
    app.conf.update(beat_sqlalchemy_url=proxy.url(url), beat_sqlalchemy_sync_interval=0.2,
                    beat_sqlalchemy_claim_timeout=2, task_default_queue=queue, timezone="UTC")
    with db.session_factory(db.get_engine(url))() as session:
        PeriodicTask.update_or_create(session, name="every1", defaults={
            "task": TASK, "interval": {"every": 1, "period": "seconds"}, "args": ["every1"]})
    cut: list[float] = []

    def cut_after_publish(**_: Any) -> None:
        if not cut:
            cut.append(proxy.cut())

    after_task_publish.connect(cut_after_publish, weak=False)
    scheduler = DatabaseScheduler(app=app)
    restored = 0.0
    try:
        with QueueReader(redis_url, queue) as reader:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if cut and not restored and time.time() > cut[0] + 1:
                    restored = proxy.resume()
                if restored and time.time() > restored + 5:
                    break
                time.sleep(min(scheduler.tick(), 0.05))
            time.sleep(0.5)
            messages = list(reader.messages)
    finally:
        after_task_publish.disconnect(cut_after_publish)
        scheduler.close()
        app.close()
    assert cut and restored, "the cut never happened"
    copies = Counter(m.id for m in messages)
    fault_table.append({
        "backend": backend, "fault": "cut between broker accept and mark_sent (in-process beat)",
        "outage (s)": f"{restored - cut[0]:.1f}", "duplicates": sum(n - 1 for n in copies.values()),
        "crashes": 0,
    })
    assert len(messages) >= 5, messages
    twice = {task_id: n for task_id, n in copies.items() if n > 1}
    if twice:
        raise SentTwice(f"sent more than once: {twice}")
