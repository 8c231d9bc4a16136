"""Beat's broker connection: on Redis, each run reaches its queue at most once.

A run is published again, with the same task id, when the beat that claimed it did not
record it as sent in time: it was killed or frozen after the broker accepted the run, or
frozen inside the publish call and resumed after another beat took the claim over. No
sender can tell those from a run never published. Redis can: on a Redis broker beat
publishes through ``beatsqlalchemy.redis_push_once``, which pushes a run only if its queue
has not had the run's task id within ``beat_sqlalchemy_broker_dedup_seconds``. A kombu
publish retried after a lost reply finds its own first push, too. Other brokers get the
app's connection; ``RunOnceTask`` on the workers covers them.

A run routed to an exchange no queue is bound to (for its routing key) is dropped by the
broker, while the broker accepted it: beat says so (``report_unrouted``), once per task
and route. On Redis beat's channel sees that kombu found no queue for it; on AMQP beat
publishes with the ``mandatory`` flag and reads the runs the broker hands back.

On AMQP beat publishes with publisher confirms: a run is recorded as sent only once the
broker has acknowledged it, and a refusal (an exchange that does not exist closes the
channel) belongs to the run that caused it, never to the next one on the channel.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu import transport as kombu_transports
from kombu.connection import Connection

logger = logging.getLogger(__name__)

#: the transport option that carries the dedup period (milliseconds) to the channel
TTL_OPTION = "beatsqlalchemy_dedup_ms"

#: kombu's Redis transports, and what beat publishes through in their place (named, so
#: that the Redis client is imported only where the broker is Redis)
PUSH_ONCE = {
    "kombu.transport.redis:Transport": "beatsqlalchemy.redis_push_once:PushOnceTransport",
    "kombu.transport.redis:SentinelTransport": "beatsqlalchemy.redis_push_once:PushOnceSentinelTransport",
}


def beat_connection(app: Celery, dedup_seconds: float) -> Connection:
    """The connection beat publishes on: the app's, with the push-once transport where the
    broker is Redis (or Sentinel) and ``dedup_seconds`` is not 0, with publisher confirms
    on AMQP."""
    connection: Connection = app.connection_for_write()
    if returns_unrouted(connection):  # AMQP: wait for the broker's ack of each run
        confirmed: Connection = connection.clone(  # type: ignore[no-untyped-call]
            transport_options={**(connection.transport_options or {}), "confirm_publish": True})
        return confirmed
    push_once = PUSH_ONCE.get(_transport_name(connection))
    if push_once is None:
        return connection
    # with no dedup period the channel pushes as kombu does, and still reports unrouted runs
    ttl = max(int(dedup_seconds * 1000), 1) if dedup_seconds > 0 else 0
    options = {**(connection.transport_options or {}), TTL_OPTION: ttl}
    clone: Connection = connection.clone(  # type: ignore[no-untyped-call]
        transport=push_once, transport_options=options)
    return clone


def pushes_once(connection: Connection) -> bool:
    """Whether ``connection`` pushes each beat run at most once."""
    return (_transport_name(connection) in PUSH_ONCE.values()
            and bool((connection.transport_options or {}).get(TTL_OPTION)))


def returns_unrouted(connection: Connection) -> bool:
    """Whether the broker hands back a message no queue took when it is published with
    the ``mandatory`` flag (AMQP through py-amqp)."""
    return _transport_name(connection).startswith("kombu.transport.pyamqp:")


#: the (task, exchange, routing key) of unrouted runs reported already
_REPORTED: set[tuple[str, str, str]] = set()
#: reported routes remembered at most (then they are forgotten and may be said again)
REPORTED_MAX = 10_000


def report_unrouted(headers: Mapping[str, Any], exchange: str, routing_key: str, reason: str) -> None:
    """Log that the broker dropped a beat run no queue took, once per task and route."""
    key = (str(headers.get("task")), str(exchange), str(routing_key))
    if key in _REPORTED:
        return
    if len(_REPORTED) >= REPORTED_MAX:
        _REPORTED.clear()
    _REPORTED.add(key)
    logger.warning(
        "beat: the broker dropped run %s (%s): no queue is bound to exchange %r with routing key %r "
        "(%s); the run log says sent. Bind a queue or fix the task's exchange/routing_key (said once "
        "per task and route)", headers.get("id"), key[0], exchange, routing_key, reason,
    )


def _transport_name(connection: Connection) -> str:
    """``module:Class`` of the connection's transport, without importing it."""
    transport = connection.transport_cls
    if isinstance(transport, str):
        return str(kombu_transports.TRANSPORT_ALIASES.get(transport, transport))
    return f"{transport.__module__}:{transport.__qualname__}"


def publish(app: Celery, name: str, args: list[Any], kwargs: dict[str, Any], task_id: str,
            options: Mapping[str, Any], producer: Any = None) -> None:
    """Publish one run of the Celery task ``name``: the one publish path of beat's runs and
    of ``api.run_now``. A task the app registers is sent through it (its own routing and
    serializer), any other by name; ``producer`` is beat's (None: the app's pool)."""
    via = {} if producer is None else {"producer": producer}
    task = app.tasks.get(name)
    if task is not None:
        task.apply_async(args, kwargs, task_id=task_id, **via, **options)
    else:
        app.send_task(name, args, kwargs, task_id=task_id, **via, **options)
