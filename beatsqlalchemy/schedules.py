"""Schedule math: parsing cron fields and computing the next run in UTC.

Crontabs are evaluated in their own IANA timezone, one run per matching local
wall-clock time: a time skipped by a spring-forward change runs once, at the
same UTC offset it would have had before the change; a time repeated by a
fall-back change runs once, at its first occurrence, for crontabs that name
their hours, and at both occurrences for crontabs that run every hour (as cron
does), so that no real hour goes without its runs.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab_parser

from .exceptions import MissingPackage, ValidationError

UTC = timezone.utc
PERIODS = ("days", "hours", "minutes", "seconds", "microseconds")
SOLAR_EVENTS = (
    "dawn_astronomical", "dawn_nautical", "dawn_civil", "sunrise", "solar_noon",
    "sunset", "dusk_civil", "dusk_nautical", "dusk_astronomical",
)
#: cron field name -> (size, first value) as celery's parser expects them.
CRON_FIELDS: dict[str, tuple[int, int]] = {
    "minute": (60, 0),
    "hour": (24, 0),
    "day_of_week": (7, 0),
    "day_of_month": (31, 1),
    "month_of_year": (12, 1),
}
CRON_ORDER = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
#: the largest value of the INTEGER columns (every, expire_seconds) on PostgreSQL and MySQL
INT32_MAX = 2**31 - 1
#: the longest interval: far inside timedelta's range, and short enough to add to any
#: time a task can run at until about the year 9000
MAX_INTERVAL = timedelta(days=365_250)  # 1,000 years
#: the largest ``every`` of each period
MAX_EVERY = {period: min(INT32_MAX, MAX_INTERVAL // timedelta(**{period: 1})) for period in PERIODS}
_TINY = timedelta(microseconds=1)
_SEARCH_YEARS = 29  # reaches any Feb 29 that also has to fall on a given weekday
_DAY = timedelta(days=1)
_TWO_DAYS = timedelta(days=2)
_MONTH = timedelta(days=32)  # from the 1st, always into the next month
_MICRO_DEGREE = Decimal("0.000001")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already. May raise
    OverflowError for a time within a day of datetime.min or max (see ``checked_utc``)."""
    if value.tzinfo is UTC:  # what the database gives back: nothing to do
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def checked_utc(field: str, value: datetime, given: Any = None) -> datetime:
    """``as_utc(value)``, or a ValidationError naming ``field`` and ``given`` (the value
    as the user wrote it; default ``value``) when that falls outside the years 1 to 9999
    (0001-01-01T00:00+14:00 is in year 0 in UTC)."""
    try:
        return as_utc(value)
    except OverflowError:
        shown = value if given is None else given
        raise ValidationError(field, shown, "outside the years 1 to 9999 in UTC") from None


#: the app timezone chosen by ``in_app_timezone`` (None: Celery's current app)
_APP_TIMEZONE: ContextVar[str | None] = ContextVar("beatsqlalchemy_app_timezone", default=None)


def app_timezone(app: Any = None) -> str:
    """What a crontab given without a timezone is evaluated in, at every door: the Celery
    app's ``timezone`` setting, else UTC (Celery evaluates its own crontab in the app's
    timezone too). The app is ``app``, else the one chosen by ``in_app_timezone``, else
    Celery's current app."""
    if app is None:
        chosen = _APP_TIMEZONE.get()
        if chosen is not None:
            return chosen
        from celery import current_app

        app = current_app
    setting = app.conf.timezone
    if not setting:
        return "UTC"
    return setting if isinstance(setting, str) else str(getattr(setting, "key", setting))


@contextmanager
def in_app_timezone(app: Any) -> Iterator[None]:
    """Within the block, a crontab given without a timezone takes ``app``'s, UTC when
    ``app`` is None (for writers that know their app, or that they have none: beat,
    ``DatabaseScheduler.add``, the command line)."""
    token = _APP_TIMEZONE.set("UTC" if app is None else app_timezone(app))
    try:
        yield
    finally:
        _APP_TIMEZONE.reset(token)


def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name, or a ValidationError naming it."""
    if not isinstance(name, str):
        raise ValidationError("timezone", name, "unknown IANA timezone")
    return _zone(name)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValidationError("timezone", name, "unknown IANA timezone") from exc


def parse_cron_field(field: str, value: str) -> tuple[int, ...]:
    """The sorted values a cron field matches, or a ValidationError."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, value, "must be a non-empty cron expression")
    return _parse_cron_field(field, value)


