"""Three real beats on one database under chaos, every message read from the real broker.

The scenario shared by ``tests/e2e/test_e2e_chaos.py`` and ``benchmarks/ha_chaos.py``:
``celery beat -S beatsqlalchemy`` processes (no worker) publish 50 interval tasks due
every second to a Redis queue that this process consumes itself, recording each
message as it arrives, while a chaos loop kills (-9), pauses (SIGSTOP past the claim
timeout) and restarts beats at random. The beats push each run once (the broker dedup
of ``beatsqlalchemy.broker``) unless ``dedup=False``; ``publish_latency`` makes each
publish take that long, so that more kills and pauses land while a run is in flight.
:meth:`Scenario.finish` stops the schedule, lets the surviving beats publish every claim
still pending, stops the beats, drains the queue and compares the messages with the run
log (``celery_periodic_task_run``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update

from beatsqlalchemy import db
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from beatsqlalchemy.worker import first_start
from harness.processes import CeleryProcess, Processes, app_module, wait_for
from harness.reader import QueueReader

logger = logging.getLogger("chaos")

TASK_NAME = "chaos.tick"
SLOT = 1.0  # every task is due every second
#: how long a beat may take to start (import, connect, first sync) on a loaded machine
START_TIMEOUT = 60.0
APP_MODULE = app_module(
    "The Celery app the chaos beats run: a database, a broker queue, no tasks of its own.", "CHAOS",
    settings='''\
    beat_sqlalchemy_claim_timeout=float(os.environ["CHAOS_CLAIM_TIMEOUT"]),
    beat_sqlalchemy_identity=os.environ["CHAOS_IDENTITY"],
    beat_sqlalchemy_broker_dedup_seconds=float(os.environ["CHAOS_DEDUP_SECONDS"]),
''', body='''\
#: seconds each publish takes, half before the write and half after the broker's accept:
#: a slow broker, whose windows a kill or a pause hits more often
LATENCY = float(os.environ["CHAOS_PUBLISH_LATENCY"])

if LATENCY:
    import time

    from celery.signals import after_task_publish, before_task_publish

    @before_task_publish.connect(weak=False)
    @after_task_publish.connect(weak=False)
    def slow_broker(**kwargs):
        time.sleep(LATENCY / 2)
''')
TAKEOVER = re.compile(
    r"publishing again the run of '(?P<name>[^']+)' \((?P<task>[^)]*)\) for (?P<slot>\S+): "
    r"claimed by (?P<previous>\S+) at"
)
STALLED_SKIP = "another beat took it over while this one was stalled"
#: what a beat logs when Redis refused a run's second copy
REFUSED = "not pushed again"
#: a run whose message reached the broker this close to a kill -9 or SIGSTOP of the beat
#: that sent it (or to the SIGCONT that resumed its publish call) was in flight
IN_FLIGHT = 0.5


# -- the broker side: every message, as it arrives ------------------------------------

class BrokerReader(QueueReader):
    """Consumes the test queue in a thread (no worker), recording every message. With
    ``starts`` it also does, for each message, what a ``RunOnceTask`` worker does before
    running it: ``starts(task_id)`` records the run's start in the run log."""

    def __init__(self, broker_url: str, queue: str, starts: Callable[[str], bool] | None = None) -> None:
        super().__init__(broker_url, queue)
        self.starts = starts
        #: task ids whose start ``starts`` refused: copies a worker would have dropped
        self.dropped: list[str] = []

    def _on_message(self, message: Any) -> None:
        super()._on_message(message)
        task_id = self.messages[-1].id
        if self.starts is not None and not self.starts(task_id):
            self.dropped.append(task_id)

    def drain(self, idle: float = 1.5, timeout: float = 30.0) -> None:
        """Wait until no message arrived for ``idle`` seconds, then stop consuming."""
        deadline = time.monotonic() + timeout
        count, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if len(self.messages) != count:
                count, quiet_since = len(self.messages), time.monotonic()
            elif time.monotonic() - quiet_since >= idle:
                break
            time.sleep(0.1)
        self.stop()

    def stop(self) -> None:
        """Stop consuming; raises what made the consumer fail, if anything did."""
        super().stop()
        if self.error is not None:
            raise RuntimeError(f"the broker consumer failed: {self.error!r}") from self.error


# -- the beats -------------------------------------------------------------------------

#: what the chaos loop does to a beat
ACTIONS = ("kill -9", "SIGSTOP", "restart")
UP, STARTING, STOPPED, DOWN, TERMINATING = "up", "starting", "stopped", "down", "terminating"


