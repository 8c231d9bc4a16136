"""The Celery beat plug-in: a heap of the near window, refreshed from the database."""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

from celery import Celery
from celery.beat import Scheduler
from celery.schedules import BaseSchedule
from kombu.connection import Connection
from kombu.messaging import Producer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool

from . import api
from . import schedules as sched
from .broker import REPORTED_MAX, beat_connection, publish, pushes_once, report_unrouted, returns_unrouted
from .config import BeatConfig
from .db import database_error, get_engine, redact, session_factory
from .exceptions import SchemaNotReady, ValidationError
from .heartbeats import Heartbeat
from .metrics import Metrics
from .metrics import start as start_metrics
from .migrate import ensure_schema
from .models import PeriodicTask
from .store import ClaimResult, Run, Store, Window
from .watch import watch_for

__all__ = [
    "DatabaseScheduler",
]


logger = logging.getLogger(__name__)
T = TypeVar("T")

#: retries back off from 0.5 s to this, so beat is back within a second of the database
MAX_RETRY_DELAY = 1.0


#: how long one tick goes on sending due runs before it syncs or yields to a shutdown
SEND_SPELL = 1.0

#: most runs handed back by the broker read after one batch (the rest at the next)
MAX_RETURNS_READ = 100

#: ``celery beat`` raises SystemExit from its handlers of these, wherever the process is
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def shutdown_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block is done, so that beat never exits between the
    broker accepting a claimed run and the run log recording it as sent (another beat
    would publish it again) nor between a claim and its publish (the run would wait for
    the claim timeout). A second signal is not held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in SHUTDOWN_SIGNALS}
    if any(handler is None for handler in previous.values()):  # not restorable from Python
        yield
        return
    held: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        if held:  # asked twice: stop now
            held.clear()
            _deliver(previous[signum], signum, frame)
        held.append((signum, frame))

    for signum in previous:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            _deliver(previous[held[0][0]], *held[0])


def _deliver(handler: Any, signum: int, frame: Any) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class _Claim(NamedTuple):
    """A batch being claimed: its heap entries, when the claim began, its outcome."""

    due: list[tuple[float, int, datetime]]
    started: float
    outcome: Future[ClaimResult]


