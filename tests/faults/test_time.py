"""Time: crontabs against an independent evaluator (croniter) across DST transitions,
hand-checked transition days, and interval tasks that ignore DST, the host's timezone and
``app.conf.timezone``.

Our semantics (schedules.py): day_of_month AND day_of_week (croniter's ``day_or=False``);
a wall time skipped by a spring-forward change runs once, at the offset in force before
the change; a wall time repeated by a fall-back change runs once for crontabs that name
their hours and twice for those that run every hour. croniter differs by design in the
skipped and repeated hours, so the property tests compare only where no matching wall
time falls in one, and the transition days are checked by hand below.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from croniter import CroniterBadDateError, croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from beatsqlalchemy import db
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.models import PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.schedules import Cron, Interval, after_run, first_run
from beatsqlalchemy.store import Run
from harness.helpers import print_in_summary, tick_for

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
QUARTER = timedelta(minutes=15)
DAY = timedelta(days=1)
#: the zones the issue names, then a few with unusual rules (45-minute offsets,
#: transitions at midnight, negative DST, DST abolished, no DST at all)
DST_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
OTHER_ZONES = ("UTC", "Pacific/Chatham", "America/Santiago", "Europe/Dublin", "Asia/Tehran")
FIRST_YEAR, LAST_YEAR = 2020, 2030
SEARCH_YEARS = 29  # how far Cron.next_after looks (schedules._SEARCH_YEARS)
PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: DST cases checked, reported at the end of the module
CHECKED: Counter[str] = Counter()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if CHECKED:
        parts = ", ".join(f"{key} {value}" for key, value in CHECKED.items())
        print_in_summary(request.config, f"\ntime: DST cases checked: {parts}")


# -- transitions of a zone ----------------------------------------------------------------

@cache
def transitions(tz_name: str) -> tuple[tuple[datetime, timedelta, timedelta], ...]:
    """Every UTC offset change of ``tz_name`` from 2015 to 2065: (instant, old, new)."""
    tz = ZoneInfo(tz_name)

    def offset(moment: datetime) -> timedelta:
        return moment.astimezone(tz).utcoffset()  # type: ignore[return-value]

    found: list[tuple[datetime, timedelta, timedelta]] = []
    moment, current = utc(2015, 1, 1), offset(utc(2015, 1, 1))
    while moment < utc(2065, 1, 1):
        following = moment + DAY
        new = offset(following)
        if new != current:
            low, high = moment, following  # offset(low) == current, offset(high) == new
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if offset(middle) == current else (low, middle)
            found.append((high.replace(microsecond=0), current, new))
            current = new
        moment = following
    return tuple(found)


def transitions_between(
    tz_name: str, start: datetime, end: datetime,
) -> list[tuple[datetime, timedelta, timedelta]]:
    every = transitions(tz_name)
    instants = [t for t, _, _ in every]
    return list(every[bisect.bisect_left(instants, start):bisect.bisect_right(instants, end)])


def test_transition_table_is_right() -> None:
    """The helper the property tests rely on finds the transitions we know by hand."""
    berlin = transitions("Europe/Berlin")
    assert (utc(2024, 3, 31, 1), timedelta(hours=1), timedelta(hours=2)) in berlin
    assert (utc(2024, 10, 27, 1), timedelta(hours=2), timedelta(hours=1)) in berlin
    lord_howe = transitions("Australia/Lord_Howe")
    assert (utc(2024, 10, 5, 15, 30), timedelta(hours=10, minutes=30), timedelta(hours=11)) in lord_howe
    assert (utc(2024, 4, 6, 15), timedelta(hours=11), timedelta(hours=10, minutes=30)) in lord_howe
    assert (utc(2024, 11, 3, 6), timedelta(hours=-4), timedelta(hours=-5)) in transitions("America/New_York")
    assert transitions("Asia/Kolkata") == ()
    assert len(transitions_between("Europe/Berlin", utc(2020, 1, 1), utc(2031, 1, 1))) == 22


# -- random crontabs ----------------------------------------------------------------------

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def field_strategy(
    first: int, last: int, names: tuple[str, ...] = (), star: int = 3,
) -> st.SearchStrategy[str]:
    """Cron field expressions both evaluators read the same way: *, N, lists, ranges,
    steps and (for days and months) names; no wrap-around ranges, no 7 for Sunday."""
    value = st.integers(first, last)
    span = st.lists(value, min_size=2, max_size=2, unique=True).map(sorted)  # croniter reads 0-0 as *
    forms: list[st.SearchStrategy[str]] = [
        *[st.just("*")] * star,
        value.map(str),
        st.lists(value, min_size=2, max_size=4, unique=True).map(lambda v: ",".join(map(str, sorted(v)))),
        span.map(lambda ab: f"{ab[0]}-{ab[1]}"),
        st.integers(1, last - first + 1).map(lambda step: f"*/{step}"),
        st.tuples(span, st.integers(1, 12)).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
    ]
    if names:
        forms.append(st.sampled_from(names))
        forms.append(
            st.lists(st.integers(0, len(names) - 1), min_size=2, max_size=2, unique=True).map(sorted)
            .map(lambda ab: f"{names[ab[0]]}-{names[ab[1]]}")
        )
    return st.one_of(forms)


CRONTABS = st.fixed_dictionaries({
    "minute": field_strategy(0, 59, star=1),
    "hour": field_strategy(0, 23, star=2),
    "day_of_month": field_strategy(1, 31, star=6),
    "month_of_year": field_strategy(1, 12, MONTH_NAMES, star=6),
    "day_of_week": field_strategy(0, 6, DAY_NAMES, star=6),
})


def expression(fields: dict[str, str]) -> str:
    return " ".join(fields[name] for name in sched.CRON_ORDER)


def croniter_sets(fields: dict[str, str]) -> list[frozenset[int]]:
    """croniter's own expansion of each field, in cron order (m h dom mon dow)."""
    expanded, _ = croniter.expand(expression(fields))
    full = [range(60), range(24), range(1, 32), range(1, 13), range(7)]
    return [frozenset(full[i]) if values == ["*"]
            else frozenset(int(v) % 7 if i == 4 else int(v) for v in values)  # 7 is Sunday too
            for i, values in enumerate(expanded)]


