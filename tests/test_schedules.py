"""Schedule math without a database: cron parsing, DST, intervals, first and next runs.

Every expected instant below was worked out by hand from the zone's rules: a local time
skipped by a spring-forward change runs once at the offset in force before the change,
a local time repeated by a fall-back change runs once, at its first occurrence.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from beatsqlalchemy import schedules as sched
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.schedules import Clocked, Cron, Interval, Solar, after_run, first_run

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def cron(expression: str, tz: str = "UTC") -> Cron:
    """A Cron from a 5-field string (m h dom mon dow) in ``tz``."""
    fields = sched.split_cron(expression)
    return Cron.parse(
        fields["minute"], fields["hour"], fields["day_of_week"], fields["day_of_month"],
        fields["month_of_year"], tz,
    )


def runs_between(spec: Cron, start: datetime, end: datetime) -> list[datetime]:
    """Every run of ``spec`` after ``start`` up to ``end``, following next_after."""
    found: list[datetime] = []
    moment: datetime | None = start
    while True:
        assert moment is not None
        moment = spec.next_after(moment)
        if moment is None or moment > end:
            return found
        found.append(moment)


# -- parse_cron_field -------------------------------------------------------------

@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("minute", "*", tuple(range(60))),
        ("minute", "5", (5,)),
        ("minute", " 7 ", (7,)),
        ("minute", "*/15", (0, 15, 30, 45)),
        ("minute", "5-10/2", (5, 7, 9)),
        ("minute", "0,30,59", (0, 30, 59)),
        ("minute", "50-10", (*range(11), *range(50, 60))),  # a range that wraps around
        ("hour", "*/6", (0, 6, 12, 18)),
        ("hour", "9-17", tuple(range(9, 18))),
        ("hour", "23", (23,)),
        ("day_of_week", "*", tuple(range(7))),
        ("day_of_week", "0", (0,)),
        ("day_of_week", "sun", (0,)),
        ("day_of_week", "SUN", (0,)),
        ("day_of_week", "sat,sun", (0, 6)),
        ("day_of_week", "mon-fri", (1, 2, 3, 4, 5)),
        ("day_of_week", "fri-mon", (0, 1, 5, 6)),
        ("day_of_week", "*/2", (0, 2, 4, 6)),
        ("day_of_month", "1", (1,)),
        ("day_of_month", "31", (31,)),
        ("day_of_month", "1-7", tuple(range(1, 8))),
        ("day_of_month", "*/10", (1, 11, 21, 31)),
        ("month_of_year", "*", tuple(range(1, 13))),
        ("month_of_year", "jan", (1,)),
        ("month_of_year", "dec", (12,)),
        ("month_of_year", "*/3", (1, 4, 7, 10)),
        ("month_of_year", "2", (2,)),
    ],
)
def test_parse_cron_field_values(field: str, value: str, expected: tuple[int, ...]) -> None:
    assert sched.parse_cron_field(field, value) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("minute", "60"),
        ("minute", "-1"),
        ("minute", "a"),
        ("minute", "1-"),
        ("minute", "*/0"),
        ("minute", "1,2,,3"),
        ("minute", ""),
        ("minute", "   "),
        ("hour", "24"),
        ("hour", "25-26"),
        ("day_of_week", "7"),
        ("day_of_week", "8"),
        ("day_of_week", "funday"),
        ("day_of_month", "0"),
        ("day_of_month", "32"),
        ("month_of_year", "0"),
        ("month_of_year", "13"),
        ("month_of_year", "smarch"),
    ],
)
def test_parse_cron_field_errors_name_field_and_value(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.parse_cron_field(field, value)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.value == value
    assert str(error).startswith(f"{field}: invalid value {value!r}")
    assert error.reason


def test_parse_cron_field_rejects_non_strings() -> None:
    with pytest.raises(ValidationError) as caught:
        sched.parse_cron_field("hour", None)  # type: ignore[arg-type]
    assert caught.value.field == "hour"
    assert "None" in str(caught.value)


# -- split_cron ---------------------------------------------------------------------

def test_split_cron_maps_fields_in_cron_order() -> None:
    assert sched.split_cron("*/5 4 1,15 jan-jun mon-fri") == {
        "minute": "*/5",
        "hour": "4",
        "day_of_month": "1,15",
        "month_of_year": "jan-jun",
        "day_of_week": "mon-fri",
    }
    assert sched.split_cron("  0   0  *  * *  ")["minute"] == "0"


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "", "@daily", None, 5])
def test_split_cron_needs_five_fields(expression: object) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.split_cron(expression)  # type: ignore[arg-type]
    assert caught.value.field == "crontab"
    assert repr(expression) in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "field", "value"),
    [
        ("61 * * * *", "minute", "61"),
        ("* 24 * * *", "hour", "24"),
        ("* * 32 * *", "day_of_month", "32"),
        ("* * * 13 *", "month_of_year", "13"),
        ("* * * * 9", "day_of_week", "9"),
    ],
)
def test_split_cron_names_the_bad_field(expression: str, field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.split_cron(expression)
    assert caught.value.field == field
    assert caught.value.value == value


def test_unknown_timezone_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        Cron.parse("0", "0", "*", "*", "*", "Mars/Olympus_Mons")
    assert caught.value.field == "timezone"
    assert "Mars/Olympus_Mons" in str(caught.value)


# -- Cron.next_after: basics -----------------------------------------------------------

def test_next_after_is_strictly_after() -> None:
    spec = cron("0 9 * * *")
    assert spec.next_after(utc(2024, 5, 15, 8, 59, 59)) == utc(2024, 5, 15, 9, 0)
    assert spec.next_after(utc(2024, 5, 15, 9, 0)) == utc(2024, 5, 16, 9, 0)
    assert spec.next_after(utc(2024, 5, 15, 9, 0, 0, 1)) == utc(2024, 5, 16, 9, 0)


def test_next_after_takes_naive_times_as_utc() -> None:
    spec = cron("30 * * * *")
    assert spec.next_after(datetime(2024, 5, 15, 10, 0)) == utc(2024, 5, 15, 10, 30)


def test_next_after_returns_utc_for_a_zoned_crontab() -> None:
    spec = cron("0 9 * * *", "Asia/Kolkata")
    result = spec.next_after(utc(2024, 5, 15, 0, 0))
    assert result == utc(2024, 5, 15, 3, 30)
    assert result is not None and result.utcoffset() == timedelta(0)
    # an aware input in another zone means the same instant
    berlin = utc(2024, 5, 15, 0, 0).astimezone(sched.zone("Europe/Berlin"))
    assert spec.next_after(berlin) == utc(2024, 5, 15, 3, 30)


def test_next_after_every_minute_and_steps() -> None:
    assert cron("* * * * *").next_after(utc(2024, 1, 1, 0, 0, 30)) == utc(2024, 1, 1, 0, 1)
    assert cron("*/15 * * * *").next_after(utc(2024, 1, 1, 23, 50)) == utc(2024, 1, 2, 0, 0)
    assert cron("0 0 1 * *").next_after(utc(2024, 12, 31, 12)) == utc(2025, 1, 1)


def test_month_names_and_day_of_month() -> None:
    spec = cron("0 6 15 jan,jul *")
    assert spec.next_after(utc(2024, 1, 15, 6)) == utc(2024, 7, 15, 6)
    assert spec.next_after(utc(2024, 7, 15, 6)) == utc(2025, 1, 15, 6)


# -- day_of_week --------------------------------------------------------------------

# 2024-05-15 is a Wednesday; 2024-05-19 a Sunday.
@pytest.mark.parametrize(
    ("day_of_week", "expected"),
    [
        ("0", utc(2024, 5, 19, 9)),
        ("sun", utc(2024, 5, 19, 9)),
        ("sunday", utc(2024, 5, 19, 9)),
        ("6", utc(2024, 5, 18, 9)),
        ("sat", utc(2024, 5, 18, 9)),
        ("1", utc(2024, 5, 20, 9)),
        ("mon", utc(2024, 5, 20, 9)),
        ("3", utc(2024, 5, 22, 9)),  # Wednesday, but 09:00 today has passed
        ("thu", utc(2024, 5, 16, 9)),
        ("sat,sun", utc(2024, 5, 18, 9)),
    ],
)
def test_day_of_week_zero_is_sunday(day_of_week: str, expected: datetime) -> None:
    spec = Cron.parse("0", "9", day_of_week, "*", "*", "UTC")
    assert spec.next_after(utc(2024, 5, 15, 10)) == expected


def test_weekdays_skip_the_weekend() -> None:
    spec = cron("0 9 * * mon-fri")
    friday = utc(2024, 5, 17, 10)
    assert spec.next_after(friday) == utc(2024, 5, 20, 9)
    assert runs_between(spec, utc(2024, 5, 17, 10), utc(2024, 5, 25)) == [
        utc(2024, 5, day, 9) for day in (20, 21, 22, 23, 24)
    ]


def test_day_of_week_is_evaluated_in_the_crontab_timezone() -> None:
    # Monday 00:30 in Auckland (UTC+12 in May) is Sunday 12:30 UTC.
    spec = cron("30 0 * * mon", "Pacific/Auckland")
    assert spec.next_after(utc(2024, 5, 15)) == utc(2024, 5, 19, 12, 30)


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # like Celery's crontab: "the 13th AND a Friday" (2024-09-13 is the first in 2024)
    spec = cron("0 0 13 * fri")
    assert spec.next_after(utc(2024, 1, 1)) == utc(2024, 9, 13)
    assert spec.next_after(utc(2024, 9, 13)) == utc(2024, 12, 13)


# -- Feb 29 and impossible dates ------------------------------------------------------

def test_feb_29_runs_on_leap_days_only() -> None:
    spec = cron("0 12 29 2 *")
    assert spec.next_after(utc(2024, 2, 28)) == utc(2024, 2, 29, 12)
    assert spec.next_after(utc(2024, 2, 29, 12)) == utc(2028, 2, 29, 12)
    assert spec.next_after(utc(2024, 3, 1)) == utc(2028, 2, 29, 12)
    # 2100 is not a leap year
    assert spec.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29, 12)


def test_feb_29_on_a_given_weekday() -> None:
    # Feb 29 falls on a Monday in 2044 (2028 Tue, 2032 Sun, 2036 Fri, 2040 Wed).
    assert cron("0 0 29 2 mon").next_after(utc(2024, 3, 1)) == utc(2044, 2, 29)
    assert cron("0 0 29 2 sun").next_after(utc(2024, 3, 1)) == utc(2032, 2, 29)


def test_feb_29_in_a_timezone() -> None:
    # 00:15 on Feb 29 in Kolkata is 18:45 UTC on Feb 28.
    assert cron("15 0 29 2 *", "Asia/Kolkata").next_after(utc(2025, 1, 1)) == utc(2028, 2, 28, 18, 45)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 mon"])
def test_a_date_that_never_exists_has_no_next_run(expression: str) -> None:
    assert cron(expression).next_after(utc(2024, 1, 1)) is None


# -- DST --------------------------------------------------------------------------------
#
# Each case: zone, cron, a UTC span around one transition, the exact runs in it.

DST_CASES = {
    # Berlin 2024-03-31: 02:00 CET -> 03:00 CEST; 02:30 does not exist, runs at +01:00.
    "berlin-spring": (
        "Europe/Berlin", "30 2 * * *", utc(2024, 3, 29), utc(2024, 4, 2),
        [utc(2024, 3, 29, 1, 30), utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 30),
         utc(2024, 4, 1, 0, 30)],
    ),
    # Berlin 2024-10-27: 03:00 CEST -> 02:00 CET; 02:30 happens twice, runs at the first.
    "berlin-fall": (
        "Europe/Berlin", "30 2 * * *", utc(2024, 10, 25), utc(2024, 10, 29),
        [utc(2024, 10, 25, 0, 30), utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30),
         utc(2024, 10, 28, 1, 30)],
    ),
    # New York 2024-03-10: 02:00 EST -> 03:00 EDT; 02:30 does not exist, runs at -05:00.
    "new-york-spring": (
        "America/New_York", "30 2 * * *", utc(2024, 3, 8, 12), utc(2024, 3, 12),
        [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7, 30), utc(2024, 3, 11, 6, 30)],
    ),
    # New York 2024-11-03: 02:00 EDT -> 01:00 EST; 02:30 happens once (EST).
    "new-york-fall": (
        "America/New_York", "30 2 * * *", utc(2024, 11, 1, 12), utc(2024, 11, 5),
        [utc(2024, 11, 2, 6, 30), utc(2024, 11, 3, 7, 30), utc(2024, 11, 4, 7, 30)],
    ),
    # ... while 01:30 happens twice that day and runs at the first (EDT).
    "new-york-fall-repeated-hour": (
        "America/New_York", "30 1 * * *", utc(2024, 11, 1, 12), utc(2024, 11, 5),
        [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)],
    ),
    # Lord Howe shifts by 30 minutes. 2024-10-06: 02:00 +10:30 -> 02:30 +11:00, so 02:30
    # is the first valid time of the new offset: it exists once.
    "lord-howe-spring": (
        "Australia/Lord_Howe", "30 2 * * *", utc(2024, 10, 4), utc(2024, 10, 8),
        [utc(2024, 10, 4, 16, 0), utc(2024, 10, 5, 15, 30), utc(2024, 10, 6, 15, 30),
         utc(2024, 10, 7, 15, 30)],
    ),
    # ... and 02:15 does not exist that day: it runs at +10:30, i.e. 15:45 UTC.
    "lord-howe-spring-skipped": (
        "Australia/Lord_Howe", "15 2 * * *", utc(2024, 10, 4), utc(2024, 10, 8),
        [utc(2024, 10, 4, 15, 45), utc(2024, 10, 5, 15, 45), utc(2024, 10, 6, 15, 15),
         utc(2024, 10, 7, 15, 15)],
    ),
    # 2024-04-07: 02:00 +11:00 -> 01:30 +10:30; 02:30 exists once (+10:30).
    "lord-howe-fall": (
        "Australia/Lord_Howe", "30 2 * * *", utc(2024, 4, 5), utc(2024, 4, 9),
        [utc(2024, 4, 5, 15, 30), utc(2024, 4, 6, 16, 0), utc(2024, 4, 7, 16, 0),
         utc(2024, 4, 8, 16, 0)],
    ),
    # ... while 01:45 happens twice and runs at the first (+11:00, 14:45 UTC).
    "lord-howe-fall-repeated": (
        "Australia/Lord_Howe", "45 1 * * *", utc(2024, 4, 5), utc(2024, 4, 9),
        [utc(2024, 4, 5, 14, 45), utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15),
         utc(2024, 4, 8, 15, 15)],
    ),
    # Kolkata has no DST (+05:30 all year): 02:30 is always 21:00 UTC the day before.
    "kolkata-march": (
        "Asia/Kolkata", "30 2 * * *", utc(2024, 3, 29), utc(2024, 4, 2),
        [utc(2024, 3, 29, 21), utc(2024, 3, 30, 21), utc(2024, 3, 31, 21), utc(2024, 4, 1, 21)],
    ),
    "kolkata-october": (
        "Asia/Kolkata", "30 2 * * *", utc(2024, 10, 25), utc(2024, 10, 29),
        [utc(2024, 10, 25, 21), utc(2024, 10, 26, 21), utc(2024, 10, 27, 21), utc(2024, 10, 28, 21)],
    ),
}


@pytest.mark.parametrize("case", sorted(DST_CASES))
def test_daily_run_across_dst_runs_once_per_local_day(case: str) -> None:
    tz, expression, start, end, expected = DST_CASES[case]
    spec = cron(expression, tz)
    runs = runs_between(spec, start, end)
    assert runs == expected
    local_days = [run.astimezone(sched.zone(tz)).date() for run in runs]
    assert len(local_days) == len(set(local_days)), "a local day ran twice"


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("Europe/Berlin", (2024, 3, 31)), ("Europe/Berlin", (2024, 10, 27)),
        ("America/New_York", (2024, 3, 10)), ("America/New_York", (2024, 11, 3)),
        ("Australia/Lord_Howe", (2024, 4, 7)), ("Australia/Lord_Howe", (2024, 10, 6)),
        ("Asia/Kolkata", (2024, 3, 31)),
    ],
)
def test_after_run_on_a_dst_day_never_repeats_the_slot(tz: str, day: tuple[int, int, int]) -> None:
    """Claiming the 02:30 run, at any moment up to two hours later, moves on to the next day."""
    spec = cron("30 2 * * *", tz)
    local_midnight = datetime(*day, tzinfo=sched.zone(tz))
    slot = spec.next_after(local_midnight)
    assert slot is not None
    assert slot.astimezone(sched.zone(tz)).date() == local_midnight.date()
    for late in range(0, 121, 15):
        following = after_run(spec, slot, slot + timedelta(minutes=late))
        assert following is not None
        assert following.astimezone(sched.zone(tz)).date() == local_midnight.date() + timedelta(days=1)


def test_half_hourly_across_spring_forward_keeps_every_real_slot() -> None:
    spec = cron("0,30 * * * *", "Europe/Berlin")
    runs = runs_between(spec, utc(2024, 3, 30, 23, 45), utc(2024, 3, 31, 2, 30))
    # 02:00 and 02:30 local do not exist: they run at 01:00 and 01:30 UTC, which are
    # also 03:00 and 03:30 CEST, once each.
    assert runs == [utc(2024, 3, 31, 0, 0), utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 0),
                    utc(2024, 3, 31, 1, 30), utc(2024, 3, 31, 2, 0), utc(2024, 3, 31, 2, 30)]


def test_next_after_from_inside_the_repeated_hour() -> None:
    """Asking from the second 02:xx (CET) of a fall-back day does not run 02:30 again."""
    spec = cron("30 2 * * *", "Europe/Berlin")
    assert spec.next_after(utc(2024, 10, 27, 1, 0)) == utc(2024, 10, 28, 1, 30)
    assert spec.next_after(utc(2024, 10, 27, 0, 29)) == utc(2024, 10, 27, 0, 30)


def test_next_after_from_just_before_a_skipped_time() -> None:
    spec = cron("30 2 * * *", "Europe/Berlin")
    # 00:59 UTC is 01:59 CET, just before the jump to 03:00 CEST.
    assert spec.next_after(utc(2024, 3, 31, 0, 59)) == utc(2024, 3, 31, 1, 30)
    # 01:15 UTC is 03:15 CEST: the skipped 02:30 (01:30 UTC) is still ahead.
    assert spec.next_after(utc(2024, 3, 31, 1, 15)) == utc(2024, 3, 31, 1, 30)
    assert spec.next_after(utc(2024, 3, 31, 1, 30)) == utc(2024, 4, 1, 0, 30)


def test_next_after_in_a_repeated_span_that_is_not_one_hour() -> None:
    """Chatham repeats 02:45-03:44 (+13:45 -> +12:45): every quarter hour of real time
    runs once, the first occurrences of 03:00-03:30 before the second 02:45."""
    spec = cron("*/15 * * * *", "Pacific/Chatham")
    assert spec.next_after(utc(2024, 4, 6, 13, 0)) == utc(2024, 4, 6, 13, 15)
    assert spec.next_after(utc(2024, 4, 6, 13, 45)) == utc(2024, 4, 6, 14, 0)


def test_next_after_when_two_hours_repeat() -> None:
    """Troll falls back two hours (03:00 +02 -> 01:00 +00): 02:00 +02 is not skipped."""
    spec = cron("0 * * * *", "Antarctica/Troll")
    assert runs_between(spec, utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 2, 30)) == [
        utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)]


def test_next_after_a_two_hour_gap_with_named_hours() -> None:
    """Troll springs forward two hours (01:00 +00 -> 03:00 +02): 03:10 +02 (01:10 UTC)
    comes before the skipped 02:10, which runs at the old offset (02:10 UTC)."""
    spec = cron("10 2,3 * * *", "Antarctica/Troll")
    assert runs_between(spec, utc(2024, 3, 31, 0), utc(2024, 3, 31, 3)) == [
        utc(2024, 3, 31, 1, 10), utc(2024, 3, 31, 2, 10)]


def test_a_skipped_time_of_an_every_hour_crontab_runs_once() -> None:
    """Lord Howe skips 02:00-02:29 (+10:30 -> +11:00): 02:05 runs once, at +10:30."""
    spec = cron("5 * * * *", "Australia/Lord_Howe")
    assert runs_between(spec, utc(2024, 10, 5, 14), utc(2024, 10, 5, 17)) == [
        utc(2024, 10, 5, 14, 35), utc(2024, 10, 5, 15, 35), utc(2024, 10, 5, 16, 5)]


def test_next_after_near_datetime_max() -> None:
    """The last representable run is found; after it there is none (no OverflowError)."""
    daily = cron("0 0 * * *", "UTC")
    assert daily.next_after(utc(9999, 12, 30, 12)) == utc(9999, 12, 31)
    assert daily.next_after(utc(9999, 12, 31)) is None
    assert cron("0 0 * * *", "Pacific/Kiritimati").next_after(utc(9999, 12, 30, 12)) is None
    assert cron("0 0 1 1 *", "UTC").next_after(utc(9999, 1, 1)) is None
    start = datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert first_run(daily, utc(2030, 1, 1), start_time=start) == start


def test_interval_runs_near_datetime_max_end() -> None:
    spec = Interval(timedelta(hours=1))
    assert after_run(spec, utc(9999, 12, 31, 23), utc(9999, 12, 31, 23)) is None
    assert first_run(spec, utc(2030, 1, 1), last_run_at=utc(9999, 12, 31, 23, 30)) is None


# -- interval_delta -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("every", "period", "expected"),
    [
        (1, "days", timedelta(days=1)),
        (90, "minutes", timedelta(minutes=90)),
        (2, "hours", timedelta(hours=2)),
        (30, "seconds", timedelta(seconds=30)),
        (500, "microseconds", timedelta(microseconds=500)),
    ],
)
def test_interval_delta(every: int, period: str, expected: timedelta) -> None:
    assert sched.interval_delta(every, period) == expected


@pytest.mark.parametrize("every", [0, -1, True, False, 1.5, "5", None])
def test_interval_delta_rejects_bad_every(every: object) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.interval_delta(every, "seconds")
    assert caught.value.field == "every"
    assert caught.value.value is every
    assert repr(every) in str(caught.value)


@pytest.mark.parametrize("period", ["weeks", "second", "Seconds", "", None])
def test_interval_delta_rejects_unknown_period(period: object) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.interval_delta(5, period)
    assert caught.value.field == "period"
    assert repr(period) in str(caught.value)


@pytest.mark.parametrize(("every", "period"), [
    (2**31, "seconds"), (2**31, "microseconds"), (365_251, "days"), (10**9, "days"), (2**70, "seconds"),
    (8_766_001, "hours"),
])
def test_interval_delta_rejects_what_the_column_or_a_date_cannot_hold(every: int, period: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sched.interval_delta(every, period)
    assert caught.value.field == "every"
    assert str(every) in str(caught.value)


def test_the_longest_intervals_are_accepted() -> None:
    assert sched.interval_delta(365_250, "days") == sched.MAX_INTERVAL
    assert sched.interval_delta(2**31 - 1, "seconds") == timedelta(seconds=2**31 - 1)


# -- next_interval ----------------------------------------------------------------------

def test_next_interval_is_the_next_slot_when_nothing_was_missed() -> None:
    anchor = utc(2024, 1, 1, 12, 0, 7)
    assert sched.next_interval(timedelta(minutes=10), anchor, anchor) == utc(2024, 1, 1, 12, 10, 7)
    assert sched.next_interval(timedelta(minutes=10), anchor, utc(2024, 1, 1, 12, 9)) == utc(
        2024, 1, 1, 12, 10, 7
    )


def test_next_interval_skips_missed_slots_and_keeps_phase() -> None:
    anchor = utc(2024, 1, 1, 12, 0, 7)
    every = timedelta(minutes=10)
    now = utc(2024, 1, 1, 15, 33)
    result = sched.next_interval(every, anchor, now)
    assert result == utc(2024, 1, 1, 15, 40, 7)
    assert (result - anchor) % every == timedelta(0)


def test_next_interval_at_exactly_a_slot_moves_on() -> None:
    anchor = utc(2024, 1, 1)
    assert sched.next_interval(timedelta(hours=1), anchor, utc(2024, 1, 1, 3)) == utc(2024, 1, 1, 4)


# -- first_run -------------------------------------------------------------------------

NOW = utc(2024, 6, 1, 12, 0, 0)


def test_first_run_of_a_new_interval_task() -> None:
    assert first_run(Interval(timedelta(seconds=30)), NOW) == NOW + timedelta(seconds=30)


def test_first_run_waits_for_a_future_start_time() -> None:
    start = NOW + timedelta(hours=5, minutes=3)
    assert first_run(Interval(timedelta(minutes=10)), NOW, start_time=start) == start
    # a crontab: the first slot at or after start_time
    assert first_run(cron("0 * * * *"), NOW, start_time=start) == utc(2024, 6, 1, 18)
    assert first_run(cron("0 * * * *"), NOW, start_time=utc(2024, 6, 1, 18)) == utc(2024, 6, 1, 18)
    # a clocked task due before start_time waits for it
    assert first_run(Clocked(NOW + timedelta(hours=1)), NOW, start_time=start) == start


def test_first_run_with_a_past_start_time_keeps_its_phase() -> None:
    start = NOW - timedelta(minutes=25)
    result = first_run(Interval(timedelta(minutes=10)), NOW, start_time=start)
    assert result == NOW + timedelta(minutes=5)


def test_first_run_after_re_enable_has_no_stale_slot() -> None:
    every = timedelta(hours=1)
    last = NOW - timedelta(days=10, minutes=3)
    result = first_run(Interval(every), NOW, last_run_at=last)
    assert result is not None
    assert NOW < result <= NOW + every
    assert (result - last) % every == timedelta(0)
    assert result == NOW + timedelta(minutes=57)
    # the same for a crontab: the next slot after now, not the one after last_run_at
    assert first_run(cron("0 9 * * *"), NOW, last_run_at=utc(2024, 1, 1, 9)) == utc(2024, 6, 2, 9)


def test_first_run_after_a_recent_run_keeps_the_next_slot() -> None:
    last = NOW - timedelta(minutes=10)
    assert first_run(Interval(timedelta(hours=1)), NOW, last_run_at=last) == last + timedelta(hours=1)


def test_first_run_never_before_start_time_even_with_last_run() -> None:
    start = NOW + timedelta(hours=2, minutes=30)
    result = first_run(Interval(timedelta(hours=1)), NOW, last_run_at=NOW - timedelta(hours=1),
                       start_time=start)
    assert result == start


def test_first_run_of_a_crontab_is_after_now() -> None:
    assert first_run(cron("0 12 * * *"), NOW) == utc(2024, 6, 2, 12)
    assert first_run(cron("*/5 * * * *"), NOW + timedelta(seconds=1)) == NOW + timedelta(minutes=5)


def test_first_run_of_a_clocked_task() -> None:
    at = NOW + timedelta(days=3)
    assert first_run(Clocked(at), NOW) == at
    # a moment already past that never ran: run now, once
    assert first_run(Clocked(NOW - timedelta(hours=1)), NOW) == NOW
    # a clocked task that has run is finished
    assert first_run(Clocked(at), NOW, last_run_at=at) is None
    assert first_run(Clocked(at), NOW, last_run_at=at + timedelta(seconds=1)) is None


# -- after_run -------------------------------------------------------------------------

def test_after_run_interval_on_time() -> None:
    slot = utc(2024, 6, 1, 12)
    assert after_run(Interval(timedelta(minutes=10)), slot, slot + timedelta(seconds=1)) == utc(
        2024, 6, 1, 12, 10
    )


def test_after_run_interval_catches_up_once_only() -> None:
    slot = utc(2024, 6, 1, 12)
    # beat was down 35 minutes: the overdue slot is the one catch-up, then 12:40
    assert after_run(Interval(timedelta(minutes=10)), slot, slot + timedelta(minutes=35)) == utc(
        2024, 6, 1, 12, 40
    )


def test_after_run_crontab() -> None:
    spec = cron("0 9 * * *")
    slot = utc(2024, 6, 1, 9)
    assert after_run(spec, slot, slot + timedelta(seconds=2)) == utc(2024, 6, 2, 9)
    # beat was down three days: one catch-up, then the next future slot
    assert after_run(spec, slot, utc(2024, 6, 4, 10)) == utc(2024, 6, 5, 9)


def test_after_run_clocked_is_final() -> None:
    at = utc(2024, 6, 1, 9)
    assert after_run(Clocked(at), at, at + timedelta(seconds=1)) is None


def test_as_utc() -> None:
    assert sched.as_utc(datetime(2024, 1, 1, 12)) == utc(2024, 1, 1, 12)
    berlin = datetime(2024, 7, 1, 12, tzinfo=sched.zone("Europe/Berlin"))
    converted = sched.as_utc(berlin)
    assert converted == utc(2024, 7, 1, 10) and converted.tzinfo is UTC


# -- solar (needs ephem) ------------------------------------------------------------------

def test_solar_first_and_after_run() -> None:
    pytest.importorskip("ephem")
    spec = Solar("sunset", 52.52, 13.405)  # Berlin
    first = first_run(spec, NOW)
    assert first is not None
    # sunset in Berlin on 2024-06-01 is about 19:20 UTC
    assert utc(2024, 6, 1, 18, 30) < first < utc(2024, 6, 1, 20, 0)
    following = after_run(spec, first, first + timedelta(seconds=1))
    assert following is not None
    assert timedelta(hours=23, minutes=50) < following - first < timedelta(hours=24, minutes=10)


# -- misfire: on_time -------------------------------------------------------------

def test_on_time_looks_for_a_slot_within_the_grace() -> None:
    now = datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc)
    minutely = sched.Cron.parse("*", "*", "*", "*", "*", "UTC")
    daily = sched.Cron.parse("0", "9", "*", "*", "*", "UTC")
    hour_ago = now - timedelta(hours=1)
    # the stored slot itself within the grace
    assert sched.on_time(daily, now - timedelta(seconds=50), now, 60)
    # long missed, but a later slot of the same schedule is recent: on time
    assert sched.on_time(minutely, hour_ago, now, 60)
    assert sched.on_time(sched.Interval(timedelta(seconds=10)), hour_ago, now, 60)
    # nothing within the grace: missed
    yesterday_9 = datetime(2026, 5, 31, 9, 0, tzinfo=timezone.utc)
    assert not sched.on_time(daily, yesterday_9, now, 60)
    assert not sched.on_time(sched.Interval(timedelta(days=1)), hour_ago, now, 60)
    assert not sched.on_time(sched.Clocked(hour_ago), hour_ago, now, 60)
    # today's 09:00 was missed too, 3h00m30s ago: on time only with a grace that long
    assert sched.on_time(daily, yesterday_9, now, 3 * 3600 + 31)
    assert not sched.on_time(daily, yesterday_9, now, 3 * 3600 + 29)
    # a grace longer than the calendar is always on time
    assert sched.on_time(daily, yesterday_9, now, 1e30)
