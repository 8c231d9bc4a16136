"""Beat heartbeats, ``api.status`` and the metrics endpoint, in process, on every backend
(the commands and real beat processes: tests/e2e/test_e2e_health.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beatsqlalchemy import api, health, runlog
from beatsqlalchemy.cli import main
from beatsqlalchemy.config import BeatConfig
from beatsqlalchemy.constants import BEAT_RETENTION, CLAIMED, SENT
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import BeatRecord, PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import BEATS, RUNS, Run, Store
from harness.helpers import tick_for, tick_until
from harness.http import free_port, sample
from harness.http import scrape as scrape_metrics
from harness.proxy import Proxy

TOKEN = "metrics-token-for-tests"


class RecordingScheduler(DatabaseScheduler):
    """Counts its runs as sent without a broker (metrics and heartbeats see them as sent)."""

    def _apply(self, run: Run) -> None:
        pass


@pytest.fixture
def beat(app: Celery) -> Iterator[RecordingScheduler]:
    app.conf.beat_sqlalchemy_heartbeat_interval = 0.2
    scheduler = RecordingScheduler(app=app)
    yield scheduler
    scheduler.close()


def beat_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(BEATS).order_by(BEATS.c.identity)))


def heartbeat_values(identity: str, seen_ago: float = 0.0, **more: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "identity": identity, "host": "h", "pid": 1, "version": "1", "started_at": now - timedelta(hours=1),
        "last_seen": now - timedelta(seconds=seen_ago), "runs_sent": 0, "outage_since": None,
        "outage_ended": None, "outage_reason": None, **more,
    }


# -- heartbeats ---------------------------------------------------------------------------

def test_a_heartbeat_upserts_the_row_and_prunes_beats_gone_for_long(engine: Engine) -> None:
    store = Store(engine, "me")
    store.heartbeat(heartbeat_values("old", seen_ago=BEAT_RETENTION + 60))
    store.heartbeat(heartbeat_values("recent", seen_ago=600))
    assert store.heartbeat(heartbeat_values("me", runs_sent=1)) == 0
    assert store.heartbeat(heartbeat_values("me", runs_sent=5),
                           prune_before=utcnow() - timedelta(seconds=BEAT_RETENTION)) == 1
    rows = {r.identity: r for r in beat_rows(engine)}
    assert set(rows) == {"me", "recent"}
    assert rows["me"].runs_sent == 5


def test_beat_records_its_heartbeat_with_the_runs_it_sent(
    beat: RecordingScheduler, session: Session, engine: Engine,
) -> None:
    api.save_task(session, "every-second", task="tasks.x", schedule=1.0)
    tick_until(beat, lambda: beat.heartbeat.runs_sent >= 2, timeout=10)
    tick_until(beat, lambda: any(r.runs_sent >= 2 for r in beat_rows(engine)), timeout=5)
    [row] = beat_rows(engine)
    assert row.identity == beat.config.identity
    assert (row.host, row.pid) == (socket.gethostname(), beat.heartbeat.pid)
    assert row.outage_since is None and row.version
    first_seen = row.last_seen
    tick_until(beat, lambda: beat_rows(engine)[0].last_seen > first_seen, timeout=5)


def test_no_heartbeat_when_the_interval_is_zero(app: Celery, engine: Engine) -> None:
    app.conf.beat_sqlalchemy_heartbeat_interval = 0
    scheduler = RecordingScheduler(app=app)
    try:
        for _ in range(3):
            scheduler.tick()
            time.sleep(0.25)
        scheduler.heartbeat.close()
    finally:
        scheduler.close()
    assert beat_rows(engine) == []


def test_an_outage_is_recorded_by_the_first_heartbeat_after_it(
    beat: RecordingScheduler, engine: Engine,
) -> None:
    """The database cannot take the row during an outage: the heartbeat after it says when
    it began, when it ended and why."""
    beat.tick()
    exc = RuntimeError("connection refused")
    beat._db_failed(exc, "testing")  # what every failed database call of beat does
    beat._db_ok()
    beat.heartbeat.close()
    time.sleep(0.25)
    tick_until(beat, lambda: beat_rows(engine) and beat_rows(engine)[0].outage_ended is not None, timeout=5)
    [row] = beat_rows(engine)
    assert row.outage_since <= row.outage_ended
    assert row.outage_reason == "RuntimeError: connection refused"


def test_a_real_outage_is_recorded_by_the_first_heartbeat_after_it(
    backend: str, db_url: str, engine: Engine,
) -> None:
    """Beat behind a proxy that refuses every connection for a while: the heartbeat after
    the outage records when it began and ended, and the database error."""
    if backend == "sqlite":
        pytest.skip("a SQLite file has no server to cut off")
    parsed = make_url(db_url)
    port = parsed.port or (5432 if backend == "postgresql" else 3306)
    with Proxy(port, parsed.host or "127.0.0.1") as proxy:
        app = Celery("outage", broker="memory://", set_as_current=False)
        app.conf.update(beat_sqlalchemy_url=proxy.url(db_url), beat_sqlalchemy_sync_interval=0.1,
                        beat_sqlalchemy_heartbeat_interval=0.2, beat_sqlalchemy_database_timeout=2)
        scheduler = RecordingScheduler(app=app)
        try:
            tick_until(scheduler, lambda: len(beat_rows(engine)) == 1, timeout=10)
            proxy.cut()
            tick_until(scheduler, lambda: scheduler.heartbeat.outage_since is not None, timeout=10)
            tick_for(scheduler, 0.5)
            proxy.resume()
            tick_until(scheduler, lambda: beat_rows(engine)[0].outage_ended is not None, timeout=15)
        finally:
            scheduler.close()
            app.close()
    [row] = beat_rows(engine)
    assert row.outage_since < row.outage_ended and row.outage_reason
    assert (row.outage_ended - row.outage_since).total_seconds() >= 0.5
    assert "Error" in row.outage_reason and "SELECT" not in row.outage_reason


# -- status ---------------------------------------------------------------------------------

def test_status_finds_beats_overdue_unconfirmed_and_broken(session: Session, engine: Engine) -> None:
    store = Store(engine, "x")
    store.heartbeat(heartbeat_values("alive", seen_ago=1))
    store.heartbeat(heartbeat_values("gone", seen_ago=120))
    for name in ("late-a", "late-b", "on-time", "broken", "off"):
        api.save_task(session, name, task="tasks.x", schedule=timedelta(hours=1))
    now = utcnow()
    with engine.begin() as connection:
        late = (now - timedelta(minutes=5)).replace(tzinfo=None)
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = :at WHERE name IN "
                                "('late-a', 'late-b', 'off')"), {"at": late})
        connection.execute(text("UPDATE celery_periodic_task SET enabled = :f WHERE name = 'off'"),
                           {"f": False})
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = NULL, schedule_error = 'bad' "
                                "WHERE name = 'broken'"))
        task_id = connection.execute(select(PeriodicTask.__table__.c.id).where(
            PeriodicTask.__table__.c.name == "late-a")).scalar_one()
        for number, minutes in enumerate((0, 5)):
            connection.execute(RUNS.insert().values(
                periodic_task_id=task_id, periodic_task_name="late-a", slot=now - timedelta(minutes=minutes),
                task_id=f"run-{number}", state=CLAIMED, sent_by="gone", claim_token="t",
                claimed_at=now - timedelta(minutes=minutes)))
    found = api.status(session, max_age=30, grace=60, claim_timeout=30)
    assert [(b.identity, b.alive) for b in found.beats] == [("alive", True), ("gone", False)]
    assert [b.identity for b in found.gone] == ["gone"] and found.gone[0].age >= 120
    overdue = found.overdue
    assert (overdue.count, overdue.more, sorted(overdue.names)) == (2, False, ["late-a", "late-b"])
    assert (found.unconfirmed.count, found.unconfirmed.names) == (1, ["late-a"])
    assert (found.broken.count, found.broken.names) == (1, ["broken"])
    assert not found.failing and found.failing.names == []
    relaxed = api.status(session, max_age=300, grace=600, claim_timeout=600)
    assert len(relaxed.alive) == 2 and not relaxed.overdue and not relaxed.unconfirmed


def test_status_counts_stop_at_the_cap(
    session: Session, engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "COUNT_CAP", 3)
    for number in range(5):
        api.save_task(session, f"late-{number}", task="tasks.x", schedule=timedelta(hours=1))
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = :at"),
                           {"at": (utcnow() - timedelta(hours=1)).replace(tzinfo=None)})
    overdue = api.status(session).overdue
    assert (overdue.count, overdue.more, str(overdue)) == (3, True, "3+")
    assert len(overdue.names) == min(health.NAMES_SHOWN, 5)


@pytest.mark.parametrize("field", ["max_age", "grace", "claim_timeout"])
@pytest.mark.parametrize("value", [-1, float("nan"), "10", True])
def test_status_thresholds_are_validated(session: Session, field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=f"^{field}: invalid value"):
        api.status(session, **{field: value})


# -- metrics --------------------------------------------------------------------------------

def scrape(port: int, token: str | None = TOKEN) -> tuple[int, str]:
    return scrape_metrics(port, token)



def test_metrics_need_the_token_and_move_as_runs_go_out(app: Celery, session: Session) -> None:
    port = free_port()
    app.conf.update(beat_sqlalchemy_metrics_port=port, beat_sqlalchemy_metrics_token=TOKEN)
    api.save_task(session, "every-second", task="tasks.x", schedule=1.0)
    scheduler = RecordingScheduler(app=app)
    try:
        assert scrape(port, None)[0] == 401
        assert scrape(port, "wrong")[0] == 401
        assert scrape(port, TOKEN.upper())[0] == 401
        status, before = scrape(port)
        assert status == 200 and sample(before, "beatsqlalchemy_beat_up") == 1
        tick_until(scheduler, lambda: scheduler.heartbeat.runs_sent >= 3, timeout=10)
        status, after = scrape(port)
    finally:
        scheduler.close()
    sent = sample(after, "beatsqlalchemy_runs_sent_total")
    assert sent >= 3 and sent == scheduler.heartbeat.runs_sent
    assert sample(after, "beatsqlalchemy_runs_claimed_total") >= sent
    assert sample(after, "beatsqlalchemy_run_lateness_seconds_count") == sent
    assert sample(after, 'beatsqlalchemy_run_lateness_seconds_bucket{le="+Inf"}') == sent
    assert sample(after, "beatsqlalchemy_claim_duration_seconds_count") >= 1
    assert sample(after, "beatsqlalchemy_read_duration_seconds_count") >= 1
    assert sample(after, "beatsqlalchemy_seconds_since_last_read") < 5
    assert sample(after, "beatsqlalchemy_database_errors_total") == 0
    assert "every-second" not in after  # no per-task labels
    with pytest.raises(OSError):  # the endpoint is closed with beat
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


PORT, TOKEN_KEY = "beat_sqlalchemy_metrics_port", "beat_sqlalchemy_metrics_token"


@pytest.mark.parametrize(("settings", "field"), [
    ({PORT: 9808}, TOKEN_KEY),
    ({PORT: 9808, TOKEN_KEY: " "}, TOKEN_KEY),
    ({PORT: 70000, TOKEN_KEY: TOKEN}, PORT),
    ({PORT: 1.5, TOKEN_KEY: TOKEN}, PORT),
    ({"beat_sqlalchemy_heartbeat_interval": -1}, "beat_sqlalchemy_heartbeat_interval"),
])
def test_metrics_and_heartbeat_settings_are_checked(settings: dict[str, Any], field: str) -> None:
    app = Celery("settings", broker="memory://", set_as_current=False)
    app.conf.update(settings)
    with pytest.raises(ValidationError, match=f"^{field}: invalid value"):
        BeatConfig.from_app(app)


def test_the_token_never_shows_in_the_config_repr() -> None:
    app = Celery("settings", broker="memory://", set_as_current=False)
    app.conf.update(beat_sqlalchemy_metrics_port=9808, beat_sqlalchemy_metrics_token=TOKEN)
    assert TOKEN not in repr(BeatConfig.from_app(app))


def test_metrics_off_imports_no_prometheus_client(db_url: str) -> None:
    code = (
        "import sys; from celery import Celery; from beatsqlalchemy.schedulers import DatabaseScheduler\n"
        f"app = Celery('off', broker='memory://'); app.conf.beat_sqlalchemy_url = {db_url!r}\n"
        "s = DatabaseScheduler(app=app); s.tick(); s.close()\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_beat_record_model_matches_the_table(session: Session) -> None:
    session.add(BeatRecord(**heartbeat_values("orm")))
    session.commit()
    assert session.get(BeatRecord, "orm") is not None


def test_the_banner_shows_heartbeats_and_the_metrics_endpoint(app: Celery) -> None:
    app.conf.update(beat_sqlalchemy_heartbeat_interval=2, beat_sqlalchemy_metrics_port=9808,
                    beat_sqlalchemy_metrics_token=TOKEN)
    info = DatabaseScheduler(app=app, lazy=True).info
    assert ". heartbeat -> every 2s" in info
    assert ". metrics -> http://127.0.0.1:9808/metrics (bearer token)" in info and TOKEN not in info


def test_a_failed_heartbeat_is_logged_once_and_never_fails_beat(
    beat: RecordingScheduler, caplog: pytest.LogCaptureFixture,
) -> None:
    """A heartbeat the database refuses (a missing grant, say) is said once; beat goes on."""
    def refused(*_: Any) -> int:
        raise RuntimeError("permission denied for table beatsqlalchemy_beat")

    for _ in range(3):
        beat.heartbeat._next = 0.0
        beat.heartbeat.beat(beat._db.submit, refused, beat._db.inline)
        beat.heartbeat.close()
    assert beat.tick() >= 0
    lines = [r.getMessage() for r in caplog.records if "could not record its heartbeat" in r.getMessage()]
    assert len(lines) == 1 and "permission denied for table beatsqlalchemy_beat" in lines[0], lines


# -- the commands, in process (real processes: tests/e2e/test_e2e_health.py) ------------------

def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_status_and_health_say_what_is_wrong(db_url: str, engine: Engine, session: Session) -> None:
    store = Store(engine, "x")
    store.heartbeat(heartbeat_values("beat-a", seen_ago=1))
    store.heartbeat(heartbeat_values("beat-b", seen_ago=500, outage_since=utcnow(), outage_reason="E: x"))
    api.save_task(session, "broken", task="tasks.x", schedule=timedelta(hours=1))
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = NULL, schedule_error = 'bad'"))
    shown = run("--url", db_url, "status")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "beats: 1 alive, 1 gone (alive: seen within 30s)"
    assert lines[1].startswith("  alive  beat-a  host h pid 1  v1  started ")
    assert lines[2].startswith("  gone   beat-b ") and "database outage since" in lines[2]
    assert "broken (enabled, cannot be scheduled): 1: 'broken'" in lines
    data = json.loads(run("--url", db_url, "status", "--json").stdout)
    assert [(b["identity"], b["state"]) for b in data["beats"]] == [("beat-a", "alive"), ("beat-b", "gone")]
    assert data["broken"] == {"count": 1, "more": False, "names": ["broken"]}

    healthy = run("--url", db_url, "health", "--this-beat", "beat-a")
    assert (healthy.exit_code, healthy.stdout) == (0, "healthy: 1 beat(s) alive, 0 overdue, 0 unconfirmed\n")
    sick = run("--url", db_url, "health", "--min-beats", "2", "--max-broken", "0", "--this-beat", "beat-b")
    assert sick.exit_code == 1
    assert sick.stdout.splitlines() == [
        "beats: 1 alive, at least 2 wanted (alive: a heartbeat within 30s; 1 gone)",
        "broken (enabled, cannot be scheduled): 1: 'broken' (more than 0)",
        f"beat beat-b: last seen {500}s ago (more than 30s)",
    ]
    unknown = run("--url", db_url, "health", "--this-beat", "nobody", "--beat-only")
    assert (unknown.exit_code, unknown.stdout) == (1, "beat nobody: no heartbeat recorded\n")
    bad = run("--url", db_url, "health", "--max-age", "-1")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: max_age: invalid value -1.0"), bad.output


def failed_runs(engine: Engine, name: str, count: int) -> None:
    """``count`` runs of ``name`` in the run log, each recorded as failed by a worker."""
    with engine.connect() as connection:
        task_id = connection.execute(select(PeriodicTask.__table__.c.id).where(
            PeriodicTask.__table__.c.name == name)).scalar_one()
    for number in range(count):
        now = utcnow() - timedelta(minutes=count - number)
        run_id = f"{name}-{number}"
        with engine.begin() as connection:
            connection.execute(RUNS.insert().values(
                periodic_task_id=task_id, periodic_task_name=name, slot=now, task_id=run_id, state=SENT,
                sent_by="beat-a", claim_token="t", claimed_at=now, sent_at=now))
        runlog.finish(engine, run_id, "failed", "w1", now, error="ValueError: bad")


def test_failing_tasks_in_status_and_health(db_url: str, engine: Engine, session: Session) -> None:
    Store(engine, "x").heartbeat(heartbeat_values("beat-a", seen_ago=1))
    for name, failures in (("a", 1), ("b", 3), ("ok", 0)):
        api.save_task(session, name, task="tasks.x", schedule=timedelta(hours=1))
        failed_runs(engine, name, failures)
    failing = api.status(session).failing
    assert (failing.count, failing.more, failing.names) == (2, False, ["b", "a"])
    assert [t.name for t in api.failing_tasks(session)] == failing.names  # one query for both
    shown = run("--url", db_url, "status")
    assert "failing (their latest run failed): 2: 'b', 'a'" in shown.stdout.splitlines()
    data = json.loads(run("--url", db_url, "status", "--json").stdout)
    assert data["failing"] == {"count": 2, "more": False, "names": ["b", "a"]}

    assert run("--url", db_url, "health").exit_code == 0  # not checked by default
    assert run("--url", db_url, "health", "--max-failing", "2").exit_code == 0
    sick = run("--url", db_url, "health", "--max-failing", "1")
    assert sick.exit_code == 1
    assert sick.stdout == "failing (their latest run failed): 2: 'b', 'a' (more than 1)\n"
    bad = run("--url", db_url, "health", "--max-failing", "-1")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: max_failing: invalid value -1"), bad.output