def wall_matches(sets: list[frozenset[int]], wall: datetime) -> bool:
    minutes, hours, days, months, weekdays = sets
    return (wall.minute in minutes and wall.hour in hours and wall.day in days
            and wall.month in months and wall.isoweekday() % 7 in weekdays)


def touches_transition(sets: list[frozenset[int]], tz_name: str, start: datetime, end: datetime) -> bool:
    """Whether a wall time the crontab matches is skipped or repeated by a transition
    between ``start`` and ``end`` (where croniter's semantics differ from ours)."""
    for moment, old, new in transitions_between(tz_name, start - DAY, end + DAY):
        wall = (moment + min(old, new)).replace(tzinfo=None)
        last = (moment + max(old, new)).replace(tzinfo=None)
        while wall < last:
            if wall_matches(sets, wall):
                return True
            wall += MINUTE
    return False


def ours(fields: dict[str, str], tz_name: str) -> Cron:
    return Cron.parse(fields["minute"], fields["hour"], fields["day_of_week"], fields["day_of_month"],
                      fields["month_of_year"], tz_name)


def theirs(fields: dict[str, str], tz_name: str, after: datetime) -> datetime | None:
    """croniter's next run strictly after ``after`` (AND of the day fields), in UTC."""
    start = after.astimezone(ZoneInfo(tz_name))
    try:
        found = croniter(expression(fields), start, day_or=False,
                         max_years_between_matches=SEARCH_YEARS + 1).get_next(datetime)
    except CroniterBadDateError:
        return None
    return found.astimezone(UTC)  # type: ignore[no-any-return]


