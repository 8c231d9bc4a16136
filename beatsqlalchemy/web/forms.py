"""The create and edit form: its fields as typed, the ``save_task`` keywords they stand
for (every value validated by the package, not here), and where an error goes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..constants import CONFIG_SOURCE, SCHEDULE_KINDS
from ..describe import cron_expression
from ..listing import task_zone
from ..models import PeriodicTask
from ..schedules import split_cron

#: the form's text fields and the value a new task starts with
DEFAULTS: dict[str, str] = {
    "name": "", "task": "", "kind": "interval", "every": "30", "period": "seconds",
    "cron": "*/5 * * * *", "timezone": "UTC", "clocked_time": "", "event": "sunrise",
    "latitude": "", "longitude": "", "args": "[]", "kwargs": "{}", "headers": "{}",
    "queue": "", "exchange": "", "routing_key": "", "priority": "", "expire_seconds": "",
    "misfire_policy": "default", "description": "",
}
CHECKBOXES = ("enabled", "one_off")
PERIODS = ("seconds", "minutes", "hours", "days")
SOLAR_EVENTS = ("sunrise", "sunset", "solar_noon", "dawn_astronomical", "dawn_nautical", "dawn_civil",
                "dusk_astronomical", "dusk_nautical", "dusk_civil")
MISFIRE_CHOICES = ("default", "catch_up", "skip")
#: what the configuration owns on a task from ``beat_schedule``: all but ``enabled``
CONFIG_OWNED = ("task", "kind", "every", "period", "cron", "timezone", "clocked_time", "event",
                "latitude", "longitude", "args", "kwargs", "headers", "queue", "exchange",
                "routing_key", "priority", "expire_seconds", "misfire_policy", "description", "one_off")
#: the form field showing an error about each field the package names
_ERROR_FIELDS = {
    **{key: "cron" for key in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year",
                                "crontab", "schedule")},
    "interval": "every", "clocked": "clocked_time", "at": "clocked_time", "solar": "event",
    "expires": "expire_seconds", "extra_options": "_form",
}


def blank(kind: str | None = None) -> dict[str, Any]:
    """The fields of a new task's form."""
    fields: dict[str, Any] = dict(DEFAULTS, enabled=True, one_off=False)
    if kind in SCHEDULE_KINDS:
        fields["kind"] = kind
    return fields


def from_task(task: PeriodicTask) -> dict[str, Any]:
    """The fields of the edit form of ``task``, as stored."""
    fields = blank()
    row: Any = task.schedule_row
    fields.update(
        name=task.name, task=task.task, args=json.dumps(task.args), kwargs=json.dumps(task.kwargs),
        headers=json.dumps(task.headers or {}), queue=task.queue or "", exchange=task.exchange or "",
        routing_key=task.routing_key or "", priority="" if task.priority is None else str(task.priority),
        expire_seconds="" if task.expire_seconds is None else str(task.expire_seconds),
        misfire_policy=task.misfire_policy or "default", description=task.description or "",
        enabled=bool(task.enabled), one_off=bool(task.one_off), kind=getattr(row, "kind", "interval"),
    )
    if row is not None and row.kind == "interval":
        fields.update(every=str(row.every), period=row.period)
    elif row is not None and row.kind == "crontab":
        fields.update(cron=cron_expression(row.minute, row.hour, row.day_of_month, row.month_of_year,
                                           row.day_of_week), timezone=task_zone(task))
    elif row is not None and row.kind == "solar":
        fields.update(event=row.event, latitude=str(row.latitude), longitude=str(row.longitude))
    elif row is not None and row.kind == "clocked":
        fields["clocked_time"] = str(row.clocked_time)
    return fields


def typed(form: Mapping[str, Any]) -> dict[str, Any]:
    """The form's fields as the user typed them (to show them again)."""
    fields: dict[str, Any] = {key: str(form.get(key, default)) for key, default in DEFAULTS.items()}
    fields.update({key: form.get(key) is not None for key in CHECKBOXES})
    return fields


def _number(text: str) -> int | str | None:
    """A number field: empty is none; digits are a number; anything else goes to the
    validator as typed (which names it)."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _schedule(fields: Mapping[str, Any]) -> dict[str, Any]:
    kind = fields["kind"]
    if kind == "interval":
        return {"interval": {"every": _number(fields["every"]), "period": fields["period"]}}
    if kind == "crontab":
        return {"crontab": {**split_cron(fields["cron"]), "timezone": fields["timezone"].strip()}}
    if kind == "solar":
        return {"solar": {"event": fields["event"], "latitude": fields["latitude"].strip() or None,
                          "longitude": fields["longitude"].strip() or None}}
    return {"clocked": {"clocked_time": fields["clocked_time"].strip() or None}}


def save_keywords(fields: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """``save_task`` keywords for the typed ``fields``; a task from the configuration
    (``source`` "config") takes only ``enabled``."""
    if source == CONFIG_SOURCE:
        return {"enabled": bool(fields["enabled"])}
    values: dict[str, Any] = {
        "task": fields["task"], "args": fields["args"], "kwargs": fields["kwargs"],
        "headers": fields["headers"], "description": fields["description"],
        "enabled": bool(fields["enabled"]), "one_off": bool(fields["one_off"]),
        "priority": _number(fields["priority"]), "expire_seconds": _number(fields["expire_seconds"]),
        "misfire_policy": None if fields["misfire_policy"] == "default" else fields["misfire_policy"],
    }
    for key in ("queue", "exchange", "routing_key"):
        values[key] = fields[key].strip() or None
    values.update(_schedule(fields))
    return values


def error_field(field: str) -> str:
    """The form field that shows an error the package raised about ``field``."""
    if field in DEFAULTS:
        return field
    return _ERROR_FIELDS.get(field, "_form")
