"""Three real beats on one database while beats are killed, paused and restarted at random.

There is no worker: the test reads every task message from the real Redis broker
itself and compares them with the run log (see ``harness/chaos.py``, shared with
``benchmarks/ha_chaos.py``). The bar: no run sent twice, none lost, and no task's runs
interrupted for longer than the claim timeout plus 2 s; with one beat killed for good,
the other two keep every task on time. On Redis the beats push each run once, so the
broker never holds a second copy, whatever the kills and pauses hit. With that turned off
(as on a broker without it) a kill -9 or SIGSTOP can catch a run in flight: on the broker,
not yet recorded as sent, which no scheduler can tell from a run never published, so it
is published again (same task id); the reader then does RunOnceTask's start check, as
workers under it do, and every run starts exactly once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import func, select

from beatsqlalchemy import db, migrate
from beatsqlalchemy.models import PeriodicTaskRun
from harness import chaos
from harness.processes import Processes

pytestmark = pytest.mark.e2e

CLAIM_TIMEOUT = 3.0
#: seconds of chaos (the bar asks for at least 60)
CHAOS_SECONDS = float(os.environ.get("BEAT_E2E_CHAOS_SECONDS", "60"))
#: a fixed seed replays the same choices of beats and actions
SEED = int(os.environ["BEAT_E2E_CHAOS_SEED"]) if os.environ.get("BEAT_E2E_CHAOS_SEED") else None
TASKS = 50
#: a run is on time when its message reaches the broker within this long after its slot
ON_TIME = 1.0
#: the longest pause between two messages of a task while two beats are healthy
HEALTHY_GAP = 1.5
#: how long each publish takes in the chaos tests, half before the write and half after
#: the broker's accept (a slow broker): kills and pauses then often land while runs are in
#: flight, where second copies come from
SLOW_BROKER = 0.01

servers = pytest.mark.parametrize("backend", ["postgresql", "mysql"])


@pytest.fixture
def run_once() -> bool:
    """Whether the broker reader also does RunOnceTask's start check, and the beats do not
    push each run once (the broker dedup is off)."""
    return False


@pytest.fixture
def publish_latency() -> float:
    """Seconds each publish of the beats takes (see SLOW_BROKER)."""
    return 0.0


@pytest.fixture
def scenario(processes: Processes, redis_url: str, empty_db_url: str, tmp_path: Path, run_once: bool,
             publish_latency: float) -> Iterator[chaos.Scenario]:
    """Three beats (not started yet) on a fresh, migrated database and the Redis broker."""
    migrate.upgrade(db.get_engine(empty_db_url))
    with chaos.Scenario(empty_db_url, redis_url, tmp_path, tasks=TASKS, beats=3, claim_timeout=CLAIM_TIMEOUT,
                        seed=SEED, processes=processes, run_once=run_once, dedup=not run_once,
                        publish_latency=publish_latency) as running:
        yield running


@servers
@pytest.mark.parametrize("publish_latency", [SLOW_BROKER])
def test_kills_pauses_and_restarts_never_send_a_run_twice_or_lose_one(
    backend: str, scenario: chaos.Scenario, publish_latency: float,
) -> None:
    scenario.start()
    time.sleep(3)
    scenario.chaos(CHAOS_SECONDS)
    result = scenario.finish(backend)
    report = result.summary()
    print(report)  # the table, shown with -s or -rA

    done = Counter(action.kind for action in result.actions)
    assert done["kill -9"] >= 3 and done["SIGSTOP"] >= 3 and done["restart"] >= 3, report
    assert result.dedup and not result.run_once, report
    # no (task, slot) and no task id twice on the broker, even for the runs a kill -9 or a
    # SIGSTOP caught in flight (there were some): Redis refused their second copies
    assert result.refused >= 1, report
    assert result.duplicate_ids == 0 and result.duplicate_slots == 0, report
    assert result.duplicates == [], report
    assert result.unlogged == [], report
    assert result.lost == [], report
    assert result.longest_gap <= CLAIM_TIMEOUT + 2, report
    # a run is late by one claim timeout (plus 2 s) per beat that was hit while it had it
    assert result.overdue == [], report
    # every task ran about once a second all along (a paused beat's lock may skip a slot)
    received = sum(1 for runs in result.runs.values() for _, _, at in runs if at is not None)
    assert received >= 0.95 * TASKS * result.duration, report
    # what the broker holds is a Celery task message with the run's id
    assert {m.task for m in scenario.reader.messages} == {chaos.TASK_NAME}, report
    assert all(m.headers["id"] == m.id and m.headers.get("celery_beat_task") is True
               for m in scenario.reader.messages), report
    assert sorted({m.args[0] for m in scenario.reader.messages}) == list(range(TASKS))


@servers
@pytest.mark.parametrize(("run_once", "publish_latency"), [(True, SLOW_BROKER)])
def test_without_the_broker_dedup_run_once_workers_start_every_run_once(
    backend: str, scenario: chaos.Scenario, run_once: bool, publish_latency: float,
) -> None:
    """The same chaos without the broker dedup (as on a broker other than Redis), with the
    reader doing for every message what a worker under ``RunOnceTask`` does before running
    it (recording the run's start in the run log): a run caught in flight by a kill -9 or
    SIGSTOP was started, so no beat publishes it again; every run starts exactly once."""
    scenario.start()
    time.sleep(3)
    scenario.chaos(CHAOS_SECONDS)
    result = scenario.finish(backend)
    report = result.summary()
    print(report)

    done = Counter(action.kind for action in result.actions)
    assert done["kill -9"] >= 3 and done["SIGSTOP"] >= 3 and done["restart"] >= 3, report
    assert result.run_once and not result.dedup and result.refused == 0, report
    # A beat frozen inside the publish call itself (after deciding to send, before the broker
    # accepted) sends its copy on SIGCONT, after another beat took the claim over: that copy
    # is in flight, and the start check finds the run started and drops it.
    assert all(d.in_flight for d in result.duplicates), report
    assert result.dropped == result.duplicate_ids == result.duplicate_slots, report
    assert result.lost == [] and result.unlogged == [], report
    assert result.longest_gap <= CLAIM_TIMEOUT + 2, report
    received = sum(1 for runs in result.runs.values() for _, _, at in runs if at is not None)
    assert received >= 0.95 * TASKS * result.duration, report
    with scenario.engine.connect() as connection:  # every run was started exactly once
        starts = connection.execute(select(func.count()).select_from(PeriodicTaskRun).where(
            PeriodicTaskRun.started_at.is_not(None))).scalar_one()
    assert starts == result.runs_sent - result.duplicate_ids, report


@servers
def test_with_one_beat_killed_for_good_the_other_two_keep_every_task_on_time(
    backend: str, scenario: chaos.Scenario
) -> None:
    scenario.start()
    time.sleep(6)
    with scenario.engine.connect() as connection:  # kill the beat that sent the most so far
        busiest = connection.execute(
            select(PeriodicTaskRun.sent_by).group_by(PeriodicTaskRun.sent_by)
            .order_by(func.count().desc()).limit(1)
        ).scalar_one()
    index = next(i for i, beat in enumerate(scenario.beats) if beat.identity == busiest)
    kill = scenario.kill_for_good(index)
    killed_at = scenario.t0 + kill.at
    time.sleep(20)
    result = scenario.finish(backend)
    report = result.summary()

    assert result.senders.get(kill.identity, 0) > 0, report
    assert result.duplicate_ids == 0 and result.duplicate_slots == 0, report
    assert result.lost == [] and result.unlogged == [], report
    # the runs the killed beat had claimed but not sent: re-published once its claim timed out
    for takeover in result.takeovers:
        assert takeover.previous == kill.identity, report
        assert takeover.slot.timestamp() < killed_at, report
    late = {(t.name, t.slot) for t in result.takeovers}
    for name, runs in result.runs.items():
        for slot, _, at in runs:
            if (name, slot) in late:
                assert at is not None and at - slot.timestamp() <= CLAIM_TIMEOUT + 2, report
        # every slot due after the kill is claimed by the other two beats, on time, none skipped
        after = [(slot.timestamp(), at) for slot, _, at in runs if slot.timestamp() >= killed_at]
        assert len(after) >= 18, (name, report)
        assert all(round(b[0] - a[0]) == 1 for a, b in pairwise(after)), (name, after, report)
        for slot_at, at in after:
            assert at is not None and at - slot_at <= ON_TIME, (name, slot_at, at, report)
        gaps = [b - a for a, b in pairwise(sorted(at for _, at in after if at is not None))]
        assert max(gaps) <= HEALTHY_GAP, (name, max(gaps), report)