@st.composite
def instants(draw: st.DrawFn, zones: tuple[str, ...]) -> tuple[str, datetime]:
    """A zone and an instant: anywhere in 2020-2030, or within three days of one of the
    zone's transitions (so that the next run is found across it)."""
    tz_name = draw(st.sampled_from(zones))
    near = [t for t, _, _ in transitions_between(tz_name, utc(FIRST_YEAR, 1, 1), utc(LAST_YEAR, 12, 31))]
    if near and draw(st.booleans()):
        moment = near[draw(st.integers(0, len(near) - 1))] + timedelta(
            days=draw(st.integers(-3, 2)), hours=draw(st.integers(0, 23)), minutes=draw(st.integers(0, 59)))
    else:  # each part drawn alone: hypothesis favours small numbers, not January 2020
        moment = utc(draw(st.integers(FIRST_YEAR, LAST_YEAR)), draw(st.integers(1, 12)),
                     draw(st.integers(1, 28)), draw(st.integers(0, 23)), draw(st.integers(0, 59)))
    return tz_name, moment + timedelta(seconds=draw(st.sampled_from((0, 0, 1, 30, 59))))


def test_cron_fields_parse_like_croniter() -> None:
    """Our parser and croniter expand every generated field to the same values."""
    seen = Counter[str]()

    @PROPERTY_SETTINGS
    @given(CRONTABS)
    def check(fields: dict[str, str]) -> None:
        expected = croniter_sets(fields)
        for index, name in enumerate(sched.CRON_ORDER):
            assert frozenset(sched.parse_cron_field(name, fields[name])) == expected[index], name
        seen["crontabs"] += 1

    check()
    CHECKED["crontabs parsed like croniter"] += seen["crontabs"]


@pytest.mark.parametrize("zones", [DST_ZONES, OTHER_ZONES], ids=["issue-zones", "other-zones"])
def test_next_after_matches_croniter_away_from_transitions(zones: tuple[str, ...]) -> None:
    """For random crontabs, zones and instants, next_after equals croniter's next run
    whenever no matching wall time is skipped or repeated on the way."""
    seen = Counter[str]()

    @PROPERTY_SETTINGS
    @given(CRONTABS, instants(zones))
    def check(fields: dict[str, str], where: tuple[str, datetime]) -> None:
        tz_name, after = where
        expected = theirs(fields, tz_name, after)
        found = ours(fields, tz_name).next_after(after)
        horizon = max(x for x in (found, expected, after + DAY) if x is not None)
        if touches_transition(croniter_sets(fields), tz_name, after, horizon):
            seen["skipped: a match in a skipped or repeated hour"] += 1
            return
        if found is None and expected is not None:
            # beyond our search horizon (a Feb 29 that must also be a given weekday)
            assert expected - after > timedelta(days=365 * (SEARCH_YEARS - 1)), (expression(fields), expected)
            return
        assert found == expected, f"{expression(fields)} in {tz_name} after {after.isoformat()}"
        crossed = bool(found and transitions_between(tz_name, after, found))
        seen["compared across a transition" if crossed else "compared"] += 1

    check()
    # the filter must leave most examples compared, many of them across a transition
    compared = seen["compared"] + seen["compared across a transition"]
    assert compared >= 0.6 * PROPERTY_SETTINGS.max_examples, seen
    if zones is DST_ZONES:
        assert seen["compared across a transition"] >= 0.2 * PROPERTY_SETTINGS.max_examples, seen
    CHECKED["random crontabs compared with croniter"] += compared
    CHECKED["...of which across a transition"] += seen["compared across a transition"]


