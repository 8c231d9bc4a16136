"""Benchmark beatsqlalchemy against the schedulers it replaces, in one run on one machine.

Usage (from the repository root, in a venv of its own, see benchmarks/README.md)::

    python benchmarks/bench_alternatives.py [--sizes 1k,10k] [--backends sqlite,postgresql]
        [--schedulers ours,celery,django,sqlalchemy,redbeat] [--repeats 3] [--burst 2000]
        [--budget 180] [--json alternatives.json]

For each scheduler, backend and N the parent has a fresh child process fill the
scheduler's own store with N tasks of the same shape as ``bench_scheduler.py`` (75 %
interval, 25 % crontab, nothing due for an hour), then measures ``--repeats`` fresh
child processes. Publishing is replaced by a counter at the scheduler's send call (for
the Celery-based schedulers ``Scheduler.send_task``, which ``Scheduler.apply_async``
calls after ``reserve``); every write the scheduler makes to its own store stays real.
A case that takes longer than ``--budget`` seconds is stopped and shown as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
#: the repository root: the harness shared with the tests lives there (it is not installed)
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("BEAT_BENCH_DB", "bsa_bench_ours")  # not the database of a plain bench run

import bench_common as common  # noqa: E402  (shared with bench_scheduler.py, no SQLAlchemy)

from harness import servers  # noqa: E402  (no SQLAlchemy either until a database is made)

UTC = timezone.utc
ALT_DB = os.environ.get("BEAT_BENCH_ALT_DB", "bsa_bench_alt")
REDBEAT_URL = servers.redis_url("redbeat")
#: scheduler -> (label, backends it runs on: None = its own store, whatever --backends says)
SCHEDULERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "ours": ("beatsqlalchemy", None),
    "celery": ("celery PersistentScheduler", ("shelve",)),
    "django": ("django-celery-beat", None),
    "sqlalchemy": ("sqlalchemy-celery-beat", None),
    "redbeat": ("celery-redbeat", ("redis",)),
}
ALIASES = {"beatsqlalchemy": "ours", "persistent": "celery", "django-celery-beat": "django",
           "sqlalchemy-celery-beat": "sqlalchemy", "celery-redbeat": "redbeat"}
METRICS = ("startup_s", "idle_tick_ms", "sync_ms", "read_ms", "change_api_beat_ms", "change_api_wall_ms",
           "change_sql_beat_ms", "change_sql_wall_ms", "rss_mb", "rss_burst_mb", "burst_runs_per_s")
#: ours only: the read of the database our sync does when its change watch fires (or once a
#: window), compared with the alternatives' whole sync
COMPARED_WITH = {"read_ms": "sync_ms"}
#: lower is better for all but the burst rate
HIGHER_IS_BETTER = {"burst_runs_per_s"}
#: why a metric does not apply to a scheduler
NOT_APPLICABLE = {
    ("celery", "sync_ms"): "",  # measured: its sync writes the shelve
    ("celery", "change_api"): "beat_schedule lives in the config file: a change needs a restart",
    ("celery", "change_sql"): "no SQL store",
    ("redbeat", "sync_ms"): "no sync: every tick reads the due entries from Redis",
    ("redbeat", "change_api"): "no in-memory copy: a saved entry is in the sorted set each tick reads",
    ("redbeat", "change_sql"): "no SQL store",
}
PROBE = timedelta(seconds=common.PROBE_EVERY[0])
CHANGE_TASKS = common.CHANGE_TASKS
INTERVALS = common.INTERVALS


# -- the task set, the same shape as bench_scheduler.py ---------------------------------

def task_specs(n: int, seed: int = 42) -> Iterator[tuple[str, int | None, int | None, datetime]]:
    """(name, interval index, crontab index, first due time) for ``n`` tasks."""
    rng = random.Random(seed)
    first = datetime.now(UTC) + common.OFFSET
    spread = common.SPREAD.total_seconds()
    n_crontabs = len(common.crontab_rows())
    for i in range(n):
        due = first + timedelta(seconds=rng.uniform(0, spread))
        if rng.random() < 0.75:
            yield f"bench.task.{i:07d}", rng.randrange(len(INTERVALS)), None, due
        else:
            yield f"bench.task.{i:07d}", None, rng.randrange(n_crontabs), due


def last_run_for(interval: int | None, due: datetime) -> datetime:
    """A last run that makes the next run fall at ``due`` (interval) or after it (crontab)."""
    if interval is not None:
        every, period = INTERVALS[interval]
        return due - timedelta(**{period: every})
    return due


# -- common measuring helpers ---------------------------------------------------------------

def per_call_ms(call: Callable[[], object], seconds: float = 2.0, max_batches: int = 200) -> float:
    """Median over batches of the mean time per call, in ms; batches of up to 100 calls,
    fewer for slow calls, for about ``seconds`` (at least 5 batches)."""
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    per_batch = max(1, min(100, int(0.01 / first))) if first > 0 else 100
    means: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(means) < 5 or (time.perf_counter() < deadline and len(means) < max_batches):
        started = time.perf_counter()
        for _ in range(per_batch):
            call()
        means.append((time.perf_counter() - started) / per_batch)
    return statistics.median(means) * 1000


def start_writer(config: dict[str, Any]) -> subprocess.Popen[str]:
    """Another process that makes one change when it reads a line, then prints its commit time."""
    return common.spawn_writer(Path(__file__).resolve(), config)


def wait_applied(scheduler: Any, config: dict[str, Any], applied: Callable[[], bool],
                 timeout: float = 60.0, before_loop: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start the writer, let it commit, run beat's loop (tick, sleep what tick says) until
    ``applied()``; beat's time is the tick that applied it."""
    writer = start_writer(config)
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    committed = json.loads(writer.stdout.readline())["committed"]
    writer.wait(timeout=60)
    if before_loop:
        before_loop()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.perf_counter()
        wait = scheduler.tick()
        seconds = time.perf_counter() - started
        if applied():
            return {"applied": True, "beat_ms": seconds * 1000, "wall_ms": (time.time() - committed) * 1000}
        time.sleep(min(max(wait, 0.0), 1.0))
    return {"applied": False}