@lru_cache(maxsize=4096)
def _parse_cron_field(field: str, value: str) -> tuple[int, ...]:
    size, first = CRON_FIELDS[field]
    try:
        values = crontab_parser(size, first).parse(value.strip().lower())
    except Exception as exc:  # celery raises ValueError, ParseException, ...
        raise ValidationError(field, value, str(exc) or "unparsable") from exc
    if not values or not all(first <= v < first + size for v in values):
        raise ValidationError(field, value, f"values must lie in {first}..{first + size - 1}")
    return tuple(sorted(values))


#: fields whose reversed ranges (``5-1``) writers may not give: cron(8) refuses them,
#: Celery reads them as wrapping around; a week and a year are cycles (``sat-sun``,
#: ``nov-feb`` wrap, as in Celery), minutes, hours and days of the month are not
NO_WRAP_FIELDS = ("minute", "hour", "day_of_month")


def check_cron_field(field: str, value: str) -> tuple[int, ...]:
    """``parse_cron_field`` for writers: also refuses a reversed range in a field of
    NO_WRAP_FIELDS (rows already stored keep Celery's reading)."""
    values = parse_cron_field(field, value)
    if field in NO_WRAP_FIELDS:
        size, first = CRON_FIELDS[field]
        for part in value.strip().lower().split(","):
            span = part.split("/")[0]
            if "-" not in span.strip("-"):
                continue
            low, _, high = span.partition("-")
            start, end = parse_cron_field(field, low)[0], parse_cron_field(field, high)[0]
            if end < start:
                raise ValidationError(field, value, f"the range {span} is reversed (cron refuses it); "
                                      f"write {start}-{first + size - 1},{first}-{end} for one that wraps")
    return values


def split_cron(expression: str) -> dict[str, str]:
    """A 5-field cron string (``m h dom mon dow``) as crontab field values."""
    parts = expression.split() if isinstance(expression, str) else []
    if len(parts) != 5:
        raise ValidationError("crontab", expression, "a cron string has 5 fields: m h dom mon dow")
    fields = dict(zip(CRON_ORDER, parts, strict=True))
    for name, value in fields.items():
        check_cron_field(name, value)
    return fields


def _shift(tz: ZoneInfo, moment: datetime) -> timedelta:
    """How far the UTC offset moves within a day or so of ``moment``: zero away from
    offset changes. (``utcoffset`` reads the UTC fields as a wall time, hence the two
    days: the window covers at least a day and a half either side.)"""
    later, earlier = tz.utcoffset(moment + _TWO_DAYS), tz.utcoffset(moment - _TWO_DAYS)
    assert later is not None and earlier is not None
    return abs(later - earlier)