def test_next_after_chains_like_croniter_through_a_year() -> None:
    """Following a few fixed crontabs through 2024 run by run gives croniter's runs,
    except on the transition days, where ours follow the documented rules."""
    cases = [("0 */4 * * *", "Europe/Berlin"), ("15 9 * * mon-fri", "America/New_York"),
             ("45 23 1 * *", "Australia/Lord_Howe"), ("30 2 */3 * *", "Asia/Kolkata"),
             ("0 12 13 * fri", "Europe/Berlin")]
    for text, tz_name in cases:
        fields = dict(zip(sched.CRON_ORDER, text.split(), strict=True))
        spec, sets = ours(fields, tz_name), croniter_sets(fields)
        moment: datetime | None = utc(2024, 1, 1)
        expected = croniter(text, utc(2024, 1, 1).astimezone(ZoneInfo(tz_name)), day_or=False)
        while moment is not None and moment < utc(2025, 1, 1):
            previous = moment
            moment = spec.next_after(moment)
            assert moment is not None
            reference = expected.get_next(datetime).astimezone(UTC)
            if touches_transition(sets, tz_name, previous, max(moment, reference)):
                expected = croniter(text, moment.astimezone(ZoneInfo(tz_name)), day_or=False)
                continue
            assert moment == reference, (text, tz_name, previous)
            CHECKED["runs chained with croniter"] += 1


# -- transition days, checked by hand ------------------------------------------------------

#: zone, local date of a transition, the UTC instant of the 02:30 run that day (by hand)
DAILY_0230 = [
    # Berlin: spring 02:00 CET -> 03:00 CEST, 02:30 skipped, runs at +01:00;
    # fall 03:00 CEST -> 02:00 CET, 02:30 twice, runs at the first (+02:00).
    ("Europe/Berlin", date(2024, 3, 31), utc(2024, 3, 31, 1, 30)),
    ("Europe/Berlin", date(2024, 10, 27), utc(2024, 10, 27, 0, 30)),
    ("Europe/Berlin", date(2025, 3, 30), utc(2025, 3, 30, 1, 30)),
    ("Europe/Berlin", date(2025, 10, 26), utc(2025, 10, 26, 0, 30)),
    # New York: spring 02:00 EST -> 03:00 EDT, 02:30 skipped, runs at -05:00;
    # fall 02:00 EDT -> 01:00 EST, 02:30 happens once (-05:00).
    ("America/New_York", date(2024, 3, 10), utc(2024, 3, 10, 7, 30)),
    ("America/New_York", date(2024, 11, 3), utc(2024, 11, 3, 7, 30)),
    ("America/New_York", date(2025, 3, 9), utc(2025, 3, 9, 7, 30)),
    ("America/New_York", date(2025, 11, 2), utc(2025, 11, 2, 7, 30)),
    # Lord Howe (30-minute shift): spring 02:00 +10:30 -> 02:30 +11:00, so 02:30 exists
    # once (+11:00); fall 02:00 +11:00 -> 01:30 +10:30, 02:30 exists once (+10:30).
    ("Australia/Lord_Howe", date(2024, 10, 6), utc(2024, 10, 5, 15, 30)),
    ("Australia/Lord_Howe", date(2024, 4, 7), utc(2024, 4, 6, 16, 0)),
    ("Australia/Lord_Howe", date(2025, 10, 5), utc(2025, 10, 4, 15, 30)),
    ("Australia/Lord_Howe", date(2025, 4, 6), utc(2025, 4, 5, 16, 0)),
    # Kolkata: +05:30 all year, 02:30 is 21:00 UTC the day before, on every one of these days.
    ("Asia/Kolkata", date(2024, 3, 31), utc(2024, 3, 30, 21, 0)),
    ("Asia/Kolkata", date(2024, 10, 27), utc(2024, 10, 26, 21, 0)),
    ("Asia/Kolkata", date(2025, 3, 9), utc(2025, 3, 8, 21, 0)),
    ("Asia/Kolkata", date(2025, 11, 2), utc(2025, 11, 1, 21, 0)),
]


def beat_runs(spec: Cron | Interval, start: datetime, end: datetime, late: timedelta) -> list[datetime]:
    """The slots beat claims from ``start`` to ``end``, each claimed ``late`` after its slot."""
    slots: list[datetime] = []
    slot = first_run(spec, start)
    while slot is not None and slot <= end:
        slots.append(slot)
        slot = after_run(spec, slot, slot + late)
    return slots