# -- the harnesses: one per alternative -----------------------------------------------------

class Harness:
    """Populate, start, and drive one scheduler; subclasses fill in the store specifics."""

    kind = ""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.n = int(config["n"])
        self.backend = config["backend"]
        self.sent: Counter[str] = Counter()

    def app(self) -> Any:
        from celery import Celery

        app = Celery("bench", broker="memory://", set_as_current=False)
        app.conf.update(timezone="UTC", enable_utc=True, result_expires=None, beat_schedule={})
        return app

    def counting(self, base: type) -> type:
        """``base`` with its send path replaced by a counter (keyed by the ``burst`` kwarg)."""
        sent = self.sent

        class Counting(base):  # type: ignore[misc, valid-type]
            def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
                sent[(kwargs or {}).get("burst", name)] += 1

        return Counting

    def populate(self) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        raise NotImplementedError

    def sync(self, scheduler: Any) -> None:
        raise NotImplementedError

    def change(self, scheduler: Any, how: str) -> dict[str, Any]:
        raise NotImplementedError

    def add_burst(self, scheduler: Any, names: list[str]) -> None:
        raise NotImplementedError

    def burst_logged(self, scheduler: Any, names: list[str]) -> dict[str, int]:
        """total_run_count of each burst task in the store."""
        raise NotImplementedError

    def remove_burst(self, scheduler: Any, names: list[str]) -> None:
        pass

    def burst(self, scheduler: Any, k: int) -> dict[str, Any]:
        names = [f"bench.burst.{i:05d}" for i in range(k)]
        self.add_burst(scheduler, names)
        self.sent.clear()
        wanted = set(names)
        deadline = time.monotonic() + float(self.config["budget"])
        started = time.perf_counter()
        while sum(self.sent[name] for name in wanted) < k and time.monotonic() < deadline:
            scheduler.tick()
        self.sync(scheduler)  # its own write of the run state is part of the burst
        seconds = time.perf_counter() - started
        for _ in range(3):  # nothing may go out a second time
            scheduler.tick()
        self.sync(scheduler)
        logged = self.burst_logged(scheduler, names)
        once = (all(self.sent[name] == 1 for name in names)
                and all(logged.get(name) == 1 for name in names))
        self.remove_burst(scheduler, names)
        return {"burst_s": seconds, "burst_runs_per_s": k / seconds,
                "burst_sent": sum(self.sent[name] for name in names), "burst_exactly_once": once}


class CeleryHarness(Harness):
    """Celery's PersistentScheduler: beat_schedule in the config, run state in a shelve."""

    kind = "celery"

    def path(self) -> str:
        return str(Path(self.config["workdir"]) / f"celerybeat-{self.n}")

    def beat_schedule(self) -> tuple[dict[str, Any], dict[str, datetime]]:
        from celery.schedules import crontab

        crontabs = common.crontab_rows()
        entries, last = {}, {}
        for name, interval, cron, due in task_specs(self.n):
            if interval is not None:
                every, period = INTERVALS[interval]
                schedule: Any = timedelta(**{period: every})
            else:
                row = crontabs[cron]  # type: ignore[index]
                schedule = crontab(minute=row["minute"], hour=row["hour"], day_of_week=row["day_of_week"],
                                   day_of_month=row["day_of_month"], month_of_year=row["month_of_year"])
            entries[name] = {"task": "bench.noop", "schedule": schedule}
            last[name] = last_run_for(interval, due)
        return entries, last

    def populate(self) -> None:
        from celery.beat import PersistentScheduler

        app = self.app()
        entries, last = self.beat_schedule()
        app.conf.beat_schedule = entries
        scheduler = PersistentScheduler(app=app, schedule_filename=self.path())
        for name, entry in scheduler.schedule.items():
            entry.last_run_at = last.get(name, entry.last_run_at)
        scheduler.sync()
        scheduler.close()

    def prepare_app(self) -> Any:
        app = self.app()
        app.conf.beat_schedule = self.beat_schedule()[0]  # the config, built before start-up
        self._app = app
        return app

    def start(self) -> Any:
        from celery.beat import PersistentScheduler

        return self.counting(PersistentScheduler)(app=self._app, schedule_filename=self.path())

    def sync(self, scheduler: Any) -> None:
        scheduler.sync()

    def add_burst(self, scheduler: Any, names: list[str]) -> None:
        past = datetime.now(UTC) - timedelta(hours=2)
        scheduler.update_from_dict({name: {"task": "bench.noop", "schedule": timedelta(hours=1),
                                           "kwargs": {"burst": name}, "last_run_at": past}
                                    for name in names})

    def burst_logged(self, scheduler: Any, names: list[str]) -> dict[str, int]:
        return {name: scheduler.schedule[name].total_run_count for name in names}

    def remove_burst(self, scheduler: Any, names: list[str]) -> None:
        for name in names:
            scheduler.schedule.pop(name, None)
        scheduler.sync()