@dataclass(frozen=True)
class Cron:
    """A parsed crontab: the matching values of each field and the timezone."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_week: frozenset[int]  # 0 = Sunday, as in cron and celery
    days_of_month: frozenset[int]
    months: frozenset[int]
    tz: ZoneInfo

    @classmethod
    def parse(
        cls, minute: str, hour: str, day_of_week: str, day_of_month: str,
        month_of_year: str, timezone_name: str,
    ) -> Cron:
        fields = (minute, hour, day_of_week, day_of_month, month_of_year)
        for name, value in zip(CRON_FIELDS, fields, strict=True):
            if not isinstance(value, str):  # before the cache: a list is unhashable
                parse_cron_field(name, value)
        if not isinstance(timezone_name, str):
            zone(timezone_name)
        return _parse_cron(minute, hour, day_of_week, day_of_month, month_of_year, timezone_name)

    def next_after(self, after: datetime) -> datetime | None:
        """The first run strictly after ``after`` (aware), in UTC; None if there is none
        (within _SEARCH_YEARS, or before datetime.max)."""
        after = as_utc(after)
        tz = self.tz
        try:
            # Near an offset change a wall time up to the shift before ``after`` can map
            # to a later instant (a skipped time runs at the old offset): look back that far.
            shift = _shift(tz, after)
        except OverflowError:  # within two days of datetime.min or max
            shift = timedelta(0)
        try:
            start = after.astimezone(tz).replace(tzinfo=None) - shift
            day = start.date()
            end = day + timedelta(days=366 * _SEARCH_YEARS) if day.year < 9000 else date.max
        except OverflowError:
            return None  # within a day of datetime.min or max
        # Wall times are tried in order; the first run found is the answer unless the
        # offset changes near it. Then a later wall time (a second occurrence, or one
        # after a skipped span) can still run earlier: look on for as long as the shift.
        both = bool(shift) and self.every_hour  # second occurrences of repeated wall times
        best: datetime | None = None
        limit: datetime | None = None  # the last wall time that can still run earlier
        hours, minutes, floor_hour, floor_minute = self.hours, self.minutes, start.hour, start.minute
        try:
            while day <= end:
                if limit is not None and day > limit.date():
                    return best
                if day.month not in self.months:
                    day = (day.replace(day=1) + _MONTH).replace(day=1)
                    floor_hour = floor_minute = 0
                    continue
                if day.day in self.days_of_month and (day.isoweekday() % 7) in self.days_of_week:
                    for hour in hours[bisect.bisect_left(hours, floor_hour):]:
                        for minute in (minutes if hour != floor_hour
                                       else minutes[bisect.bisect_left(minutes, floor_minute):]):
                            wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                            if limit is not None and wall > limit:
                                return best
                            found = wall.astimezone(UTC)
                            if found <= after:
                                if not both:
                                    continue
                                # a repeated wall time runs again at its second occurrence
                                # (fold=1 maps later); a skipped one only at the old offset
                                found = wall.replace(fold=1).astimezone(UTC)
                                if found <= after:
                                    continue
                            if best is None or found < best:
                                best = found
                            if limit is None:
                                spread = shift if best - after < _DAY else _shift(tz, best)
                                if not spread:
                                    return best
                                limit = wall + spread
                day += _DAY
                floor_hour = floor_minute = 0
        except OverflowError:
            pass  # the next wall time is past datetime.max in UTC: nothing later runs
        return best

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24


_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def never_fires(cron: Cron, now: datetime | None = None) -> str | None:
    """Why ``cron`` never runs, or None when it does: no month it names has a day it
    names (Feb 31st), or those days never fall on its weekdays (``next_after`` looks
    _SEARCH_YEARS ahead, every calendar cycle)."""
    days = sorted(cron.days_of_month)
    if not any(day <= _MONTH_DAYS[month] for month in cron.months for day in days):
        months = [_MONTHS[month] for month in sorted(cron.months)]
        named = " or ".join(str(day) for day in days)
        if len(months) == 1:
            return f"never fires: {months[0]} has no day {named}"
        return f"never fires: none of {', '.join(months)} has a day {named}"
    if cron.next_after(now or utcnow()) is None:
        return "never fires: its days of the month never fall on its days of the week"
    return None


@lru_cache(maxsize=4096)
def _parse_cron(
    minute: str, hour: str, day_of_week: str, day_of_month: str, month_of_year: str,
    timezone_name: str,
) -> Cron:
    return Cron(
        minutes=parse_cron_field("minute", minute),
        hours=parse_cron_field("hour", hour),
        days_of_week=frozenset(parse_cron_field("day_of_week", day_of_week)),
        days_of_month=frozenset(parse_cron_field("day_of_month", day_of_month)),
        months=frozenset(parse_cron_field("month_of_year", month_of_year)),
        tz=zone(timezone_name),
    )


def check_period(period: Any) -> str:
    """An interval's period, or a ValidationError naming it."""
    if not isinstance(period, str) or period not in PERIODS:
        raise ValidationError("period", period, f"must be one of {', '.join(PERIODS)}")
    return period


def check_every(every: Any, period: str | None = None) -> int:
    """An interval's ``every``: a whole number from 1 to what its INTEGER column holds
    and, given the period, to MAX_INTERVAL."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValidationError("every", every, "must be a whole number of at least 1")
    most = INT32_MAX if period is None else MAX_EVERY[period]
    if every > most:
        unit = f" {period}" if period is not None else ""
        raise ValidationError("every", every, f"must be at most {most}{unit}")
    return every


def interval_delta(every: Any, period: Any) -> timedelta:
    """The timedelta of an interval, or a ValidationError naming the bad field."""
    period = check_period(period)
    return timedelta(**{period: check_every(every, period)})


def next_interval(every: timedelta, anchor: datetime, now: datetime) -> datetime | None:
    """The first time ``anchor + k * every`` (k >= 1) later than ``now``: keeps the phase
    and skips the slots missed while beat was down. None past datetime.max."""
    anchor, now = as_utc(anchor), as_utc(now)
    try:
        if anchor + every > now:
            return anchor + every
        missed = (now - anchor) // every
        return anchor + every * (missed + 1)
    except OverflowError:
        return None


def solar_event(event: Any) -> str:
    """A solar event's name, or a ValidationError naming it."""
    if not isinstance(event, str) or event not in SOLAR_EVENTS:
        raise ValidationError("event", event, f"must be one of {', '.join(SOLAR_EVENTS)}")
    return event


