"""Run outcomes recorded by a real worker, for runs a real beat sent: a success with its
runtime, a failure with its exception type and the count growing, a retry, and a worker cut
from its database (a proxy) that runs its tasks anyway and logs one line.

The worker turns tracking on with its one setting; nothing of ours is imported by the app
module (``celery worker`` imports the package through our ``celery`` plug-in).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy.cli import main
from beatsqlalchemy.models import PeriodicTask, PeriodicTaskRun
from harness.helpers import stored
from harness.processes import OUTCOMES_APP, Cluster, wait_for
from harness.proxy import Proxy

pytestmark = pytest.mark.e2e

@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    (cluster.root / "e2eapp.py").write_text(OUTCOMES_APP, encoding="utf-8")
    assert "beatsqlalchemy" not in OUTCOMES_APP
    return cluster


def every_second(session: Session, name: str, task: str) -> None:
    PeriodicTask.update_or_create(session, name=name, task=task, interval=timedelta(seconds=1), args=[name])


def runs_of(engine: Engine, name: str) -> list[PeriodicTaskRun]:
    with Session(engine) as session:
        return list(session.scalars(select(PeriodicTaskRun).where(PeriodicTaskRun.periodic_task_name == name)
                                    .order_by(PeriodicTaskRun.slot)))


def finished(engine: Engine, name: str, count: int,
             outcome: str | None = None) -> list[PeriodicTaskRun] | None:
    done = [r for r in runs_of(engine, name) if r.finished_at is not None
            and (outcome is None or r.outcome == outcome)]
    return done if len(done) >= count else None


def test_success_failure_and_retry_are_recorded(cluster: Cluster, session: Session, engine: Engine) -> None:
    every_second(session, "ok", "e2e.record")
    every_second(session, "broken", "e2e.fail")
    every_second(session, "flaky", "e2e.flaky")
    cluster.worker()
    cluster.beat()

    [first, *_] = wait_for(lambda: finished(engine, "ok", 2), 20, "two recorded successes")
    assert first.outcome == "succeeded" and first.error is None
    assert first.runtime is not None and 0 <= first.runtime < 5
    assert first.worker and first.worker.startswith(cluster.queue)
    assert first.started_at is not None and first.finished_at is not None
    assert first.started_at <= first.finished_at
    ok = stored(engine, "ok")
    assert ok is not None and ok.last_outcome == "succeeded" and ok.consecutive_failures == 0
    assert ok.last_success_at is not None

    failures = wait_for(lambda: finished(engine, "broken", 3, "failed"), 20, "three recorded failures")
    assert failures[0].error is not None and failures[0].error.startswith("KeyError: 'no such account xxx")
    assert len(failures[0].error) <= 500
    before = stored(engine, "broken")
    assert before is not None and before.consecutive_failures >= 3

    def counted_up() -> PeriodicTask | None:
        task = stored(engine, "broken")
        return task if task is not None and task.consecutive_failures > before.consecutive_failures else None

    broken = wait_for(counted_up, 10, "the failure count to grow")
    assert broken.last_outcome == "failed" and broken.last_success_at is None
    assert "broken" in [t.name for t in api.failing_tasks(session, min_failures=3)]

    def retried_then_succeeded() -> PeriodicTaskRun | None:
        runs = runs_of(engine, "flaky")
        return next((r for r in runs if r.outcome == "succeeded" and r.retries == 1), None)

    retried = wait_for(retried_then_succeeded, 20, "a run that succeeded on its retry")
    assert retried.finished_at is not None
    # the retry itself was recorded while it was pending: the worker's log and a run seen as 'retried'
    cluster_log = "\n".join(log for _, log in cluster.logs())
    assert "Retry in" in cluster_log
    flaky = stored(engine, "flaky")
    assert flaky is not None and flaky.consecutive_failures == 0

    # the command line shows them
    from_cli = json.loads(_cli(engine, "show", "broken", "--json"))
    assert from_cli["last_outcome"] == "failed" and from_cli["consecutive_failures"] >= 3
    assert from_cli["recent_runs"][0]["outcome"] in ("failed", "started", None)


def _cli(engine: Engine, *args: str) -> str:
    result = CliRunner().invoke(main, ["--url", engine.url.render_as_string(hide_password=False), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_retry_is_visible_before_the_retry_runs(cluster: Cluster, session: Session, engine: Engine) -> None:
    """With a long countdown the run shows ``retried`` and its reason until its retry runs."""
    (cluster.root / "e2eapp.py").write_text(OUTCOMES_APP.replace("countdown=0.2", "countdown=30"),
                                            encoding="utf-8")
    PeriodicTask.update_or_create(session, name="flaky", task="e2e.flaky", interval=timedelta(hours=1),
                                  args=["flaky"])
    PeriodicTask.update_or_create(session, name="flaky", next_run_at=datetime.now(timezone.utc))  # due now
    cluster.worker()
    cluster.beat()
    [run] = wait_for(lambda: finished(engine, "flaky", 1, "retried"), 20, "a recorded retry")
    assert run.error == "ConnectionError: the mail server said later" and run.retries == 0
    flaky = stored(engine, "flaky")
    assert flaky is not None and flaky.last_outcome == "retried" and flaky.consecutive_failures == 0


@pytest.fixture
def proxy(backend: str, db_url: str) -> Iterator[Proxy]:
    if backend == "sqlite":
        pytest.skip("a SQLite file has no connection to cut")
    parsed = make_url(db_url)
    with Proxy(parsed.port or (5432 if backend == "postgresql" else 3306)) as proxy:
        yield proxy


def test_a_worker_cut_from_the_database_runs_its_tasks_and_logs_once(
    cluster: Cluster, session: Session, engine: Engine, proxy: Proxy, db_url: str,
) -> None:
    every_second(session, "ok", "e2e.record")
    env: dict[str, Any] = {**cluster.env, "E2E_DB_URL": proxy.url(db_url)}
    argv = ["-A", "e2eapp", "worker", "-l", "INFO", "-P", "solo", "-Q", cluster.queue, "-n",
            f"{cluster.queue}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    worker = cluster.start("worker", argv, cluster.root, env)
    worker.wait_log(r"\S+@\S+ ready\.")
    cluster.beat()  # beat reaches the database directly
    wait_for(lambda: finished(engine, "ok", 1), 20, "a recorded success through the proxy")

    cut = proxy.cut()
    executed = len(cluster.wait_runs("ok", 1, timeout=10, since=cut + 0.5))
    cluster.wait_runs("ok", executed + 3, timeout=15, since=cut + 0.5)  # the tasks keep running
    lines = [line for line in worker.log().splitlines() if "cannot record run outcomes" in line]
    assert len(lines) == 1, lines
    assert "password" not in lines[0].lower() or "***" in lines[0]

    resumed = proxy.resume()

    def recorded_after_resume() -> PeriodicTaskRun | None:
        return next((r for r in runs_of(engine, "ok") if r.finished_at is not None
                     and r.finished_at.timestamp() > resumed), None)

    wait_for(recorded_after_resume, 20, "outcomes recorded again")
    assert "the database answers again" in worker.log()
    assert len([line for line in worker.log().splitlines() if "cannot record run outcomes" in line]) == 1


def test_a_prefork_worker_records_from_its_pool_processes(cluster: Cluster, session: Session,
                                                          engine: Engine) -> None:
    every_second(session, "ok", "e2e.record")
    argv = ["-A", "e2eapp", "worker", "-l", "INFO", "-P", "prefork", "-c", "2", "-Q", cluster.queue, "-n",
            f"{cluster.queue}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    worker = cluster.start("worker", argv, cluster.root, cluster.env)
    worker.wait_log(r"\S+@\S+ ready\.")
    cluster.beat()
    done = wait_for(lambda: finished(engine, "ok", 3, "succeeded"), 20, "three recorded successes")
    assert all(r.runtime is not None and r.worker for r in done)
    assert "cannot record" not in worker.log()


def test_run_once_tasks_are_started_once_and_recorded(cluster: Cluster, session: Session,
                                                      engine: Engine) -> None:
    """Under ``RunOnceTask`` the tracker's start is the run-once check: one write, and the
    first copy is never taken for a second one."""
    (cluster.root / "e2eapp.py").write_text(OUTCOMES_APP.replace(
        '@app.task(bind=True, name="e2e.record")',
        '@app.task(bind=True, name="e2e.record", base=RunOnceTask)',
    ).replace("from celery import Celery\n", "from celery import Celery\n\n"
              "from beatsqlalchemy.worker import RunOnceTask\n"), encoding="utf-8")
    every_second(session, "ok", "e2e.record")
    worker = cluster.worker()
    cluster.beat()
    done = wait_for(lambda: finished(engine, "ok", 2, "succeeded"), 20, "two recorded successes")
    assert all(r.started_by == r.worker for r in done)
    assert "dropping a second copy" not in worker.log()
    assert len(cluster.records("ok")) >= 2


def test_unknown_and_expired_runs_are_recorded(cluster: Cluster, session: Session, engine: Engine) -> None:
    """A task name no worker knows (a typo) fails as ``unknown``; a run the worker received
    after its expiry is ``expired`` (both decided in the worker's main process)."""
    every_second(session, "typo", "e2e.no_such_task")
    PeriodicTask.update_or_create(session, name="stale", task="e2e.record", interval=timedelta(hours=1),
                                  args=["stale"], expire_seconds=1)
    PeriodicTask.update_or_create(session, name="stale", next_run_at=datetime.now(timezone.utc))
    cluster.beat()
    wait_for(lambda: [r for r in runs_of(engine, "stale") if r.state == "sent"] or None, 10,
             "the stale run sent")
    time.sleep(1.5)  # past its expiry before any worker takes it
    cluster.worker()
    [expired] = wait_for(lambda: finished(engine, "stale", 1), 20, "the expired run recorded")
    assert expired.outcome == "expired" and cluster.records("stale") == []
    unknown = wait_for(lambda: finished(engine, "typo", 2, "unknown"), 20, "unknown runs recorded")
    assert unknown[0].error is not None and "e2e.no_such_task" in unknown[0].error
    typo = stored(engine, "typo")
    assert typo is not None and typo.last_outcome == "unknown" and typo.consecutive_failures >= 2


def test_a_run_past_its_hard_time_limit_is_recorded_as_failed(cluster: Cluster, session: Session,
                                                              engine: Engine) -> None:
    """The pool process is killed: the worker's main process reports the failure."""
    (cluster.root / "e2eapp.py").write_text(OUTCOMES_APP + '''

@app.task(name="e2e.slow", time_limit=1)
def slow(tag):
    time.sleep(30)
''', encoding="utf-8")
    PeriodicTask.update_or_create(session, name="slow", task="e2e.slow", interval=timedelta(hours=1),
                                  args=["slow"])
    PeriodicTask.update_or_create(session, name="slow", next_run_at=datetime.now(timezone.utc))
    argv = ["-A", "e2eapp", "worker", "-l", "INFO", "-P", "prefork", "-c", "1", "-Q", cluster.queue, "-n",
            f"{cluster.queue}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    cluster.start("worker", argv, cluster.root, cluster.env).wait_log(r"\S+@\S+ ready\.")
    cluster.beat()
    [run] = wait_for(lambda: finished(engine, "slow", 1), 20, "the killed run recorded")
    assert run.outcome == "failed" and run.error is not None and "TimeLimitExceeded" in run.error
    task = stored(engine, "slow")
    assert task is not None and task.consecutive_failures == 1