class DjangoHarness(Harness):
    """django-celery-beat with a minimal settings module written by this script."""

    kind = "django"

    def setup(self) -> None:
        import django

        workdir = Path(self.config["workdir"])
        settings = workdir / "bench_alt_django_settings.py"
        if self.backend == "sqlite":
            database = {"ENGINE": "django.db.backends.sqlite3",
                        "NAME": str(workdir / f"django-{self.n}.sqlite3")}
        else:
            database = {"ENGINE": "django.db.backends.postgresql", "NAME": ALT_DB, "USER": "postgres",
                        "HOST": "127.0.0.1", "PORT": "5432"}
        settings.write_text(
            "SECRET_KEY = 'bench'\nUSE_TZ = True\nTIME_ZONE = 'UTC'\n"
            "INSTALLED_APPS = ['django_celery_beat']\n"
            f"DATABASES = {{'default': {database!r}}}\n"
            "DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'\n"
        )
        sys.path.insert(0, str(workdir))
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_alt_django_settings"
        django.setup()

    def populate(self) -> None:
        self.setup()  # before the models are imported
        from django.core.management import call_command
        from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

        call_command("migrate", verbosity=0)
        intervals = IntervalSchedule.objects.bulk_create(
            [IntervalSchedule(every=e, period=p) for e, p in INTERVALS])
        IntervalSchedule.objects.create(every=PROBE.seconds, period="seconds")
        crontabs = CrontabSchedule.objects.bulk_create(
            [CrontabSchedule(**row) for row in common.crontab_rows()])
        batch: list[Any] = []
        for name, interval, cron, due in task_specs(self.n):
            batch.append(PeriodicTask(
                name=name, task="bench.noop", enabled=True, last_run_at=last_run_for(interval, due),
                interval=intervals[interval] if interval is not None else None,
                crontab=crontabs[cron] if cron is not None else None))
            if len(batch) >= 5000:
                PeriodicTask.objects.bulk_create(batch)
                batch = []
        PeriodicTask.objects.bulk_create(batch)
        PeriodicTasks.update_changed()

    def prepare_app(self) -> Any:
        self.setup()
        self._app = self.app()
        return self._app

    def start(self) -> Any:
        from django_celery_beat.schedulers import DatabaseScheduler

        return self.counting(DatabaseScheduler)(app=self._app)

    def sync(self, scheduler: Any) -> None:
        scheduler.schedule_changed()  # the change check every tick makes
        scheduler.sync()  # the periodic write of dirty entries

    def change(self, scheduler: Any, how: str) -> dict[str, Any]:
        from django_celery_beat.models import PeriodicTask, PeriodicTasks

        name = CHANGE_TASKS[how]
        before = PeriodicTask.objects.filter(name=name).values("interval_id", "crontab_id", "last_run_at")[0]
        config = {**self.config, "how": how, "name": name}

        def applied() -> bool:
            entry = (scheduler._schedule or {}).get(name)
            return entry is not None and getattr(entry.schedule, "run_every", None) == PROBE

        def force_full_reload() -> None:  # the next 5-minute reload, brought forward
            scheduler._last_full_sync -= timedelta(seconds=600)

        if how == "api":
            result = wait_applied(scheduler, config, applied)
        else:
            result = wait_applied(scheduler, config, applied, before_loop=force_full_reload)
            if result.get("applied"):
                result["wall_ms"] = None
                result["wall_note"] = "<= 300 s: the next forced full reload (every 5 min)"
        PeriodicTask.objects.filter(name=name).update(**before)
        PeriodicTasks.update_changed()
        scheduler.tick()
        return result

    def add_burst(self, scheduler: Any, names: list[str]) -> None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

        hourly = IntervalSchedule.objects.filter(every=1, period="hours").first()
        past = datetime.now(UTC) - timedelta(hours=2)
        PeriodicTask.objects.bulk_create([
            PeriodicTask(name=name, task="bench.noop", interval=hourly, last_run_at=past,
                         kwargs=json.dumps({"burst": name})) for name in names])
        PeriodicTasks.update_changed()  # what saving through the ORM or the admin does

    def burst_logged(self, scheduler: Any, names: list[str]) -> dict[str, int]:
        from django_celery_beat.models import PeriodicTask

        return dict(PeriodicTask.objects.filter(name__in=names).values_list("name", "total_run_count"))

    def remove_burst(self, scheduler: Any, names: list[str]) -> None:
        from django_celery_beat.models import PeriodicTask, PeriodicTasks

        PeriodicTask.objects.filter(name__in=names).delete()
        PeriodicTasks.update_changed()


