"""Bad input at every front door: one table of invalid values for every field, pushed
through the models, ``PeriodicTask.update_or_create``, ``DatabaseScheduler.add``, the API
and the CLI on every backend; each is refused with a ValidationError naming the field and
the value, and nothing is written. Then a fuzz test of the validators: nothing but
ValidationError comes out of them, and every call returns within a second.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from beatsqlalchemy import api, db
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.constants import SCHEDULE_KINDS
from beatsqlalchemy.converters import schedule_fields
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import (
    SCHEDULE_MODELS,
    Base,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from beatsqlalchemy.runids import DEPLOYMENT_TABLE
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.validators import as_datetime, as_json
from harness.helpers import print_in_summary

UTC = timezone.utc
LATER = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
EXISTING = "existing"
#: bad inputs tried, reported at the end of the module
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if TRIED:
        parts = ", ".join(f"{key} {value}" for key, value in TRIED.items())
        total = sum(count for key, count in TRIED.items() if "of which" not in key)
        print_in_summary(request.config, f"\nbad input: {total} bad inputs tried ({parts})")


# -- the table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bug:
    """A known bug: the backends where the case does not hold yet."""

    reason: str
    backends: frozenset[str] | None = None  # None: every backend


@dataclass(frozen=True)
class Bad:
    """An invalid value: the field the error must name, the keywords that carry it to
    the Python front doors, and the command-line options that carry it to the CLI."""

    field: str
    value: Any
    fields: dict[str, Any]
    #: a text the message must show (default: repr of the value)
    shows: str | None = None
    #: options of ``add``/``edit`` (None: cannot be said on the command line)
    cli: tuple[str, ...] | None = None
    cli_name: str | None = None  # the NAME argument of ``add``
    cli_task: str | None = None  # the TASK argument of ``add`` (``edit --task``)
    cli_field: str | None = None
    cli_shows: str | None = None
    #: keywords for DatabaseScheduler.add when they differ from ``fields``
    add: dict[str, Any] | None = None
    #: the value can be given to the model classes directly
    model: bool = True
    #: also try it as a change of an existing task
    on_update: bool = True
    #: do not give the task a default schedule
    bare: bool = False
    #: the doors where the value is invalid (None: every door)
    only: frozenset[str] | None = None

    @property
    def message_shows(self) -> str:
        return repr(self.value) if self.shows is None else self.shows


def plain(name: str, value: Any, **settings: Any) -> Bad:
    """A bad value of a task column."""
    return Bad(name, value, {name: value}, **settings)


def of(kind: str, name: str, value: Any, **settings: Any) -> Bad:
    """A bad value of a column of a schedule table."""
    fields: dict[str, Any] = {kind: {name: value}}
    if kind == "clocked":
        fields["one_off"] = True
    return Bad(name, value, fields, **settings)


def cron_cli(position: int, value: str) -> tuple[str, ...]:
    parts = ["0", "0", "*", "*", "*"]
    parts[position] = value
    return ("--cron", " ".join(parts))


YEAR_1_EAST = "0001-01-01T00:00:00+14:00"  # valid ISO text, but before year 1 in UTC
CASES: dict[str, Bad] = {
    # name
    "name-empty": plain("name", "", cli_name="", on_update=False),
    "name-blank": plain("name", "   ", cli_name="   ", on_update=False),
    "name-too-long": plain("name", "n" * 201, cli_name="n" * 201, on_update=False),
    "name-number": plain("name", 42, on_update=False),
    "name-none": plain("name", None, on_update=False),
    "name-nul": plain("name", "bad\x00name", cli_name="bad\x00name", on_update=False),
    # task
    "task-empty": plain("task", "", cli_task=""),
    "task-too-long": plain("task", "t" * 201, cli_task="t" * 201),
    "task-number": plain("task", 42),
    "task-list": plain("task", ["tasks.add"]),
    # args, kwargs, headers
    "args-object": plain("args", {"a": 1}),
    "args-json-object": plain("args", '{"a": 1}', shows="{'a': 1}", cli=("--args", '{"a": 1}')),
    "args-bad-json": plain("args", "[1, 2", cli=("--args", "[1, 2")),
    "args-not-json": plain("args", [object], shows="object"),
    "args-number": plain("args", 5),
    "args-nan": plain("args", [math.nan], shows="nan", cli=("--args", "[NaN]")),
    "args-too-deep": plain("args", "[" * 5000 + "]" * 5000, shows="'[[[[",
                           cli=("--args", "[" * 5000 + "]" * 5000)),
    "kwargs-array": plain("kwargs", [1, 2]),
    "kwargs-json-array": plain("kwargs", "[1, 2]", shows="[1, 2]", cli=("--kwargs", "[1, 2]")),
    "kwargs-bad-json": plain("kwargs", "{pp: workd}", cli=("--kwargs", "{pp: workd}")),
    "kwargs-not-json": plain("kwargs", {"a": object()}, shows="object"),
    "kwargs-infinity": plain("kwargs", {"a": math.inf}, shows="inf", cli=("--kwargs", '{"a": Infinity}')),
    "headers-array": plain("headers", ["x"]),
    "headers-bad-json": plain("headers", "nope", cli=("--headers", "nope")),
    "headers-nan": plain("headers", {"x": math.nan}, shows="nan", cli=("--headers", '{"x": NaN}')),
    # routing
    "queue-too-long": plain("queue", "q" * 201, cli=("--queue", "q" * 201)),
    "queue-number": plain("queue", 5),
    "queue-list": plain("queue", ["q"]),
    "exchange-too-long": plain("exchange", "e" * 201, cli=("--exchange", "e" * 201)),
    "exchange-number": plain("exchange", 5),
    "routing-key-too-long": plain("routing_key", "r" * 201, cli=("--routing-key", "r" * 201)),
    "routing-key-object": plain("routing_key", {"a": 1}),
    # priority
    "priority-too-high": plain("priority", 256, cli=("--priority", "256"), cli_shows="256"),
    "priority-negative": plain("priority", -1, cli=("--priority", "-1"), cli_shows="-1"),
    "priority-text": plain("priority", "high", cli=("--priority", "high")),
    "priority-fraction": plain("priority", 1.5),
    "priority-bool": plain("priority", True),
    # expiry
    "expires-not-a-date": plain("expires", "tomorrow", cli=("--expires", "tomorrow"),
                                add={"options": {"expires": "tomorrow"}}),
    "expires-list": plain("expires", ["x"], add={"options": {"expires": ["x"]}}),
    "expires-number": plain("expires", 12.5),
    "expires-before-year-1": plain("expires", YEAR_1_EAST, cli=("--expires", YEAR_1_EAST)),
    "expire-seconds-negative": plain("expire_seconds", -1, cli=("--expires", "-1"), cli_field="expires",
                                     cli_shows="'-1'", add={"options": {"expires": -1}}),
    "expire-seconds-text": plain("expire_seconds", "60"),
    "expire-seconds-fraction": plain("expire_seconds", 1.5),
    "expire-seconds-int32": plain("expire_seconds", 2**31),
    "expire-seconds-int32-cli": plain("expire_seconds", 2**31, cli=("--expires", str(2**31)),
                                      cli_shows=str(2**31)),
    "expires-and-expire-seconds": Bad("expires", LATER, {"expires": LATER, "expire_seconds": 60},
                                      shows="2030"),
    # flags
    "one-off-text": plain("one_off", "yes"),
    "one-off-number": plain("one_off", 1),
    "one-off-none": plain("one_off", None),
    "enabled-text": plain("enabled", "yes"),
    "enabled-number": plain("enabled", 0),
    # (save_task, and so DatabaseScheduler.add and the API, read enabled=None as "unchanged")
    "enabled-none": plain("enabled", None, only=frozenset({"model", "update_or_create"})),
    "clocked-not-one-off": Bad("one_off", False, {"clocked": {"clocked_time": LATER}, "one_off": False},
                               cli=("--at", "2030-01-02T03:04:05Z", "--no-one-off")),
    # start time, description
    "start-time-not-a-date": plain("start_time", "tomorrow", cli=("--start-time", "tomorrow")),
    "start-time-number": plain("start_time", 5),
    "start-time-before-year-1": plain("start_time", YEAR_1_EAST, cli=("--start-time", YEAR_1_EAST)),
    "description-number": plain("description", 5),
    "description-list": plain("description", ["x"]),
    # interval
    "every-zero": of("interval", "every", 0, cli=("--every", "0s"), cli_shows="'0s'"),
    "every-negative": of("interval", "every", -3),
    "every-text": of("interval", "every", "ten", cli=("--every", "ten")),
    "every-fraction": of("interval", "every", 1.5),
    "every-bool": of("interval", "every", True),
    "every-int32": of("interval", "every", 2**31, cli=("--every", f"{2**31}s"), cli_shows=f"{2**31}"),
    "every-3m-days": Bad("every", 3_000_000, {"interval": {"every": 3_000_000, "period": "days"}},
                         cli=("--every", "3000000d"), cli_shows="3000000"),
    "every-beyond-timedelta": Bad("every", 10**9, {"interval": {"every": 10**9, "period": "days"}},
                                  cli=("--every", f"{10**9}d"), cli_shows=f"'{10**9}d'"),
    "period-unknown": Bad("period", "fortnights", {"interval": {"every": 5, "period": "fortnights"}},
                          cli=("--every", "5fortnights"), cli_field="every", cli_shows="'5fortnights'"),
    "period-none": of("interval", "period", None),
    "period-number": of("interval", "period", 5),
    "period-capitalised": of("interval", "period", "Days"),
    "interval-zero": Bad("interval", timedelta(0), {"interval": timedelta(0)}, shows="timedelta(0)",
                         model=False),
    "interval-bad-json": Bad("interval", '{"every": }', {"interval": '{"every": }'}, model=False),
    "interval-unknown-key": Bad("interval", None, {"interval": {"every": 1, "period": "seconds", "phase": 3}},
                                shows="phase", model=False),
    # crontab
    "minute-61": of("crontab", "minute", "61", cli=cron_cli(0, "61")),
    "minute-words": of("crontab", "minute", "every five"),
    "minute-negative": of("crontab", "minute", "-1", cli=cron_cli(0, "-1")),
    "minute-empty": of("crontab", "minute", ""),
    "minute-list": of("crontab", "minute", [1, 2]),
    "hour-24": of("crontab", "hour", "24", cli=cron_cli(1, "24")),
    "hour-step-zero": of("crontab", "hour", "*/0", cli=cron_cli(1, "*/0")),
    "hour-dict": of("crontab", "hour", {"at": 5}),
    "day-of-week-8": of("crontab", "day_of_week", "8", cli=cron_cli(4, "8")),
    "day-of-week-word": of("crontab", "day_of_week", "someday", cli=cron_cli(4, "someday")),
    "day-of-month-0": of("crontab", "day_of_month", "0", cli=cron_cli(2, "0")),
    "day-of-month-32": of("crontab", "day_of_month", "32", cli=cron_cli(2, "32")),
    "month-13": of("crontab", "month_of_year", "13", cli=cron_cli(3, "13")),
    "month-word": of("crontab", "month_of_year", "smarch", cli=cron_cli(3, "smarch")),
    "cron-string-61": Bad("minute", "61", {"crontab": "61 * * * *"}, model=False),
    "cron-string-3-fields": Bad("crontab", "* * *", {"crontab": "* * *"}, cli=("--cron", "* * *"),
                                model=False),
    "crontab-bad-json": Bad("crontab", '{"minute": ', {"crontab": '{"minute": '}, model=False),
    "crontab-unknown-key": Bad("crontab", None, {"crontab": {"minute": "1", "second": "5"}}, shows="second",
                               model=False),
    "timezone-unknown": of("crontab", "timezone", "Mars/Olympus",
                           cli=("--cron", "0 0 * * *", "--tz", "Mars/Olympus")),
    "timezone-empty": of("crontab", "timezone", ""),
    "timezone-number": of("crontab", "timezone", 5, shows="'5'"),
    "timezone-nul": of("crontab", "timezone", "UTC\x00", cli=("--cron", "0 0 * * *", "--tz", "UTC\x00")),
    # solar
    "event-unknown": of("solar", "event", "teatime", cli=("--solar", "teatime", "0", "0")),
    "event-none": of("solar", "event", None),
    "event-number": of("solar", "event", 5),
    "latitude-91": of("solar", "latitude", 91, cli=("--solar", "sunrise", "91", "0"), cli_shows="91"),
    "latitude-minus-91": of("solar", "latitude", -91, cli=("--solar", "sunrise", "-91", "0"),
                            cli_shows="-91"),
    "latitude-text": of("solar", "latitude", "north", cli=("--solar", "sunrise", "north", "0")),
    "latitude-bool": of("solar", "latitude", True),
    "latitude-nan": of("solar", "latitude", "NaN", cli=("--solar", "sunrise", "NaN", "0")),
    "longitude-181": of("solar", "longitude", 181, cli=("--solar", "sunrise", "0", "181"), cli_shows="181"),
    "longitude-text": of("solar", "longitude", "east", cli=("--solar", "sunrise", "0", "east")),
    "longitude-infinity": of("solar", "longitude", math.inf),
    # clocked
    "clocked-not-a-date": of("clocked", "clocked_time", "not a date", cli=("--at", "not a date"),
                             cli_field="at"),
    "clocked-none": of("clocked", "clocked_time", None),
    "clocked-number": of("clocked", "clocked_time", 5),
    "clocked-before-year-1": of("clocked", "clocked_time", YEAR_1_EAST, cli=("--at", YEAR_1_EAST),
                                cli_field="at"),
    # schedule combinations
    "no-schedule": Bad("schedule", None, {}, bare=True, on_update=False, cli=(), cli_shows="missing"),
    "two-schedules": Bad("schedule", None, {"interval": {"every": 5, "period": "seconds"},
                                             "crontab": {"minute": "0"}}, shows="crontab",
                         cli=("--every", "5s", "--cron", "0 * * * *"), cli_shows="--cron"),
    "schedule-not-a-schedule": Bad("schedule", "sometimes", {"schedule": "sometimes"}, model=False),
    "unknown-field": Bad("colour", "blue", {"colour": "blue"}, model=False),
}

DOORS = ("model", "update_or_create", "scheduler.add", "api", "cli")
SCHEDULE_OPTIONS = ("--every", "--cron", "--at", "--solar")


def applies(case: Bad, door: str) -> bool:
    if case.only is not None and door not in case.only:
        return False
    if door == "model":
        return case.model
    if door == "cli":
        return case.cli is not None
    return True


PARAMS = [
    pytest.param(case_id, door, id=f"{case_id}-{door}")
    for case_id, case in CASES.items() for door in DOORS if applies(case, door)
]


# -- helpers -------------------------------------------------------------------------------------

#: the tables writers fill (the deployment table holds one row from the migration on)
WRITTEN_TABLES = [t for t in Base.metadata.sorted_tables if t.name != DEPLOYMENT_TABLE]


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table writers fill."""
    tables = WRITTEN_TABLES
    query = select(*(select(func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables))
    with engine.connect() as connection:
        return dict(connection.execute(query).one()._mapping)


def stored_state(engine: Engine) -> dict[str, Any]:
    """Every column of every row writers fill, for before/after comparisons."""
    with engine.connect() as connection:
        return {table.name: sorted(tuple(map(repr, row)) for row in connection.execute(select(table)))
                for table in WRITTEN_TABLES}


def schedule_kind(case: Bad) -> str:
    """The schedule kind the existing task has: the case's own, else interval."""
    kinds = [kind for kind in SCHEDULE_KINDS if isinstance(case.fields.get(kind), dict)]
    return kinds[0] if len(kinds) == 1 else "interval"


VALID_SCHEDULES: dict[str, dict[str, Any]] = {
    "interval": {"every": 10, "period": "seconds"},
    "crontab": {"minute": "0", "hour": "4", "timezone": "Europe/Berlin"},
    "solar": {"event": "sunrise", "latitude": 52.5, "longitude": 13.4},
    "clocked": {"clocked_time": LATER},
}


def create_existing(session: Session, case: Bad) -> None:
    kind = schedule_kind(case)
    PeriodicTask.update_or_create(
        session, name=EXISTING, task="tasks.add", args=[1], kwargs={"k": "v"}, priority=5, queue="q0",
        description="kept", **{kind: VALID_SCHEDULES[kind]},
        **({"one_off": True} if kind == "clocked" else {}),
    )


def creation_values(case: Bad) -> tuple[Any, dict[str, Any]]:
    """(name, keywords) to create a task with the case's bad value."""
    values = dict(case.fields)
    name = values.pop("name", "bad")
    values.setdefault("task", "tasks.add")
    if not case.bare and not ({"schedule", *SCHEDULE_KINDS} & set(values)):
        values["interval"] = dict(VALID_SCHEDULES["interval"])
    return name, values


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` alone: no traceback to format (formatting hundreds of
    tracebacks would cost most of the run time when a regression fails many cases)."""
    if not condition:
        pytest.fail(message, pytrace=False)


def check_error(error: ValidationError, case: Bad) -> None:
    message = str(error)
    expect(isinstance(error, ValueError), f"not a ValueError: {message}")
    expect(error.field == case.field, f"names {error.field!r}, not {case.field!r}: {message}")
    expect(message.startswith(f"{case.field}: invalid value "), message)
    expect(case.message_shows in message, f"{case.message_shows!r} not in {message!r}")


def refused(case: Bad, attempt: Callable[[], Any]) -> None:
    """``attempt`` raises a ValidationError naming the case's field and value."""
    try:
        attempt()
    except ValidationError as exc:
        check_error(exc, case)
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} instead of ValidationError: {str(exc)[:300]}", pytrace=False)
    else:
        pytest.fail("no ValidationError: the value was accepted", pytrace=False)


# -- the doors -----------------------------------------------------------------------------------

def build_row(kind: str, value: dict[str, Any]) -> Any:
    fields = {**VALID_SCHEDULES[kind], **value} if kind != "crontab" else dict(value)
    return SCHEDULE_MODELS[kind](**fields)


def model_create(session: Session, case: Bad) -> None:
    name, values = creation_values(case)
    rows = {kind: build_row(kind, values.pop(kind)) for kind in SCHEDULE_KINDS if kind in values}
    task = PeriodicTask(name=name, **values, **rows)
    session.add(task)
    session.flush()


def model_change(session: Session, case: Bad) -> None:
    task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == EXISTING)).unique().one()
    existing = schedule_kind(case)
    for key, value in case.fields.items():
        if key == existing and key in SCHEDULE_KINDS:
            row = getattr(task, key)
            for column, column_value in value.items():
                setattr(row, column, column_value)
        elif key in SCHEDULE_KINDS:
            setattr(task, key, build_row(key, value))
        else:
            setattr(task, key, value)
    session.flush()


def add_keywords(case: Bad, values: dict[str, Any]) -> dict[str, Any]:
    """DatabaseScheduler.add's keywords: apply_async options under ``options``."""
    if case.add is not None:
        return {**{k: v for k, v in values.items() if k not in case.fields}, **case.add}
    options = {key: values.pop(key) for key in api.OPTION_COLUMNS if key in values}
    return {**values, **({"options": options} if options else {})}


def run_door(door: str, case: Bad, engine: Engine, session: Session, request: pytest.FixtureRequest,
             create: bool) -> None:
    """Try the case once (creating a task, or changing EXISTING) and check the refusal."""
    if door == "model":
        def attempt() -> None:
            try:
                (model_create if create else model_change)(session, case)
            finally:
                session.rollback()
        refused(case, attempt)
    elif door == "update_or_create":
        if create:
            name, values = creation_values(case)
            refused(case, lambda: PeriodicTask.update_or_create(session, name=name, **values))
        else:
            refused(case, lambda: PeriodicTask.update_or_create(session, name=EXISTING, **dict(case.fields)))
    elif door == "scheduler.add":
        app: Celery = request.getfixturevalue("app")
        beat = DatabaseScheduler(app=app)
        try:
            if create:
                name, values = creation_values(case)
                refused(case, lambda: beat.add(name=name, **add_keywords(case, values)))
            else:
                refused(case, lambda: beat.add(name=EXISTING, **add_keywords(case, dict(case.fields))))
        finally:
            beat.close()
    elif door == "api":
        if create:
            name, values = creation_values(case)
            task = values.pop("task")
            refused(case, lambda: api.create_task(session, name, task, **values))
        else:
            refused(case, lambda: api.update_task(session, EXISTING, **dict(case.fields)))
    else:
        run_cli(case, request.getfixturevalue("db_url"), create)


def run_cli(case: Bad, url: str, create: bool) -> None:
    assert case.cli is not None
    options = list(case.cli)
    if create:
        if not case.bare and not set(SCHEDULE_OPTIONS) & set(options):
            options += ["--every", "10s"]
        args = ["add", "bad" if case.cli_name is None else case.cli_name,
                "tasks.add" if case.cli_task is None else case.cli_task, *options]
    else:
        args = ["edit", EXISTING, *options, *(["--task", case.cli_task] if case.cli_task is not None else [])]
    result = CliRunner().invoke(cli_main, ["--url", url, *args], catch_exceptions=False)
    output = result.output[:500]
    expect(result.exit_code == 2, f"exit {result.exit_code}, not 2: {output}")
    expect("Traceback" not in result.output, f"a traceback: {output}")
    expect(result.stdout == "", f"output on stdout: {output}")
    lines = result.stderr.strip().splitlines()
    expect(len(lines) == 1, f"not one line: {lines}")
    line = lines[0]
    expect(line.startswith("error: "), line)
    name = case.cli_field or case.field
    expect(name in line or name.replace("_", "-") in line, f"{name!r} not in {line!r}")
    shows = case.cli_shows if case.cli_shows is not None else case.message_shows
    expect(shows in line, f"{shows!r} not in {line!r}")


def cli_applies_to_update(case: Bad) -> bool:
    return case.on_update and (bool(case.cli) or case.cli_task is not None)


# -- the table test --------------------------------------------------------------------------------

@pytest.mark.parametrize(("case_id", "door"), PARAMS)
def test_bad_input_is_refused_at_every_front_door(
    case_id: str, door: str, engine: Engine, session: Session, request: pytest.FixtureRequest,
) -> None:
    """The bad value is refused with a ValidationError naming field and value (one line
    and exit 2 on the CLI), creating a task and changing one; no table changes."""
    case = CASES[case_id]
    empty = row_counts(engine)
    assert set(empty.values()) == {0}
    TRIED[f"table ({door})"] += 1
    run_door(door, case, engine, session, request, create=True)
    assert row_counts(engine) == empty, "a refused creation wrote rows"

    if not case.on_update or (door == "cli" and not cli_applies_to_update(case)):
        return
    create_existing(session, case)
    before = stored_state(engine)
    TRIED[f"table ({door})"] += 1
    run_door(door, case, engine, session, request, create=False)
    assert stored_state(engine) == before, "a refused change wrote something"
    # the session is still usable after the refusal
    assert session.scalars(select(PeriodicTask.name)).all() == [EXISTING]


def test_the_table_covers_every_field() -> None:
    """Every field the issue lists has at least one bad value, at every door it can reach."""
    named = {case.field for case in CASES.values()} | {
        key for case in CASES.values() for key in case.fields if key not in SCHEDULE_KINDS}
    wanted = {"name", "task", "args", "kwargs", "headers", "queue", "exchange", "routing_key", "priority",
              "expires", "expire_seconds", "one_off", "enabled", "start_time", "description", "every",
              "period", "minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
              "event", "latitude", "longitude", "clocked_time", "schedule"}
    assert wanted <= named, wanted - named
    for door in DOORS:
        reached = {CASES[case_id].field for case_id, case_door in (p.values for p in PARAMS)
                   if case_door == door}
        assert len(reached) >= 14, (door, reached)


# -- values that are odd but may be legal: stored intact or refused cleanly ----------------------

EDGES: dict[str, tuple[dict[str, Any], tuple[Bug, ...]]] = {
    "description-65535-bytes": ({"description": "é" * 32_767 + "d"}, ()),
    "description-70000-chars": ({"description": "d" * 70_000}, ()),
    "description-nul": ({"description": "a\x00b"}, ()),
    "kwargs-lone-surrogate": ({"kwargs": {"text": "\ud800"}}, ()),
    "name-emoji": ({"name": "report \U0001f4c8 daily"}, ()),
    "args-huge-number": ({"args": [10**400]}, ()),
    "clocked-year-9999": ({"clocked": "9999-12-31T23:59:59+00:00", "one_off": True}, ()),
    "interval-start-year-9999": (
        {"interval": timedelta(hours=1), "start_time": "9999-12-31T00:00:00+00:00"}, ()),
    "crontab-start-year-9999": ({"crontab": "0 0 * * *", "start_time": "9999-12-31T00:00:00+00:00"}, ()),
    "crontab-east-start-year-9999": (
        {"crontab": {"minute": "0", "hour": "0", "timezone": "Pacific/Kiritimati"},
         "start_time": "9999-12-31T00:00:00+00:00"}, ()),
}


@pytest.mark.parametrize("edge_id", sorted(EDGES))
def test_odd_values_are_stored_intact_or_refused_cleanly(
    edge_id: str, backend: str, engine: Engine, session: Session, request: pytest.FixtureRequest,
) -> None:
    fields, bugs = EDGES[edge_id]
    for bug in bugs:
        if bug.backends is None or backend in bug.backends:
            request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason))
    values = dict(fields)
    name = values.pop("name", "odd")
    if not set(SCHEDULE_KINDS) & set(values):
        values["interval"] = timedelta(seconds=10)
    TRIED["odd values"] += 1
    try:
        PeriodicTask.update_or_create(session, name=name, task="tasks.add", **values)
    except ValidationError:
        assert set(row_counts(engine).values()) == {0}
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__}: {str(exc)[:300]}", pytrace=False)
    with db.session_factory(engine)() as reader:
        stored = reader.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).unique().one()
        for key, value in fields.items():
            if key in ("description", "kwargs", "args", "name"):
                assert getattr(stored, key) == value, key


# -- fuzzing the validators ----------------------------------------------------------------------

class Hang(Exception):
    """A call did not return within its time limit."""


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM), then give pytest-timeout's alarm back."""
    def expired(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    remaining, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if remaining:
            left = max(remaining - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


SCALARS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789*/-, abcdefghijklmnopqrstuvwxyz?LW#", max_size=30),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.sampled_from(["NaN", "-inf", "1e999", "0x1F", "٣", "²", "\x00", "\ud800", "*/0", "1-0", "59-0/0",
                     "UTC", "Etc/GMT+14", "../../etc/passwd", "/etc/localtime", "posixrules", "America",
                     "2024-02-30T00:00:00", "9999-12-31T23:59:59-14:00", YEAR_1_EAST, "[" * 3000,
                     "{" * 3000]),
)
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                       lambda children: st.lists(children, max_size=4)
                       | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=12)
ANY_VALUE = st.one_of(SCALARS, JSONISH, st.datetimes(timezones=st.none() | st.timezones()),
                      st.datetimes(timezones=st.timezones()).map(datetime.isoformat))
#: values every target is tried with before the random ones
SEEDS: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**31, math.nan, math.inf, "", " ", "\x00", "\ud800", "NaN",
    "[" * 5000, "{" * 5000, YEAR_1_EAST, "9999-12-31T23:59:59-14:00", [1, 2], {"a": 1}, [math.nan],
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), datetime.max, "x" * 100_000,
    -(10**4000), 10**4000,
)


def fresh(model: type) -> Any:
    """A valid, transient instance of ``model``."""
    if model is PeriodicTask:
        return PeriodicTask(name="fuzz", task="tasks.fuzz")
    if model is CrontabSchedule:
        return CrontabSchedule()
    if model is ClockedSchedule:
        return ClockedSchedule(clocked_time=LATER)
    kind = model.kind  # type: ignore[attr-defined]
    return model(**VALID_SCHEDULES[kind])


ATTRIBUTES = [
    (PeriodicTask, name) for name in (
        "name", "task", "queue", "exchange", "routing_key", "args", "kwargs", "headers", "extra_options",
        "priority", "expire_seconds", "expires", "start_time", "last_run_at", "next_run_at", "one_off",
        "enabled", "description")
] + [(IntervalSchedule, "every"), (IntervalSchedule, "period")] + [
    (CrontabSchedule, name) for name in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year",
                                         "timezone")
] + [(SolarSchedule, "event"), (SolarSchedule, "latitude"), (SolarSchedule, "longitude"),
     (ClockedSchedule, "clocked_time")]



def assign(model: type, name: str) -> Callable[[Any], None]:
    """Set ``name`` on a fresh, valid ``model`` instance (runs its @validates)."""
    def call(value: Any) -> None:
        setattr(fresh(model), name, value)
    return call


def parse_field(name: str) -> Callable[[Any], Any]:
    return lambda value: sched.parse_cron_field(name, value)


#: target -> (call, values strategy)
TARGETS: dict[str, tuple[Callable[[Any], Any], st.SearchStrategy[Any]]] = {
    f"{model.__name__}.{name}": (assign(model, name), ANY_VALUE) for model, name in ATTRIBUTES
}
TARGETS.update({
    **{f"parse_cron_field:{name}": (parse_field(name), SCALARS) for name in sched.CRON_FIELDS},
    "split_cron": (sched.split_cron, st.one_of(SCALARS, st.lists(
        st.text(alphabet="0123456789*/-,abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
        min_size=4, max_size=6).map(" ".join))),
    "interval_delta": (lambda value: sched.interval_delta(*value),
                       st.tuples(SCALARS, st.one_of(SCALARS, st.sampled_from(sched.PERIODS)))),
    "as_datetime": (lambda value: as_datetime("start_time", value), ANY_VALUE),
    "as_json:list": (lambda value: as_json("args", value, list), ANY_VALUE),
    "as_json:dict": (lambda value: as_json("kwargs", value, dict), ANY_VALUE),
    "zone": (sched.zone, SCALARS),
})
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_validators_raise_only_validation_errors_and_never_hang(target: str) -> None:
    """Random strings, numbers, None, booleans, JSON-like values and datetimes: each call
    returns within a second, with a value or a ValidationError naming its field."""
    call, values = TARGETS[target]
    unexpected: list[str] = []

    def check(value: Any) -> None:
        TRIED["fuzz"] += 1
        started = time.monotonic()
        try:
            with within(1.0):
                call(value)
        except ValidationError as exc:
            assert exc.field and str(exc).startswith(f"{exc.field}: invalid value ")
        except Hang:
            unexpected.append(f"no answer within 1s for {str(value)[:60]!r}")
        except Exception as exc:
            unexpected.append(f"{type(exc).__name__}: {str(exc)[:120]} for {str(value)[:60]!r}")
        assert time.monotonic() - started < 1.0, f"{target} took too long for {str(value)[:60]!r}"

    for seed in SEEDS if target != "interval_delta" else [(seed, "days") for seed in SEEDS]:
        check(seed)

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(values)
    def fuzz(value: Any) -> None:
        check(value)

    fuzz()
    assert not unexpected, f"{len(unexpected)} unexpected exception(s), e.g. {unexpected[:3]}"


#: calls that once let another exception out (OverflowError, RecursionError, TypeError,
#: decimal.InvalidOperation, ValueError): each must raise a ValidationError
VALIDATOR_CALLS: dict[str, Callable[[], Any]] = {
    "as_json-deep-array": lambda: as_json("args", "[" * 5000 + "]" * 5000, list),
    "as_json-deep-value": lambda: as_json("kwargs", {"a": deep_list(5000)}, dict),
    "as_json-101-levels": lambda: as_json("args", deep_list(100), list),
    "as_json-cycle": lambda: as_json("args", cycle(), list),
    "as_json-nan": lambda: as_json("args", [math.nan], list),
    "as_json-nan-text": lambda: as_json("args", "[NaN]", list),
    "as_json-infinity-text": lambda: as_json("kwargs", '{"a": -Infinity}', dict),
    "as_json-lone-surrogate": lambda: as_json("kwargs", {"a": "\ud800"}, dict),
    "as_datetime-before-year-1": lambda: as_datetime("start_time", YEAR_1_EAST),
    "as_datetime-aware-year-1": lambda: as_datetime(
        "expires", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
    "as_datetime-after-year-9999": lambda: as_datetime("expires", "9999-12-31T23:00:00-05:00"),
    "interval_delta-huge": lambda: sched.interval_delta(10**9, "days"),
    "interval_delta-huge-seconds": lambda: sched.interval_delta(2**70, "seconds"),
    "interval_delta-int32": lambda: sched.interval_delta(2**31, "microseconds"),
    "interval-period-makes-every-too-long": lambda: IntervalSchedule(every=3_000_000, period="days"),
    "interval-every-too-long-for-period": lambda: IntervalSchedule(period="days", every=3_000_000),
    "crontab-list": lambda: CrontabSchedule(minute=[1, 2]),
    "parse_cron_field-list": lambda: sched.parse_cron_field("hour", [1]),  # type: ignore[arg-type]
    "cron-parse-list": lambda: sched.Cron.parse("0", ["1"], "*", "*", "*", "UTC"),  # type: ignore[arg-type]
    "zone-list": lambda: sched.zone(["UTC"]),  # type: ignore[arg-type]
    "latitude-nan": lambda: SolarSchedule(event="sunrise", latitude="NaN", longitude=0),
    "longitude-nan": lambda: SolarSchedule(event="sunrise", latitude=0, longitude=math.nan),
    "huge-int-message": lambda: PeriodicTask(name="x", task="x", priority=10**5000),
    "name-nul": lambda: PeriodicTask(name="a\x00b", task="x"),
    "description-nul": lambda: PeriodicTask(name="x", task="x", description="a\x00b"),
    "expire-seconds-int32": lambda: PeriodicTask(name="x", task="x", expire_seconds=2**31),
    "expires-infinite-seconds": lambda: api.option_fields({"expires": math.inf}),
    "schedule-huge-seconds": lambda: schedule_fields("interval", 1e300),
    "schedule-nan-seconds": lambda: schedule_fields("interval", math.nan),
}


def cycle() -> list[Any]:
    looped: list[Any] = []
    looped.append(looped)
    return looped


def deep_list(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize("call_id", sorted(VALIDATOR_CALLS))
def test_odd_calls_raise_validation_errors(call_id: str) -> None:
    """Each call, alone, raises a ValidationError naming a field."""
    TRIED["single calls"] += 1
    try:
        VALIDATOR_CALLS[call_id]()
    except ValidationError as exc:
        assert exc.field and str(exc).startswith(f"{exc.field}: invalid value ")
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} instead of ValidationError: {str(exc)[:300]}", pytrace=False)
    pytest.fail("no ValidationError: the value was accepted", pytrace=False)
