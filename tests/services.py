"""What every test suite here shares about the real services: a missing one skips its
tests, except under ``CI=true``, where it fails them; a Redis database is flushed first."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip a test whose service is missing, or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def flushed_redis(url: str) -> str:
    """``url``, its Redis database flushed; unavailable() when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url} is unavailable: {exc}")
    finally:
        client.close()
    return url


def reachable_amqp(url: str) -> str:
    """``url``; unavailable() when RabbitMQ does not answer."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        unavailable(f"RabbitMQ at {url} is unavailable: {exc}")
    return url