class SqlalchemyHarness(Harness):
    """sqlalchemy-celery-beat (``beat_dburi``), filled with core INSERTs into its tables."""

    kind = "sqlalchemy"

    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{Path(self.config['workdir']) / f'sqla-{self.n}.sqlite3'}"
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{ALT_DB}"

    def engine(self) -> Any:
        from sqlalchemy_celery_beat.session import SessionManager

        manager = SessionManager()
        engine, _ = manager.create_session(self.url())
        manager.prepare_models(engine)
        return engine

    def populate(self) -> None:
        from sqlalchemy import insert, select
        from sqlalchemy_celery_beat.models import (
            CrontabSchedule,
            IntervalSchedule,
            Period,
            PeriodicTask,
            PeriodicTaskChanged,
        )

        engine = self.engine()
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(insert(IntervalSchedule),
                               [{"every": e, "period": Period(p)} for e, p in INTERVALS])
            interval_ids = list(connection.scalars(select(IntervalSchedule.id).order_by(IntervalSchedule.id)))
            connection.execute(insert(IntervalSchedule), [{"every": PROBE.seconds, "period": Period.SECONDS}])
            connection.execute(insert(CrontabSchedule), common.crontab_rows())
            crontab_ids = list(connection.scalars(select(CrontabSchedule.id).order_by(CrontabSchedule.id)))
            rows: list[dict[str, Any]] = []
            for name, interval, cron, due in task_specs(self.n):
                rows.append({
                    "name": name, "task": "bench.noop", "args": "[]", "kwargs": "{}", "enabled": True,
                    "one_off": False, "total_run_count": 0, "date_changed": now, "description": "",
                    "last_run_at": last_run_for(interval, due),
                    "discriminator": "intervalschedule" if interval is not None else "crontabschedule",
                    "schedule_id": interval_ids[interval] if interval is not None else crontab_ids[cron],  # type: ignore[index]
                })
                if len(rows) >= 20_000:
                    connection.execute(insert(PeriodicTask), rows)
                    rows = []
            if rows:
                connection.execute(insert(PeriodicTask), rows)
            connection.execute(insert(PeriodicTaskChanged), [{"id": 1, "last_update": now}])

    def prepare_app(self) -> Any:
        app = self.app()
        app.conf.beat_dburi = self.url()
        self._app = app
        return app

    def start(self) -> Any:
        from sqlalchemy_celery_beat.schedulers import DatabaseScheduler

        return self.counting(DatabaseScheduler)(app=self._app)

    def sync(self, scheduler: Any) -> None:
        scheduler.schedule_changed()
        scheduler.sync()

    def bump(self, scheduler: Any) -> None:
        from sqlalchemy_celery_beat.models import PeriodicTaskChanged

        with scheduler.Session() as session:
            PeriodicTaskChanged.update_from_session(session)

    def change(self, scheduler: Any, how: str) -> dict[str, Any]:
        from sqlalchemy import select, update
        from sqlalchemy_celery_beat.models import PeriodicTask

        name = CHANGE_TASKS[how]
        with scheduler.Session() as session:
            before = dict(session.execute(select(
                PeriodicTask.discriminator, PeriodicTask.schedule_id, PeriodicTask.last_run_at,
            ).where(PeriodicTask.name == name)).mappings().one())

        def applied() -> bool:
            entry = (scheduler._schedule or {}).get(name)
            return entry is not None and getattr(entry.schedule, "run_every", None) == PROBE

        result = wait_applied(scheduler, {**self.config, "how": how, "name": name}, applied,
                              timeout=60 if how == "api" else 15)
        if how == "sql" and not result["applied"]:
            result["note"] = "never applied: no reload without a change-table bump (restart needed)"
        with scheduler.Session() as session:
            session.execute(update(PeriodicTask).where(PeriodicTask.name == name).values(**before))
            session.commit()
        self.bump(scheduler)
        scheduler.tick()
        return result

    def add_burst(self, scheduler: Any, names: list[str]) -> None:
        from sqlalchemy import insert, select
        from sqlalchemy_celery_beat.models import IntervalSchedule, Period, PeriodicTask

        now = datetime.now(UTC)
        with scheduler.Session() as session:
            hourly = session.scalar(select(IntervalSchedule.id).where(
                IntervalSchedule.every == 1, IntervalSchedule.period == Period.HOURS))
            session.execute(insert(PeriodicTask), [{
                "name": name, "task": "bench.noop", "args": "[]", "kwargs": json.dumps({"burst": name}),
                "enabled": True, "one_off": False, "total_run_count": 0, "date_changed": now,
                "description": "", "last_run_at": now - timedelta(hours=2),
                "discriminator": "intervalschedule", "schedule_id": hourly} for name in names])
            session.commit()
        self.bump(scheduler)  # what an insert through its ORM does (after_insert listener)

    def burst_logged(self, scheduler: Any, names: list[str]) -> dict[str, int]:
        from sqlalchemy import select
        from sqlalchemy_celery_beat.models import PeriodicTask

        with scheduler.Session() as session:
            return dict(session.execute(select(PeriodicTask.name, PeriodicTask.total_run_count)
                                        .where(PeriodicTask.name.in_(names))).all())  # type: ignore[arg-type]

    def remove_burst(self, scheduler: Any, names: list[str]) -> None:
        from sqlalchemy import delete
        from sqlalchemy_celery_beat.models import PeriodicTask

        with scheduler.Session() as session:
            session.execute(delete(PeriodicTask).where(PeriodicTask.name.in_(names)))
            session.commit()
        self.bump(scheduler)