class DatabaseThread:
    """Runs database calls beside the main thread, one at a time, in order; ``inline``
    runs one at once. Without a shared pool (an in-memory SQLite database is one
    connection per thread) everything runs inline."""

    def __init__(self, engine: Engine) -> None:
        self._shared = not isinstance(engine.pool, SingletonThreadPool)
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        if not self._shared:
            return self.inline(call, *args)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beat-database")
        return self._executor.submit(call, *args)

    @staticmethod
    def inline(call: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(call(*args))
        except BaseException as exc:  # handed to whoever reads the result
            future.set_exception(exc)
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class DatabaseScheduler(Scheduler):
    """Celery beat scheduler whose schedule is the ``celery_periodic_task`` table.

    Beat holds only the tasks due within ``beat_sqlalchemy_window`` seconds, re-read
    every ``beat_sqlalchemy_sync_interval`` seconds, or, where the database can say that
    nothing changed (see ``beatsqlalchemy.watch``), as soon as something did and before
    the window runs out; each run is claimed in the database (compare-and-set on
    ``next_run_at``) before it is published.
    """

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        try:
            self.config = BeatConfig.from_app(app)
        except ValidationError as exc:
            if kwargs.get("schedule_filename") is None:  # not ``celery beat``
                raise
            logger.critical("beat: invalid configuration: %s", exc)  # one clear line, then a clean exit
            raise SystemExit(1) from exc
        self.engine = get_engine(
            self.config.url, self.config.engine_options,
            # beat's own transactions last milliseconds: a stalled process loses its row
            # locks after a second or two, long before its claims go stale
            idle_transaction_timeout=min(max(self.config.claim_timeout / 2, 1.0), 2.0),
            # a database that stops answering is an outage, noticed and logged like any other
            answer_timeout=self.config.database_timeout or None,
        )
        self.store = Store(self.engine, self.config.identity, self.config.misfire_grace,
                           self.config.cron_starting_deadline)
        #: (due timestamp, task id, next_run_at as read): the near window only
        self._window: list[tuple[float, int, datetime]] = []
        self._window_end = 0.0
        self._next_sync = 0.0
        #: until when a due batch may be sent without looking for changes (monotonic)
        self._spell_end = 0.0
        #: with a change watch: the time (epoch seconds) by which beat reads again anyway
        self._read_by = 0.0
        self._watch = watch_for(self.engine) if self.config.watch_interval > 0 else None
        self._prepared = False
        self._schema_checked = False
        self._outage_since: float | None = None
        self._retry_delay = 0.0
        self._bad_rows: dict[str, str] = {}
        #: why the broker closed beat's channel, as said in the log (see ``_renew_channel``)
        self._channel_closures: set[str] = set()
        self._next_prune = 0.0
        #: runs the broker accepted whose "sent" could not be recorded yet: (run ids, token)
        self._unrecorded: list[tuple[list[int], str]] = []
        self._db = DatabaseThread(self.engine)
        #: while runs are being sent: recordings of earlier batches, not yet waited for
        self._recording: list[tuple[list[int], str, Future[None]]] | None = None
        #: created by ``celery beat`` (its service always passes a schedule file name)
        self._in_beat = kwargs.pop("schedule_filename", None) is not None
        #: this beat's row of ``beatsqlalchemy_beat``, written from the database thread
        self.heartbeat = Heartbeat(self.config.identity, self.config.heartbeat_interval)
        #: Prometheus metrics (recording nothing unless a metrics port is set)
        self.metrics = Metrics()
        super().__init__(app, *args, **kwargs)

    # -- Celery's hooks ---------------------------------------------------------

    def setup_schedule(self) -> None:
        """Check the schema (create it on SQLite); a database that is down is retried."""
        if self._in_beat:
            logger.info("beat: identity %s, database %s", self.config.identity, redact(self.config.url))
        self._start_metrics()
        self._check_schema()

    def _start_metrics(self) -> None:
        """Serve metrics when a port is set; a port that cannot be bound stops beat."""
        config = self.config
        try:
            self.metrics = start_metrics(config.metrics_port, config.metrics_host, config.metrics_token)
        except OSError as exc:
            message = (f"cannot serve metrics on {config.metrics_host}:{config.metrics_port} "
                       f"(beat_sqlalchemy_metrics_host, beat_sqlalchemy_metrics_port): {exc}")
            if not self._in_beat:
                raise OSError(message) from exc
            logger.critical("beat: %s", message)
            raise SystemExit(1) from exc

    def _check_schema(self) -> bool:
        try:
            ensure_schema(self.engine, self.config.create_schema)
        except SQLAlchemyError as exc:
            self._db_failed(exc, "checking the schema")
            return False
        except SchemaNotReady as exc:
            if not self._in_beat:
                raise
            logger.critical("beat: %s", exc)  # one clear line, then a clean exit
            raise SystemExit(1) from exc
        self._schema_checked = True
        return True

    @cached_property
    def connection(self) -> Connection:
        """The broker connection runs are published on; on Redis each run is pushed once
        (see ``beatsqlalchemy.broker``). Celery's ``close`` releases it."""
        return beat_connection(self.app, self.config.broker_dedup_seconds)

    @cached_property
    def _returns(self) -> bool:
        """Whether runs are published with AMQP's ``mandatory`` flag, so that the broker
        hands back those no queue took (read after each batch: ``_read_returns``)."""
        return returns_unrouted(self.connection)

    @cached_property
    def producer(self) -> Producer:
        """Celery's producer; on AMQP on a channel of its own, which ``_renew_channel``
        replaces when the broker closes it."""
        connection = self._ensure_connected()
        if not self._returns:
            return self.Producer(connection, auto_declare=False)  # type: ignore[no-any-return]
        producer: Producer = self.Producer(connection.channel(), auto_declare=False, on_return=self._returned)
        return producer

    def _renew_channel(self, exc: BaseException, refused: str = "") -> None:
        """Publish on a new channel from now on: on AMQP the broker closes a channel on
        which a message named an exchange that does not exist."""
        reason = str(exc)
        if reason not in self._channel_closures:
            if len(self._channel_closures) >= REPORTED_MAX:
                self._channel_closures.clear()
            self._channel_closures.add(reason)
            logger.warning("beat: the broker closed beat's channel: %s%s; publishing on a new channel "
                           "(said once per reason)", reason, refused)
        producer = self.__dict__.pop("producer", None)
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.channel.close()

    def _returned(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        self.metrics.refused()
        report_unrouted(message.headers or {}, exchange, routing_key, f"AMQP: {exc}")

    def _read_returns(self) -> None:
        """Read, without waiting, what the broker sent back on beat's connection: runs it
        could not route (see ``_returned``), or the error of a publish it refused."""
        try:
            for _ in range(MAX_RETURNS_READ):
                self.connection.drain_events(timeout=0)  # type: ignore[no-untyped-call]
        except (TimeoutError, BlockingIOError):
            pass
        except Exception as exc:  # a broker error must not stop beat
            if isinstance(exc, self.connection.channel_errors):  # an exchange that does not exist
                self._renew_channel(exc)
            else:  # the connection: the next publish reconnects, or says why it cannot
                logger.warning("beat: could not read the broker's replies: %s", exc)

    def should_sync(self) -> bool:
        return False  # run state is written when each run is claimed

    def sync(self) -> None:
        pass

    @property
    def info(self) -> str:
        return (
            f"    . database -> {redact(self.config.url)}\n"
            f"    . identity -> {self.config.identity}\n"
            f"    . sync every -> {self.config.sync_interval:g}s "
            f"(window {self.config.window:g}s, claim timeout {self.config.claim_timeout:g}s)"
            + (f"\n    . changes -> watched every {self.config.watch_interval:g}s"
               if self._watch is not None else "")
            + (f"\n    . broker -> each run pushed once (task ids kept "
               f"{self.config.broker_dedup_seconds:g}s)" if pushes_once(self.connection) else "")
            + (f"\n    . heartbeat -> every {self.config.heartbeat_interval:g}s"
               if self.config.heartbeat_interval else "")
            + (f"\n    . metrics -> http://{self.config.metrics_host}:{self.config.metrics_port}/metrics "
               "(bearer token)" if self.config.metrics_port else "")
        )

    def close(self) -> None:
        self._db.close()
        self.heartbeat.close()
        self.metrics.close()
        if self._watch is not None:
            self._watch.close()
        super().close()

    # -- the redisbeat-style API ---------------------------------------------------

    def add(self, **kwargs: Any) -> PeriodicTask:  # type: ignore[override]
        """Create or update a task by name: ``name, task, schedule, args, kwargs,
        options, enabled``; works from any process, beat picks it up at its next sync."""
        with sched.in_app_timezone(self.app), session_factory(api.engine_for(self.app))() as session:
            return api.save_task(session, **kwargs)

    def remove(self, name: str) -> bool:
        """Delete the task ``name``; False when there was none."""
        with session_factory(api.engine_for(self.app))() as session:
            return api.remove_task(session, name)

    # -- the tick ---------------------------------------------------------------

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Sync when it is time, claim and send what is due, say how long to sleep."""
        if time.monotonic() >= self._next_sync:
            self._sync()
        heap = self._window
        now = time.time()
        if heap and heap[0][0] <= now and self._outage_since is None:
            with shutdown_deferred():
                self._run_due(now)
            now = time.time()
        wait: float = min(self._next_sync - time.monotonic(), float(self.max_interval))
        if heap:
            wait = min(wait, heap[0][0] - now)
        return max(wait, 0.0)

    def _sync(self) -> None:
        """Read the database, unless the change watch saw nothing committed since the last
        read and nothing else is due. A heartbeat, when one is due, goes to the database
        thread first."""
        self.heartbeat.beat(self._db.submit, self.store.heartbeat, self._db.inline)
        if self._quiet():
            at = time.monotonic()
            self._next_sync = at + self.config.watch_interval
            self._spell_end = at + self.config.sync_interval
            return
        with shutdown_deferred():
            self._read()

    def _quiet(self) -> bool:
        """Whether the next read can wait: the watch is armed and saw no change, the window
        does not run out soon, no claim is about to go stale (``_read_by``), and neither
        pruning nor runs waiting to be recorded as sent need the database."""
        watch = self._watch
        return (
            watch is not None and watch.armed and not self._unrecorded
            and time.time() < self._read_by and time.monotonic() < self._next_prune
            and not watch.changed()
        )

    def _read(self) -> None:
        """Read the window, recompute rows flagged by plain SQL, take over stale claims."""
        started = time.monotonic()
        now = sched.utcnow()
        self._read_by = 0.0
        try:
            if not self._schema_checked and not self._check_schema():
                return
            if not self._prepared:
                self._install_config()
            while self._unrecorded:  # before any take-over, or they would be sent again
                run_ids, token = self._unrecorded[0]
                self.store.mark_sent(run_ids, now, token)
                self._unrecorded.pop(0)
            watching = self._watch is not None and self._watch.arm()
            until = now + timedelta(seconds=self.config.window)
            stale_before = now - timedelta(seconds=self.config.claim_timeout)
            limit = self.config.batch_size * 10
            window = self.store.window(until, limit)
            if window.unreadable:  # rare: rows beat would never meet again, named once
                self._report(self.store.park_unreadable(window.unreadable))
            done = 0
            if window.flagged:  # rows changed with plain SQL: recompute them
                recomputed = self.store.recompute(now, self.config.batch_size)
                done = recomputed.done
                self._report(recomputed.errors)
                window = (  # a truncated window is read again; otherwise the changes are merged in
                    self.store.window(until, limit) if len(window.due) >= limit
                    else window.changed(recomputed.changed, until)
                )
            if window.stale(stale_before):
                self._take_over(now, stale_before)
            if time.monotonic() >= self._next_prune:
                self._prune(now)
        except SQLAlchemyError as exc:
            self._db_failed(exc, "syncing the schedule")
            return
        self._db_ok()
        rows = window.due
        heap = [(row.next_run_at.timestamp(), row.id, row.next_run_at) for row in rows]
        heapq.heapify(heap)
        self._window[:] = heap
        self.metrics.read(time.monotonic() - started, len(heap))
        full = len(rows) >= limit
        self._window_end = rows[-1].next_run_at.timestamp() if full else until.timestamp()
        # a recompute batch that was full, or a truncated window, wants another sync soon
        soon = full or done >= self.config.batch_size
        if watching:
            self._read_by = self._read_deadline(window)
        interval = self.config.watch_interval if watching else self.config.sync_interval
        at = time.monotonic()
        self._next_sync = at + (0 if soon else interval)
        self._spell_end = at + (0 if soon else self.config.sync_interval)

    def _read_deadline(self, window: Window) -> float:
        """When beat must read again though nothing changed: a sync interval before the
        window it holds runs out, or when the oldest unconfirmed claim goes stale."""
        deadline = self._window_end - self.config.sync_interval
        if window.oldest_claim is not None:
            deadline = min(deadline, window.oldest_claim.timestamp() + self.config.claim_timeout)
        return deadline

    def _take_over(self, now: datetime, stale_before: datetime) -> None:
        """Publish again, with the same task ids, the runs another beat claimed but never
        confirmed as sent within the claim timeout."""
        started = time.monotonic()
        token, taken = self.store.take_over(now, stale_before, self.config.batch_size)
        if taken:
            self.metrics.taken_over(len(taken))
        for takeover in taken:
            run = takeover.run
            logger.warning(
                "beat: publishing again the run of %r (%s) for %s: claimed by %s at %s, not "
                "confirmed as sent after %.1fs", run.name, run.task, run.slot.isoformat(),
                takeover.previous_claimer, takeover.claimed_at.isoformat(),
                (now - takeover.claimed_at).total_seconds(),
            )
        self._publish([t.run for t in taken], token, started)

    def _prune(self, now: datetime) -> None:
        """Delete run-log rows older than ``beat_sqlalchemy_run_log_days`` (hourly)."""
        before = now - timedelta(days=self.config.run_log_days)
        pruned = self.store.prune(before, self.config.batch_size)
        if pruned:
            logger.info("beat: pruned %d run-log row(s) claimed before %s", pruned, before.isoformat())
        full = pruned >= self.config.batch_size  # more to delete: continue at the next sync
        self._next_prune = time.monotonic() + (0 if full else 3600)

    def _install_config(self) -> None:
        entries = {**api.default_entries(self.app), **(self.app.conf.beat_schedule or {})}
        for entry in entries.values():  # evaluate schedules in this app's timezone, as Celery does
            if isinstance(entry.get("schedule"), BaseSchedule):
                entry["schedule"].app = self.app
        with sched.in_app_timezone(self.app), session_factory(self.engine)() as session:
            installed, retired = api.install_config_schedule(
                session, entries, self.config.remove_missing_config_tasks
            )
        logger.info("beat: %d task(s) from beat_schedule installed, %d retired", installed, retired)
        if self.store.retry_solar():  # ephem installed since they were marked broken
            logger.info("beat: solar tasks broken for want of ephem are scheduled again")
        self._prepared = True

    def _run_due(self, now: float) -> None:
        """Claim and send the runs due at ``now``, a batch at a time, for up to about
        ``SEND_SPELL`` seconds or until the next sync is due. While one batch is being sent,
        the database thread claims the next one and records the one before as sent: the
        database's time hides behind the broker's. The first batch is a tenth of the
        others, so that sending starts at once."""
        until = min(self._spell_end, time.monotonic() + SEND_SPELL)
        claim = self._claim_next(now, self._db.inline, max(self.config.batch_size // 10, 1))
        self._recording = []
        try:
            while claim is not None:
                try:
                    result = claim.outcome.result()
                except SQLAlchemyError as exc:
                    for item in claim.due:  # keep the window; claim again once the database is back
                        heapq.heappush(self._window, item)
                    self._db_failed(exc, "claiming due runs")
                    break
                self._db_ok()
                self.metrics.claimed(len(result.runs), result.skipped, time.monotonic() - claim.started)
                self._report(result.errors)
                for run in result.runs:
                    self._reschedule(run.task_pk, run.next_run_at)
                for task_pk, next_run in result.rescheduled:
                    self._reschedule(task_pk, next_run)
                started = claim.started
                claim = (self._claim_next(now, self._db.submit, self.config.batch_size)
                         if time.monotonic() < until else None)
                self._publish(result.runs, result.token, started)
        finally:
            recording, self._recording = self._recording, None
            for sent, token, future in recording:
                self._recorded(sent, token, future)

    def _claim_next(self, now: float, run: Callable[..., Future[Any]], size: int) -> _Claim | None:
        """Take the next ``size`` runs due at ``now`` off the heap; claim them through ``run``."""
        heap = self._window
        due: list[tuple[float, int, datetime]] = []
        while heap and heap[0][0] <= now and len(due) < size:
            due.append(heapq.heappop(heap))
        if not due:
            return None
        started = time.monotonic()
        outcome = run(self.store.claim, [(task_id, seen) for _, task_id, seen in due], sched.utcnow())
        return _Claim(due, started, outcome)

    def _reschedule(self, task_pk: int, next_run: datetime | None) -> None:
        if next_run is not None and next_run.timestamp() <= self._window_end:
            heapq.heappush(self._window, (next_run.timestamp(), task_pk, next_run))

    def _publish(self, runs: list[Run], token: str, claimed: float) -> None:
        """Send claimed runs. Whenever half the claim timeout has passed since the claim
        was last confirmed (a slow broker, a paused process), confirm it again first: a
        run another beat has taken over in the meantime is not sent twice."""
        sent: list[int] = []
        mine: set[int] | None = None
        for index, run in enumerate(runs):
            if time.monotonic() - claimed > self.config.claim_timeout / 2:
                pending = [r for r in runs[index:] if mine is None or r.run_id in mine]  # lost: said once
                try:
                    # record what the broker already accepted first: those claims are not
                    # renewed below, so another beat would soon publish them again
                    self.store.mark_sent(sent, sched.utcnow(), token)
                    sent = []
                    mine = self.store.confirm([r.run_id for r in pending], token, sched.utcnow())
                except SQLAlchemyError as exc:  # cannot tell: another beat will publish them
                    self._db_failed(exc, "confirming claims")
                    break
                claimed = time.monotonic()
                for lost in pending:
                    if lost.run_id not in mine:
                        logger.warning("beat: not sending the run of %r for %s: another beat took "
                                       "it over while this one was stalled", lost.name,
                                       lost.slot.isoformat())
            if mine is not None and run.run_id not in mine:
                continue
            if self._send(run):
                sent.append(run.run_id)
                self.metrics.sent(run.slot)
        if not sent:
            return
        self.heartbeat.sent(len(sent))
        if self._returns:
            self._read_returns()
        if self._recording is None:
            self._recorded(sent, token, self._db.inline(self.store.mark_sent, sent, sched.utcnow(), token))
        else:  # in the database thread while the next batch is sent; checked before returning
            self._recording.append(
                (sent, token, self._db.submit(self.store.mark_sent, sent, sched.utcnow(), token)))

    def _recorded(self, sent: list[int], token: str, future: Future[None]) -> None:
        """Wait for the recording of ``sent``; if it failed, keep them for the next sync."""
        try:
            future.result()
        except SQLAlchemyError as exc:  # recorded at the next sync that reaches the database
            self._unrecorded.append((sent, token))
            self._db_failed(exc, "recording sent runs")

    def _send(self, run: Run) -> bool:
        logger.info("Scheduler: Sending due task %s (%s)", run.name, run.task)
        try:
            try:
                self._apply(run)
            except Exception as exc:
                if not (self._returns and isinstance(exc, self.connection.channel_errors)):
                    raise
                # confirmed publishing: the broker refused this run (an exchange that does
                # not exist) and closed the channel; like an unrouted run it is dropped, said
                # once, and every other run goes on a new channel
                self.metrics.refused()
                self._renew_channel(exc, f"; it refused the run of {run.name!r} ({run.task}) for "
                                         f"{run.slot.isoformat()}, which the run log says sent")
        except Exception as exc:  # a broker error must not stop beat
            logger.error("beat: could not send %s (%s) for %s: %s", run.name, run.task,
                         run.slot.isoformat(), exc, exc_info=True)
            return False
        return True

    def _apply(self, run: Run) -> None:
        options = {**run.options, "mandatory": True} if self._returns else run.options
        publish(self.app, run.task, run.args, run.kwargs, run.task_id, options, self.producer)

    # -- health -----------------------------------------------------------------

    def _report(self, errors: list[tuple[str, str]]) -> None:
        for name, reason in errors:
            if self._bad_rows.get(name) != reason:
                logger.error("beat: task %r cannot be scheduled and is skipped: %s", name, reason)
                self._bad_rows[name] = reason

    def _db_failed(self, exc: BaseException, doing: str) -> None:
        """Log the first of a run of database errors (an outage, a missing grant) once,
        with its reason, and retry with back-off."""
        self.metrics.database_error(outage=self._outage_since is None)
        if self._outage_since is None:
            self.heartbeat.outage_began(exc)
            self._outage_since = time.monotonic()
            logger.error(
                "beat: database %s error while %s (%s); keeping %d scheduled run(s) "
                "in memory and retrying", redact(self.config.url), doing, database_error(exc),
                len(self._window),
            )
        self._retry_delay = min(max(self._retry_delay * 2, 0.5), MAX_RETRY_DELAY)
        self._next_sync = time.monotonic() + self._retry_delay
        self._read_by = 0.0  # whatever the watch says, read at the next sync

    def _db_ok(self) -> None:
        if self._outage_since is not None:
            logger.warning("beat: database working again after %.1fs",
                           time.monotonic() - self._outage_since)
            self._outage_since = None
            self._retry_delay = 0.0
            self.heartbeat.outage_over()