@dataclass
class Beat:
    """One of the beat "slots"; each (re)start is a new process with a new identity."""

    name: str
    generation: int = 0
    process: CeleryProcess | None = None
    state: str = DOWN
    identity: str = ""


@dataclass(frozen=True)
class Action:
    """One chaos action: when (seconds since the tasks were created), on which beat."""

    at: float
    beat: str
    identity: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"t={self.at:7.2f}s {self.beat} ({self.identity}): {self.kind} {self.detail}".rstrip()


@dataclass(frozen=True)
class Takeover:
    """A stale claim re-published by another beat, from the warning it logged."""

    name: str
    slot: datetime
    previous: str
    by: str


@dataclass(frozen=True)
class Duplicate:
    """A task id the broker received more than once, and whether it was in flight."""

    task_id: str
    name: str
    slot: datetime | None
    copies: int
    #: when each copy arrived, oldest first
    received: tuple[float, ...]
    #: the re-publish of the stale claim, from the beat logs
    takeover: Takeover | None
    #: the kill -9 or SIGSTOP of the first sender while the run was in flight
    hit: Action | None
    #: "before the hit" (on the broker, not yet recorded as sent) or "on resume" (the
    #: publish call itself was paused: the copy arrives right after SIGCONT)
    how: str = ""

    @property
    def in_flight(self) -> bool:
        """Its beat was killed or paused after the broker accepted the run and before the
        run log said so, or paused inside the publish call (the copy arrives when it
        resumes): the claim timed out and another beat published it again (same task id)."""
        return self.copies == 2 and self.takeover is not None and self.hit is not None