class RedbeatHarness(Harness):
    """celery-redbeat on Redis db 15 (flushed): definitions in hashes, a sorted set of due times."""

    kind = "redbeat"

    def app(self) -> Any:
        app = super().app()
        app.conf.update(redbeat_redis_url=REDBEAT_URL, redbeat_key_prefix="bench:")
        return app

    def populate(self) -> None:
        import redis
        from celery.schedules import crontab
        from redbeat.decoder import RedBeatJSONEncoder
        from redbeat.schedulers import RedBeatSchedulerEntry

        client = redis.Redis.from_url(REDBEAT_URL)
        client.flushdb()
        app = self.app()
        crontabs = common.crontab_rows()
        pipe = client.pipeline(transaction=False)
        # the three commands of RedBeatSchedulerEntry.save(), batched in one pipeline
        for i, (name, interval, cron, due) in enumerate(task_specs(self.n)):
            if interval is not None:
                every, period = INTERVALS[interval]
                schedule: Any = timedelta(**{period: every})
                from celery.schedules import schedule as every_schedule
                schedule = every_schedule(schedule)
            else:
                row = crontabs[cron]  # type: ignore[index]
                schedule = crontab(minute=row["minute"], hour=row["hour"], day_of_week=row["day_of_week"],
                                   day_of_month=row["day_of_month"], month_of_year=row["month_of_year"])
            entry = RedBeatSchedulerEntry(name, "bench.noop", schedule, app=app)
            entry.last_run_at = last_run_for(interval, due)
            definition = {"name": name, "task": "bench.noop", "args": [], "kwargs": {}, "options": {},
                          "schedule": schedule, "enabled": True}
            pipe.hset(entry.key, "definition", json.dumps(definition, cls=RedBeatJSONEncoder))
            meta = {"last_run_at": entry.last_run_at}
            pipe.hset(entry.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            # the due time itself, as next_run_at is for ours (its own score would put a
            # crontab whose last run lies ahead at "due now")
            pipe.zadd(app.redbeat_conf.schedule_key, {entry.key: due.timestamp()})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    def prepare_app(self) -> Any:
        self._app = self.app()
        return self._app

    def start(self) -> Any:
        from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock

        scheduler = self.counting(RedBeatScheduler)(app=self._app)
        acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=scheduler))  # beat_init
        return scheduler

    def sync(self, scheduler: Any) -> None:
        pass  # nothing to write: each run's meta is written when it is reserved

    def add_burst(self, scheduler: Any, names: list[str]) -> None:
        from celery.schedules import schedule
        from redbeat.schedulers import RedBeatSchedulerEntry

        past = datetime.now(UTC) - timedelta(hours=2)
        for name in names:
            entry = RedBeatSchedulerEntry(name, "bench.noop", schedule(timedelta(hours=1)),
                                          kwargs={"burst": name}, app=self._app)
            entry.last_run_at = past
            entry.save()

    def burst_logged(self, scheduler: Any, names: list[str]) -> dict[str, int]:
        from redbeat.schedulers import RedBeatSchedulerEntry

        return {name: RedBeatSchedulerEntry.load_meta(RedBeatSchedulerEntry.generate_key(self._app, name),
                                                      app=self._app).get("total_run_count", 0)
                for name in names}

    def remove_burst(self, scheduler: Any, names: list[str]) -> None:
        from redbeat.schedulers import RedBeatSchedulerEntry

        for name in names:
            RedBeatSchedulerEntry(name, app=self._app).delete()

    def close(self, scheduler: Any) -> None:
        scheduler.close()


HARNESSES: dict[str, type[Harness]] = {
    "celery": CeleryHarness, "django": DjangoHarness, "sqlalchemy": SqlalchemyHarness,
    "redbeat": RedbeatHarness,
}


