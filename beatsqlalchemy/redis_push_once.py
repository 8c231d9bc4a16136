"""kombu's Redis transport, pushing each beat run onto its queue at most once.

Beat's runs are pushed with a Lua script that pushes only if the queue has not had the
run's task id within the dedup period, and remembers the id for that long; the check and
the push are one atomic step in Redis. Every other message is pushed as kombu does.
Imported only where the broker is Redis (see ``beatsqlalchemy.broker``).

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from .broker import TTL_OPTION, report_unrouted
from .constants import BEAT_HEADER

logger = logging.getLogger(__name__)
_dumps: Callable[[Any], str] = kombu_json.dumps  # how kombu's Redis channel encodes a message

#: the Redis key that remembers a run pushed onto a queue: <prefix><queue>:<task id>
KEY_PREFIX = "beatsqlalchemy:published:"

#: KEYS: the run's key, the queue (priority) list, then the lists to expire with the
#: queue; ARGV: the message, the key's lifetime, the queue's x-expires (0: none). The
#: push comes before the key is set, so a push that fails leaves no key behind.
PUSH_ONCE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], '', 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  for i = 3, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 1
"""


class _PushOnce:
    """Channel mixin: a beat run is pushed with :data:`PUSH_ONCE_SCRIPT`, anything else as usual."""

    #: how long a pushed run's task id is remembered (milliseconds; a transport option)
    beatsqlalchemy_dedup_ms = 0
    #: pushes made by the publish under way (see ``basic_publish``)
    _pushes = 0

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """Publish as kombu does; a beat run sent to a named (not fanout) exchange that
        reached no queue, which kombu drops without a word, is reported."""
        channel: Any = self
        headers = message.get("headers") or {}
        if not exchange or not headers.get(BEAT_HEADER) or channel.typeof(exchange).type == "fanout":
            return super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[misc]
        self._pushes = 0
        published = super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[misc]
        if not self._pushes:
            report_unrouted(headers, exchange, routing_key, "Redis: no binding")
        return published

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self._pushes += 1
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
            pushed = client.eval(PUSH_ONCE_SCRIPT, len(keys), *keys, _dumps(message),
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