def coordinate(field: str, value: Any) -> Decimal:
    """A latitude or longitude in degrees, to six decimal places (the columns' scale)."""
    limit = 90 if field == "latitude" else 180
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be a number")
    try:
        number = Decimal(value if isinstance(value, (int, Decimal)) else str(value))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ValidationError(field, value, "must be a number") from exc
    if not number.is_finite():
        raise ValidationError(field, value, "must be a finite number")
    if abs(number) <= limit + 1:  # quantize only what has few digits before the point
        number = number.quantize(_MICRO_DEGREE)
    if not -limit <= number <= limit:
        raise ValidationError(field, value, f"must lie between -{limit} and {limit}")
    return number


@lru_cache(maxsize=1)
def has_ephem() -> bool:
    """Whether ``ephem``, which solar schedules need, can be imported."""
    try:
        import ephem  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


#: the reason a solar row is broken without ``ephem``
MISSING_EPHEM = str(MissingPackage("solar", "ephem", "solar"))


def require_ephem() -> None:
    """Raise MissingPackage (a ValidationError) when ``ephem`` cannot be imported."""
    if not has_ephem():
        raise MissingPackage("solar", "ephem", "solar")


def next_solar(event: str, latitude: float, longitude: float, after: datetime) -> datetime:
    """The next time of a solar event after ``after`` (needs the ``ephem`` package)."""
    from celery.schedules import solar

    after = as_utc(after)
    schedule = solar(event, latitude, longitude, nowfun=lambda: after)
    delta: timedelta = schedule.remaining_estimate(after)  # measured from ``after``
    return after + max(delta, timedelta(0))

@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``every``, anchored at the previous slot so the phase never drifts."""

    every: timedelta


@dataclass(frozen=True, slots=True)
class Solar:
    """At a solar event seen from a place on Earth."""

    event: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Clocked:
    """Once, at a fixed moment."""

    at: datetime


Spec = Interval | Cron | Solar | Clocked


def solar_spec(event: Any, latitude: Any, longitude: Any) -> Solar:
    """A solar schedule's spec from its stored fields, validated; MissingPackage when
    ``ephem`` is not installed (nothing could compute its runs)."""
    spec = Solar(solar_event(event), float(coordinate("latitude", latitude)),
                 float(coordinate("longitude", longitude)))
    require_ephem()
    return spec


def first_run(
    spec: Spec, now: datetime, last_run_at: datetime | None = None,
    start_time: datetime | None = None,
) -> datetime | None:
    """When a new, changed or re-enabled task runs next: never a slot already past
    (no stale catch-up), never before ``start_time``."""
    not_before = max(now, as_utc(start_time)) if start_time is not None else now
    if isinstance(spec, Interval):
        anchor = last_run_at or start_time
        if anchor is None:
            return next_interval(spec.every, now, now)
        if start_time is not None and as_utc(start_time) > now and last_run_at is None:
            return as_utc(start_time)
        following = next_interval(spec.every, anchor, now)
        return None if following is None else max(following, not_before)
    if isinstance(spec, Cron):
        return spec.next_after(not_before - _TINY if not_before > now else now)
    if isinstance(spec, Solar):
        return next_solar(spec.event, spec.latitude, spec.longitude, not_before)
    if last_run_at is not None and as_utc(last_run_at) >= as_utc(spec.at):
        return None  # a clocked task that already ran
    return max(as_utc(spec.at), not_before)


def after_run(spec: Spec, slot: datetime, now: datetime) -> datetime | None:
    """The run after the one due at ``slot``, claimed at ``now``: one catch-up at most,
    the slots missed while beat was down are skipped."""
    if isinstance(spec, Interval):
        return next_interval(spec.every, slot, now)
    if isinstance(spec, Cron):
        return spec.next_after(max(slot, now))
    if isinstance(spec, Solar):
        return next_solar(spec.event, spec.latitude, spec.longitude, max(slot, now) + timedelta(minutes=1))
    return None


def on_time(spec: Spec, slot: datetime, now: datetime, grace: float) -> bool:
    """Whether the run due at ``slot``, claimed at ``now``, still counts as on time: the
    schedule has a slot (``slot`` itself or one missed since) at most ``grace`` seconds
    before ``now``. This is how Celery reads ``beat_cron_starting_deadline``."""
    try:
        earliest = as_utc(now) - timedelta(seconds=grace)
    except OverflowError:  # a grace longer than the calendar: always on time
        return True
    slot = as_utc(slot)
    if slot >= earliest:
        return True
    if isinstance(spec, Interval):
        following = next_interval(spec.every, slot, now)
        return following is None or following - spec.every >= earliest
    if isinstance(spec, Cron):
        following = spec.next_after(earliest - _TINY)
        return following is not None and following <= now
    if isinstance(spec, Solar):
        return next_solar(spec.event, spec.latitude, spec.longitude, earliest) <= now
    return False  # a clocked task has one slot, and it is past