# -- the other process of the change test ---------------------------------------------------

def writer_main(config: dict[str, Any]) -> None:
    """Make one change to task ``name`` when a line arrives; print the commit time."""
    kind, how, name = config["kind"], config["how"], config["name"]
    if kind == "django":
        harness = DjangoHarness(config)
        harness.setup()
        from django.db import connection
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        probe = IntervalSchedule.objects.get(every=PROBE.seconds, period="seconds")
        task = PeriodicTask.objects.get(name=name)
        print("READY", flush=True)
        sys.stdin.readline()
        if how == "api":
            task.interval, task.crontab = probe, None
            task.save()
        else:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE django_celery_beat_periodictask SET interval_id = %s, "
                               "crontab_id = NULL WHERE name = %s", [probe.id, name])
    elif kind == "sqlalchemy":
        from sqlalchemy import select, text
        from sqlalchemy.orm import Session
        from sqlalchemy_celery_beat.models import IntervalSchedule, Period, PeriodicTask

        engine = SqlalchemyHarness(config).engine()
        session = Session(engine)
        probe = session.scalars(select(IntervalSchedule).where(
            IntervalSchedule.every == PROBE.seconds, IntervalSchedule.period == Period.SECONDS)).one()
        task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).one()
        print("READY", flush=True)
        sys.stdin.readline()
        if how == "api":
            task.schedule_model = probe
        else:
            session.execute(text("UPDATE celery_periodictask SET discriminator = 'intervalschedule', "
                                 "schedule_id = :id WHERE name = :name"), {"id": probe.id, "name": name})
        session.commit()
    else:
        raise SystemExit(f"no writer for {kind}")
    print(json.dumps({"committed": time.time()}), flush=True)


# -- the measuring child --------------------------------------------------------------------

def child_main(config: dict[str, Any]) -> dict[str, Any]:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    harness = HARNESSES[config["kind"]](config)
    if config.get("populate"):
        started = time.perf_counter()
        harness.populate()
        return {"populate_s": time.perf_counter() - started}
    harness.prepare_app()  # type: ignore[attr-defined]
    if harness.kind in ("django", "sqlalchemy"):  # the database driver too is imported before
        __import__("psycopg" if harness.backend == "postgresql" else "sqlite3")
    result: dict[str, Any] = {"n": harness.n, "rss_base_mb": common.proc_status_mb("VmRSS")}

    started = time.perf_counter()
    scheduler = harness.start()
    scheduler.tick()
    result["startup_s"] = time.perf_counter() - started
    for _ in range(3):
        scheduler.tick()

    result["idle_tick_ms"] = per_call_ms(scheduler.tick)
    if NOT_APPLICABLE.get((harness.kind, "sync_ms")):
        result["sync_ms"] = None
    else:
        result["sync_ms"] = per_call_ms(lambda: harness.sync(scheduler))
    result["idle_sent"] = sum(harness.sent.values())
    result["rss_mb"] = common.peak_rss_mb()

    for how in ("api", "sql"):
        if (harness.kind, f"change_{how}") in NOT_APPLICABLE:
            continue
        change = harness.change(scheduler, how)
        result[f"change_{how}_applied"] = change["applied"]
        for key in ("beat_ms", "wall_ms"):
            if change.get("applied"):
                result[f"change_{how}_{key}"] = change.get(key)
        for key in ("note", "wall_note"):
            if key in change:
                result[f"change_{how}_{key}"] = change[key]

    k = int(config["burst"])
    if k:
        result.update(harness.burst(scheduler, k))
        result["rss_burst_mb"] = common.peak_rss_mb()
    with_close = getattr(harness, "close", None)
    if with_close:
        with_close(scheduler)
    return result


# -- the parent -------------------------------------------------------------------------------

def server_database(create: bool) -> None:
    """Drop (and recreate) the alternatives' PostgreSQL database."""
    if create:
        servers.create_database("postgresql", ALT_DB, "bench", replace=True)
    else:
        servers.drop_database("postgresql", ALT_DB, "bench")


