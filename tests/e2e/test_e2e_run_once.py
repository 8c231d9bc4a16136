"""The one duplicate a sender cannot prevent, and how ``RunOnceTask`` keeps it from running.

A beat killed after the broker accepted a run and before the run log recorded it as sent
leaves a claim that looks exactly like a run never published; after the claim timeout
another beat publishes it again, with the same task id. Here the beat kills itself in
Celery's ``after_task_publish`` signal, so the crash lands in that window every time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery
from e2e_harness import APP_MODULE, Cluster, wait_for
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun

pytestmark = pytest.mark.e2e

CLAIM_TIMEOUT = 2.0
#: the test app: the record task under RunOnceTask, a short claim timeout, and a beat that
#: dies (kill -9) right after the broker accepted its first run when E2E_CRASH_MARK is set
RUN_ONCE_APP = APP_MODULE.replace(
    '@app.task(bind=True, name="e2e.record")',
    '@app.task(bind=True, name="e2e.record", base=RunOnceTask)',
) + f'''

app.conf.beat_sqlalchemy_claim_timeout = {CLAIM_TIMEOUT}


@after_task_publish.connect
def crash_once(sender=None, headers=None, **kwargs):
    mark = os.environ.get("E2E_CRASH_MARK")
    if mark and not os.path.exists(mark):
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
'''
RUN_ONCE_APP = RUN_ONCE_APP.replace(
    "from celery import Celery\n",
    "import signal\n\nfrom celery import Celery\nfrom celery.signals import after_task_publish\n\n"
    "from beatsqlalchemy.worker import RunOnceTask\n",
)


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    """The test's cluster, running the app above."""
    (cluster.root / "e2eapp.py").write_text(RUN_ONCE_APP, encoding="utf-8")
    return cluster


def crash_after_publish(cluster: Cluster, session: Session) -> tuple[str, datetime]:
    """A task due now; a beat that dies right after publishing it. Returns the run's id."""
    slot = datetime.now(timezone.utc)
    PeriodicTask.update_or_create(session, name="once", task="e2e.record", interval=timedelta(hours=1),
                                  args=["once"])
    PeriodicTask.update_or_create(session, name="once", next_run_at=slot)
    cluster.env["E2E_CRASH_MARK"] = str(cluster.root / "crashed")
    crashing = cluster.beat(wait=False)
    exit_code = crashing.wait_exit(30)
    assert exit_code == -9 and (cluster.root / "crashed").exists(), crashing.log()
    del cluster.env["E2E_CRASH_MARK"]
    run = session.execute(select(PeriodicTaskRun).where(PeriodicTaskRun.periodic_task_name == "once")
                          ).scalar_one()
    assert run.state == "claimed" and run.sent_at is None  # the broker has it; the log cannot know
    return run.task_id, slot


def run_row(engine: Engine, task_id: str) -> PeriodicTaskRun:
    with Session(engine) as session:
        return session.execute(select(PeriodicTaskRun).where(PeriodicTaskRun.task_id == task_id)).scalar_one()


def test_a_second_copy_published_after_a_crash_does_not_run_again(
    cluster: Cluster, app: Celery, engine: Engine, session: Session,
) -> None:
    import redis

    task_id, _ = crash_after_publish(cluster, session)
    survivor = cluster.beat()
    survivor.wait_log(r"publishing again the run of 'once'", timeout=CLAIM_TIMEOUT + 15)
    client = redis.Redis.from_url(cluster.broker_url)
    try:  # both copies wait in the queue, with the same task id
        wait_for(lambda: client.llen(cluster.queue) == 2, timeout=10, what="two copies on the broker")
    finally:
        client.close()

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
