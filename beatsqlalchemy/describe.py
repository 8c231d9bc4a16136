"""Schedules in plain words ("every 30 seconds", "at 07:30 on Monday (Europe/Berlin)").

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from . import schedules as sched

_UNITS = {"days": "day", "hours": "hour", "minutes": "minute", "seconds": "second",
          "microseconds": "microsecond"}


def interval(every: int, period: str) -> str:
    """``every 30 seconds``, ``every minute``."""
    unit = _UNITS.get(period, period)
    return f"every {unit}" if every == 1 else f"every {every} {unit}s"


def cron_expression(minute: str, hour: str, day_of_month: str, month_of_year: str,
                    day_of_week: str) -> str:
    """The five fields in crontab order: ``m h dom mon dow``."""
    return f"{minute} {hour} {day_of_month} {month_of_year} {day_of_week}"


def crontab(minute: str, hour: str, day_of_week: str, day_of_month: str, month_of_year: str,
            timezone: str) -> str:
    """A crontab in words with its timezone; the raw expression when it cannot be described."""
    expression = cron_expression(minute, hour, day_of_month, month_of_year, day_of_week)
    words = _cron_words(expression)
    if words is None:
        return f"cron {expression} ({timezone})"
    return f"{words} ({timezone})"


def _cron_words(expression: str) -> str | None:
    try:
        from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]

        options = Options()
        options.use_24hour_time_format = True
        options.locale_code = "en_US"
        text = str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # not installed, or an expression it cannot read
        return None
    text = text.strip().replace(", only on ", " on ").replace(", only in ", " in ")
    if not text:
        return None
    return text[0].lower() + text[1:]


def solar(event: str, latitude: Decimal | float, longitude: Decimal | float) -> str:
    """``at sunset (52.52, 13.405)``."""
    words = event.replace("_", " ")
    if "_" in event and event.split("_", 1)[0] in ("dawn", "dusk"):
        kind, detail = event.split("_", 1)
        words = f"{detail} {kind}"
    return f"at {words} ({_number(latitude)}, {_number(longitude)})"


def clocked(moment: datetime) -> str:
    """``once at 2030-01-01 09:00 UTC``."""
    moment = sched.as_utc(moment)
    shown = moment.strftime("%Y-%m-%d %H:%M" if moment.second == moment.microsecond == 0
                            else "%Y-%m-%d %H:%M:%S")
    return f"once at {shown} UTC"


def _number(value: Decimal | float) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return text


def schedule_row(row: Any) -> str:
    """Words for any schedule model row (``IntervalSchedule``, ``CrontabSchedule``, ...)."""
    kind = getattr(row, "kind", None)
    if kind == "interval":
        return interval(row.every, row.period)
    if kind == "crontab":
        return crontab(row.minute, row.hour, row.day_of_week, row.day_of_month,
                       row.month_of_year, row.timezone)
    if kind == "solar":
        return solar(row.event, row.latitude, row.longitude)
    if kind == "clocked":
        return clocked(row.clocked_time)
    return "no schedule"


def task(periodic_task: Any) -> str:
    """Words for a ``PeriodicTask``'s schedule."""
    row = periodic_task.schedule_row
    if row is None:
        return "no schedule"
    try:
        return schedule_row(row)
    except (ValueError, TypeError, ArithmeticError, AttributeError):  # values written with plain SQL
        return f"{row.kind} schedule {row.id} (unreadable)"