def run_json(command: list[str], budget: float) -> dict[str, Any] | None:
    """Run a child; its result dict, or None when it took longer than ``budget`` seconds."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=budget, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(common.RESULT_MARK):
            return json.loads(line[len(common.RESULT_MARK):])  # type: ignore[no-any-return]
    raise RuntimeError(f"child {command[-1][:120]} failed (exit {done.returncode})")


def measure_ours(backend: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    import bench_scheduler as ours  # the parent only: it imports SQLAlchemy

    url, insert_s = ours.prepare(backend, n, workdir, True)
    if time.perf_counter() - started > args.populate_budget:
        return {"skipped": f"populating took > {args.populate_budget:g} s"}
    config = {"url": url, "n": n, "burst": args.burst, "profile": False, "ticks": 200, "syncs": 200,
              "mode": "scheduler", "change": True}
    command = [sys.executable, str(HERE / "bench_scheduler.py"), "--child", json.dumps(config)]
    runs = []
    for _ in range(args.repeats):
        result = run_json(command, args.budget)
        if result is None:
            return {"skipped": f"> {args.budget:g} s budget", "populate_s": insert_s}
        runs.append(result)
    return {"populate_s": insert_s, "runs": runs}


def measure_alt(kind: str, backend: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = {"kind": kind, "backend": backend, "n": n, "workdir": str(workdir), "burst": args.burst,
              "budget": args.budget}
    if backend == "postgresql":
        server_database(create=True)
    for leftover in workdir.glob(f"*-{n}*"):
        leftover.unlink()
    script = str(Path(__file__).resolve())
    populated = run_json([sys.executable, script, "--child", json.dumps({**config, "populate": True})],
                         args.populate_budget)
    if populated is None:
        return {"skipped": f"populating took > {args.populate_budget:g} s"}
    runs = []
    for _ in range(args.repeats):
        result = run_json([sys.executable, script, "--child", json.dumps(config)], args.budget)
        if result is None:
            return {"skipped": f"> {args.budget:g} s budget", "populate_s": populated["populate_s"]}
        runs.append(result)
    return {"populate_s": populated["populate_s"], "runs": runs}


def summarize(kind: str, backend: str, n: int, measured: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"scheduler": SCHEDULERS[kind][0], "kind": kind, "backend": backend, "n": n,
                           "populate_s": measured.get("populate_s")}
    if "skipped" in measured:
        row["skipped"] = measured["skipped"]
        return row
    runs = measured["runs"]
    row["repeats"] = runs
    for metric in METRICS:
        values = [r[metric] for r in runs if r.get(metric) is not None]
        row[metric] = statistics.median(values) if values else None
    row["idle_sent"] = sum(r.get("idle_sent", 0) for r in runs)
    if any("burst_exactly_once" in r for r in runs):
        row["burst_exactly_once"] = all(r.get("burst_exactly_once") for r in runs)
    for how in ("api", "sql"):
        if any(f"change_{how}_applied" in r for r in runs):
            row[f"change_{how}_applied"] = all(r.get(f"change_{how}_applied") for r in runs)
        for key in ("note", "wall_note"):
            notes = {r[f"change_{how}_{key}"] for r in runs if f"change_{how}_{key}" in r}
            if notes:
                row[f"change_{how}_{key}"] = notes.pop()
        reason = NOT_APPLICABLE.get((kind, f"change_{how}"))
        if reason:
            row[f"change_{how}_note"] = reason
    if NOT_APPLICABLE.get((kind, "sync_ms")):
        row["sync_note"] = NOT_APPLICABLE[(kind, "sync_ms")]
    return row


def cell(row: dict[str, Any], metric: str, spec: str) -> str:
    value = row.get(metric)
    return "n/a" if value is None else format(value, spec)


def change_cell(row: dict[str, Any], how: str) -> str:
    if (row["kind"], f"change_{how}") in NOT_APPLICABLE:
        return "n/a"
    if row.get(f"change_{how}_applied") is False:
        return "never"
    wall = row.get(f"change_{how}_wall_ms")
    wall_text = "≤300,000" if wall is None and row.get(f"change_{how}_wall_note") else cell(
        row, f"change_{how}_wall_ms", ",.0f")
    return f"{cell(row, f'change_{how}_beat_ms', '.2f')} / {wall_text}"


def table(rows: list[dict[str, Any]], k: int) -> str:
    lines = [
        "| scheduler | backend | N | startup_s | idle_tick_ms | sync_ms | read_ms | "
        "change api ms (beat / wall) | change sql ms (beat / wall) | rss_mb | rss_burst_mb | "
        f"burst runs/s (K={k}) | once |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        head = f"| {r['scheduler']} | {r['backend']} | {r['n']:,} |"
        if "skipped" in r:
            lines.append(f"{head} skipped ({r['skipped']}) |" + " |" * 9 + " - |")
            continue
        once = r.get("burst_exactly_once")
        lines.append(
            f"{head} {cell(r, 'startup_s', '.3f')} | {cell(r, 'idle_tick_ms', '.4f')} | "
            f"{cell(r, 'sync_ms', '.4f')} | {cell(r, 'read_ms', '.3f')} | "
            f"{change_cell(r, 'api')} | {change_cell(r, 'sql')} | "
            f"{cell(r, 'rss_mb', '.1f')} | {cell(r, 'rss_burst_mb', '.1f')} | "
            f"{cell(r, 'burst_runs_per_s', ',.0f')} | {'-' if once is None else ('yes' if once else 'NO')} |")
    return "\n".join(lines)


def ratio_table(rows: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ours against the best alternative that finished, per metric and N (same backend,
    or any store for the schedulers that have their own)."""
    out = []
    lines = ["| backend | N | metric | ours | best alternative | its value | ours better by | beats all |",
             "|---|---:|---|---:|---|---:|---:|:---:|"]
    for mine in (r for r in rows if r["kind"] == "ours" and "skipped" not in r):
        others = [r for r in rows if r["kind"] != "ours" and r["n"] == mine["n"] and "skipped" not in r
                  and r["backend"] in (mine["backend"], "shelve", "redis")]
        for metric in METRICS:
            if mine.get(metric) is None:
                continue
            theirs = COMPARED_WITH.get(metric, metric)
            values = [(r[theirs], r["scheduler"]) for r in others if r.get(theirs) is not None]
            if not values:
                continue
            higher = metric in HIGHER_IS_BETTER
            best, name = max(values) if higher else min(values)
            factor = None
            if best and mine[metric]:
                factor = mine[metric] / best if higher else best / mine[metric]
            beats = all((mine[metric] > v) if higher else (mine[metric] < v) for v, _ in values)
            out.append({"backend": mine["backend"], "n": mine["n"], "metric": metric, "ours": mine[metric],
                        "best": name, "best_value": best, "factor": factor, "beats_all": beats})
            label = metric if theirs == metric else f"{metric} (vs their {theirs})"
            lines.append(f"| {mine['backend']} | {mine['n']:,} | {label} | {mine[metric]:.4g} | {name} | "
                         f"{best:.4g} | {'-' if factor is None else f'{factor:,.1f}x'} | "
                         f"{'yes' if beats else 'NO'} |")
    return "\n".join(lines), out


