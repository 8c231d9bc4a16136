"""The duplicate no sender can see coming, and what stops it: Redis, or ``RunOnceTask``.

A beat killed after the broker accepted a run and before the run log recorded it as sent
leaves a claim that looks exactly like a run never published; after the claim timeout
another beat publishes it again, with the same task id. Here the beat kills itself in
Celery's ``after_task_publish`` signal, so the crash lands in that window every time. On
Redis the second copy is refused by the broker (``beatsqlalchemy.broker``); with that
turned off, as on a broker without it, the worker drops it.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from harness.processes import APP_MODULE, Cluster, wait_for

pytestmark = pytest.mark.e2e

CLAIM_TIMEOUT = 2.0
#: the test app: the record task under RunOnceTask, a short claim timeout, the broker dedup
#: period from E2E_DEDUP_SECONDS, and a beat that, the first time, dies (kill -9) right after
#: the broker accepted a run when E2E_CRASH_MARK is set, or freezes (SIGSTOP) inside its
#: publish call when E2E_FREEZE_MARK is set
RUN_ONCE_APP = APP_MODULE.replace(
    '@app.task(bind=True, name="e2e.record")',
    '@app.task(bind=True, name="e2e.record", base=RunOnceTask)',
) + f'''

app.conf.beat_sqlalchemy_claim_timeout = {CLAIM_TIMEOUT}
app.conf.beat_sqlalchemy_broker_dedup_seconds = float(os.environ.get("E2E_DEDUP_SECONDS", "600"))


def signal_self_once(variable, signum):
    mark = os.environ.get(variable)
    if mark and not os.path.exists(mark):
        open(mark, "w").close()
        os.kill(os.getpid(), signum)


@after_task_publish.connect
def crash_once(**kwargs):
    signal_self_once("E2E_CRASH_MARK", signal.SIGKILL)


@before_task_publish.connect
def freeze_once(**kwargs):
    signal_self_once("E2E_FREEZE_MARK", signal.SIGSTOP)
'''
RUN_ONCE_APP = RUN_ONCE_APP.replace(
    "from celery import Celery\n",
    "import signal\n\nfrom celery import Celery\nfrom celery.signals import after_task_publish, "
    "before_task_publish\n\n"
    "from beatsqlalchemy.worker import RunOnceTask\n",
)


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    """The test's cluster, running the app above."""
    (cluster.root / "e2eapp.py").write_text(RUN_ONCE_APP, encoding="utf-8")
    return cluster


def due_now(session: Session) -> datetime:
    """The task "once", due now (and then in an hour)."""
    slot = datetime.now(timezone.utc)
    PeriodicTask.update_or_create(session, name="once", task="e2e.record", interval=timedelta(hours=1),
                                  args=["once"])
    PeriodicTask.update_or_create(session, name="once", next_run_at=slot)
    return slot


def crash_after_publish(cluster: Cluster, session: Session) -> tuple[str, datetime]:
    """A task due now; a beat that dies right after publishing it. Returns the run's id."""
    slot = due_now(session)
    cluster.env["E2E_CRASH_MARK"] = str(cluster.root / "crashed")
    crashing = cluster.beat(wait=False)
    exit_code = crashing.wait_exit(30)
    assert exit_code == -9 and (cluster.root / "crashed").exists(), crashing.log()
    del cluster.env["E2E_CRASH_MARK"]
    run = once_run(session)
    assert run.state == "claimed" and run.sent_at is None  # the broker has it; the log cannot know
    return run.task_id, slot


def once_run(session: Session) -> PeriodicTaskRun:
    """The run-log row of the task "once" (it has one run in these tests)."""
    return session.execute(select(PeriodicTaskRun).where(PeriodicTaskRun.periodic_task_name == "once")
                           ).scalar_one()


def run_row(engine: Engine, task_id: str) -> PeriodicTaskRun:
    with Session(engine) as session:
        return session.execute(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id == task_id)).scalar_one()