@pytest.mark.parametrize(("tz_name", "day", "expected"), DAILY_0230,
                         ids=[f"{z.split('/')[1]}-{d}" for z, d, _ in DAILY_0230])
@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=5), timedelta(minutes=59),
                                  timedelta(minutes=119)], ids=["on-time", "5s", "59min", "119min"])
def test_daily_0230_runs_once_on_a_transition_day(
    tz_name: str, day: date, expected: datetime, late: timedelta,
) -> None:
    """A 02:30 daily task runs exactly once that local day, at the hand-checked instant,
    and once on each day around it, however late beat claims it."""
    tz = ZoneInfo(tz_name)
    spec = ours({"minute": "30", "hour": "2", "day_of_month": "*", "month_of_year": "*",
                 "day_of_week": "*"}, tz_name)
    start = datetime.combine(day - timedelta(days=3), datetime.min.time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=4), datetime.min.time(), tz).astimezone(UTC)
    slots = beat_runs(spec, start, end, late)
    days = [slot.astimezone(tz).date() for slot in slots]
    assert days == [day + timedelta(days=n) for n in range(-3, 4)], slots
    assert [slot for slot in slots if slot.astimezone(tz).date() == day] == [expected]
    CHECKED["02:30 daily on a transition day"] += 1


#: (zone, crontab, UTC span around a fall-back change, the runs in it, worked out by hand)
REPEATED_HOUR = [
    # New York 2024-11-03, 01:00-01:59 happens twice (EDT 05:xx UTC, then EST 06:xx UTC).
    ("America/New_York", "30 1 * * *", utc(2024, 11, 3, 4), utc(2024, 11, 3, 8),
     [utc(2024, 11, 3, 5, 30)]),
    ("America/New_York", "30 * * * *", utc(2024, 11, 3, 4), utc(2024, 11, 3, 8),
     [utc(2024, 11, 3, 4, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 7, 30)]),
    # Berlin 2024-10-27, 02:00-02:59 happens twice (CEST 00:xx UTC, then CET 01:xx UTC).
    ("Europe/Berlin", "0,30 2 * * *", utc(2024, 10, 26, 23), utc(2024, 10, 27, 3),
     [utc(2024, 10, 27, 0, 0), utc(2024, 10, 27, 0, 30)]),
    ("Europe/Berlin", "0 * * * *", utc(2024, 10, 26, 23), utc(2024, 10, 27, 3),
     [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]),
    # Lord Howe 2024-04-07, 01:30-01:59 happens twice (+11:00 14:xx UTC, then +10:30 15:xx UTC).
    ("Australia/Lord_Howe", "45 1 * * *", utc(2024, 4, 6, 14), utc(2024, 4, 6, 16),
     [utc(2024, 4, 6, 14, 45)]),
    ("Australia/Lord_Howe", "45 * * * *", utc(2024, 4, 6, 14), utc(2024, 4, 6, 16),
     [utc(2024, 4, 6, 14, 45), utc(2024, 4, 6, 15, 15)]),
    # ... and spring 2024-10-06: 02:00-02:29 is skipped; 02:15 runs once at +10:30.
    ("Australia/Lord_Howe", "15 2 * * *", utc(2024, 10, 5, 15), utc(2024, 10, 5, 17),
     [utc(2024, 10, 5, 15, 45)]),
    # Chatham 2024-04-07: 03:45 +13:45 -> 02:45 +12:45 at 14:00Z, 02:45-03:44 happens twice;
    # every quarter hour of real time is a distinct wall time and runs once.
    ("Pacific/Chatham", "*/15 * * * *", utc(2024, 4, 6, 12, 20), utc(2024, 4, 6, 14, 30),
     [utc(2024, 4, 6, 12, 30) + timedelta(minutes=15 * n) for n in range(9)]),
    # Troll 2024-10-27: 03:00 +02 -> 01:00 +00 at 01:00Z, 01:00-02:59 happens twice; every
    # half hour of real time is a distinct wall time and runs once.
    ("Antarctica/Troll", "*/30 * * * *", utc(2024, 10, 26, 22, 50), utc(2024, 10, 27, 1, 30),
     [utc(2024, 10, 26, 23, 0) + timedelta(minutes=30 * n) for n in range(6)]),
    # ... while 03:00 named explicitly runs once, at its first occurrence (+13:45).
    ("Pacific/Chatham", "0 3 * * *", utc(2024, 4, 6, 12), utc(2024, 4, 6, 16), [utc(2024, 4, 6, 13, 15)]),
]