def parse_schedulers(value: str) -> list[str]:
    kinds = []
    for part in value.split(","):
        part = ALIASES.get(part.strip().lower(), part.strip().lower())
        if part not in SCHEDULERS:
            raise argparse.ArgumentTypeError(f"unknown scheduler {part!r}; use {', '.join(SCHEDULERS)}")
        kinds.append(part)
    return kinds


def parent_main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bsa_alt_"))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for kind in args.schedulers:
            label, own = SCHEDULERS[kind]
            for backend in own or args.backends:
                skipped = None
                for n in args.sizes:
                    print(f"[{label} {backend} N={n:,}] ...", file=sys.stderr, flush=True)
                    if skipped:
                        measured = {"skipped": f"{skipped} at a smaller N"}
                    elif kind == "ours":
                        measured = measure_ours(backend, n, args, workdir)
                    else:
                        measured = measure_alt(kind, backend, n, args, workdir)
                    skipped = skipped or measured.get("skipped")
                    row = summarize(kind, backend, n, measured)
                    rows.append(row)
                    print(f"[{label} {backend} N={n:,}] {row.get('skipped') or 'done'}", file=sys.stderr)
                if kind == "ours":
                    import bench_scheduler as ours

                    ours.drop_database(backend)
                elif backend == "postgresql":
                    server_database(create=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(f"\nSchedulers compared, median of {args.repeats} fresh process(es) per row "
          f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"budget {args.budget:g} s per case; total {elapsed:.0f}s)\n")
    print(table(rows, args.burst))
    ratios_md, ratios = ratio_table(rows)
    print("\nOurs against the best alternative that finished (same N; same backend, or its own store):\n")
    print(ratios_md)
    notes = sorted({f"- {r['scheduler']}: {key.replace('_note', '').replace('_', ' ')}: {r[key]}"
                    for r in rows for key in r if key.endswith("note")})
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    problems = [r for r in rows if r.get("idle_sent") or r.get("burst_exactly_once") is False]
    for r in problems:
        print(f"WARNING: {r['scheduler']} {r['backend']} N={r['n']}: idle sends {r.get('idle_sent')}, "
              f"burst exactly once: {r.get('burst_exactly_once')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "python": platform.python_version(), "cpus": os.cpu_count(), "repeats": args.repeats,
            "burst": args.burst, "budget_s": args.budget, "elapsed_s": elapsed,
            "results": rows, "ratios": ratios}, indent=2, default=str))
        print(f"\nJSON written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=common.parse_sizes, default=[1000, 10_000],
                        help="comma-separated task counts (1k, 100k, 1m); the full run is 1k,10k,100k,1m")
    parser.add_argument("--backends", type=common.parse_backends, default=["sqlite", "postgresql"],
                        help="sqlite, postgresql (for ours, django-celery-beat, sqlalchemy-celery-beat)")
    parser.add_argument("--schedulers", type=parse_schedulers, default=list(SCHEDULERS),
                        help=f"comma-separated, from {', '.join(SCHEDULERS)}")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--burst", type=int, default=2000, metavar="K", help="tasks due at once (0 skips)")
    parser.add_argument("--budget", type=float, default=180.0,
                        help="seconds a measuring child may take before its case is skipped")
    parser.add_argument("--populate-budget", type=float, default=600.0,
                        help="seconds filling a store may take before the case is skipped")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        writer_main(json.loads(args.writer))
        return 0
    if args.child:
        print(common.RESULT_MARK + json.dumps(child_main(json.loads(args.child)), default=str), flush=True)
        return 0
    if "mysql" in args.backends:
        parser.error("the alternatives run on sqlite and postgresql here; use bench_scheduler.py for MariaDB")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