@dataclass
class Result:
    """What the run did, measured from the messages and the run log."""

    backend: str
    duration: float
    beats: int
    tasks: int
    claim_timeout: float
    actions: list[Action]
    runs_expected: int
    runs_sent: int
    duplicate_ids: int
    duplicate_slots: int
    duplicates: list[Duplicate]
    lost: list[tuple[str, datetime, str, str]]
    unlogged: list[str]
    missed_slots: dict[str, int]
    longest_gap: float
    longest_gap_task: str
    longest_delay: float
    #: runs that reached the broker later after their slot than the claim timeout (once per
    #: take-over the run needed: a beat hit again while publishing it) plus 2 s:
    #: (task, slot, delay, take-overs)
    overdue: list[tuple[str, datetime, float, int]]
    takeovers: list[Takeover]
    stalled_skips: int
    abandoned: int
    #: runs in the run log per beat identity that last claimed them
    senders: dict[str, int]
    seed: int
    #: task name -> (slot, task id, first receive time or None), slot order
    runs: dict[str, list[tuple[datetime, str, float | None]]] = field(repr=False)
    started: float = 0.0
    ended: float = 0.0
    #: with ``run_once``: whether the reader played a RunOnceTask worker, and the copies it
    #: found started already (a worker would have dropped them)
    run_once: bool = False
    dropped: int = 0
    #: whether the beats pushed each run once (Redis), and the copies Redis refused
    dedup: bool = True
    refused: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    @property
    def in_flight(self) -> int:
        """Extra copies explained by a kill -9 or SIGSTOP landing while the run was in flight."""
        return sum(d.copies - 1 for d in self.duplicates if d.in_flight)

    @property
    def missed(self) -> int:
        return sum(self.missed_slots.values())

    @property
    def failures(self) -> list[str]:
        """What broke the bar: with the broker dedup, any duplicate; without it, copies
        that were not in flight (and, under RunOnceTask, copies the start check let by);
        any lost run, message missing from the run log, or gap over the claim timeout + 2 s."""
        failures = []
        if self.dedup and (self.duplicate_ids or self.duplicate_slots):
            failures.append("duplicates")
        if not self.dedup and (self.duplicate_ids != self.in_flight
                               or self.duplicate_slots != self.duplicate_ids):
            failures.append("duplicates not in flight")
        if self.run_once and self.dropped != self.duplicate_ids:
            failures.append("copies started twice")
        if self.lost or self.unlogged:
            failures.append("lost runs")
        if self.overdue:
            failures.append("runs later than the claim timeout + 2 s")
        if self.longest_gap > self.claim_timeout + 2:
            failures.append("gap over the claim timeout + 2 s")
        return failures

    HEADER = ("| backend | broker dedup | workers | duration | beats | tasks "
              "| actions (kills/stops/restarts) | runs expected | runs sent | duplicates | lost "
              "| missed slots | longest gap (s) | takeovers |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def row(self) -> str:
        kills, stops, restarts = self.count("kill -9"), self.count("SIGSTOP"), self.count("restart")
        actions = f"{kills + stops + restarts} ({kills}/{stops}/{restarts})"
        duplicates = f"{self.duplicate_ids} ids / {self.duplicate_slots} slots ({self.in_flight} in flight)"
        workers = f"RunOnceTask ({self.dropped} dropped)" if self.run_once else "none"
        dedup = f"Redis ({self.refused} refused)" if self.dedup else "off"
        return (f"| {self.backend} | {dedup} | {workers} | {self.duration:.0f} s | {self.beats} "
                f"| {self.tasks} | {actions} "
                f"| {self.runs_expected} | {self.runs_sent} | {duplicates} | {len(self.lost)} "
                f"| {self.missed} | {self.longest_gap:.2f} | {len(self.takeovers)} |")

    def summary(self) -> str:
        """Everything a reader needs when an assertion fails."""
        lines = [self.HEADER, self.row(),
                 f"longest gap on {self.longest_gap_task}; longest delay after the slot "
                 f"{self.longest_delay:.2f}s; claims skipped by stalled beats {self.stalled_skips}; "
                 f"abandoned {self.abandoned}; unlogged messages {len(self.unlogged)}; "
                 f"chaos seed {self.seed}"]
        lines += [f"duplicate: {d.name} {d.slot.isoformat() if d.slot else '?'} {d.task_id} x{d.copies}, "
                  f"received t={', '.join(f'{t - self.started:.2f}s' for t in d.received)}, "
                  f"taken over from {d.takeover.previous if d.takeover else '-'}, "
                  f"in flight ({d.how or 'no'}) at: {d.hit or '-'}" for d in self.duplicates[:20]]
        lines += [f"lost: {name} {slot.isoformat()} state={state} by={by}"
                  for name, slot, state, by in self.lost[:20]]
        lines += [f"overdue: {name} {slot.isoformat()} {delay:.2f}s after its slot, {n} take-over(s)"
                  for name, slot, delay, n in self.overdue[:20]]
        lines += [f"missed: {name} x{n}" for name, n in sorted(self.missed_slots.items()) if n][:20]
        lines += [f"takeover: {t.name} {t.slot.isoformat()} from {t.previous} by {t.by}"
                  for t in self.takeovers[:20]]
        lines += ["actions:", *(f"  {a}" for a in self.actions)]
        return "\n".join(lines)


class Scenario:
    """Beats, tasks and the broker reader of one chaos run (a context manager)."""

    def __init__(
        self, db_url: str, broker_url: str, workdir: Path, *, tasks: int = 50, beats: int = 3,
        claim_timeout: float = 3.0, sync_interval: float = 0.5, seed: int | None = None,
        processes: Processes | None = None, run_once: bool = False, dedup: bool = True,
        publish_latency: float = 0.0,
    ) -> None:
        self.db_url = db_url
        self.engine: Engine = db.get_engine(db_url)
        self.workdir = workdir
        self.task_count = tasks
        self.claim_timeout = claim_timeout
        self.processes = processes or Processes(workdir)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.random = random.Random(self.seed)
        self.queue = f"chaos-{uuid.uuid4().hex[:10]}"
        self.reader = BrokerReader(broker_url, self.queue, starts=(
            (lambda task_id: first_start(self.engine, task_id, "chaos-reader")) if run_once else None
        ))
        self.beats = [Beat(f"beat{i + 1}") for i in range(beats)]
        self.beat_count = beats
        self.dedup = dedup
        self.actions: list[Action] = []
        self.created: dict[str, float] = {}
        self.t0 = 0.0
        self.env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
        self.env.update(
            CHAOS_BROKER_URL=broker_url, CHAOS_DB_URL=db_url, CHAOS_QUEUE=self.queue,
            CHAOS_SYNC_INTERVAL=str(sync_interval), CHAOS_CLAIM_TIMEOUT=str(claim_timeout),
            CHAOS_DEDUP_SECONDS="600" if dedup else "0", CHAOS_PUBLISH_LATENCY=str(publish_latency),
            PYTHONUNBUFFERED="1",
        )
        (workdir / "chaosapp.py").write_text(APP_MODULE, encoding="utf-8")

    # -- life cycle -----------------------------------------------------------------

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process and the reader, remove the queue (idempotent)."""
        for beat in self.beats:
            if beat.process is not None and beat.process.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(beat.process.pid, signal.SIGCONT)
        self.processes.stop_all()
        with contextlib.suppress(Exception):
            self.reader.stop()
        self.reader.delete_queue()

    def now(self) -> float:
        """Seconds since the tasks were created."""
        return time.time() - self.t0 if self.t0 else 0.0

    def start(self) -> None:
        """Start the broker reader and every beat, then create the tasks."""
        self.reader.start()
        for beat in self.beats:
            self._start(beat)
        wait_for(lambda: self._poll() or all(b.state == UP for b in self.beats), START_TIMEOUT,
                 "every beat to start", interval=0.1)
        factory = db.session_factory(self.engine)
        self.t0 = time.time()
        with factory() as session:
            for i in range(self.task_count):
                name = f"chaos-{i:02d}"
                PeriodicTask.update_or_create(session, name=name, defaults={
                    "task": TASK_NAME, "interval": {"every": 1, "period": "seconds"}, "args": [i],
                })
                self.created[name] = time.time()
        logger.info("chaos: %d beats up, %d tasks every second, queue %s, logs in %s",
                    len(self.beats), self.task_count, self.queue, self.workdir)

    def _start(self, beat: Beat) -> None:
        beat.generation += 1
        beat.identity = f"{beat.name}.{beat.generation}"
        env = {**self.env, "CHAOS_IDENTITY": beat.identity}
        tag = f"{beat.name}-g{beat.generation}"
        beat.process = self.processes.start(beat.name, [
            "-A", "chaosapp", "beat", "-S", "beatsqlalchemy", "-l", "INFO",
            "--pidfile", str(self.workdir / f"{tag}.pid"),
            "--schedule", str(self.workdir / f"{tag}-schedule"),
        ], self.workdir, env)
        beat.state = STARTING

    def _poll(self) -> bool:
        """Advance beats that finished starting or exiting; False (for ``wait_for``)."""
        for beat in self.beats:
            process = beat.process
            if process is None:
                continue
            if beat.state == UP and not process.alive():  # not our doing: say so, start again
                self._act(beat, "exited", f"(code {process.process.returncode})")
                process.stop()
                self._start(beat)
            elif beat.state == STARTING:
                if not process.alive():
                    raise AssertionError(f"{process.role} exited with {process.process.returncode} "
                                         f"while starting:\n{process.log()[-3000:]}")
                if "from beat_schedule installed" in process.log():
                    beat.state = UP
            elif beat.state == TERMINATING and not process.alive():
                process.stop()  # closes the log
                self._start(beat)
        return False

    def _act(self, beat: Beat, kind: str, detail: str = "") -> None:
        action = Action(self.now(), beat.name, beat.identity, kind, detail)
        self.actions.append(action)
        logger.info("chaos: %s", action)

    # -- chaos --------------------------------------------------------------------

    def chaos(self, seconds: float, gap: tuple[float, float] = (1.0, 4.0),
              kinds: tuple[str, ...] = ACTIONS) -> None:
        """For ``seconds``, every 1-4 s (random) kill -9, pause or restart (``kinds``, each
        once per round in random order) a random beat while at least one other is up and
        running; kills and pauses are undone after a while."""
        end = time.monotonic() + seconds
        pending: list[tuple[float, Beat, str]] = []
        bag: list[str] = []
        next_action = time.monotonic() + self.random.uniform(*gap)
        while time.monotonic() < end:
            self._undo(pending, time.monotonic())
            self._poll()
            if time.monotonic() >= next_action:
                up = [b for b in self.beats if b.state == UP]
                if len(up) >= 2:  # one always keeps running
                    if not bag:  # every kind once per round, in random order
                        bag = self.random.sample(kinds, len(kinds))
                    self._disrupt(self.random.choice(up), bag.pop(), pending)
                next_action = time.monotonic() + self.random.uniform(*gap)
            time.sleep(0.05)
        self._undo(pending, float("inf"))
        wait_for(lambda: self._poll() or all(b.state == UP for b in self.beats), START_TIMEOUT,
                 "every beat to be up again", interval=0.1)

    def _disrupt(self, beat: Beat, kind: str, pending: list[tuple[float, Beat, str]]) -> None:
        assert beat.process is not None
        if kind == "kill -9":
            back = self.random.uniform(0.3, 2.0)
            beat.process.kill9()
            beat.state = DOWN
            pending.append((time.monotonic() + back, beat, "start"))
            self._act(beat, kind, f"(restart in {back:.1f}s)")
        elif kind == "SIGSTOP":
            pause = self.claim_timeout + self.random.uniform(1.0, 3.0)
            os.killpg(beat.process.pid, signal.SIGSTOP)
            beat.state = STOPPED
            pending.append((time.monotonic() + pause, beat, "SIGCONT"))
            self._act(beat, kind, f"(for {pause:.1f}s)")
        else:
            os.killpg(beat.process.pid, signal.SIGTERM)
            beat.state = TERMINATING
            self._act(beat, kind, "(SIGTERM, then start)")

    def _undo(self, pending: list[tuple[float, Beat, str]], now: float) -> None:
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            _, beat, kind = item
            assert beat.process is not None
            if kind == "SIGCONT":
                os.killpg(beat.process.pid, signal.SIGCONT)
                beat.state = UP
                self._act(beat, "SIGCONT")
            else:
                self._start(beat)
                self._act(beat, "start")

    def kill_for_good(self, index: int) -> Action:
        """kill -9 one beat and leave it dead."""
        beat = self.beats[index]
        assert beat.process is not None
        beat.process.kill9()
        beat.state = DOWN
        self._act(beat, "kill -9", "(for good)")
        self.beats.remove(beat)  # not restarted at the end
        return self.actions[-1]

    # -- the end --------------------------------------------------------------------

    def finish(self, backend: str = "") -> Result:
        """Disable the tasks, wait until no claim is left unsent (the beats re-publish
        stale ones), stop the beats, drain the queue and measure."""
        ended = time.time()
        with self.engine.begin() as connection:
            connection.execute(update(PeriodicTask).values(enabled=False, next_run_at=None))
        self._act(Beat("-"), "tasks disabled")

        def settled() -> bool:
            with self.engine.connect() as connection:
                claimed = connection.scalar(select(func.count()).select_from(PeriodicTaskRun)
                                            .where(PeriodicTaskRun.state == "claimed"))
            return not claimed

        with contextlib.suppress(AssertionError):  # still claimed at the end: reported as lost
            wait_for(settled, self.claim_timeout * 2 + 10, "every claim to be sent", interval=0.2)
        time.sleep(0.5)
        for beat in self.beats:
            if beat.process is not None:
                beat.process.stop()
        self.reader.drain()
        return self._measure(backend, ended)

    def _measure(self, backend: str, ended: float) -> Result:
        with self.engine.connect() as connection:
            log = connection.execute(select(
                PeriodicTaskRun.periodic_task_name, PeriodicTaskRun.slot, PeriodicTaskRun.task_id,
                PeriodicTaskRun.state, PeriodicTaskRun.sent_by,
            ).order_by(PeriodicTaskRun.slot)).all()
        messages = self.reader.messages
        by_id = {row.task_id: row for row in log}
        received: dict[str, float] = {}
        for message in messages:
            received.setdefault(message.id, message.received)
        id_counts = Counter(m.id for m in messages)
        slot_counts = Counter((by_id[m.id].periodic_task_name, by_id[m.id].slot)
                              for m in messages if m.id in by_id)
        runs: dict[str, list[tuple[datetime, str, float | None]]] = defaultdict(list)
        for row in log:
            runs[row.periodic_task_name].append((row.slot, row.task_id, received.get(row.task_id)))
        missed = {name: sum(max(round((b[0] - a[0]).total_seconds() / SLOT) - 1, 0)
                            for a, b in pairwise(items))
                  for name, items in runs.items()}
        longest, longest_task = 0.0, ""
        arrivals: dict[str, list[float]] = defaultdict(list)
        for message in messages:
            arrivals[message.args[0] if message.args else message.task].append(message.received)
        for name, created in self.created.items():
            index = int(name.rsplit("-", 1)[1])
            times = sorted(t for t in arrivals.get(index, []) if t <= ended)
            edges = [created, *times, ended]
            gap = max(b - a for a, b in pairwise(edges))
            if gap > longest:
                longest, longest_task = gap, name
        delays = {(r.periodic_task_name, r.slot): received[r.task_id] - r.slot.timestamp()
                  for r in log if r.task_id in received}
        takeovers, skips, refused = self._from_logs()
        taken = {(t.name, t.slot): t for t in takeovers}
        times_taken = Counter((t.name, t.slot) for t in takeovers)
        overdue = [(name, slot, delay, times_taken[(name, slot)])
                   for (name, slot), delay in delays.items()
                   if delay > self.claim_timeout * max(times_taken[(name, slot)], 1) + 2]
        copies_at: dict[str, list[float]] = defaultdict(list)
        for message in messages:
            copies_at[message.id].append(message.received)
        duplicates = []
        for task_id, copies in id_counts.items():
            if copies < 2:
                continue
            row = by_id.get(task_id)
            takeover = taken.get((row.periodic_task_name, row.slot)) if row is not None else None
            times = tuple(sorted(copies_at[task_id]))
            hit, how = self._hit_in_flight(takeover.previous, times) if takeover else (None, "")
            duplicates.append(Duplicate(
                task_id, row.periodic_task_name if row else "?", row.slot if row else None, copies,
                times, takeover, hit, how,
            ))
        # one publish call at most is under way when a pause starts: more copies arriving
        # on resume mean the beat sent runs it no longer owned
        resumed = Counter(d.hit for d in duplicates if d.how == "on resume")
        duplicates = [replace(d, hit=None, how="") if d.how == "on resume" and resumed[d.hit] > 1
                      else d for d in duplicates]
        return Result(
            backend=backend, duration=ended - self.t0, beats=self.beat_count,
            tasks=self.task_count, claim_timeout=self.claim_timeout, actions=list(self.actions),
            runs_expected=len(log), runs_sent=len(messages),
            duplicate_ids=sum(n - 1 for n in id_counts.values()),
            duplicate_slots=sum(n - 1 for n in slot_counts.values()), duplicates=duplicates,
            lost=[(r.periodic_task_name, r.slot, r.state, r.sent_by) for r in log
                  if r.task_id not in received],
            unlogged=sorted({m.id for m in messages} - set(by_id)),
            missed_slots=missed, longest_gap=longest, longest_gap_task=longest_task,
            longest_delay=max(delays.values(), default=0.0), overdue=overdue, takeovers=takeovers,
            stalled_skips=skips,
            abandoned=sum(1 for r in log if r.state == "abandoned"), runs=dict(runs),
            senders=dict(Counter(r.sent_by for r in log)), seed=self.seed,
            run_once=self.reader.starts is not None, dropped=len(self.reader.dropped),
            dedup=self.dedup, refused=refused,
            started=self.t0, ended=ended,
        )

    def _hit_in_flight(self, identity: str, received: tuple[float, ...]) -> tuple[Action | None, str]:
        """The kill -9 or SIGSTOP of beat ``identity`` while a run was in flight: its first
        copy reached the broker within IN_FLIGHT of the hit, or a copy arrived within
        IN_FLIGHT after the SIGCONT that ended the pause."""
        mine = [a for a in self.actions if a.identity == identity]
        for index, action in enumerate(mine):
            if action.kind not in ("kill -9", "SIGSTOP"):
                continue
            if abs(self.t0 + action.at - received[0]) <= IN_FLIGHT:
                return action, "before the hit"
            resumed = next((a for a in mine[index + 1:] if a.kind == "SIGCONT"), None)
            if action.kind == "SIGSTOP" and resumed is not None and any(
                -0.1 <= t - (self.t0 + resumed.at) <= IN_FLIGHT for t in received
            ):
                return action, "on resume"
        return None, ""

    def _from_logs(self) -> tuple[list[Takeover], int, int]:
        """Re-publishes of stale claims, runs a stalled beat did not send, and copies Redis
        refused, from the beat logs."""
        takeovers: list[Takeover] = []
        skips = refused = 0
        for process in self.processes.processes:
            text = process.log()
            skips += text.count(STALLED_SKIP)
            refused += text.count(REFUSED)
            identity = re.search(r"beat: identity (\S+),", text)
            for match in TAKEOVER.finditer(text):
                takeovers.append(Takeover(
                    match["name"], datetime.fromisoformat(match["slot"]), match["previous"],
                    identity[1] if identity else process.role,
                ))
        return takeovers, skips, refused

    def logs(self) -> Iterator[tuple[str, str]]:
        return self.processes.logs()


def run(db_url: str, broker_url: str, workdir: Path, seconds: float, *, backend: str = "",
        warmup: float = 3.0, kinds: tuple[str, ...] = ACTIONS,
        progress: Callable[[str], None] | None = None, **options: Any) -> Result:
    """The whole chaos scenario: start, ``warmup`` seconds in peace, ``seconds`` of chaos, finish."""
    with Scenario(db_url, broker_url, workdir, **options) as scenario:
        scenario.start()
        time.sleep(warmup)
        scenario.chaos(seconds, kinds=kinds)
        result = scenario.finish(backend)
        if progress is not None:
            progress(result.summary())
        return result
