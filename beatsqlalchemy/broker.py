"""Beat's broker connection: on Redis, each run reaches its queue at most once.

A run is published again, with the same task id, when the beat that claimed it did not
record it as sent in time: it was killed or frozen after the broker accepted the run, or
frozen inside the publish call and resumed after another beat took the claim over. No
sender can tell those from a run never published. Redis can: beat pushes each run with a
Lua script that pushes only if the queue has not had the run's task id within
``beat_sqlalchemy_broker_dedup_seconds``, and remembers the id for that long. A kombu
publish retried after a lost reply finds its own first push, too. Other brokers get the
plain connection; ``RunOnceTask`` on the workers covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from .store import BEAT_HEADER

logger = logging.getLogger(__name__)
_dumps: Callable[[Any], str] = kombu_json.dumps  # how kombu's Redis channel encodes a message

#: the Redis key that remembers a run pushed onto a queue: <prefix><queue>:<task id>
KEY_PREFIX = "beatsqlalchemy:published:"
#: the transport option that carries the dedup period (milliseconds) to the channel
TTL_OPTION = "beatsqlalchemy_dedup_ms"

#: KEYS: the run's key, the queue (priority) list, then the lists to expire with the
#: queue; ARGV: the message, the key's lifetime, the queue's x-expires (0: none). The
#: push comes before the key is set, so a push that fails leaves no key behind.
PUSH_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], '', 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  for i = 3, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 1
"""


class _PushOnce:
    """Channel mixin: a beat run is pushed with :data:`PUSH_ONCE`, anything else as usual."""

    #: how long a pushed run's task id is remembered (milliseconds; a transport option)
    beatsqlalchemy_dedup_ms = 0

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        task_id = headers.get("id")
        if (not task_id or not headers.get(BEAT_HEADER) or not self.beatsqlalchemy_dedup_ms
                or kwargs.get("_publish_batch") is not None):
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        channel: Any = self
        prefix = channel.global_keyprefix  # EVAL's keys are not prefixed by kombu's client
        pri = channel._get_message_priority(message, reverse=False)
        keys = [f"{prefix}{KEY_PREFIX}{queue}:{task_id}", prefix + channel._q_for_pri(queue, pri)]
        expires = (channel._expires or {}).get(queue, 0)
        if expires:
            keys += [prefix + channel._q_for_pri(queue, p) for p in channel.priority_steps]
        with channel.conn_or_acquire() as client:
            pushed = client.eval(PUSH_ONCE, len(keys), *keys, _dumps(message),
                                 self.beatsqlalchemy_dedup_ms, expires)
        if not pushed:
            logger.warning("beat: run %s (%s) was pushed onto queue %r already (by an earlier "
                           "attempt or another beat); not pushed again", task_id,
                           headers.get("task"), queue)


class PushOnceChannel(_PushOnce, kombu_redis.Channel):
    """A Redis channel that pushes each beat run once."""

    from_transport_options = (  # type: ignore[assignment]  # one more than the base's
        *kombu_redis.Channel.from_transport_options, TTL_OPTION)


class PushOnceSentinelChannel(_PushOnce, kombu_redis.SentinelChannel):
    """A Redis Sentinel channel that pushes each beat run once."""

    from_transport_options = (  # type: ignore[assignment]  # one more than the base's
        *kombu_redis.SentinelChannel.from_transport_options, TTL_OPTION)


class PushOnceTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`PushOnceChannel`."""

    Channel = PushOnceChannel


class PushOnceSentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Redis Sentinel transport with :class:`PushOnceSentinelChannel`."""

    Channel = PushOnceSentinelChannel


#: kombu's own transports, and what beat uses in their place
_PUSH_ONCE: dict[type, type] = {
    kombu_redis.Transport: PushOnceTransport,
    kombu_redis.SentinelTransport: PushOnceSentinelTransport,
}


def beat_connection(app: Celery, dedup_seconds: float) -> Connection:
    """The connection beat publishes on: the app's, with the push-once transport where the
    broker is Redis (or Sentinel) and ``dedup_seconds`` is not 0."""
    connection: Connection = app.connection_for_write()
    push_once = _PUSH_ONCE.get(_transport(connection)) if dedup_seconds > 0 else None
    if push_once is None:
        return connection
    options = {**(connection.transport_options or {}), TTL_OPTION: max(int(dedup_seconds * 1000), 1)}
    clone: Connection = connection.clone(  # type: ignore[no-untyped-call]
        transport=push_once, transport_options=options)
    return clone


def pushes_once(connection: Connection) -> bool:
    """Whether ``connection`` pushes each beat run at most once."""
    return _transport(connection) in _PUSH_ONCE.values()


def _transport(connection: Connection) -> type:
    cls: type = connection.get_transport_cls()  # type: ignore[no-untyped-call]
    return cls
