"""Fixtures of the end-to-end suite: real brokers, real beat and worker processes.

The brokers are those of ``harness.servers``: the ``redis_url`` fixture of
``tests/conftest.py`` (``BEAT_TEST_REDIS_URL``, flushed) and ``BEAT_TEST_AMQP_URL`` (default
the local RabbitMQ).
On a failure the logs of every beat and worker the test started are added to the report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.processes import Cluster, Processes
from harness.servers import AMQP_URL, reachable_amqp

LOG_TAIL = 300  # lines of each log shown on failure

PROCESSES_KEY = pytest.StashKey[Processes]()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """The RabbitMQ broker URL."""
    yield reachable_amqp(AMQP_URL)


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, str], Cluster]:
    """Makes the test's cluster for a broker and a database URL; its processes are
    stopped at teardown and their logs go into the report when the test fails."""

    def make(broker_url: str, db_url: str) -> Cluster:
        cluster = Cluster(tmp_path, broker_url, db_url, queue=f"e2e-{uuid.uuid4().hex[:10]}")
        request.node.stash[PROCESSES_KEY] = cluster
        request.addfinalizer(cluster.stop_all)
        return cluster

    return make


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Processes:
    """Celery processes of any app, stopped at teardown, their logs reported on failure."""
    group = Processes(tmp_path)
    request.node.stash[PROCESSES_KEY] = group
    request.addfinalizer(group.stop_all)
    return group


@pytest.fixture
def cluster(make_cluster: Callable[[str, str], Cluster], redis_url: str, db_url: str) -> Cluster:
    """Beat and worker processes on the Redis broker and the test database."""
    return make_cluster(redis_url, db_url)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    group = item.stash.get(PROCESSES_KEY, None)
    if report.failed and group is not None:
        for title, text in group.logs():
            lines = text.splitlines()
            shown = "\n".join(lines[-LOG_TAIL:])
            cut = f"[... {len(lines) - LOG_TAIL} earlier lines]\n" if len(lines) > LOG_TAIL else ""
            report.sections.append((f"log of {title}", cut + shown))
