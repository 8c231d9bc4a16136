"""What a stored task may put in the messages beat sends: one allow-list for every door.

A task's ``headers``, ``extra_options`` and option columns become message headers and
``apply_async`` options. Celery reads its own fields (task name, task id, ETA, ...) from the
same headers and options, so an unchecked row could send another task, under a fixed id,
held until a date, pickled, or with callbacks that run other tasks. The models, the API and
beat (for rows written with plain SQL) all check a row here.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .constants import BEAT_HEADER
from .exceptions import ValidationError
from .schedules import INT32_MAX
from .validators import as_int, as_name

#: headers Celery, kombu or the worker read as their own: the fields of a protocol 2
#: message (``celery.app.amqp.AMQP.as_task_v2``), kombu's ``compression``, and every
#: attribute of the worker's task request (``celery.app.task.Context``), which the
#: worker fills from the headers
RESERVED_HEADERS = frozenset((
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
    "compression",
    "args", "kwargs", "callbacks", "errbacks", "chain", "chord", "called_directly",
    "correlation_id", "delivery_info", "headers", "hostname", "is_eager", "logfile", "loglevel",
    "properties", "reply_to", "taskset", "time_limit", "soft_time_limit", "utc", "children",
    "as_execution_options", "clear", "get", "update",
    BEAT_HEADER,
))
#: header name prefixes that are reserved too: private names, and RabbitMQ's own
#: (``x-delay`` holds a message like an ETA)
RESERVED_PREFIXES = ("_", "x-")

#: the options with a column of their own (``expires`` has two: ``expires`` for a moment,
#: ``expire_seconds`` for a lifetime)
OPTION_COLUMNS = ("queue", "exchange", "routing_key", "priority", "headers")

#: the most retries, and the longest wait between two, a task's retry_policy may ask for:
#: one publish then holds beat for at most ten seconds
MAX_RETRIES = 10
MAX_RETRY_INTERVAL = 1.0
RETRY_POLICY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max")
#: compressions every worker can read (the standard library's)
COMPRESSIONS = ("zlib", "gzip", "bzip2", "lzma")
DELIVERY_MODES = (1, 2, "transient", "persistent")
ROUTE_LENGTH = 200


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _route(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > ROUTE_LENGTH or "\x00" in value:
        raise ValidationError("extra_options", value, f"{key!r} must be a name of 1 to {ROUTE_LENGTH} "
                              "characters")


def _priority(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValidationError("extra_options", value, f"{key!r} must be a whole number between 0 and 255")


def _expires(key: str, value: Any) -> None:
    if _number(value) and value >= 0:
        return
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return
        except ValueError:
            pass
    raise ValidationError("extra_options", value, f"{key!r} must be seconds (0 or more) or an ISO 8601 "
                          "date and time")


def _seconds(key: str, value: Any) -> None:
    if not _number(value) or value <= 0:
        raise ValidationError("extra_options", value, f"{key!r} must be a positive number of seconds")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValidationError("extra_options", value, f"{key!r} must be true or false")


def _retry_policy(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValidationError("extra_options", value, f"{key!r} must be an object with "
                              f"{', '.join(RETRY_POLICY_KEYS)}")
    for name, item in value.items():
        if name == "max_retries":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_RETRIES:
                raise ValidationError("extra_options", value, f"{key!r}: max_retries must be a whole "
                                      f"number between 0 and {MAX_RETRIES}")
        elif name in RETRY_POLICY_KEYS:
            if not _number(item) or not 0 <= item <= MAX_RETRY_INTERVAL:
                raise ValidationError("extra_options", value, f"{key!r}: {name} must be between 0 and "
                                      f"{MAX_RETRY_INTERVAL:g} seconds")
        else:
            raise ValidationError("extra_options", value, f"{key!r}: {name!r} is not a retry policy "
                                  f"field; allowed: {', '.join(RETRY_POLICY_KEYS)}")


def _one_of(choices: tuple[Any, ...]) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if isinstance(value, bool) or value not in choices:
            raise ValidationError("extra_options", value, f"{key!r} must be one of "
                                  f"{', '.join(map(repr, choices))}")
    return check


#: the apply_async options ``extra_options`` may hold, and the check of each value. The
#: routing options and ``priority``/``expires`` have columns, which win when both are set.
#: Everything else is refused: the task name and id, serializer, producer, connection,
#: ETA and countdown, link/link_error callbacks, shadow (the name the worker shows), ...
OPTIONS: dict[str, Callable[[str, Any], None]] = {
    "queue": _route,
    "exchange": _route,
    "routing_key": _route,
    "priority": _priority,
    "expires": _expires,
    "time_limit": _seconds,
    "soft_time_limit": _seconds,
    "ignore_result": _flag,
    "retry": _flag,
    "retry_policy": _retry_policy,
    "compression": _one_of(COMPRESSIONS),
    "delivery_mode": _one_of(DELIVERY_MODES),
}


def reserved_header(key: Any) -> bool:
    """Whether a header of this name would set one of Celery's (or beat's) own fields."""
    return isinstance(key, str) and (key in RESERVED_HEADERS or key[:1] == "_" or key[:2].lower() == "x-")


def check_headers(headers: Mapping[str, Any]) -> None:
    """Raise ValidationError (field ``headers``) naming the first reserved key."""
    for key in headers:
        if reserved_header(key):
            raise ValidationError("headers", dict(headers), f"reserved key {key!r}: Celery reads it as "
                                  "its own message field (task name, task id, ETA, ...); use another name")


def check_options(options: Mapping[str, Any]) -> None:
    """Raise ValidationError (field ``extra_options``) naming the first key that is not
    an option a periodic task may set, or whose value is unusable."""
    for key, value in options.items():
        check = OPTIONS.get(key) if isinstance(key, str) else None
        if check is None:
            hint = "; set the headers field instead" if key == "headers" else ""
            raise ValidationError("extra_options", dict(options), f"{key!r} is not an option a periodic "
                                  f"task may set{hint}; allowed: {', '.join(OPTIONS)}")
        check(key, value)


def build_options(
    extra: Mapping[str, Any] | None, headers: Mapping[str, Any] | None, *, queue: str | None,
    exchange: str | None, routing_key: str | None, priority: int | None, expires: datetime | None,
    expire_seconds: int | None,
) -> dict[str, Any]:
    """The ``apply_async`` options of a task's columns (decoded from JSON), checked: the
    one builder of beat's runs (``store``) and of ``api.run_now``."""
    options: dict[str, Any] = dict(extra) if extra else {}
    if options:
        check_options(options)
    if queue:
        options["queue"] = as_name("queue", queue)
    if exchange:
        options["exchange"] = as_name("exchange", exchange)
    if routing_key:
        options["routing_key"] = as_name("routing_key", routing_key)
    if priority is not None:
        options["priority"] = as_int("priority", priority, 0, 255)
    if expires is not None:
        options["expires"] = expires
    elif expire_seconds is not None:
        options["expires"] = as_int("expire_seconds", expire_seconds, 0, INT32_MAX)
    if headers:  # nothing a row holds may set Celery's own fields
        check_headers(headers)
    options["headers"] = dict(headers) if headers else {}
    return options