def queued(cluster: Cluster) -> int:
    """How many messages wait in the test's queue on the Redis broker."""
    import redis

    client = redis.Redis.from_url(cluster.broker_url)
    try:
        return int(client.llen(cluster.queue))
    finally:
        client.close()


def test_redis_refuses_the_second_copy_of_a_run_its_beat_died_before_recording(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    task_id, _ = crash_after_publish(cluster, session)
    survivor = cluster.beat()
    survivor.wait_log(r"publishing again the run of 'once'", timeout=CLAIM_TIMEOUT + 15)
    survivor.wait_log(rf"run {task_id} \(e2e.record\) was pushed onto queue", timeout=10)
    wait_for(lambda: run_row(engine, task_id).state == "sent", timeout=10, what="the run recorded as sent")
    assert queued(cluster) == 1  # the first copy only

    worker = cluster.worker()
    cluster.wait_runs("once", timeout=20)
    time.sleep(1)
    assert [r.id for r in cluster.records("once")] == [task_id]
    assert "dropping a second copy" not in worker.log()


def test_a_beat_frozen_inside_its_publish_call_does_not_push_a_copy_when_it_resumes(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    """Frozen after its last check of the claim and before its write reached the broker,
    a beat cannot know that another beat took the run over meanwhile; Redis does."""
    due_now(session)
    cluster.env["E2E_FREEZE_MARK"] = str(cluster.root / "frozen")
    frozen = cluster.beat(wait=False)
    wait_for(lambda: (cluster.root / "frozen").exists(), timeout=30, what="the beat to freeze")
    del cluster.env["E2E_FREEZE_MARK"]
    survivor = cluster.beat()
    survivor.wait_log(r"publishing again the run of 'once'", timeout=CLAIM_TIMEOUT + 15)
    run = once_run(session)
    wait_for(lambda: run_row(engine, run.task_id).state == "sent", timeout=10, what="the take-over sent")
    assert queued(cluster) == 1

    os.kill(frozen.pid, signal.SIGCONT)
    frozen.wait_log(rf"run {run.task_id} \(e2e.record\) was pushed onto queue", timeout=10)
    time.sleep(1)
    assert frozen.alive() and queued(cluster) == 1
    sent_by = run_row(engine, run.task_id).sent_by
    assert sent_by is not None and sent_by in survivor.log()  # the resumed beat changed nothing


def test_without_the_broker_dedup_a_second_copy_is_published_and_does_not_run_again(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    cluster.env["E2E_DEDUP_SECONDS"] = "0"  # as on a broker other than Redis
    task_id, _ = crash_after_publish(cluster, session)
    survivor = cluster.beat()
    survivor.wait_log(r"publishing again the run of 'once'", timeout=CLAIM_TIMEOUT + 15)
    # both copies wait in the queue, with the same task id
    wait_for(lambda: queued(cluster) == 2, timeout=10, what="two copies on the broker")

    worker = cluster.worker()
    cluster.wait_runs("once", timeout=20)
    worker.wait_log(r"dropping a second copy of beat run " + task_id, timeout=20)
    time.sleep(1)
    assert [r.id for r in cluster.records("once")] == [task_id]
    run = run_row(engine, task_id)
    assert run.state == "sent" and run.started_at is not None
    assert run.started_by is not None and cluster.queue in run.started_by


def test_a_run_a_worker_started_is_not_published_again(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    worker = cluster.worker()
    task_id, _ = crash_after_publish(cluster, session)
    cluster.wait_runs("once", timeout=20)
    assert run_row(engine, task_id).started_at is not None

    survivor = cluster.beat()
    time.sleep(CLAIM_TIMEOUT + 3)  # past the claim timeout, several syncs
    assert "publishing again the run of 'once'" not in survivor.log()
    assert [r.id for r in cluster.records("once")] == [task_id]
    assert run_row(engine, task_id).state == "sent"  # the worker's start proved it was published
    assert "dropping a second copy" not in worker.log()
