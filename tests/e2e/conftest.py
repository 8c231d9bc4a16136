"""Fixtures of the end-to-end suite: real brokers, real beat and worker processes.

The brokers are those of ``harness.servers``: the ``redis_url`` fixture of
``tests/conftest.py`` (``BEAT_TEST_REDIS_URL``, flushed) and ``BEAT_TEST_AMQP_URL`` (default
the local RabbitMQ). The ``processes`` fixture and the logs of a failed test's processes in its report come
from ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.processes import Cluster
from harness.servers import AMQP_URL, reachable_amqp


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """The RabbitMQ broker URL."""
    yield reachable_amqp(AMQP_URL)


@pytest.fixture
def make_cluster(keep_processes: Callable[[Cluster], Cluster],
                 tmp_path: Path) -> Callable[[str, str], Cluster]:
    """Makes the test's cluster for a broker and a database URL; its processes are
    stopped at teardown and their logs go into the report when the test fails."""

    def make(broker_url: str, db_url: str) -> Cluster:
        return keep_processes(Cluster(tmp_path, broker_url, db_url, queue=f"e2e-{uuid.uuid4().hex[:10]}"))

    return make


@pytest.fixture
def cluster(make_cluster: Callable[[str, str], Cluster], redis_url: str, db_url: str) -> Cluster:
    """Beat and worker processes on the Redis broker and the test database."""
    return make_cluster(redis_url, db_url)
