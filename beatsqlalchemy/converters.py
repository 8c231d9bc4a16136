"""Internal. Every accepted form of a value turned into column values, for every door (the
models' seed API, the api, beat's ``add``, the command line): a schedule in any form
(a row, a dict, JSON, a Celery schedule, a timedelta, seconds, a cron string), a
duration such as ``1h30m``, and apply_async options."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_schedule
from celery.schedules import solar as celery_solar

from . import schedules as sched
from .celery_schedules import ClockedCelerySchedule, ZonedCrontab
from .exceptions import ValidationError
from .message_options import OPTION_COLUMNS
from .models import SCHEDULE_MODELS, ScheduleMixin
from .schedules import MAX_INTERVAL


def schedule_kind(value: Any) -> str:
    """Which schedule table a value belongs in."""
    if isinstance(value, ScheduleMixin):
        return value.kind
    if isinstance(value, celery_crontab):
        return "crontab"
    if isinstance(value, celery_solar):
        return "solar"
    if isinstance(value, (ClockedCelerySchedule, datetime)):
        return "clocked"
    if isinstance(value, (celery_schedule, timedelta)) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        return "interval"
    if isinstance(value, str) and len(value.split()) == 5:
        return "crontab"
    raise ValidationError("schedule", value, "not a crontab, interval, solar or clocked schedule")


def schedule_fields(kind: str, value: Any) -> dict[str, Any]:
    """The column values of a schedule given in any accepted form."""
    if isinstance(value, str):
        stripped = value.strip()
        if kind == "crontab" and not stripped.startswith("{"):
            return sched.split_cron(stripped)
        if kind == "clocked" and not stripped.startswith("{"):
            return {"clocked_time": value}
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise ValidationError(kind, value, f"not valid JSON: {exc}") from exc
    if isinstance(value, dict):
        known = SCHEDULE_MODELS[kind].identity
        unknown = set(value) - set(known)
        if unknown:
            raise ValidationError(kind, value, f"unknown field(s) {', '.join(sorted(unknown))}")
        return dict(value)
    if kind == "crontab" and isinstance(value, celery_crontab):
        # Celery's crontab runs in its app's timezone; ours carries its own
        tz = value.tz_name if isinstance(value, ZonedCrontab) else sched.app_timezone(
            getattr(value, "_app", None))
        return {
            "minute": str(value._orig_minute), "hour": str(value._orig_hour),
            "day_of_week": str(value._orig_day_of_week),
            "day_of_month": str(value._orig_day_of_month),
            "month_of_year": str(value._orig_month_of_year), "timezone": tz,
        }
    if kind == "interval" and isinstance(value, (celery_schedule, timedelta, int, float)):
        delta = value.run_every if isinstance(value, celery_schedule) else value
        if not isinstance(delta, timedelta):
            try:
                delta = timedelta(seconds=delta)
            except (OverflowError, ValueError) as exc:  # too long, NaN
                raise ValidationError(kind, value, f"not a usable number of seconds: {exc}") from exc
        return interval_fields(delta)
    if kind == "solar" and isinstance(value, celery_solar):
        return {"event": value.event, "latitude": value.lat, "longitude": value.lon}
    if kind == "clocked" and isinstance(value, (datetime, ClockedCelerySchedule)):
        return {"clocked_time": getattr(value, "clocked_time", value)}
    raise ValidationError(kind, value, f"cannot be read as a {kind} schedule")


def interval_fields(delta: timedelta) -> dict[str, Any]:
    """``every``/``period`` for a timedelta, in the largest unit that divides it."""
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros < 1:
        raise ValidationError("interval", delta, "must be longer than zero")
    for period, size in (("days", 86_400_000_000), ("hours", 3_600_000_000),
                         ("minutes", 60_000_000), ("seconds", 1_000_000)):
        if micros % size == 0:
            return {"every": micros // size, "period": period}
    return {"every": micros, "period": "microseconds"}


def option_fields(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Task columns for a dict of apply_async options; ``expires`` keeps its kind (a
    number or timedelta stays relative, a datetime stays absolute)."""
    fields: dict[str, Any] = {"expires": None, "expire_seconds": None, "extra_options": None}
    extra: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in OPTION_COLUMNS:
            fields[key] = value
        elif key == "expires":
            if isinstance(value, timedelta):
                fields["expire_seconds"] = int(value.total_seconds())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise ValidationError("expires", value, "must be a finite number of seconds")
                fields["expire_seconds"] = int(value)
            elif isinstance(value, (datetime, str)):
                fields["expires"] = value
            elif value is not None:
                raise ValidationError("expires", value, "must be seconds, a timedelta or a datetime")
        else:
            extra[key] = value
    if extra:
        fields["extra_options"] = extra
    return fields


_DURATION = re.compile(r"(\d+)\s*([a-z]*)")
_UNITS = {
    "": "seconds", "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds",
    "seconds": "seconds", "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes",
    "minutes": "minutes", "h": "hours", "hr": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days", "ms": "milliseconds",
}


def parse_duration(value: str) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, or a number of seconds."""
    text = value.strip().lower().replace(" ", "")
    parts = _DURATION.findall(text)
    if (not text or "".join(n + u for n, u in parts) != text or any(u not in _UNITS for _, u in parts)
            or (len(parts) > 1 and any(not u for _, u in parts))):
        raise ValidationError("every", value, "a duration such as 30s, 5m, 2h, 1d or 1h30m")
    try:
        delta = sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())
    except (OverflowError, ValueError):  # beyond timedelta, or an int of over 4,300 digits
        delta = timedelta.max
    if delta <= timedelta(0):
        raise ValidationError("every", value, "must be longer than zero")
    if delta > MAX_INTERVAL:
        raise ValidationError("every", value, f"must be at most {MAX_INTERVAL.days} days")
    return delta