@pytest.mark.parametrize(("tz_name", "text", "start", "end", "expected"), REPEATED_HOUR,
                         ids=[f"{z.split('/')[1]}-{c.replace(' ', '_')}" for z, c, *_ in REPEATED_HOUR])
def test_repeated_and_skipped_hours_follow_the_documented_rules(
    tz_name: str, text: str, start: datetime, end: datetime, expected: list[datetime],
) -> None:
    spec = ours(dict(zip(sched.CRON_ORDER, text.split(), strict=True)), tz_name)
    assert beat_runs(spec, start, end, timedelta(0)) == expected
    CHECKED["repeated or skipped hour"] += 1


@pytest.mark.parametrize("tz_name", [
    *DST_ZONES, "America/Santiago", "Pacific/Chatham", "Antarctica/Troll", "Antarctica/Casey",
    "Antarctica/Vostok",
])
def test_every_15_minutes_neither_skips_nor_doubles_a_real_time_slot(tz_name: str) -> None:
    """Around every transition of 2024 and 2025 a ``*/15`` task runs at each quarter hour
    of real (UTC) time exactly once: the skipped hour is not lost, the repeated one is not
    run twice at the same instant."""
    spec = ours({"minute": "*/15", "hour": "*", "day_of_month": "*", "month_of_year": "*",
                 "day_of_week": "*"}, tz_name)
    moments = [t for t, _, _ in transitions_between(tz_name, utc(2024, 1, 1), utc(2026, 1, 1))]
    if not moments:  # Kolkata: the same check on the days the other zones change
        moments = [utc(2024, 3, 31, 1), utc(2024, 10, 27, 1), utc(2025, 3, 9, 7), utc(2025, 11, 2, 6)]
    for moment in moments:
        start, end = moment - timedelta(hours=4), moment + timedelta(hours=4)
        for late in (timedelta(0), timedelta(minutes=14)):
            slots = beat_runs(spec, start, end, late)
            quarter = start.replace(minute=start.minute - start.minute % 15, second=0) + QUARTER
            expected = [quarter + QUARTER * n for n in range((end - quarter) // QUARTER + 1)]
            assert slots == expected, (tz_name, moment, late)
    CHECKED["every-15-minutes across a transition"] += len(moments)


# -- intervals: no DST, no host timezone ----------------------------------------------------

HOST_SCRIPT = r"""
import json, sys, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from beatsqlalchemy import db, migrate
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.models import PeriodicTask
from sqlalchemy import select

UTC = timezone.utc
out = {"gmtoff": [time.localtime(t).tm_gmtoff for t in (1710050400, 1730610000, 1712419200)]}
spec = sched.Interval(timedelta(minutes=25))
# New York springs forward at 07:00 UTC on 2024-03-10, Berlin at 01:00 on 2024-03-31,
# New York falls back at 06:00 UTC on 2024-11-03, Lord Howe at 15:00 UTC on 2024-04-06
chains = {}
for start in ("2024-03-10T05:10:00+00:00", "2024-03-31T00:05:00+00:00", "2024-11-03T04:55:00+00:00",
              "2024-04-06T13:40:00+00:00"):
    now = datetime.fromisoformat(start)
    slot = sched.first_run(spec, now)
    chain = [slot]
    for _ in range(12):
        slot = sched.after_run(spec, slot, slot)
        chain.append(slot)
    chains[start] = [s.isoformat() for s in chain]
out["chains"] = chains
# naive values are UTC, whatever the host's zone
out["naive_last_run"] = sched.first_run(spec, datetime(2024, 3, 10, 6, 50, tzinfo=UTC),
                                        last_run_at=datetime(2024, 3, 10, 6, 40)).isoformat()
out["naive_start"] = sched.first_run(spec, datetime(2024, 3, 10, 6, 50, tzinfo=UTC),
                                     start_time=datetime(2024, 3, 10, 7, 30)).isoformat()
out["catch_up"] = sched.after_run(spec, datetime(2024, 11, 3, 5, 0, tzinfo=UTC),
                                  datetime(2024, 11, 3, 7, 7, tzinfo=UTC)).isoformat()
# stored and read back through SQLite: the same instants
engine = db.get_engine("sqlite:///" + sys.argv[1])
migrate.upgrade(engine)
with db.session_factory(engine)() as session:
    PeriodicTask.update_or_create(session, name="t", task="t", interval=timedelta(minutes=25),
                                  start_time="2100-03-14T02:30:00", last_run_at=datetime(2024, 3, 10, 6, 40))
with db.session_factory(engine)() as session:
    task = session.scalars(select(PeriodicTask)).one()
    out["stored"] = [task.start_time.isoformat(), task.last_run_at.isoformat(), task.next_run_at.isoformat(),
                     sched.after_run(task.interval.spec(), task.last_run_at, task.last_run_at).isoformat()]
db.dispose_all()
print(json.dumps(out))
"""

HOST_ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


def test_interval_tasks_ignore_dst_and_the_host_timezone(tmp_path: Path) -> None:
    """The same interval math, and the same stored instants, in processes whose local
    timezone is UTC, New York, Kolkata and Lord Howe; 25-minute slots stay 25 minutes
    apart in real time across each zone's DST change."""
    processes = {}
    for tz_name in HOST_ZONES:
        env = {**os.environ, "TZ": tz_name}
        database = tmp_path / f"{tz_name.replace('/', '_')}.sqlite3"
        processes[tz_name] = subprocess.Popen(
            [sys.executable, "-c", HOST_SCRIPT, str(database)], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    results: dict[str, dict[str, Any]] = {}
    for tz_name, process in processes.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        results[tz_name] = json.loads(stdout)

    # each process really ran in its zone (UTC offsets at three instants, in seconds)
    assert results["UTC"]["gmtoff"] == [0, 0, 0]
    assert results["America/New_York"]["gmtoff"] == [-5 * 3600, -4 * 3600, -4 * 3600]
    assert results["Asia/Kolkata"]["gmtoff"] == [19800, 19800, 19800]
    assert results["Australia/Lord_Howe"]["gmtoff"] == [39600, 39600, 37800]
    reference = {k: v for k, v in results["UTC"].items() if k != "gmtoff"}
    for tz_name, result in results.items():
        assert {k: v for k, v in result.items() if k != "gmtoff"} == reference, tz_name

    for start, chain in reference["chains"].items():
        slots = [datetime.fromisoformat(s) for s in chain]
        assert slots[0] == datetime.fromisoformat(start) + timedelta(minutes=25)
        assert all(b - a == timedelta(minutes=25) for a, b in pairwise(slots)), start
        assert all(s.utcoffset() == timedelta(0) for s in slots)
        CHECKED["interval chain across a transition, x4 host zones"] += 1
    assert reference["naive_last_run"] == "2024-03-10T07:05:00+00:00"
    assert reference["naive_start"] == "2024-03-10T07:30:00+00:00"
    assert reference["catch_up"] == "2024-11-03T07:30:00+00:00"  # one catch-up, phase kept
    assert reference["stored"] == ["2100-03-14T02:30:00+00:00", "2024-03-10T06:40:00+00:00",
                                   "2100-03-14T02:30:00+00:00", "2024-03-10T07:05:00+00:00"]


# -- app.conf.timezone changes between two beats ----------------------------------------------

class RecordingScheduler(DatabaseScheduler):
    """Records each run instead of publishing it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Run] = []
        super().__init__(*args, **kwargs)

    def _send(self, run: Run) -> bool:
        self.sent.append(run)
        return True


def new_app(db_url: str, tz_name: str, enable_utc: bool) -> Celery:
    app = Celery("tests", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        timezone=tz_name, enable_utc=enable_utc, beat_sqlalchemy_url=db_url,
        beat_sqlalchemy_sync_interval=0.2,
        beat_schedule={"config-interval": {"task": "tasks.config", "schedule": timedelta(seconds=1)}},
    )
    return app


def snapshot(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """Each task's run state and schedule, as stored."""
    with db.session_factory(engine)() as session:
        rows = {}
        for task in session.scalars(select(PeriodicTask)).unique():
            row = task.schedule_row
            assert row is not None
            rows[task.name] = (task.next_run_at, task.last_run_at, task.total_run_count, row.kind, row.key())
        return rows


def test_changing_the_app_timezone_neither_fires_nor_skips_runs(db_url: str, engine: Engine) -> None:
    """Beat A runs with app timezone New York; beat B, on the same database, with Lord Howe
    and enable_utc off. Stored tasks keep their schedules and next runs; the interval runs
    continue second by second with no slot sent twice or missed; nothing fires at B's start."""
    first = new_app(db_url, "America/New_York", True)
    beat_a = RecordingScheduler(app=first)
    beat_a.add(name="interval", task="tasks.interval", schedule=timedelta(seconds=1))
    beat_a.add(name="daily-berlin", task="tasks.daily",
               crontab={"minute": "30", "hour": "2", "timezone": "Europe/Berlin"})
    beat_a.add(name="hourly-kolkata", task="tasks.hourly",
               crontab={"minute": "15", "hour": "*", "timezone": "Asia/Kolkata"})
    beat_a.add(name="cron-utc-string", task="tasks.cron", schedule="0 12 * * *")
    tick_for(beat_a, 2.6)
    beat_a.close()
    first.close()
    before = snapshot(engine)

    second = new_app(db_url, "Australia/Lord_Howe", False)
    beat_b = RecordingScheduler(app=second)
    beat_b.tick()  # installs beat_schedule again and reads the window
    assert [run.name for run in beat_b.sent if run.slot < datetime.now(UTC) - timedelta(seconds=1.5)] == []
    at_start = snapshot(engine)
    for name in ("daily-berlin", "hourly-kolkata", "cron-utc-string"):
        assert at_start[name] == before[name], name
    tick_for(beat_b, 2.6)
    beat_b.close()
    second.close()
    after = snapshot(engine)

    now = datetime.now(UTC)
    assert before["daily-berlin"][0] == Cron.parse("30", "2", "*", "*", "*", "Europe/Berlin").next_after(now)
    # a crontab given without a timezone took A's app timezone, and keeps it under B
    assert before["cron-utc-string"][4][-1] == "America/New_York"
    for name in ("daily-berlin", "cron-utc-string"):
        assert after[name] == before[name], name  # not due: untouched
    for name in ("interval", "config-interval"):
        runs = [run for run in beat_a.sent + beat_b.sent if run.name == name]
        slots = [run.slot for run in runs]
        from_b = [run.slot for run in beat_b.sent if run.name == name]
        assert len(from_b) >= 2, name
        assert from_b[0] == before[name][0], name  # B goes on from A's next slot
        assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots)), (name, slots)
        assert len({run.task_id for run in runs}) == len(runs)
        assert after[name][2] == len(runs), name  # total_run_count: every run, once
        assert after[name][3:] == before[name][3:], name  # the schedule row did not change
    hourly = [run.slot for run in beat_b.sent if run.name == "hourly-kolkata"]
    assert hourly in ([], [before["hourly-kolkata"][0]])
    assert after["hourly-kolkata"][3:] == before["hourly-kolkata"][3:]
    CHECKED["app timezone change between two beats"] += 1

